"""Server actions (Nova's `POST /servers/{id}/action`): stop, start, reboot, rebuild, lock,
unlock, reset state and snapshots. Each moves the server through the INSTANCE table
(core/states.py) into an in-progress state with a fresh task id; its host's agent learns it
from the servers it long-polls (the state is in each server's spec), carries it out through its
driver and reports it done naming that task id (compute/hosts.py). A reaper times out what an
agent never finishes (`reap_actions`).

Nova's rules: a server in the wrong state answers 409 "Cannot 'stop' instance ... while it is
in vm_state ..."; a locked server refuses every action but unlock (and delete, metadata) to
anyone but an administrator, 409 "Instance ... is locked"."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from infracloud.compute import reserved_meta
from infracloud.compute.servers import ServerService, check_metadata, fault, task_state, vm_state
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.states import IMAGE, INSTANCE
from infracloud.store.models import Host, Image, Instance
from infracloud.store.wakeups import bump

log = logging.getLogger(__name__)

# the in-progress states of actions, and what a report of "done" moves each to
DONE_EVENT = {"stopping": "stopped", "starting": "started", "rebooting": "rebooted",
              "rebooting_hard": "rebooted", "rebuilding": "rebuilt", "rebuilding_off": "rebuilt",
              "snapshotting": "snapshotted", "snapshotting_off": "snapshotted"}
ACTION_STATES = tuple(DONE_EVENT)
# what each action's failure fault says
WHAT = {"stopping": "stop", "starting": "start", "rebooting": "reboot",
        "rebooting_hard": "reboot", "rebuilding": "rebuild", "rebuilding_off": "rebuild",
        "snapshotting": "createImage",
        "snapshotting_off": "createImage"}
# drivers that cannot copy a guest's disk (createImage answers 409 on their hosts)
NO_SNAPSHOT = ("sandbox", "fake")


def invalid_state(action: str, inst: Instance) -> Conflict:
    """Nova's InstanceInvalidState, as its API words it."""
    task = task_state(inst)
    attr, value = ("task_state", task) if task else ("vm_state", vm_state(inst))
    return Conflict(f"Cannot '{action}' instance {inst.id} while it is in {attr} {value}")


def check_unlocked(caller: Caller, inst: Instance) -> None:
    """Nova's check_instance_lock: administrators pass."""
    if inst.locked_by and not caller.is_admin:
        raise Conflict(f"Instance {inst.id} is locked")


