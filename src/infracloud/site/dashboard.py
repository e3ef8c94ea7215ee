"""What the dashboard's pages show, read from the database and the site status, and the
templates that render them (server-side, Jinja2 with autoescape on; charts as inline SVG from
ops/charts.py). The router (api/dashboard.py) only picks the page and answers."""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from sqlalchemy import case, func, or_, select

from infracloud.core.clock import as_utc, isoformat
from infracloud.core.errors import BadRequest
from infracloud.ops import alerting as al
from infracloud.ops import events as ev
from infracloud.site import charts
from infracloud.site.alerts import stored
from infracloud.site.collectors import INSTANCE_STATES, POOL_NODE_STATES, RESOURCES
from infracloud.site.status import firing_alerts, instance_counts
from infracloud.site.units import RESOURCE_TITLES, ago, amount, percent
from infracloud.store import Database
from infracloud.store.models import Event, Flavor, Host, Instance, Project

REFRESH_MS = 3000
INSTANCE_ROWS = 500
EVENT_ROWS = 200
ALERT_HISTORY = 50
RATE_MINUTES = 60
EVENT_KINDS = ("state", "api", "alert")

# the CSS class (colour) of each state
INSTANCE_CLASSES = {"active": "ok", "error": "bad", "scheduling": "busy", "networking": "busy",
                    "spawning": "busy", "deleting": "muted"}
POOL_NODE_CLASSES = {"building": "busy", "ready": "ok", "in-use": "info", "used": "muted",
                     "held": "warn", "failed": "bad", "deleting": "muted"}
KIND_CLASSES = {"state": "info", "api": "muted", "alert": "bad"}
PAGES = (("overview", "/dashboard", "Overview"), ("instances", "/dashboard/instances",
                                                  "Instances"),
         ("pool", "/dashboard/pool", "Pool"), ("events", "/dashboard/events", "Events"),
         ("alerts", "/dashboard/alerts", "Alerts"))


# ---- formatting ------------------------------------------------------------------------------

def clock_time(iso: str | None) -> str:
    """2026-01-01T12:34:56.123456Z → 12:34:56 (the pages say the times are UTC)."""
    if not iso:
        return ""
    return iso[11:19]


def counted(labels: Sequence[str]) -> str:
    """Labels as `infracloud pool requests` writes them: ubuntu-noble x12, centos."""
    counts = Counter(labels)
    return ", ".join(f"{label} x{n}" if n > 1 else label for label, n in counts.items())


def link(path: str, **params: Any) -> str:
    keep = {k: v for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(keep) if keep else "")


@functools.cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("infracloud.site", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ago=ago, clock=clock_time, amount=amount, counted=counted)
    env.globals.update(percent=percent, link=link, pages=PAGES,
                       resource_titles=RESOURCE_TITLES, instance_classes=INSTANCE_CLASSES,
                       pool_node_classes=POOL_NODE_CLASSES, kind_classes=KIND_CLASSES,
                       refresh_ms=REFRESH_MS)
    return env


def template(name: str) -> Template:
    return environment().get_template(name)


def render(content: str, *, fragment: bool, site: dict[str, Any], now: dt.datetime,
           alerts: list[dict[str, Any]], page: str, title: str, signed_in: str | None = None,
           **context: Any) -> str:
    """A whole page around the `content` template, or only its live part (`fragment`: what
    the page's script fetches every few seconds): the alert banner and the content.
    `signed_in`: the user of a dashboard sign-in (a "Sign out" button)."""
    return template("_live.html" if fragment else "layout.html").render(
        site=site, now=isoformat(now), alerts=alerts, page=page, title=title,
        content=content, signed_in=signed_in, **context)


def overview(status: dict[str, Any]) -> dict[str, Any]:
    """The overview page's view of the site status."""
    return {"status": status, "host_cells": host_cells(status["hosts"]["rows"]),
            "capacity": capacity_bars(status["capacity"]),
            "instance_chart": instance_bars(status["instances"]["by_state"])}


# ---- charts of the status ----------------------------------------------------------------

