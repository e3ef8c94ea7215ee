"""Usage reports: instance-, vCPU-, RAM- and disk-hours by project, user, flavor or host over a
period, from the usage records the event hook writes (ops.events: one per server placed on a
host, from its creation until its record is removed). Each record is clipped to the period in
SQL (open records end now) and summed with one GROUP BY, so a report reads a few rows whatever
the number of servers; the utilisation over time (for the chart) is one more query, joined to
a recursive series of time steps. CSV, JSON and a PNG chart (matplotlib), and how many more
servers of each flavor fit (hardware.capacity)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Float, Integer, and_, case, delete, false, func, literal_column, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from infracloud.core.clock import Clock, isoformat
from infracloud.core.errors import BadRequest
from infracloud.core.settings import ControllerConfig
from infracloud.hardware.capacity import capacities
from infracloud.site import capacity_history as history
from infracloud.site.units import USAGE_GROUPS, month_start
from infracloud.store import Database
from infracloud.store.models import Project, UsageRecord, User

GROUPS = USAGE_GROUPS
FORMATS = ("json", "csv", "png")
MEASURES = ("instance_hours", "vcpu_hours", "ram_gb_hours", "disk_gb_hours")
TOTAL = "(total)"
NO_HOST = "-"
MAX_STEPS = 2000  # points of a timeline
CHART_POINTS = 120  # what the automatic step aims at
CHART_SERIES = 8  # groups drawn by name in the chart; the rest are "other"
# the steps a timeline's automatic step is rounded up to
NICE_STEPS = tuple(dt.timedelta(minutes=m) for m in (
    1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080))
DIGITS = 6  # hours are rounded to this many decimals (a few milliseconds)


# ---- portable SQL -----------------------------------------------------------------------


class Epoch(FunctionElement[float]):
    """Seconds since 1970 of a UTC timestamp column, as a float, on SQLite and PostgreSQL."""

    type = Float()
    name = "epoch"
    inherit_cache = True


@compiles(Epoch, "sqlite")
def _epoch_sqlite(element: Epoch, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps naive UTC text; julianday() reads it to the millisecond, and the rounding
    # takes off what the days' floating point adds
    return (f"round((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) "
            f"* 86400.0, 3)")


@compiles(Epoch)
def _epoch_default(element: Epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return (f"CAST(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) "
            f"AS DOUBLE PRECISION)")


def _later(a: Any, b: Any) -> ColumnElement[float]:
    return case((a > b, a), else_=b)


def _earlier(a: Any, b: Any) -> ColumnElement[float]:
    return case((a < b, a), else_=b)


def _seconds(t: dt.datetime) -> ColumnElement[float]:
    return literal_column(repr(t.timestamp()), Float)


def _overlap(lo: Any, hi: Any, now: dt.datetime) -> ColumnElement[float]:
    """Seconds of a record's life within [lo, hi) (epoch seconds), 0 when none."""
    start = Epoch(UsageRecord.started_at)
    end = func.coalesce(Epoch(UsageRecord.ended_at), _seconds(now))
    span = _earlier(end, hi) - _later(start, lo)
    return case((span > 0, span), else_=0.0)


def _overlapping(since: dt.datetime, until: dt.datetime, now: dt.datetime
                 ) -> ColumnElement[bool]:
    """Records alive some time in [since, until): index range on started_at first."""
    open_overlaps = UsageRecord.ended_at.is_(None) if now > since else false()
    return and_(UsageRecord.started_at < until,
                or_(UsageRecord.ended_at > since, open_overlaps))


def _group(by: str) -> tuple[Any, Any, Any]:
    """(key, label, outer join) of a grouping: projects and users by name, falling back to
    the id once they are deleted."""
    if by == "project":
        return (UsageRecord.project_id, func.coalesce(Project.name, UsageRecord.project_id),
                (Project, Project.id == UsageRecord.project_id))
    if by == "user":
        return (UsageRecord.user_id, func.coalesce(User.name, UsageRecord.user_id),
                (User, User.id == UsageRecord.user_id))
    if by == "flavor":
        return UsageRecord.flavor, UsageRecord.flavor, None
    if by == "host":
        host = func.coalesce(UsageRecord.host, NO_HOST)
        return host, host, None
    raise BadRequest(f"by must be one of {', '.join(GROUPS)}, not {by!r}.")


