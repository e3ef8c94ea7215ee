"""The site's capacity over time, for the usage chart: every few minutes (the maintenance loop
asks every minute) what the hosts that take servers (up and enabled) hold, with their
allocation ratios and less what they reserve. A timeline reads it back as one value per step:
the average of the step's samples, else the last one before it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock
from infracloud.store import Database
from infracloud.store.models import CapacitySample, Host

SAMPLE_EVERY = dt.timedelta(minutes=5)
RESOURCES = ("vcpus", "ram_gb", "disk_gb")
_UNITS = (1.0, 1024.0, 1.0)  # vCPUs, MiB → GiB, GB


def _read(s: Session) -> tuple[int, float, float, float]:
    """The hosts taking servers now: how many, and their vCPUs, RAM (MiB) and disk (GB)."""
    hosts, vcpus, ram_mb, disk_gb = s.execute(
        select(func.count(), func.sum(Host.size_vcpus), func.sum(Host.size_ram_mb),
               func.sum(Host.size_disk_gb)).where(Host.takes_servers)).one()
    return int(hosts or 0), float(vcpus or 0), float(ram_mb or 0), float(disk_gb or 0)


def current(s: Session) -> dict[str, float]:
    """What the hosts taking servers hold now (vCPUs, RAM GiB, disk GB)."""
    _, *values = _read(s)
    return {r: v / u for r, v, u in zip(RESOURCES, values, _UNITS, strict=True)}


def sample(db: Database, clock: Clock) -> bool:
    """Record the capacity now unless a sample is younger than SAMPLE_EVERY (several
    controllers may ask: an extra sample only weighs in an average). Whether it recorded."""
    now = clock.now()
    with db.write() as s:
        last = s.scalar(select(func.max(CapacitySample.at)))
        if last is not None and now - last < SAMPLE_EVERY:
            return False
        hosts, vcpus, ram_mb, disk_gb = _read(s)
        s.add(CapacitySample(at=now, hosts=hosts, vcpus=vcpus, ram_mb=ram_mb,
                             disk_gb=disk_gb))
    return True


def series(s: Session, since: dt.datetime, step: dt.timedelta, n: int,
           now: dict[str, float]) -> dict[str, list[float]]:
    """One value per step from `since`: the average of its samples, else the last value
    before it; steps before the first sample take the first one, and with no sample at all
    every step is `now`."""
    until = since + n * step
    sums = [[0.0, 0.0, 0.0] for _ in range(n)]
    counts = [0] * n
    rows = s.execute(select(CapacitySample.at, CapacitySample.vcpus, CapacitySample.ram_mb,
                            CapacitySample.disk_gb)
                     .where(CapacitySample.at >= since, CapacitySample.at < until)
                     .order_by(CapacitySample.at).execution_options(yield_per=5000))
    for at, *values in rows:
        i = min(int((at - since) / step), n - 1)
        counts[i] += 1
        for r, value in enumerate(values):
            sums[i][r] += float(value)
    before = s.execute(select(CapacitySample.vcpus, CapacitySample.ram_mb,
                              CapacitySample.disk_gb)
                       .where(CapacitySample.at < since)
                       .order_by(CapacitySample.at.desc()).limit(1)).first()
    carry: list[float] | None = [float(v) for v in before] if before is not None else None
    steps: list[list[float] | None] = []
    for i in range(n):
        if counts[i]:
            carry = [v / counts[i] for v in sums[i]]
        steps.append(carry)
    first = next((v for v in steps if v is not None), None)
    if first is None:
        return {r: [now[r]] * n for r in RESOURCES}
    filled = [v if v is not None else first for v in steps]
    return {r: [v[k] / _UNITS[k] for v in filled] for k, r in enumerate(RESOURCES)}


def prune(db: Database, cutoff: dt.datetime) -> int:
    with db.write() as s:
        result = s.execute(delete(CapacitySample).where(CapacitySample.at < cutoff)
                           .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def as_lists(values: dict[str, list[float]]) -> dict[str, Any]:
    return {r: [round(v, 3) for v in values[r]] for r in RESOURCES}