class ServerActions:
    """Built on the server service (its database, clock and agents' wake-ups)."""

    def __init__(self, servers: ServerService) -> None:
        self.servers = servers
        self.db = servers.db
        self.clock = servers.clock
        self.notify: Callable[[str], None] = servers.notify

    # ---- the agent's actions -----------------------------------------------------------------

    def stop(self, caller: Caller, server_id: str) -> Instance:
        return self._act(caller, server_id, "stop", "stop")

    def start(self, caller: Caller, server_id: str) -> Instance:
        return self._act(caller, server_id, "start", "start")

    def reboot(self, caller: Caller, server_id: str, hard: bool) -> Instance:
        return self._act(caller, server_id, "reboot", "reboot_hard" if hard else "reboot")

    def rebuild(self, caller: Caller, server_id: str, image_ref: str, *,
                name: str | None = None, metadata: Any = None) -> Instance:
        meta = check_metadata(metadata) if metadata is not None else None
        reserved_meta.refuse(meta or {})  # infracloud:expires_at is the controller's
        if name is not None and not 0 < len(name.strip()) <= 255:
            raise BadRequest("Invalid input for field/attribute name: 1 to 255 characters.")
        self.servers.get(caller, server_id)  # 404 before the image's 400
        try:
            image = self.servers.find_image(caller, image_ref)
        except NotFound:
            raise BadRequest(f"Image {image_ref} could not be found.") from None
        if image.status != "active":
            raise BadRequest(f"Image {image_ref} is not active.")

        def change(inst: Instance) -> None:
            if image.min_ram and image.min_ram > inst.ram_mb:
                raise BadRequest("Flavor's memory is too small for requested image.")
            if image.min_disk and inst.disk_gb and image.min_disk > inst.disk_gb:
                raise BadRequest("Flavor's disk is too small for requested image.")
            inst.image_id = image.id
            if name is not None:
                inst.name = name
            if meta is not None:
                inst.metadata_ = {**reserved_meta.controllers(inst.metadata_), **meta}
            inst.fault = None  # nova clears it: a rebuilt server starts over

        return self._act(caller, server_id, "rebuild", "rebuild", change)

    def snapshot(self, caller: Caller, server_id: str, image_id: str,
                 driver: str | None) -> Instance:
        """The server's disk to be uploaded as image `image_id` (made by the caller, queued)
        by its host's agent; only drivers that can copy a guest's disk."""

        def change(inst: Instance) -> None:
            inst.task_args = {"image_id": image_id}

        if driver in NO_SNAPSHOT:
            raise Conflict(f"createImage is not supported by the {driver} driver: its "
                           f"servers have no disk to copy.")
        return self._act(caller, server_id, "createImage", "snapshot", change,
                         check_lock=False)

    def snapshot_allowed(self, caller: Caller, server_id: str) -> tuple[Instance, str | None]:
        """The server and its host's driver, once it is known a snapshot may start (so that
        the image record is made only then): 404, 409 otherwise."""
        with self.db.read() as s:
            inst = self.servers._owned(s, caller, server_id)
            driver = s.scalar(select(Host.driver).where(Host.id == inst.host_id)) \
                if inst.host_id else None
        if not INSTANCE.allows(inst.state, "snapshot"):
            raise invalid_state("createImage", inst)
        if driver in NO_SNAPSHOT:
            raise Conflict(f"createImage is not supported by the {driver} driver: its "
                           f"servers have no disk to copy.")
        return inst, driver

    def _act(self, caller: Caller, server_id: str, action: str, event: str,
             change: Callable[[Instance], None] | None = None, *,
             check_lock: bool = True) -> Instance:
        now = self.clock.now()
        with self.db.write() as s:
            inst = self.servers._owned(s, caller, server_id)
            host_id = inst.host_id
            # its host's row first, then the server's: the order agents' reports lock them in
            bump(s, [host_id] if host_id else [], self.notify)
            inst = self._relock(s, server_id)
            if check_lock:
                check_unlocked(caller, inst)
            if not INSTANCE.allows(inst.state, event):
                raise invalid_state(action, inst)
            if change is not None:
                change(inst)
            inst.state = INSTANCE.next(inst.state, event)
            inst.state_changed_at = inst.updated_at = now
            inst.task_id = str(uuid.uuid4())
        log.info("server action", extra={"instance_id": server_id, "event":
                                         f"server.{action}", "state": inst.state,
                                         "user_id": caller.user_id})
        return inst

    def _relock(self, s: Session, server_id: str) -> Instance:
        """The server again, locked and as committed (its host's row is held first)."""
        inst = s.get(Instance, server_id, with_for_update=True, populate_existing=True)
        if inst is None:
            raise NotFound(f"Instance {server_id} could not be found.")
        return inst

    # ---- the controller's own ----------------------------------------------------------------

    def lock(self, caller: Caller, server_id: str) -> Instance:
        with self.db.write() as s:
            inst = self.servers._owned(s, caller, server_id, lock=True)
            if not inst.locked_by:
                owner = caller.project_id == inst.project_id and not caller.is_admin
                inst.locked_by = "owner" if owner else "admin"
                inst.updated_at = self.clock.now()
        return inst

    def unlock(self, caller: Caller, server_id: str) -> Instance:
        with self.db.write() as s:
            inst = self.servers._owned(s, caller, server_id, lock=True)
            if inst.locked_by == "admin" and not caller.is_admin:
                raise Forbidden("Policy doesn't allow os_compute_api:os-lock-server:unlock:"
                                "unlock_override to be performed.")
            if inst.locked_by:
                inst.locked_by = None
                inst.updated_at = self.clock.now()
        return inst

    def reset_state(self, caller: Caller, server_id: str, state: str) -> Instance:
        """os-resetState (administrators): to ACTIVE or ERROR, whatever the server does; an
        action in progress is abandoned (its agent's report of it is then ignored)."""
        if not caller.is_admin:
            raise Forbidden("Policy doesn't allow os_compute_api:os-admin-actions:reset_state "
                            "to be performed.")
        if state not in ("active", "error"):
            raise BadRequest("Invalid input for field/attribute state: must be 'active' or "
                             "'error'.")
        now = self.clock.now()
        with self.db.write() as s:
            inst = self.servers._owned(s, caller, server_id)
            bump(s, [inst.host_id] if inst.host_id else [], self.notify)
            inst = self._relock(s, server_id)
            event = f"reset_{state}"
            if not INSTANCE.allows(inst.state, event):
                raise invalid_state("os-resetState", inst)
            inst.state = INSTANCE.next(inst.state, event)
            inst.state_changed_at = inst.updated_at = now
            inst.task_id = None
            if state == "error" and not inst.fault:
                inst.fault = fault(500, "The state was reset to error by an administrator.",
                                   now)
            if state == "active":
                inst.fault = None
                inst.launched_at = inst.launched_at or now
        return inst


