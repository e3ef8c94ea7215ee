"""Nova's simple tenant usage (os-simple-tenant-usage) from the usage records (site.usage): per
project, the hours its servers lived within a period and those hours times their vCPUs, RAM
(MB) and disk (GB); per server when asked. The totals are one GROUP BY over the records
alive in the period (clipped to it in SQL), so they cover every server whatever their number;
the per-server rows are bounded (MAX_SERVERS, the oldest first, as Nova's max_limit at 2.1)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from infracloud.compute.servers import VM_STATE
from infracloud.core.clock import Clock, as_utc
from infracloud.core.errors import BadRequest
from infracloud.site.usage import _overlap, _overlapping, _seconds
from infracloud.store import Database
from infracloud.store.models import Instance, UsageRecord

MAX_SERVERS = 1000  # per-server rows in one answer (Nova's [api] max_limit)


def nova_time(t: dt.datetime | None) -> str | None:
    """Nova's usage timestamps: naive UTC with microseconds, 2012-10-08T20:10:44.587336."""
    return None if t is None else as_utc(t).strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclass(frozen=True)
class Period:
    start: dt.datetime
    stop: dt.datetime


class TenantUsage:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def period(self, start: dt.datetime | None, end: dt.datetime | None) -> Period:
        """Nova's: each bound defaults to now, start must come before end, and the end is
        clipped to now (the future holds no use yet)."""
        now = self.clock.now()
        start, stop = start or now, end or now
        if not start < stop:
            raise BadRequest("Invalid start time. The start time cannot occur after the end "
                             "time.")
        return Period(start, min(stop, now) if start < now else stop)

    def usages(self, period: Period, project_id: str | None = None, *, detailed: bool
               ) -> list[dict[str, Any]]:
        """One summary per project that used something in the period (only `project_id`'s
        when given), with its servers' rows when `detailed`."""
        now = self.clock.now()
        lo, hi = _seconds(period.start), _seconds(period.stop)
        secs = _overlap(lo, hi, now)
        where = [_overlapping(period.start, period.stop, now)]
        if project_id is not None:
            where.append(UsageRecord.project_id == project_id)
        totals = (select(UsageRecord.project_id, func.sum(secs),
                         func.sum(secs * UsageRecord.vcpus),
                         func.sum(secs * UsageRecord.ram_mb),
                         func.sum(secs * UsageRecord.disk_gb))
                  .where(*where).group_by(UsageRecord.project_id)
                  .order_by(UsageRecord.project_id))
        with self.db.read() as s:
            found = list(s.execute(totals))
            servers = list(s.execute(
                select(UsageRecord, secs, Instance.state).outerjoin(
                    Instance, Instance.id == UsageRecord.instance_id).where(*where)
                .order_by(UsageRecord.started_at, UsageRecord.instance_id)
                .limit(MAX_SERVERS))) if detailed else []
        out: dict[str, dict[str, Any]] = {}
        for project, hours, cpu, ram, disk in found:
            out[project] = {
                "tenant_id": project, "start": nova_time(period.start),
                "stop": nova_time(period.stop), "total_hours": _h(hours),
                "total_vcpus_usage": _h(cpu), "total_memory_mb_usage": _h(ram),
                "total_local_gb_usage": _h(disk)}
            if detailed:
                out[project]["server_usages"] = []
        for record, seconds, state in servers:
            if record.project_id in out:
                out[record.project_id]["server_usages"].append(
                    _server(record, float(seconds or 0), state, now))
        return list(out.values())


def _h(seconds: Any) -> float:
    return round(float(seconds or 0) / 3600, 6)


def _server(r: UsageRecord, seconds: float, state: str | None, now: dt.datetime
            ) -> dict[str, Any]:
    ended = r.ended_at
    uptime = (as_utc(ended) if ended else now) - as_utc(r.started_at)
    return {"instance_id": r.instance_id, "name": r.name, "tenant_id": r.project_id,
            "flavor": r.flavor, "hours": _h(seconds), "vcpus": r.vcpus, "memory_mb": r.ram_mb,
            "local_gb": r.disk_gb, "started_at": nova_time(r.started_at),
            "ended_at": nova_time(ended),
            "state": "terminated" if ended else VM_STATE.get(state or "", "active"),
            "uptime": int(uptime.total_seconds())}
