"""Placement: filters, a weigher, and atomic claims.

Filters (in SQL, so 10,000 hosts cost one indexed query): the host is enabled, up and has
sent a heartbeat recently; it is in the requested availability zone; its free vCPU, RAM and
disk, after the allocation ratios (1.0 by default: no overcommit) and the host's own
reservation, fit the flavor. The weigher spreads (most free RAM first) or packs (least).

A claim is a conditional UPDATE that re-checks the same arithmetic: if another request took
the room first the update matches no row and the next candidate is tried, so two requests can
never both get the last slot, on any backend and with several controllers."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

from infracloud.ops import metrics
from infracloud.store.models import Host

CANDIDATES = 8


@dataclass(frozen=True)
class Request:
    vcpus: int
    ram_mb: int
    disk_gb: int
    availability_zone: str | None = None
    host: str | None = None  # an administrator's "zone:host" pin
    only_hosts: tuple[str, ...] = ()  # host ids: a server group's affinity
    avoid_hosts: tuple[str, ...] = ()  # host ids: a server group's anti-affinity


def _fits() -> Any:
    return and_(Host.free_vcpus >= bindparam("want_vcpus"),
                Host.free_ram_mb >= bindparam("want_ram"),
                Host.free_disk_gb >= bindparam("want_disk"))


@functools.cache
def _candidates(strategy: str, with_zone: bool, with_host: bool = False, only: bool = False,
                avoid: bool = False) -> Any:
    """Built once per variant; claims only bind values."""
    q = select(Host).where(Host.takes_servers,
                           Host.last_heartbeat >= bindparam("alive"), _fits())
    if only:
        q = q.where(Host.id.in_(bindparam("only_hosts", expanding=True)))
    if avoid:
        q = q.where(Host.id.not_in(bindparam("avoid_hosts", expanding=True)))
    if with_zone:
        q = q.where(Host.availability_zone == bindparam("zone"))
    if with_host:
        q = q.where(Host.name == bindparam("host_name"))
    weight = Host.free_ram_mb
    return q.order_by(weight.desc() if strategy == "spread" else weight.asc(),
                      Host.name).limit(CANDIDATES)


_TAKE = (update(Host).where(Host.id == bindparam("want_host"), _fits())
         .values(used_vcpus=Host.used_vcpus + bindparam("want_vcpus"),
                 used_ram_mb=Host.used_ram_mb + bindparam("want_ram"),
                 used_disk_gb=Host.used_disk_gb + bindparam("want_disk"),
                 generation=Host.generation + 1)
         .execution_options(synchronize_session=False))


def claim(s: Session, req: Request, *, now: dt.datetime, down_after: float,
          strategy: str = "spread") -> Host | None:
    """Pick a host and take the room on it, in the caller's transaction. None: no host fits."""
    params: dict[str, Any] = {"want_vcpus": req.vcpus, "want_ram": req.ram_mb,
                              "want_disk": req.disk_gb,
                              "alive": now - dt.timedelta(seconds=down_after)}
    if req.availability_zone:
        params["zone"] = req.availability_zone
    if req.host:
        params["host_name"] = req.host
    if req.only_hosts:
        params["only_hosts"] = list(req.only_hosts)
    if req.avoid_hosts:
        params["avoid_hosts"] = list(req.avoid_hosts)
    stmt = _candidates(strategy, bool(req.availability_zone), bool(req.host),
                       bool(req.only_hosts), bool(req.avoid_hosts))
    with metrics.scheduler_decision():
        for host in s.scalars(stmt, params):
            taken = s.execute(_TAKE, {**params, "want_host": host.id})
            if getattr(taken, "rowcount", 0) == 1:
                return host
    return None


def take(s: Session, host_id: str, vcpus: int, ram_mb: int, disk_gb: int) -> bool:
    """Take room on one given host (a server it already runs: an adoption), with the same
    conditional update as a claim; False when it does not fit."""
    taken = s.execute(_TAKE, {"want_host": host_id, "want_vcpus": vcpus, "want_ram": ram_mb,
                              "want_disk": disk_gb})
    return getattr(taken, "rowcount", 0) == 1


def release(s: Session, host_id: str, vcpus: int, ram_mb: int, disk_gb: int) -> None:
    s.execute(update(Host).where(Host.id == host_id).values(
        used_vcpus=Host.used_vcpus - vcpus, used_ram_mb=Host.used_ram_mb - ram_mb,
        used_disk_gb=Host.used_disk_gb - disk_gb, generation=Host.generation + 1)
        .execution_options(synchronize_session=False))


def capacity(hosts: list[Host], req: Request) -> int:
    """How many servers of this size the hosts could hold, empty (the no-overcommit bound)."""
    total = 0
    for h in hosts:
        free = [h.size_vcpus // max(req.vcpus, 1), h.size_ram_mb // max(req.ram_mb, 1)]
        if req.disk_gb:
            free.append(h.size_disk_gb // req.disk_gb)
        total += int(max(min(free), 0))
    return total
