"""Compute hosts as the controller sees them through their agents.

Agents pull: they register, then ask for the servers their host should run (`desired`, a
long-poll keyed by the host's generation, which every change bumps) and report what they
have (`report`). Each request is a heartbeat. `reap` runs every few seconds: a host silent for
`host_down_after` (counted from this controller's start at the earliest: it could not hear
from hosts before) goes down (no new servers); when it has been down `instance_error_after`,
its servers go to ERROR with a fault. Servers stuck spawning or deleting past their state's
timeout fail or are removed. When the agent is back, it destroys what it is told to remove,
reports the servers it should run but has not (they vanished: ERROR, never re-created behind
their owner's back) and the servers it runs that the controller does not know, which are
handled by compute.unknown (reconciliation)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from infracloud.compute.actions import ACTION_STATES, drop_snapshot, finish, reap_actions
from infracloud.compute.servers import ServerService, fault
from infracloud.compute.unknown import Unknown, UnknownServers
from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.errors import Forbidden, NotFound
from infracloud.core.settings import ComputeConfig
from infracloud.core.states import HOST, INSTANCE
from infracloud.ops import metrics
from infracloud.store import Database
from infracloud.store.db import after_commit
from infracloud.store.models import Host, Instance
from infracloud.store.wakeups import bump, wake

log = logging.getLogger(__name__)
PRESENT = ("spawning", "active", "shutoff", *ACTION_STATES)  # the host runs (or keeps) them
MAX_CONSOLE = 64 * 1024
VANISHED = ("The server disappeared from its host: it was deleted after the backup the "
            "database was restored from, or lost with the host's disk. Delete it.")


@dataclass(frozen=True)
class Registration:
    name: str
    driver: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    availability_zone: str = "nova"
    reserved_vcpus: int = 0
    reserved_ram_mb: int = 0
    reserved_disk_gb: int = 0


@dataclass(frozen=True)
class Report:
    id: str
    state: str  # running | stopped | failed | absent
    fault: str | None = None
    console: str | None = None
    task: str | None = None  # the server action (compute.actions) this report ends


def lose_servers(s: Session, host_id: str, why: str, now: dt.datetime) -> int:
    """The servers on a host that can no longer be trusted go to ERROR with `why` as their
    fault (the caller holds the host row). Returns how many."""
    lost = 0
    for inst in s.scalars(select(Instance).where(Instance.host_id == host_id,
                                                 Instance.state.in_(PRESENT))
                          .with_for_update()):
        inst.state = INSTANCE.next(inst.state, "host_lost" if INSTANCE.allows(
            inst.state, "host_lost") else "fail")
        inst.state_changed_at = inst.updated_at = now
        inst.fault = fault(500, why, now)
        lost += 1
    after_commit(s, functools.partial(metrics.server_failed, "host_lost", lost))
    return lost


class HostService:
    def __init__(self, db: Database, config: ComputeConfig, clock: Clock,
                 servers: ServerService, notify: Callable[[str], None]) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.servers = servers
        self.notify = notify
        self.unknown = UnknownServers(db, config, clock, lambda: self.servers.network, notify)
        # a controller that just started has not had the time to hear from the hosts (after
        # an outage, or a restore from a backup: their last heartbeats are old)
        self.started = clock.now()

    def register(self, reg: Registration,
                 bind: Callable[[Session, Host], None] | None = None) -> Host:
        """Create or update the host named `reg.name`. `bind(session, host)` runs in the
        same transaction (its credential)."""
        now = self.clock.now()
        c = self.config
        with self.db.write() as s:
            host = s.scalar(select(Host).where(Host.name == reg.name).with_for_update())
            if host is None:
                host = Host(id=uuid.uuid4().hex, name=reg.name, created_at=now, generation=0,
                            used_vcpus=0, used_ram_mb=0, used_disk_gb=0, enabled=True,
                            state="up")
                s.add(host)
            host.driver = reg.driver
            host.availability_zone = reg.availability_zone
            host.vcpus, host.ram_mb, host.disk_gb = reg.vcpus, reg.ram_mb, reg.disk_gb
            host.reserved_vcpus = reg.reserved_vcpus
            host.reserved_ram_mb = reg.reserved_ram_mb
            host.reserved_disk_gb = reg.reserved_disk_gb
            host.cpu_ratio = c.cpu_allocation_ratio
            host.ram_ratio = c.ram_allocation_ratio
            host.disk_ratio = c.disk_allocation_ratio
            self._alive(s, host, now)
            if bind is not None:
                s.flush()
                bind(s, host)
        log.info("host registered", extra={"host": reg.name, "event": "host.register"})
        return host

    def heartbeat(self, host_id: str) -> None:
        """Record that the host is alive. Only written when the last record is older than
        half a heartbeat interval (agents call this on every long-poll)."""
        now = self.clock.now()
        fresh = now - dt.timedelta(seconds=self.config.heartbeat_seconds / 2)
        with self.db.read() as s:
            row = s.execute(select(Host.state, Host.last_heartbeat)
                            .where(Host.id == host_id)).first()
        if row is None:
            raise NotFound(f"Host {host_id} is not registered; register again.")
        if row.state == "up" and row.last_heartbeat >= fresh:
            return
        with self.db.write() as s:
            host = s.get(Host, host_id, with_for_update=True)
            if host is None:
                raise NotFound(f"Host {host_id} is not registered; register again.")
            self._alive(s, host, now)

    def _alive(self, s: Session, host: Host, now: dt.datetime) -> None:
        host.last_heartbeat = now
        if host.state != "up":  # the caller holds the host row locked
            host.state = HOST.next(host.state, "heartbeat")
            host.down_since = None
            host.generation = (host.generation or 0) + 1
            log.warning("host is back", extra={"host": host.name, "event": "host.up"})

    def generation(self, host_id: str) -> int:
        with self.db.read() as s:
            gen = s.scalar(select(Host.generation).where(Host.id == host_id))
        if gen is None:
            raise NotFound(f"Host {host_id} is not registered; register again.")
        return int(gen)

    def desired(self, host_id: str) -> tuple[int, list[Instance], list[str]]:
        """In one read: the host's generation, the servers it should run, and the ids of those
        it must destroy (placed on it and being deleted or failed, and unknown servers being
        reaped). The agent reports whatever else it runs (compute.unknown)."""
        with self.db.read() as s:
            gen = s.scalar(select(Host.generation).where(Host.id == host_id))
            if gen is None:
                raise NotFound(f"Host {host_id} is not registered; register again.")
            rows = list(s.scalars(select(Instance).where(Instance.host_id == host_id,
                                                         Instance.state.in_(PRESENT))))
            removing = list(s.scalars(select(Instance.id).where(
                Instance.host_id == host_id, Instance.state.in_(("deleting", "error")))))
            removing += self.unknown.removing(s, host_id)
        return int(gen), rows, removing

    def image_user(self, host_id: str, image_id: str) -> str:
        """The project of a server the controller wants on this host that boots `image_id`:
        a host may read only those images (least privilege); else Forbidden."""
        with self.db.read() as s:
            project = s.scalar(select(Instance.project_id).where(
                Instance.host_id == host_id, Instance.image_id == image_id,
                Instance.state.in_(PRESENT)).limit(1))
        if project is None:
            raise Forbidden(f"No server this host should run boots image {image_id}.")
        return str(project)

    def snapshot_owner(self, host_id: str, image_id: str) -> str:
        """The project of the server on this host whose snapshot (createImage) is image
        `image_id`: the only image data a host may upload (least privilege); else Forbidden."""
        with self.db.read() as s:
            for inst in s.scalars(select(Instance).where(
                    Instance.host_id == host_id,
                    Instance.state.in_(("snapshotting", "snapshotting_off")))):
                if (inst.task_args or {}).get("image_id") == image_id:
                    return str(inst.project_id)
        raise Forbidden(f"No server on this host is being snapshotted to image {image_id}.")

    def report(self, host_id: str, items: list[Report],
               unknown: list[Unknown] | None = None) -> int:
        """Apply what the agent has; returns the host's generation afterwards. `unknown`,
        when given, is every server the agent runs that the controller did not list to it
        (compute.unknown)."""
        now = self.clock.now()
        changed = False
        with self.db.write() as s:
            # locked: a concurrent claim's generation bump must not be overwritten
            host = s.get(Host, host_id, with_for_update=True)
            if host is None:
                raise NotFound(f"Host {host_id} is not registered; register again.")
            self._alive(s, host, now)
            ids = [i.id for i in items]
            found = {i.id: i for i in s.scalars(select(Instance).where(
                Instance.id.in_(ids), Instance.host_id == host_id).with_for_update())}
            gone: list[str] = []
            for item in items:
                inst = found.get(item.id)
                if inst is None:
                    if item.state == "absent":
                        gone.append(item.id)
                    continue
                if item.console is not None:
                    inst.console = item.console[-MAX_CONSOLE:]
                changed |= self._apply(s, inst, item, now)
            if gone:
                changed |= self.unknown.absent(s, host_id, gone, now)
            if unknown is not None:
                changed |= self.unknown.observe(s, host, unknown, now)
            if changed:
                host.generation += 1
                wake(s, host_id, self.notify)
            generation = host.generation
        return int(generation)

    def _apply(self, s: Session, inst: Instance, item: Report, now: dt.datetime) -> bool:
        def to(event: str) -> None:
            inst.state = INSTANCE.next(inst.state, event)
            inst.state_changed_at = inst.updated_at = now

        if item.task is not None:  # a server action carried out, or failed
            return finish(s, inst, item.task, (item.fault or "the host's driver failed")
                          if item.state == "failed" else None, now,
                          self.servers.network.set_status)
        if item.state == "running" and inst.state == "spawning":
            to("booted")
            inst.launched_at = now
            after_commit(s, functools.partial(metrics.server_active,
                                              (now - inst.created_at).total_seconds()))
            self.servers.network.set_status(s, inst.id, "ACTIVE")
            log.info("server active", extra={"instance_id": inst.id, "event": "server.active"})
            return False
        if item.state == "failed" and inst.state == "spawning":
            to("fail")
            inst.fault = fault(500, item.fault or "The host failed to spawn the server.", now)
            after_commit(s, functools.partial(metrics.server_failed, "driver_error"))
            log.warning("server failed", extra={"instance_id": inst.id, "fault": item.fault,
                                                "event": "server.error"})
            return True
        if item.state == "absent" and inst.state == "deleting":
            to("destroyed")
            drop_snapshot(s, inst)  # deleted while being snapshotted: the image never came
            self.servers.remove(s, inst)
            return True
        if item.state == "absent" and INSTANCE.allows(inst.state, "vanished"):
            to("vanished")
            inst.fault = fault(500, VANISHED, now)
            after_commit(s, functools.partial(metrics.server_failed, "vanished"))
            return True
        return False

    def reap(self) -> dict[str, int]:
        """Timeouts: hosts going down, servers of long-down hosts, stuck spawns and deletes."""
        now = self.clock.now()
        c = self.config
        counts = {"hosts_down": 0, "servers_failed": 0, "spawn_timeouts": 0, "deleted": 0,
                  "action_timeouts": 0}
        touched: set[str] = set()
        with self.db.write() as s:
            silent = now - dt.timedelta(seconds=c.host_down_after)
            if self.started > silent:  # heartbeats before this controller ran count from it
                silent = dt.datetime.min.replace(tzinfo=dt.UTC)
            # locked, and re-checked by PostgreSQL against a heartbeat committed meanwhile
            for host in s.scalars(select(Host).where(Host.state == "up",
                                                     Host.last_heartbeat < silent)
                                  .with_for_update()):
                host.state = HOST.next(host.state, "missed_heartbeats")
                host.down_since = now
                counts["hosts_down"] += 1
                log.error("host is down", extra={"host": host.name, "event": "host.down"})
            grace = now - dt.timedelta(seconds=c.instance_error_after)
            for host in s.scalars(select(Host).where(Host.state == "down",
                                                     Host.down_since <= grace)
                                  .with_for_update()):
                lost = lose_servers(s, host.id, f"Compute host {host.name} is down: no "
                                    f"heartbeat since {host.last_heartbeat:%Y-%m-%d %H:%M:%S}Z.",
                                    now)
                counts["servers_failed"] += lost
                if lost:
                    touched.add(host.id)
            spawn_limit = now - dt.timedelta(seconds=c.spawn_timeout)
            for inst in s.scalars(select(Instance).where(Instance.state == "spawning",
                                                         Instance.state_changed_at < spawn_limit)
                                  .with_for_update()):
                inst.state = INSTANCE.next(inst.state, "timeout")
                inst.state_changed_at = inst.updated_at = now
                inst.fault = fault(500, f"Timed out after {c.spawn_timeout:.0f} s while "
                                        f"spawning.", now)
                counts["spawn_timeouts"] += 1
                after_commit(s, functools.partial(metrics.server_failed, "spawn_timeout"))
                touched.add(inst.host_id or "")
            delete_limit = now - dt.timedelta(seconds=INSTANCE.states["deleting"].timeout or 300)
            for inst in s.scalars(select(Instance).where(Instance.state == "deleting",
                                                         Instance.state_changed_at < delete_limit)
                                  .with_for_update()):
                inst.state = INSTANCE.next(inst.state, "timeout")
                touched.add(inst.host_id or "")
                self.servers.remove(s, inst)
                counts["deleted"] += 1
            counts["action_timeouts"] = reap_actions(s, now, touched)
            bump(s, touched, self.notify)
        return counts

    # ---- operators ---------------------------------------------------------------------------

    def names(self, ids: set[str]) -> dict[str, str]:
        """id -> name of the given hosts (one indexed query)."""
        if not ids:
            return {}
        with self.db.read() as s:
            return {str(i): str(n) for i, n in s.execute(
                select(Host.id, Host.name).where(Host.id.in_(list(ids))))}

    def list_hosts(self) -> list[Host]:
        with self.db.read() as s:
            return list(s.scalars(select(Host).order_by(Host.name)))

    def set_enabled(self, caller: Caller, name_or_id: str, enabled: bool,
                    reason: str | None = None) -> Host:
        if not caller.is_admin:
            raise Forbidden("Only administrators can enable or disable compute hosts.")
        with self.db.write() as s:
            host = s.get(Host, name_or_id) or s.scalar(select(Host).where(Host.name ==
                                                                          name_or_id))
            if host is None:
                raise NotFound(f"Compute host {name_or_id} could not be found.")
            host.enabled = enabled
            host.disabled_reason = None if enabled else reason
        return host