def capacity_bars(capacity: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per resource: used, free (where servers can go) and unavailable (down, disabled or
    fenced hosts) of the total."""
    out = []
    for r in RESOURCES:
        c = capacity[r]
        used, free, total = c["used"], c["free"], c["total"]
        hot = total and used / total >= 0.9
        title = RESOURCE_TITLES[r]
        parts = [charts.Part(used, "used hot" if hot else "used",
                             f"{title}: {amount(used, r)} used"),
                 charts.Part(free, "free", f"{title}: {amount(free, r)} free"),
                 charts.Part(c["unavailable"], "unavail",
                             f"{title}: {amount(c['unavailable'], r)} on hosts that take no "
                             f"servers (down, disabled or fenced)")]
        out.append({"resource": r, "title": title, "used": used, "free": free, "total": total,
                    "unavailable": c["unavailable"],
                    "chart": charts.stacked_bar(parts, total, f"{title} capacity",
                                                text=percent(used, total) + " used")})
    return out


def instance_bars(by_state: dict[str, int]) -> charts.Chart:
    return charts.hbars([(st, by_state.get(st, 0), INSTANCE_CLASSES.get(st, "info"))
                         for st in INSTANCE_STATES], "Servers by state")


def pool_charts(pool: dict[str, Any]) -> dict[str, charts.Chart]:
    waiting = sorted(pool["waiting_by_label"].items())
    ages = [(f"{r['id'][-8:]} {counted(r['labels'])}"[:24],
             float(int(r["age_seconds"])), "warn" if r["age_seconds"] >= 600 else "busy")
            for r in pool["requests"][:15]]
    return {
        "waiting": charts.hbars([(label, n, "busy") for label, n in waiting],
                                "Requests waiting by label", label_width=120),
        "ages": charts.hbars(ages, "Age of the waiting requests (seconds)", label_width=170,
                             unit=" s"),
        "nodes": charts.hbars([(st, pool["nodes_by_state"].get(st, 0),
                                POOL_NODE_CLASSES.get(st, "info")) for st in POOL_NODE_STATES],
                              "Pool nodes by state", label_width=120),
    }


# ---- page data ---------------------------------------------------------------------------

def banner(db: Database, now: dt.datetime) -> list[dict[str, Any]]:
    """The firing alerts every page shows on top."""
    with db.read() as s:
        return firing_alerts(s, now)


def project_id(db: Database, value: str | None) -> str | None:
    """A project's id from its name or id (a deleted project's id stays as given)."""
    if not value:
        return None
    with db.read() as s:
        found = s.scalar(select(Project.id).where(or_(Project.id == value,
                                                      Project.name == value)).limit(1))
    return found or value


def project_names(db: Database, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    with db.read() as s:
        return dict(s.execute(select(Project.id, Project.name).where(Project.id.in_(ids))).all())


def named(db: Database, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events (as dicts) with their project's name as `project` (its id when it is gone)."""
    names = project_names(db, {e["project_id"] for e in events if e["project_id"]})
    for e in events:
        e["project"] = names.get(e["project_id"], e["project_id"])
    return events


@dataclass(frozen=True)
class InstanceFilter:
    state: str | None = None
    project: str | None = None
    host: str | None = None

    def check(self) -> None:
        if self.state is not None and self.state not in INSTANCE_STATES:
            raise BadRequest(f"state must be one of {', '.join(INSTANCE_STATES)}, not "
                             f"{self.state!r}.")


def instances_page(db: Database, now: dt.datetime, f: InstanceFilter) -> dict[str, Any]:
    f.check()
    stmt = (select(Instance.id, Instance.name, Instance.state, Instance.project_id,
                   Project.name, Host.name, Flavor.name, Instance.ip_address,
                   Instance.created_at, Instance.state_changed_at, Instance.fault,
                   Instance.expires_at)
            .outerjoin(Host, Host.id == Instance.host_id)
            .outerjoin(Flavor, Flavor.id == Instance.flavor_id)
            .outerjoin(Project, Project.id == Instance.project_id))
    if f.state:
        stmt = stmt.where(Instance.state == f.state)
    if f.project:
        stmt = stmt.where(or_(Instance.project_id == f.project, Project.name == f.project))
    if f.host:
        stmt = stmt.where(Host.name == f.host)
    with db.read() as s:
        counts = instance_counts(s)
        rows = list(s.execute(stmt.order_by(Instance.created_at.desc(), Instance.id)
                              .limit(INSTANCE_ROWS)))
    servers = [{"id": i, "name": name, "state": state, "project_id": pid,
                "project": pname or pid, "host": host, "flavor": flavor, "ip": ip,
                "created_at": isoformat(created), "age": (now - created).total_seconds(),
                "in_state": (now - changed).total_seconds(),
                "fault": (fault or {}).get("message") if state == "error" else None,
                # its lifetime's end (compute/lifetimes.py): seconds left, None: no expiry
                "expires_at": isoformat(expires),
                "expires_in": (as_utc(expires) - now).total_seconds() if expires else None}
               for (i, name, state, pid, pname, host, flavor, ip, created, changed, fault,
                    expires) in rows]
    return {"instances": counts, "chart": instance_bars(counts["by_state"]),
            "servers": servers, "filter": f, "limit": INSTANCE_ROWS}


