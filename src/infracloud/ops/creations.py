"""What a request made: every row of a resource that the API can create is seen by the event
flush hook as it is inserted (one table here, not a line per route), so the request's API
event names the new resource (its id and name), and lists everything the request made (each
server of a multi-create, the port a server got)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infracloud.ops.context import Touched
from infracloud.store.models import (
    ApplicationCredential,
    Assignment,
    Flavor,
    FlavorProject,
    ImageMember,
    Keypair,
    Port,
    Project,
    Role,
    ServerGroup,
    User,
)

# model -> (resource type, its new row -> (id, name, project)); servers, images, hosts and
# bare-metal nodes are named by their state events' hook (ops.events._TRACKED); the pool's
# requests and nodes by the pool's own events (pool.records)
_Describe = Callable[[Any], tuple[str, "str | None", "str | None"]]
CREATED: dict[type, tuple[str, _Describe]] = {
    Project: ("project", lambda o: (o.id, o.name, o.id)),
    User: ("user", lambda o: (o.id, o.name, o.default_project_id)),
    Role: ("role", lambda o: (o.id, o.name, None)),
    # grants have no id or name of their own: the one granted (the route's path names the
    # rest: the project and role, the image, the flavor)
    Assignment: ("role-assignment", lambda o: (o.user_id, None, o.project_id)),
    ApplicationCredential: ("application-credential",
                            lambda o: (o.id, o.name, o.project_id)),
    ImageMember: ("image-member", lambda o: (o.member_id, None, None)),
    Flavor: ("flavor", lambda o: (o.id, o.name, None)),
    FlavorProject: ("flavor-access", lambda o: (o.project_id, None, None)),
    Keypair: ("keypair", lambda o: (o.name, o.name, None)),
    ServerGroup: ("server-group", lambda o: (o.id, o.name, o.project_id)),
    Port: ("port", lambda o: (o.id, o.ip_address, o.project_id)),  # no name: its address
}
MAX_LISTED = 100  # of a request's creations in its API event's detail


def created(obj: Any) -> Touched | None:
    """The new row `obj` as a resource the request made, or None (not an API resource)."""
    entry = CREATED.get(type(obj))
    if entry is None:
        return None
    resource_type, describe = entry
    rid, name, project = describe(obj)
    return Touched(resource_type, str(rid), name, project, None, created=True)


def _singular(segment: str) -> str:
    return segment.removeprefix("os-").removesuffix("s").replace("_", "-")


def main_resource(touched: list[Touched], route: str | None, status: int) -> Touched | None:
    """The resource a request's API event is about: of an answered create, the new resource
    of the route's kind (`POST .../servers` made a server and its port: the server); else
    the first resource the request touched (a server action: the server). A refused request
    made nothing (its transaction rolled back): only what existed before may be named."""
    if status >= 400:
        return next((t for t in touched if not t.created), None)
    literal = [p for p in (route or "").split("/") if p and not p.startswith("{")]
    kind = _singular(literal[-1]) if literal else ""
    for t in touched:
        if t.created and kind and t.resource_type.endswith(kind):
            return t
    return touched[0] if touched else None


def listed(touched: list[Touched], status: int) -> list[dict[str, str | None]]:
    """Everything an answered request made, for its event's detail (bounded)."""
    if status >= 400:
        return []
    return [{"type": t.resource_type, "id": t.resource_id, "name": t.name}
            for t in touched if t.created][:MAX_LISTED]
