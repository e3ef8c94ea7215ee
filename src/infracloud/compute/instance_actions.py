"""A server's action log (Nova's os-instance-actions), read from the events the operations part
records: every answered API write names its caller, request id and time, and the server it
touched. The writes Nova logs as actions are kept: the create, the delete, and the server
actions (`POST .../action`, whose body's key the route notes in the event). State changes made
within the same request are the action's events (shown to administrators, as at 2.1). The log
outlives the server, as Nova's does, for as long as the events are kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from infracloud.compute.servers import ServerService
from infracloud.core.clock import isoformat
from infracloud.core.context import Caller
from infracloud.core.errors import NotFound
from infracloud.ops import context
from infracloud.store.models import Event, Instance

CREATE = "POST /compute/v2.1/servers"
DELETE = "DELETE /compute/v2.1/servers/{server_id}"
ACTION = "POST /compute/v2.1/servers/{server_id}/action"
# a server action's body key -> Nova's instance action name (nova/compute/instance_actions.py);
# a key not here (os-getConsoleOutput) is not an action Nova logs
ACTIONS = {
    "os-stop": "stop", "os-start": "start", "reboot": "reboot", "rebuild": "rebuild",
    "lock": "lock", "unlock": "unlock", "createImage": "createImage",
    "createBackup": "createBackup", "os-resetState": "resetState", "resize": "resize",
    "confirmResize": "confirmResize", "revertResize": "revertResize", "pause": "pause",
    "unpause": "unpause", "suspend": "suspend", "resume": "resume", "rescue": "rescue",
    "unrescue": "unrescue", "shelve": "shelve", "shelveOffload": "shelveOffload",
    "unshelve": "unshelve", "migrate": "migrate", "os-migrateLive": "live-migration",
    "evacuate": "evacuate", "changePassword": "changePassword",
    "trigger_crash_dump": "trigger_crash_dump",
}
MAX_ACTIONS = 1000


def note_action(server_id: str, body_key: str) -> None:
    """Called by the server action route: the API event then names the action and the server
    (even when the action changes no state)."""
    context.note(context.Touched("server", server_id, None, None, None),
                 instance_action=body_key)


@dataclass
class Action:
    action: str
    instance_uuid: str
    message: str | None
    project_id: str | None
    request_id: str | None
    start_time: str | None
    user_id: str | None
    events: list[dict[str, Any]] = field(default_factory=list)

    def view(self, with_events: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action, "instance_uuid": self.instance_uuid,
            "message": self.message, "project_id": self.project_id,
            "request_id": self.request_id, "start_time": self.start_time,
            "user_id": self.user_id}
        if with_events:
            out["events"] = self.events
        return out


def _name(e: Event) -> str | None:
    if e.action == CREATE:
        return "create"
    if e.action == DELETE:
        return "delete"
    if e.action == ACTION and isinstance(e.detail, dict):
        return ACTIONS.get(str(e.detail.get("instance_action")))
    return None


def _answered(e: Event) -> bool:
    return (e.target or "").startswith("2")


def _visible(s: Any, caller: Caller, server_id: str) -> None:
    """404 unless the caller may see the server, or (deleted) saw its creation."""
    inst = s.get(Instance, server_id)
    if inst is not None:
        if caller.is_admin or inst.project_id == caller.project_id:
            return
    else:
        created = s.scalars(select(Event.project_id).where(
            Event.resource_id == server_id, Event.resource_type == "server",
            Event.kind == "state", Event.action == "create").limit(1)).first()
        if created is not None and (caller.is_admin or created == caller.project_id):
            return
    raise NotFound(f"Instance {server_id} could not be found.")


def _step(e: Event) -> dict[str, Any]:
    at = isoformat(e.at, micro=True)
    return {"event": f"compute_{e.action}", "start_time": at, "finish_time": at,
            "result": "Error" if e.target == "error" else "Success", "traceback": None}


def actions(servers: ServerService, caller: Caller, server_id: str,
            request_id: str | None = None) -> list[Action]:
    """The server's actions, newest first (one, or a 404, when `request_id` is given)."""
    with servers.db.read() as s:
        _visible(s, caller, server_id)
        q = select(Event).where(Event.resource_id == server_id, Event.kind == "api")
        if request_id is not None:
            q = q.where(Event.request_id == request_id)
        rows = list(s.scalars(q.order_by(Event.id.desc()).limit(MAX_ACTIONS)))
        found: list[Action] = []
        for e in rows:
            name = _name(e)
            if name is None or not _answered(e):
                continue
            found.append(Action(name, server_id, None, e.project_id, e.request_id,
                                isoformat(e.at, micro=True), e.actor_id))
        if request_id is not None:
            if not found:
                raise NotFound(f"Action {request_id} not found")
            steps = s.scalars(select(Event).where(
                Event.resource_id == server_id, Event.kind == "state",
                Event.request_id == request_id).order_by(Event.id))
            found[0].events = [_step(e) for e in steps]
            if any(step["result"] == "Error" for step in found[0].events):
                found[0].message = "Error"
    return found