@dataclass(frozen=True)
class EventFilter:
    project: str | None = None
    host: str | None = None
    kind: str | None = None

    def check(self) -> None:
        if self.kind is not None and self.kind not in EVENT_KINDS:
            raise BadRequest(f"kind must be {', '.join(EVENT_KINDS)}, not {self.kind!r}.")


def event_rate(db: Database, now: dt.datetime, project: str | None, f: EventFilter,
               minutes: int = RATE_MINUTES) -> tuple[list[dt.datetime], list[dict[str, int]]]:
    """Events per minute over the last `minutes` (the current one last), by kind: one scan
    of the time index, counting the events before each minute's end."""
    end = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    starts = [end - dt.timedelta(minutes=minutes - i) for i in range(minutes)]
    before = [func.sum(case((Event.at < start + dt.timedelta(minutes=1), 1), else_=0))
              for start in starts]
    stmt = (select(Event.kind, *before).where(Event.at >= starts[0], Event.at < end)
            .group_by(Event.kind))
    for column, value in ((Event.project_id, project), (Event.host, f.host),
                          (Event.kind, f.kind)):
        if value is not None:
            stmt = stmt.where(column == value)
    counts: list[dict[str, int]] = [{} for _ in range(minutes)]
    with db.read() as s:
        for kind, *running in s.execute(stmt):
            previous = 0
            for i, n in enumerate(int(n or 0) for n in running):
                if n > previous:
                    counts[i][kind] = n - previous
                previous = n
    return starts, counts


def events_page(db: Database, log: ev.EventLog, now: dt.datetime, f: EventFilter
                ) -> dict[str, Any]:
    f.check()
    pid = project_id(db, f.project)
    rows = [ev.to_dict(e) for e in log.query(ev.Query(
        project_id=pid, host=f.host, kind=f.kind, limit=EVENT_ROWS, newest_first=True))]
    named(db, rows)
    starts, counts = event_rate(db, now, pid, f)
    total = sum(sum(c.values()) for c in counts)
    chart = charts.histogram(starts, counts, [(k, KIND_CLASSES[k]) for k in EVENT_KINDS],
                             f"Events per minute over the last {RATE_MINUTES} minutes")
    return {"events": rows, "filter": f, "chart": chart, "hour_total": total,
            "limit": EVENT_ROWS, "kinds": EVENT_KINDS}


def alerts_page(db: Database, now: dt.datetime) -> dict[str, Any]:
    with db.read() as s:
        resolved = [al.view(a, now) for a in stored(s, al.RESOLVED, ALERT_HISTORY)]
    return {"resolved": resolved}


def host_cells(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hosts grid: each host's state and how full it is (the fullest resource)."""
    cells = []
    for h in rows:
        fill = max((h[r]["used"] / h[r]["total"] for r in RESOURCES if h[r]["total"]),
                   default=0.0)
        cells.append({**h, "fill": round(min(fill, 1.0) * 100),
                      "title": f"{h['name']}: {h['state']}"
                               + (f" ({h['note']})" if h["note"] else "")
                               + f", {h['instances']} servers, "
                               + ", ".join(f"{RESOURCE_TITLES[r]} {amount(h[r]['used'], r)}"
                                           f"/{amount(h[r]['total'], r)}" for r in RESOURCES)})
    return cells
