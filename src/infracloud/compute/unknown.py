"""Servers a compute host runs that the database does not know.

After a controller is restored from a backup, the hosts still run the servers created since the
backup was taken, and the restored database has no record of them. An agent never destroys a
server on its own account: it reports the servers the controller listed neither to run nor to
remove, with what it knows of them (`Unknown`), and keeps them running. The controller records
each one (`unknown_servers`, state `seen`: states.UNKNOWN_SERVER), holds its address with a port
no project owns so IPAM gives it to no other server, and once `compute.unknown_servers.grace`
has passed since the first report it handles it, once, by `compute.unknown_servers.action`:

- `reap` (the default; Nova's `running_deleted_instance_action = reap`): the host's agent is
  told to destroy it (it is listed in the host's `remove`); when the agent reports it absent,
  the record and the held address go;
- `adopt`: it becomes a server of the database (ACTIVE on the same host, with its address, MAC,
  name, project, user, flavor, image and key) when every one of these is consistent with the
  database: its project exists, its flavor exists with the size it runs with, its address could
  be held for it, and its host has room for it. Otherwise it is reaped, with the reason.

A server whose record the database removed (its usage record is closed: it was deleted while
its host was down) is reaped at once, with no grace: its owner asked for that. Every step is an
event of resource type `unknown-server` with the reason; nothing is destroyed before the grace.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from infracloud.compute import scheduler
from infracloud.compute.servers import check_metadata
from infracloud.core.clock import Clock, isoformat, parse_time
from infracloud.core.errors import BadRequest
from infracloud.core.settings import ComputeConfig
from infracloud.core.states import UNKNOWN_SERVER
from infracloud.network.service import DEVICE_OWNER, NetworkService
from infracloud.store import Database
from infracloud.store.models import (
    Flavor,
    Host,
    Instance,
    Port,
    Project,
    UnknownServer,
    UsageRecord,
)
from infracloud.store.wakeups import bump

log = logging.getLogger(__name__)
HELD = "compute:unknown"  # device_owner of the port that holds an unknown server's address
REMOVING = ("reaping", "unreaped")  # its agent is told to destroy it


@dataclass(frozen=True)
class Unknown:
    """What an agent knows of a server it runs that the controller did not list (from what
    it was spawned with; only the id for one from before agents kept it)."""

    id: str
    name: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    flavor_id: str | None = None
    image_id: str | None = None
    ip: str | None = None
    mac: str | None = None
    vcpus: int | None = None
    ram_mb: int | None = None
    disk_gb: int | None = None
    key_name: str | None = None
    key_data: str | None = None
    availability_zone: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    launched_at: str | None = None  # when the agent spawned it (ISO 8601)


class UnknownServers:
    def __init__(self, db: Database, config: ComputeConfig, clock: Clock,
                 network: Callable[[], NetworkService], notify: Callable[[str], None]) -> None:
        """`network`: the current network service (the tests give a controller a new one)."""
        self.db = db
        self.config = config
        self.clock = clock
        self.network = network
        self.notify = notify

    @property
    def grace(self) -> float:
        return self.config.unknown_servers.grace

    # ---- in a report's transaction (the caller holds the host row) ---------------------------

    def observe(self, s: Session, host: Host, reported: list[Unknown], now: dt.datetime
                ) -> bool:
        """The agent's complete list of the servers it runs unknown to the controller: new
        ones are recorded (and their addresses held), those it no longer has are forgotten.
        True when the host's `remove` changed (a server to destroy now)."""
        rows = {r.id: r for r in s.scalars(select(UnknownServer).where(
            UnknownServer.host_id == host.id).with_for_update())}
        ids = {u.id for u in reported}
        changed = False
        for row in rows.values():
            if row.id not in ids and row.state == "seen":
                self._end(s, row, "gone", "Its host's agent no longer has it.", now)
        for u in reported:
            known = rows.get(u.id)
            if known is not None:
                known.last_seen = now
                if known.state == "unreaped":  # still there: ask again
                    self._to(known, "reap", now, known.reason)
                    changed = True
                continue
            if s.get(Instance, u.id) is not None or s.get(UnknownServer, u.id) is not None:
                log.warning("a host reports a server the database has elsewhere",
                            extra={"host": host.name, "instance_id": u.id})
                continue
            changed |= self._record(s, host, u, now)
        return changed

    def _record(self, s: Session, host: Host, u: Unknown, now: dt.datetime) -> bool:
        action = self.config.unknown_servers.action
        details = {k: v for k, v in asdict(u).items() if k not in ("id", "name", "project_id")}
        row = UnknownServer(
            id=u.id, host_id=host.id, state="seen", name=u.name, project_id=u.project_id,
            ip_address=u.ip, details=details, first_seen=now, last_seen=now,
            state_changed_at=now,
            reason=f"Compute host {host.name} runs it and the database does not know it "
                   f"(created after the backup the database was restored from?); it is "
                   f"handled in {self.grace:.0f} s (compute.unknown_servers: {action}).")
        s.add(row)
        s.flush()  # its event, before anything else happens to it
        refused = self.network().hold(s, u.id, u.ip, u.mac, HELD)
        row.details = {**details, "address_refused": refused}
        ended = s.scalar(select(UsageRecord.ended_at).where(UsageRecord.instance_id == u.id))
        log.warning("unknown server", extra={"host": host.name, "instance_id": u.id,
                                             "event": "server.unknown"})
        if ended is None:
            return False
        self._to(row, "reap", now, f"The database removed this server at "
                                   f"{isoformat(ended)} (deleted while its host was down): "
                                   f"destroyed at once.")
        return True

    def absent(self, s: Session, host_id: str, ids: list[str], now: dt.datetime) -> bool:
        """The agent destroyed these (or no longer has them): the records of those it was
        told to destroy end, and their held addresses are free again."""
        rows = list(s.scalars(select(UnknownServer).where(
            UnknownServer.host_id == host_id, UnknownServer.id.in_(ids),
            UnknownServer.state.in_(REMOVING)).with_for_update()))
        for row in rows:
            self._end(s, row, "destroyed", "Destroyed by its host's agent.", now)
        return bool(rows)

    @staticmethod
    def removing(s: Session, host_id: str) -> list[str]:
        """The ids the host's agent must destroy."""
        return list(s.scalars(select(UnknownServer.id).where(
            UnknownServer.host_id == host_id, UnknownServer.state.in_(REMOVING))))

    # ---- the reaper's round -----------------------------------------------------------------

    def expire(self) -> dict[str, int]:
        """Handle every unknown server whose grace has passed (once: its state changes in the
        same transaction), and mark those whose destroy was not confirmed in time."""
        now = self.clock.now()
        counts = {"reaped": 0, "adopted": 0, "unreaped": 0}
        due = or_(and_(UnknownServer.state == "seen",
                       UnknownServer.first_seen <= now - dt.timedelta(seconds=self.grace)),
                  and_(UnknownServer.state == "reaping",
                       UnknownServer.state_changed_at < now - dt.timedelta(
                           seconds=UNKNOWN_SERVER.states["reaping"].timeout or 600)))
        touched: set[str] = set()
        with self.db.read() as s:  # most rounds: nothing to do, and no write transaction
            hosts = sorted(set(s.scalars(select(UnknownServer.host_id).where(due))))
        if not hosts:
            return counts
        with self.db.write() as s:
            for host_id in hosts:  # the hosts first, as a report locks them
                s.get(Host, host_id, with_for_update=True)
            for row in s.scalars(select(UnknownServer).where(
                    due, UnknownServer.host_id.in_(hosts)).with_for_update()):
                if row.state == "reaping":
                    self._to(row, "timeout", now, f"Its host's agent did not confirm the "
                                                  f"destroy within "
                                                  f"{UNKNOWN_SERVER.states['reaping'].timeout:.0f}"
                                                  f" s; it stays asked to destroy it.")
                    counts["unreaped"] += 1
                    continue
                touched.add(row.host_id)
                if self.config.unknown_servers.action == "adopt":
                    refused = self._adopt(s, row, now)
                    if refused is None:
                        counts["adopted"] += 1
                        continue
                    reason = f"Not adopted: {refused}; destroyed instead."
                else:
                    reason = (f"Unknown to the database for {self.grace:.0f} s "
                              f"(compute.unknown_servers.grace): destroyed "
                              f"(compute.unknown_servers.action: reap).")
                self._to(row, "reap", now, reason)
                counts["reaped"] += 1
                log.warning("unknown server reaped", extra={"instance_id": row.id,
                                                            "event": "server.unknown.reap"})
            bump(s, touched, self.notify)  # their agents, on any controller
        return counts

    def _adopt(self, s: Session, row: UnknownServer, now: dt.datetime) -> str | None:
        """Make it a server of the database; None when done, else why it cannot be."""
        d = row.details or {}
        project = s.get(Project, row.project_id) if row.project_id else None
        if project is None:
            return f"its project {row.project_id or '(not reported)'} is not in the database"
        flavor = s.get(Flavor, d["flavor_id"]) if d.get("flavor_id") else None
        if flavor is None:
            return f"its flavor {d.get('flavor_id') or '(not reported)'} is not in the database"
        if (flavor.vcpus, flavor.ram_mb, flavor.disk_gb) != (d.get("vcpus"), d.get("ram_mb"),
                                                            d.get("disk_gb")):
            return f"flavor {flavor.name} is not the size it runs with"
        if not d.get("user_id"):
            return "its user is not known"
        try:
            meta = check_metadata(d.get("meta") or {})
        except BadRequest as exc:
            return str(exc)
        port = s.scalar(select(Port).where(Port.device_id == row.id,
                                           Port.device_owner == HELD))
        if port is None:
            return f"its address could not be held for it ({d.get('address_refused')})"
        if d.get("mac") and port.mac_address != d["mac"]:
            return f"its MAC address {d['mac']} is another port's"
        if not scheduler.take(s, row.host_id, flavor.vcpus, flavor.ram_mb, flavor.disk_gb):
            return "its host has no room for it"
        host = s.get(Host, row.host_id)
        assert host is not None
        launched = _time(d.get("launched_at")) or row.first_seen
        s.add(Instance(
            id=row.id, name=row.name or row.id, project_id=project.id, user_id=d["user_id"],
            flavor_id=flavor.id, image_id=d.get("image_id"), key_name=d.get("key_name"),
            key_data=d.get("key_data"), host_id=host.id,
            availability_zone=host.availability_zone, state="active", vcpus=flavor.vcpus,
            ram_mb=flavor.ram_mb, disk_gb=flavor.disk_gb, metadata_=meta, user_data=None,
            config_drive=True, ip_address=port.ip_address, mac_address=port.mac_address,
            network_name=self.network().config.name, created_at=launched, updated_at=now,
            state_changed_at=now, launched_at=launched))
        port.device_owner, port.project_id = DEVICE_OWNER, project.id
        self._to(row, "adopt", now, f"Adopted as server {row.name or row.id} of project "
                                    f"{project.name}, flavor {flavor.name}, address "
                                    f"{port.ip_address} (compute.unknown_servers.action: "
                                    f"adopt).")
        s.flush()
        s.delete(row)
        log.warning("unknown server adopted", extra={"instance_id": row.id,
                                                     "event": "server.unknown.adopt"})
        return None

    # ---- steps ------------------------------------------------------------------------------

    @staticmethod
    def _to(row: UnknownServer, event: str, now: dt.datetime, reason: str | None) -> None:
        row.state = UNKNOWN_SERVER.next(row.state, event)
        row.state_changed_at = now
        row.reason = reason

    def _end(self, s: Session, row: UnknownServer, event: str, reason: str,
             now: dt.datetime) -> None:
        """To a final state (its event), then the record and its held address go."""
        self._to(row, event, now, reason)
        s.flush()
        self.network().release(s, row.id)
        s.delete(row)

    def pending(self) -> list[UnknownServer]:
        """Every record (operators, tests)."""
        with self.db.read() as s:
            return list(s.scalars(select(UnknownServer).order_by(UnknownServer.first_seen,
                                                                 UnknownServer.id)))


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None
