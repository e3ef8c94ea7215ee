"""Server groups (nova's os-server-groups at 2.1): a project's named set of servers with one
policy, `affinity` (every member on one host) or `anti-affinity` (each member on a host of its
own). A server joins a group when it is created with the scheduler hint `group`; it leaves when
its record goes. Quotas: `server_groups` per project, `server_group_members` per group.

The scheduler honours the policy inside the creating transaction: `Placement.lock` takes the
group's row (FOR UPDATE on PostgreSQL; SQLite's write transactions are serial), so two creates
into one group are placed one after the other and each sees the other's host."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from infracloud.compute.quotas import Quotas
from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Forbidden, NotFound
from infracloud.store import Database
from infracloud.store.models import Instance, ServerGroup

POLICIES = ("affinity", "anti-affinity")


@dataclass
class Placement:
    """What a group asks of the scheduler for the servers one request adds to it."""

    group_id: str
    policy: str
    hosts: set[str] = field(default_factory=set)  # hosts of members already placed

    def only(self) -> tuple[str, ...]:
        return tuple(sorted(self.hosts)) if self.policy == "affinity" else ()

    def avoid(self) -> tuple[str, ...]:
        return tuple(sorted(self.hosts)) if self.policy == "anti-affinity" else ()

    def placed(self, host_id: str) -> None:
        self.hosts.add(host_id)


class ServerGroupService:
    def __init__(self, db: Database, clock: Clock, quotas: Quotas) -> None:
        self.db = db
        self.clock = clock
        self.quotas = quotas

    def create(self, caller: Caller, name: str, policy: str) -> ServerGroup:
        if caller.project_id is None:
            raise BadRequest("Creating a server group needs a project-scoped token.")
        if policy not in POLICIES:
            raise BadRequest(f"Invalid input for field/attribute policies: {policy!r} is not "
                             f"one of {list(POLICIES)}")
        with self.db.write() as s:
            self.quotas.lock(s, caller.project_id)
            limit = self.quotas.limits(s, caller.project_id)["server_groups"]
            have = s.scalar(select(func.count()).select_from(ServerGroup).where(
                ServerGroup.project_id == caller.project_id)) or 0
            if limit >= 0 and have + 1 > limit:
                raise Forbidden("Quota exceeded, too many server groups.")
            group = ServerGroup(id=str(uuid.uuid4()), name=name, project_id=caller.project_id,
                                user_id=caller.user_id, policy=policy,
                                created_at=self.clock.now())
            s.add(group)
        return group

    @staticmethod
    def _owned(s: Session, caller: Caller, group_id: str, lock: bool = False) -> ServerGroup:
        group = s.get(ServerGroup, group_id, with_for_update=lock)
        if group is None or not (caller.is_admin or group.project_id == caller.project_id):
            raise NotFound(f"Instance group {group_id} could not be found.")
        return group

    def get(self, caller: Caller, group_id: str) -> tuple[ServerGroup, list[str]]:
        with self.db.read() as s:
            group = self._owned(s, caller, group_id)
            return group, self._members(s, [group.id]).get(group.id, [])

    def listing(self, caller: Caller, *, all_projects: bool = False
             ) -> list[tuple[ServerGroup, list[str]]]:
        q = select(ServerGroup).order_by(ServerGroup.created_at, ServerGroup.id)
        if not (all_projects and caller.is_admin):
            q = q.where(ServerGroup.project_id == caller.project_id)
        with self.db.read() as s:
            groups = list(s.scalars(q))
            members = self._members(s, [g.id for g in groups])
        return [(g, members.get(g.id, [])) for g in groups]

    def count(self, project_id: str) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(ServerGroup).where(
                ServerGroup.project_id == project_id)) or 0)

    @staticmethod
    def _members(s: Session, group_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if not group_ids:
            return out
        for gid, iid in s.execute(select(Instance.server_group_id, Instance.id)
                                  .where(Instance.server_group_id.in_(group_ids))
                                  .order_by(Instance.created_at, Instance.id)):
            out.setdefault(gid or "", []).append(iid)
        return out

    def delete(self, caller: Caller, group_id: str) -> None:
        """As nova: a group with members may be deleted; they simply belong to none."""
        with self.db.write() as s:
            group = self._owned(s, caller, group_id, lock=True)
            s.execute(update(Instance).where(Instance.server_group_id == group.id)
                      .values(server_group_id=None).execution_options(
                          synchronize_session=False))
            s.delete(group)


def check_hint(group_id: str) -> None:
    """The hint's schema: a uuid (checked before anything else, as nova's schema is)."""
    try:
        uuid.UUID(group_id)
    except ValueError:
        raise BadRequest(f"Invalid input for field/attribute group. Value: {group_id}. "
                         f"'{group_id}' is not a 'uuid'") from None


def placement(s: Session, quotas: Quotas, caller: Caller, group_id: str, adding: int
              ) -> Placement:
    """In the creating transaction: lock the group, check its member quota for `adding` more
    servers, and say where its members are."""
    check_hint(group_id)
    group = s.get(ServerGroup, group_id, with_for_update=True)
    if group is None or not (caller.is_admin or group.project_id == caller.project_id):
        raise BadRequest(f"Instance group {group_id} could not be found.")
    limit = quotas.limits(s, group.project_id)["server_group_members"]
    rows = s.execute(select(Instance.id, Instance.host_id).where(
        Instance.server_group_id == group.id)).all()
    if limit >= 0 and len(rows) + adding > limit:
        raise Forbidden("Quota exceeded, too many servers in group")
    return Placement(group.id, group.policy, {h for _, h in rows if h})