# ---- what a report holds ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    id: str | None  # the project's or user's id (None for flavors and hosts, and the total)
    servers: int
    instance_hours: float
    vcpu_hours: float
    ram_gb_hours: float
    disk_gb_hours: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    site: str
    by: str
    since: dt.datetime
    until: dt.datetime
    generated_at: dt.datetime
    rows: list[Row]
    total: Row
    capacity_left: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "by": self.by, "since": isoformat(self.since),
                "until": isoformat(self.until), "generated_at": isoformat(self.generated_at),
                "rows": [r.as_dict() for r in self.rows], "total": self.total.as_dict(),
                "capacity_left": self.capacity_left}

    def csv(self) -> str:
        """One line per group and a last line for the total; projects and users with their
        ids."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        with_id = self.by in ("project", "user")
        w.writerow([self.by, *([f"{self.by}_id"] if with_id else []), "servers", *MEASURES])
        for r in [*self.rows, self.total]:
            w.writerow([r.name, *([r.id or ""] if with_id else []), r.servers,
                        *(getattr(r, m) for m in MEASURES)])
        return out.getvalue()


@dataclass
class Timeline:
    """Average use during each step (vCPUs, RAM GiB, disk GB) per group, oldest first, and
    the capacity of the hosts taking servers (with their overcommit ratios, less what they
    reserve): now, and during each step."""

    site: str
    by: str
    since: dt.datetime
    until: dt.datetime
    step: dt.timedelta
    times: list[dt.datetime]  # the start of each step
    groups: list[str]  # the largest vCPU users first
    vcpus: dict[str, list[float]]
    ram_gb: dict[str, list[float]]
    disk_gb: dict[str, list[float]]
    capacity: dict[str, float]  # now
    capacity_over_time: dict[str, list[float]]  # per step (ops.capacity_history)

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "by": self.by, "since": isoformat(self.since),
                "until": isoformat(self.until), "step_seconds": self.step.total_seconds(),
                "times": [isoformat(t) for t in self.times], "groups": self.groups,
                "vcpus": self.vcpus, "ram_gb": self.ram_gb, "disk_gb": self.disk_gb,
                "capacity": self.capacity,
                "capacity_over_time": history.as_lists(self.capacity_over_time)}


def auto_step(span: dt.timedelta, points: int = CHART_POINTS) -> dt.timedelta:
    """The smallest round step that draws `span` in at most about `points` points."""
    want = span / points
    return next((s for s in NICE_STEPS if s >= want),
                dt.timedelta(days=math.ceil(want / dt.timedelta(days=1))))


def _hours(seconds: Any) -> float:
    return round(float(seconds or 0) / 3600, DIGITS)


# ---- the service --------------------------------------------------------------------------


class UsageReports:
    def __init__(self, db: Database, clock: Clock, config: ControllerConfig) -> None:
        self.db = db
        self.clock = clock
        self.site = config.site
        self.retention = dt.timedelta(days=config.ops.usage_retention_days)

    def period(self, since: dt.datetime | None, until: dt.datetime | None
               ) -> tuple[dt.datetime, dt.datetime]:
        """[since, until): by default from the start of this month (UTC) until now."""
        now = self.clock.now()
        since = since or month_start(now)
        until = until or now
        if since >= until:
            raise BadRequest(f"since ({isoformat(since)}) must be before until "
                             f"({isoformat(until)}).")
        return since, until

    def report(self, since: dt.datetime | None = None, until: dt.datetime | None = None,
               by: str = "project", *, with_capacity: bool = True) -> Report:
        since, until = self.period(since, until)
        now = self.clock.now()
        key, label, join = _group(by)
        lo, hi = _seconds(since), _seconds(until)
        inner = select(key.label("key"), label.label("label"),
                       _overlap(lo, hi, now).label("secs"), UsageRecord.vcpus,
                       UsageRecord.ram_mb, UsageRecord.disk_gb)
        if join is not None:
            inner = inner.outerjoin(*join)
        sub = inner.where(_overlapping(since, until, now)).subquery()
        stmt = (select(sub.c.key, sub.c.label, func.count(), func.sum(sub.c.secs),
                       func.sum(sub.c.secs * sub.c.vcpus), func.sum(sub.c.secs * sub.c.ram_mb),
                       func.sum(sub.c.secs * sub.c.disk_gb))
                .group_by(sub.c.key, sub.c.label))
        with self.db.read() as s:
            found = list(s.execute(stmt))
        rows = [Row(name=str(name), id=str(k) if by in ("project", "user") and k else None,
                    servers=int(n), instance_hours=_hours(secs), vcpu_hours=_hours(cpu),
                    ram_gb_hours=_hours(float(ram or 0) / 1024), disk_gb_hours=_hours(disk))
                for k, name, n, secs, cpu, ram, disk in found]
        rows.sort(key=lambda r: (-r.vcpu_hours, r.name))
        total = Row(name=TOTAL, id=None, servers=sum(r.servers for r in rows),
                    **{m: round(sum(getattr(r, m) for r in rows), DIGITS) for m in MEASURES})
        return Report(site=self.site, by=by, since=since, until=until, generated_at=now,
                      rows=rows, total=total,
                      capacity_left=self.capacity_left() if with_capacity else [])

    def timeline(self, since: dt.datetime | None = None, until: dt.datetime | None = None,
                 by: str = "project", step: dt.timedelta | None = None) -> Timeline:
        """Use over time, one point per step (the average over the step), until now at
        most: the future holds no use yet."""
        since, until = self.period(since, until)
        now = self.clock.now()
        until = min(until, now) if since < now else until
        step = step or auto_step(until - since)
        if step.total_seconds() < 1:
            raise BadRequest("step must be at least a second.")
        n = math.ceil((until - since) / step)
        if n > MAX_STEPS:
            raise BadRequest(f"{n} steps of {step} are too many (at most {MAX_STEPS}): "
                             f"ask for a longer step or a shorter period.")
        key, label, join = _group(by)
        steps = select(literal_column("0", Integer).label("i")).cte("steps", recursive=True)
        steps = steps.union_all(select((steps.c.i + 1).label("i")).where(steps.c.i < n - 1))
        lo = _seconds(since) + steps.c.i * step.total_seconds()
        hi = _earlier(lo + step.total_seconds(), _seconds(until))
        inner = (select(steps.c.i, key.label("key"), label.label("label"),
                        _overlap(lo, hi, now).label("secs"), UsageRecord.vcpus,
                        UsageRecord.ram_mb, UsageRecord.disk_gb)
                 .select_from(UsageRecord).join(steps, and_(
                     Epoch(UsageRecord.started_at) < hi,
                     func.coalesce(Epoch(UsageRecord.ended_at), _seconds(now)) > lo)))
        if join is not None:
            inner = inner.outerjoin(*join)
        sub = inner.where(_overlapping(since, until, now)).subquery()
        stmt = (select(sub.c.i, sub.c.label, func.sum(sub.c.secs * sub.c.vcpus),
                       func.sum(sub.c.secs * sub.c.ram_mb), func.sum(sub.c.secs * sub.c.disk_gb))
                .group_by(sub.c.i, sub.c.key, sub.c.label))
        with self.db.read() as s:
            found = list(s.execute(stmt))
            capacity = history.current(s)
            over_time = history.series(s, since, step, n, capacity)
        times = [since + i * step for i in range(n)]
        lengths = [(min(t + step, until) - t).total_seconds() for t in times]
        use: dict[str, dict[str, list[float]]] = {r: {} for r in ("vcpus", "ram", "disk")}
        for i, name, cpu, ram, disk in found:
            for resource, value, unit in (("vcpus", cpu, 1), ("ram", ram, 1024),
                                          ("disk", disk, 1)):
                series = use[resource].setdefault(str(name), [0.0] * n)
                series[int(i)] += float(value or 0) / unit / lengths[int(i)]
        groups = sorted(use["vcpus"], key=lambda g: (-sum(use["vcpus"][g]), g))
        return Timeline(site=self.site, by=by, since=since, until=until, step=step,
                        times=times, groups=groups, vcpus=use["vcpus"], ram_gb=use["ram"],
                        disk_gb=use["disk"], capacity=capacity, capacity_over_time=over_time)

    def capacity_left(self) -> list[dict[str, Any]]:
        """For each flavor, smallest first: how many more servers fit now, how many the hosts
        hold when empty, and the resource that binds (hardware.capacity)."""
        return [{"flavor": c.flavor, "free": c.free, "total": c.total, "in_use": c.in_use,
                 "binding": c.binding, "hosts": c.hosts} for c in capacities(self.db, self.site)]

    def png(self, since: dt.datetime | None = None, until: dt.datetime | None = None,
            by: str = "project", step: dt.timedelta | None = None) -> bytes:
        return chart(self.timeline(since, until, by, step))

    def sample_capacity(self) -> bool:
        """The maintenance loop's call: a capacity sample every few minutes."""
        return history.sample(self.db, self.clock)

    def prune(self) -> int:
        """Forget servers gone longer than ops.usage_retention_days (and capacity samples
        as old)."""
        cutoff = self.clock.now() - self.retention
        history.prune(self.db, cutoff)
        with self.db.write() as s:
            # ended before the cutoff, so started before it too: a range of the span index
            result = s.execute(delete(UsageRecord).where(UsageRecord.started_at < cutoff,
                                                         UsageRecord.ended_at < cutoff)
                               .execution_options(synchronize_session=False))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---- the chart ----------------------------------------------------------------------------


