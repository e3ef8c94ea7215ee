"""Servers' maximum lifetimes (seed 003: builders that must not live past 24 hours).

A limit may come from the server's flavor (extra spec `infracloud:max_lifetime`), its image
(property `infracloud_max_lifetime`) and its project (`set_project_limit`, kept beside the
project's quota rows as resource `max_lifetime`); the shortest applies, measured from the
server's creation, and none means the server lives until it is deleted. A server first lives
its limit, or less when its flavor says so (extra spec `infracloud:lifetime`): its owner then
extends it, up to the limit. The expiry is stamped
in the create's transaction: the `expires_at` column (indexed: the duty's query) and the
metadata item `infracloud:expires_at` (compute/reserved_meta.py: the owner cannot change it).

Its owner extends it up to created_at + limit and no further (409); an admin exempts it (no
expiry; an event names who). The `lifetimes` duty (site/services.py) warns `warn_before`
seconds ahead, once per server and expiry (an event and the alert webhook), and deletes expired
servers through the normal delete path, with an event saying why. Each round handles at most
`page` servers of each kind, oldest expiry first."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from infracloud.compute.quotas import put_limit
from infracloud.compute.reserved_meta import EXPIRES_AT
from infracloud.compute.servers import ServerService
from infracloud.core.clock import Clock, as_utc, isoformat
from infracloud.core.context import ADMIN_ROLE, Caller
from infracloud.core.durations import (
    FLAVOR_INITIAL_KEY,
    FLAVOR_KEY,
    IMAGE_KEY,
    describe,
    parse_duration,
)
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.settings import LifetimesConfig
from infracloud.ops.alerting import AlertRecord
from infracloud.store import Database
from infracloud.store.models import Image, Instance, Project, QuotaLimit

log = logging.getLogger(__name__)
PROJECT_RESOURCE = "max_lifetime"  # a QuotaLimit row's resource: the project's limit (seconds)
WARNING_RULE = "server_expiring"
SWEEPER = Caller(user_id="system:lifetimes", project_id=None, roles=frozenset({ADMIN_ROLE}))


@dataclass(frozen=True)
class Limit:
    seconds: int
    reason: str  # "flavor builder.8g limits servers to 24 h"


def shortest(candidates: list[Limit]) -> Limit | None:
    """The first of the shortest (flavor, then image, then project on a tie)."""
    best: Limit | None = None
    for c in candidates:
        if best is None or c.seconds < best.seconds:
            best = c
    return best


def _spec(values: dict[str, Any] | None, key: str) -> int | None:
    raw = (values or {}).get(key)
    if raw is None:
        return None
    try:
        return parse_duration(raw, key)
    except BadRequest:  # written before it was checked: ignored, and said
        log.warning("ignoring an invalid %s: %r", key, raw)
        return None


class Lifetimes:
    def __init__(self, db: Database, config: LifetimesConfig, clock: Clock,
                 servers: ServerService, record: Callable[..., None],
                 warn: Callable[[AlertRecord], None] | None = None) -> None:
        """`record`: EventLog.record; `warn`: the alert webhook's sender, if any."""
        self.db = db
        self.config = config
        self.clock = clock
        self.servers = servers
        self.record = record
        self.warn = warn
        servers.on_place = self.stamp

    # ---- the limit, at create ------------------------------------------------------------

    def limit_for(self, s: Session, flavor: Any, image_id: str | None, project_id: str
                  ) -> Limit | None:
        found: list[Limit] = []
        seconds = _spec(flavor.extra_specs, FLAVOR_KEY)
        if seconds is not None:
            found.append(Limit(seconds, f"flavor {flavor.name} limits servers to "
                                        f"{describe(seconds)}"))
        image = s.get(Image, image_id) if image_id else None
        seconds = _spec(image.properties, IMAGE_KEY) if image is not None else None
        if image is not None and seconds is not None:
            found.append(Limit(seconds, f"image {image.name or image.id} limits servers to "
                                        f"{describe(seconds)}"))
        seconds = self._project_limit(s, project_id)
        if seconds is not None:
            project = s.get(Project, project_id)
            found.append(Limit(seconds, f"project {project.name if project else project_id} "
                                        f"limits servers to {describe(seconds)}"))
        return shortest(found)

    def stamp(self, s: Session, made: list[Instance], flavor: Any) -> None:
        """In the create's transaction: each new server's expiry."""
        if not made:
            return
        limit = self.limit_for(s, flavor, made[0].image_id, made[0].project_id)
        if limit is None:
            return
        first = _spec(flavor.extra_specs, FLAVOR_INITIAL_KEY) or limit.seconds
        for inst in made:
            inst.lifetime_limit = limit.seconds
            inst.lifetime_reason = limit.reason[:255]
            self._expire_at(inst, as_utc(inst.created_at) + dt.timedelta(
                seconds=min(first, limit.seconds)))

    @staticmethod
    def _expire_at(inst: Instance, when: dt.datetime | None) -> None:
        inst.expires_at = when
        meta = {k: v for k, v in (inst.metadata_ or {}).items() if k != EXPIRES_AT}
        if when is not None:
            meta[EXPIRES_AT] = isoformat(when) or ""
        inst.metadata_ = meta

    # ---- a project's limit ---------------------------------------------------------------

    @staticmethod
    def _project_limit(s: Session, project_id: str) -> int | None:
        row = s.get(QuotaLimit, (project_id, PROJECT_RESOURCE))
        return row.hard_limit if row is not None and row.hard_limit > 0 else None

    def project_limit(self, project_id: str) -> int | None:
        with self.db.read() as s:
            return self._project_limit(s, project_id)

    def set_project_limit(self, project_id: str, value: Any) -> int | None:
        """`value`: a duration (seconds or `24h`), or None to remove the project's limit.
        Servers made before keep their expiry."""
        seconds = None if value is None else parse_duration(value, "max_lifetime")
        with self.db.write() as s:
            if s.get(Project, project_id) is None:
                raise NotFound(f"Project {project_id} could not be found.")
            if seconds is None:
                s.execute(delete(QuotaLimit).where(QuotaLimit.project_id == project_id,
                                                   QuotaLimit.resource == PROJECT_RESOURCE))
                return None
            put_limit(s, project_id, PROJECT_RESOURCE, seconds)
        return seconds

    # ---- a server's lifetime -------------------------------------------------------------

    @staticmethod
    def view(inst: Instance) -> dict[str, Any]:
        latest = (as_utc(inst.created_at) + dt.timedelta(seconds=inst.lifetime_limit)
                  if inst.lifetime_limit else None)
        return {"expires_at": isoformat(inst.expires_at),
                "latest_expiry": isoformat(latest) if inst.exempted_by is None else None,
                "max_lifetime": inst.lifetime_limit, "reason": inst.lifetime_reason,
                "exempted_by": inst.exempted_by}

    def show(self, caller: Caller, server_id: str) -> dict[str, Any]:
        return self.view(self.servers.get(caller, server_id))

    def extend(self, caller: Caller, server_id: str, seconds: Any) -> dict[str, Any]:
        """Its expiry `seconds` later, up to created_at + its limit (409 beyond)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
            raise BadRequest("Invalid input for field/attribute seconds: a positive integer "
                             "is needed.")

        def later(inst: Instance) -> tuple[str | None, str]:
            if inst.expires_at is None or not inst.lifetime_limit:
                raise Conflict(f"Server {server_id} has no expiry to extend.")
            self._not_expired(inst)
            latest = as_utc(inst.created_at) + dt.timedelta(seconds=inst.lifetime_limit)
            wanted = as_utc(inst.expires_at) + dt.timedelta(seconds=seconds)
            if wanted > latest:
                raise Conflict(f"Cannot extend server {server_id} to {isoformat(wanted)}: "
                               f"{inst.lifetime_reason}, so it expires at "
                               f"{isoformat(latest)} at the latest.")
            self._expire_at(inst, wanted)
            return None, f"extended by {caller.user_id} to {isoformat(wanted)}"

        return self._change(caller, server_id, "extend", later)

    def exempt(self, caller: Caller, server_id: str, who: str, why: str | None = None
               ) -> dict[str, Any]:
        """No expiry for this server (admins); `who`: the admin's name, and `why`, for the
        event."""
        if not caller.is_admin:
            raise Forbidden("Only administrators can exempt a server from its lifetime.")

        def never(inst: Instance) -> tuple[str | None, str]:
            self._not_expired(inst)
            before = isoformat(inst.expires_at)
            inst.exempted_by = who[:255]
            self._expire_at(inst, None)
            return before, f"exempted from its lifetime by {who}" + (f": {why}" if why else "")

        return self._change(caller, server_id, "exempt", never)

    def _change(self, caller: Caller, server_id: str, action: str,
                change: Callable[[Instance], tuple[str | None, str]]) -> dict[str, Any]:
        """In one transaction: the caller's server, locked, changed by `change` (which returns
        the event's source and reason); then the event, whose target is the new expiry."""
        with self.db.write() as s:
            inst = ServerService._owned(s, caller, server_id, lock=True)
            source, reason = change(inst)
            inst.updated_at = self.clock.now()
            answer = self.view(inst)
            name, project = inst.name, inst.project_id
        self.record(kind="state", resource_type="server", action=action,
                    resource_id=server_id, resource_name=name, project_id=project,
                    source=source, target=answer["expires_at"], reason=reason)
        return answer

    def _not_expired(self, inst: Instance) -> None:
        """An expired server is the duty's: it may be deleting it now (its round reads the
        expired ones, then deletes each), so neither an extension nor an exemption can come
        between (409)."""
        if inst.state == "deleting" or (inst.expires_at is not None and as_utc(
                inst.expires_at) <= self.clock.now()):
            raise Conflict(f"Server {inst.id} has expired: it is being deleted.")

    # ---- the duty ------------------------------------------------------------------------

    def sweep(self) -> tuple[int, int]:
        """One round: warn of the servers expiring within `warn_before`, then delete the
        expired ones (a page of each). Returns (warned, deleted)."""
        return self._warn(), self._expire()

    def _warn(self) -> int:
        if self.config.warn_before <= 0:
            return 0
        now = self.clock.now()
        horizon = now + dt.timedelta(seconds=self.config.warn_before)
        with self.db.write() as s:
            rows = list(s.scalars(
                select(Instance).where(Instance.expires_at.is_not(None),
                                       Instance.expires_at <= horizon,
                                       Instance.expires_at > now,
                                       Instance.state != "deleting",
                                       or_(Instance.expiry_warned_for.is_(None),
                                           Instance.expiry_warned_for != Instance.expires_at))
                .order_by(Instance.expires_at).limit(self.config.page)
                .with_for_update()))
            due = []
            for inst in rows:
                assert inst.expires_at is not None
                inst.expiry_warned_for = inst.expires_at
                due.append((inst.id, inst.name, inst.project_id, as_utc(inst.expires_at),
                            inst.lifetime_reason))
        for server_id, name, project, at, why in due:
            left = max(int((at - now).total_seconds()), 0)
            summary = (f"server {name} ({server_id}) expires at {isoformat(at)}, in "
                       f"{describe(left) if left else 'less than a second'}: {why}")
            self.record(kind="state", resource_type="server", action="expiry-warning",
                        resource_id=server_id, resource_name=name, project_id=project,
                        target=isoformat(at), reason=summary)
            if self.warn is not None:
                self.warn(AlertRecord(id=str(uuid.uuid4()), rule=WARNING_RULE,
                                      subject=server_id, severity="warning", state="firing",
                                      summary=summary, started_at=now,
                                      resource_type="server"))
        return len(due)

    def _expire(self) -> int:
        now = self.clock.now()
        with self.db.read() as s:
            due = list(s.execute(
                select(Instance.id, Instance.name, Instance.project_id,
                       Instance.lifetime_reason)
                .where(Instance.expires_at.is_not(None), Instance.expires_at <= now,
                       Instance.state != "deleting")
                .order_by(Instance.expires_at).limit(self.config.page)))
        done = 0
        for server_id, name, project, why in due:
            reason = f"expired: {why}"
            try:
                self.servers.delete(SWEEPER, server_id)
            except NotFound:  # deleted meanwhile
                continue
            self.record(kind="state", resource_type="server", action="expire",
                        resource_id=server_id, resource_name=name, project_id=project,
                        target="deleting", reason=reason)
            log.info("server expired", extra={"instance_id": server_id,
                                              "event": "server.expire", "reason": reason})
            done += 1
        return done