def drop_snapshot(s: Session, inst: Instance) -> None:
    """A snapshot that failed: its image, still waiting for data, goes (as Nova deletes it);
    one whose upload failed is `killed` already."""
    image_id = (inst.task_args or {}).get("image_id")
    image = s.get(Image, image_id) if image_id else None
    if image is not None and IMAGE.allows(image.status, "delete") and image.status == "queued":
        s.delete(image)


def finish(s: Session, inst: Instance, task_id: str | None, failed: str | None,
           now: dt.datetime, set_status: Callable[[Session, str, str], None]) -> bool:
    """An agent's report that it carried out (or failed) the server's action `task_id`.
    Reports of an earlier action (reset meanwhile) change nothing. Returns whether the state
    changed."""
    if inst.state not in ACTION_STATES or not task_id or task_id != inst.task_id:
        return False
    what = WHAT[inst.state]
    event = "fail" if failed is not None else DONE_EVENT[inst.state]
    target = INSTANCE.next(inst.state, event)
    if failed is not None and INSTANCE.states[target].failure:
        inst.fault = fault(500, f"{what} failed: {failed}", now)
    if failed is not None and what == "createImage":
        drop_snapshot(s, inst)
    if inst.state in ("rebuilding", "rebuilding_off") and failed is None:
        inst.launched_at = now
    inst.state = target
    inst.state_changed_at = inst.updated_at = now
    inst.task_id = None
    inst.task_args = None
    if target == "active":
        set_status(s, inst.id, "ACTIVE")
    elif target == "shutoff":
        set_status(s, inst.id, "DOWN")
    log.info("server action done", extra={"instance_id": inst.id, "event":
                                          f"server.{what}.{'failed' if failed else 'done'}",
                                          "state": inst.state, "fault": failed})
    return True


def reap_actions(s: Session, now: dt.datetime, touched: set[str]) -> int:
    """Actions their agents did not finish within their state's timeout: the table's
    `timeout` event (a fault says which action). Returns how many."""
    count = 0
    for state in ACTION_STATES:
        limit = now - dt.timedelta(seconds=INSTANCE.states[state].timeout or 300)
        for inst in s.scalars(select(Instance).where(Instance.state == state,
                                                     Instance.state_changed_at < limit)
                              .with_for_update()):
            target = INSTANCE.next(inst.state, "timeout")
            if INSTANCE.states[target].failure:
                inst.fault = fault(500, f"{WHAT[state]} timed out after "
                                        f"{INSTANCE.states[state].timeout:.0f} s.", now)
            if WHAT[state] == "createImage":
                drop_snapshot(s, inst)
            inst.state = target
            inst.state_changed_at = inst.updated_at = now
            inst.task_id = None
            inst.task_args = None
            touched.add(inst.host_id or "")
            count += 1
    return count


__all__ = ["ACTION_STATES", "ServerActions", "drop_snapshot", "finish", "reap_actions"]