def _stacked(t: Timeline, limit: int = CHART_SERIES) -> tuple[list[str], list[Sequence[float]]]:
    """The largest `limit` groups by name, the others summed as "other"."""
    named = t.groups[:limit]
    series: list[Sequence[float]] = [t.vcpus[g] for g in named]
    rest = t.groups[limit:]
    if rest:
        named = [*named, f"other ({len(rest)})"]
        series.append([sum(t.vcpus[g][i] for g in rest) for i in range(len(t.times))])
    return named, series


def chart(t: Timeline) -> bytes:
    """A PNG: vCPUs in use per group over time (stacked), and the hosts' vCPUs as a line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    # matplotlib's day numbers, of UTC times (as the title says)
    times = [float(x) for x in date2num([x.replace(tzinfo=None) for x in t.times])]
    end = float(date2num(t.until.replace(tzinfo=None)))
    names, series = _stacked(t)
    if times:
        if series:  # each step's average holds until the next step, the last until the end
            ax.stackplot([*times, end], *([*s, s[-1]] for s in series), labels=names,
                         step="post", alpha=0.85)
        cap = t.capacity_over_time["vcpus"]
        ax.step([*times, end], [*cap, cap[-1]], where="post", color="black", linestyle="--",
                linewidth=1.2, label="capacity: the hosts taking\nservers then (now "
                                     f"{t.capacity['vcpus']:g} vCPUs)")
        ax.set_xlim(times[0], end)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    peak = max((sum(values) for values in zip(*series, strict=True)), default=0.0)
    top = max((*t.capacity_over_time["vcpus"], t.capacity["vcpus"], peak, 1))
    ax.set_ylim(bottom=0, top=top * 1.05)
    ax.set_ylabel("vCPUs in use")
    ax.set_xlabel(f"UTC (average over each {_duration(t.step)})")
    ax.set_title(f"{t.site}: vCPUs in use by {t.by}, {t.since:%Y-%m-%d %H:%M} to "
                 f"{t.until:%Y-%m-%d %H:%M} UTC")
    ax.grid(True, alpha=0.3)
    if not t.groups:
        ax.text(0.5, 0.5, "no servers in this period", transform=ax.transAxes,
                ha="center", va="center", color="grey")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _duration(step: dt.timedelta) -> str:
    s = int(step.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if s % size == 0:
            n = s // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{s} seconds"  # unreachable: every step is whole seconds
