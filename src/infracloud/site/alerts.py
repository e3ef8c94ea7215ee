"""The site's alerts (a controller): its health rules over the database, evaluated every
`ops.alerts.interval`, and the `alerts` table the dashboard and `/ops/v1/alerts` read. With
several controllers on PostgreSQL one evaluates at a time under an advisory lock. The
machinery (rules, the ledger, notifier, webhook) is `ops.alerting`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock, isoformat
from infracloud.core.settings import AlertsConfig
from infracloud.hardware.capacity import capacity
from infracloud.hardware.conductor import FENCE_FAULT
from infracloud.hardware.drain import FENCED
from infracloud.ops import context
from infracloud.ops.alerting import (
    CRITICAL,
    FIRING,
    MAX_LIST,
    RESOLVED,
    STATES,
    WARNING,
    AlertRecord,
    Checker,
    Finding,
    Notifier,
    Rule,
    apply,
    failure_rate,
)
from infracloud.ops.events import EventLog
from infracloud.store import Database
from infracloud.store.models import Alert, Event, Flavor, Host, Instance, Node

if TYPE_CHECKING:
    from infracloud.site.backups import Backups

log = logging.getLogger(__name__)

_LEAD_KEY = 74_610_232  # pg advisory lock: one controller evaluates at a time


class _Table:
    """The alerts table inside one write transaction."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.rows: dict[str, Alert] = {}

    def firing(self) -> list[AlertRecord]:
        rows = self.s.scalars(select(Alert).where(Alert.state == FIRING).with_for_update())
        self.rows = {a.id: a for a in rows}
        return [record(a) for a in self.rows.values()]

    def opened(self, a: AlertRecord) -> None:
        self.s.add(Alert(id=a.id, key=a.key, rule=a.rule, subject=a.subject,
                         severity=a.severity, state=a.state, summary=a.summary,
                         started_at=a.started_at, resolved_at=None, detail=_detail(a)))

    def closed(self, a: AlertRecord) -> None:
        row = self.rows[a.id]
        row.state, row.resolved_at = a.state, a.resolved_at

    def updated(self, a: AlertRecord) -> None:
        row = self.rows[a.id]
        row.summary, row.detail = a.summary, _detail(a)


def _detail(a: AlertRecord) -> dict[str, Any]:
    return {**a.detail, "resource_type": a.resource_type, "host": a.host}


def record(row: Alert) -> AlertRecord:
    detail = dict(row.detail or {})
    resource_type = str(detail.pop("resource_type", "site"))
    host = detail.pop("host", None)
    return AlertRecord(id=row.id, rule=row.rule, subject=row.subject, severity=row.severity,
                       state=row.state, summary=row.summary, started_at=row.started_at,
                       resolved_at=row.resolved_at, resource_type=resource_type, host=host,
                       detail=detail)


def stored(s: Session, state: str = FIRING, limit: int = MAX_LIST) -> list[AlertRecord]:
    """The alerts table's alerts: firing (critical before warning, newest first), resolved
    (the latest resolved first) or all (newest first)."""
    if state not in STATES:
        raise ValueError(f"state must be firing, resolved or all, not {state!r}")
    stmt = select(Alert)
    if state == FIRING:
        stmt = stmt.where(Alert.state == FIRING).order_by(
            Alert.severity, Alert.started_at.desc(), Alert.id)
    elif state == RESOLVED:
        stmt = stmt.where(Alert.state == RESOLVED).order_by(Alert.resolved_at.desc(), Alert.id)
    else:
        stmt = stmt.order_by(Alert.started_at.desc(), Alert.id)
    return [record(a) for a in s.scalars(stmt.limit(max(1, min(limit, MAX_LIST))))]


@dataclass(frozen=True)
class SiteView:
    """What the site's checks read."""

    db: Database
    site: str
    config: AlertsConfig
    now: dt.datetime
    backups: Backups | None = None


def try_lead(db: Database, s: Session, key: int) -> bool:
    """One controller at a time does the work `key` names: SQLite's write transactions are
    serial already; on PostgreSQL a transaction-scoped advisory lock in `s` (another
    controller holding it is doing the work: this one skips the round)."""
    if db.is_sqlite:
        return True
    return bool(s.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar())


class SiteAlerts:
    """The controller's rules over its database, evaluated every `ops.alerts.interval`."""

    def __init__(self, db: Database, site: str, config: AlertsConfig, clock: Clock, *,
                 base_url: str, record_event: Callable[[AlertRecord], None] | None = None,
                 rules: Sequence[Rule[SiteView]] | None = None,
                 webhook_transport: httpx.BaseTransport | None = None,
                 backups: Backups | None = None) -> None:
        """`webhook_transport`: where the webhook's POSTs go instead of the network (tests);
        `backups`: the scheduled backups the backup_stale rule checks."""
        self.db = db
        self.backups = backups
        self.site = site
        self.config = config
        self.clock = clock
        self.rules = tuple(SITE_RULES if rules is None else rules)
        self.checker = Checker()
        self.notifier = Notifier(site=site, source="controller",
                                 dashboard=base_url.rstrip("/") + "/dashboard/alerts",
                                 record=record_event)
        self.notifier.set_webhook(config.webhook_url, config.webhook_timeout, webhook_transport)

    def tick(self) -> None:
        """The periodic job (runtime.serve)."""
        with context.acting("system:alerts"):
            self.evaluate()

    def evaluate(self) -> list[AlertRecord]:
        """Check every rule; fire and resolve. Returns the changes (none when another
        controller is evaluating right now)."""
        now = self.clock.now()
        found = self.checker.run(self.rules, SiteView(self.db, self.site, self.config, now,
                                                        self.backups))
        with self.db.write() as s:
            if not self._lead(s):
                return []
            changes = [replace(a) for a in apply(_Table(s), self.rules, found, now)]
        for a in changes:
            self.notifier.announce(a)
        return changes

    def _lead(self, s: Session) -> bool:
        """One evaluator at a time: SQLite's write transactions are serial already; on
        PostgreSQL a transaction-scoped advisory lock (another controller holding it is
        evaluating: this one skips the round)."""
        return try_lead(self.db, s, _LEAD_KEY)

    def list(self, state: str = FIRING, limit: int = 100) -> list[AlertRecord]:
        with self.db.read() as s:
            return stored(s, state, limit)

    def close(self) -> None:
        self.notifier.close()


def event_recorder(events: EventLog) -> Callable[[AlertRecord], None]:
    """An alert's change as an event (kind `alert`) in the site's event log."""

    def record_event(a: AlertRecord) -> None:
        events.record(kind="alert", resource_type=a.resource_type, action=a.state,
                      resource_id=a.subject[:64], resource_name=a.subject, host=a.host,
                      source=FIRING if a.state == RESOLVED else None, target=a.state,
                      reason=a.summary, at=a.resolved_at or a.started_at,
                      detail={"rule": a.rule, "severity": a.severity, "alert_id": a.id})

    return record_event


# ---- the site's rules ---------------------------------------------------------------------------

def _hosts_down(v: SiteView) -> dict[str, Finding]:
    with v.db.read() as s:
        rows = s.execute(
            select(Host.name, Host.last_heartbeat, func.count(Instance.id))
            .outerjoin(Instance, Instance.host_id == Host.id).where(Host.state == "down")
            .group_by(Host.id, Host.name, Host.last_heartbeat)).all()
    return {name: Finding(f"compute host {name} is down: no heartbeat since "
                          f"{isoformat(beat)} ({servers} servers on it)", host=name,
                          detail={"servers": int(servers)})
            for name, beat, servers in rows}


def _bmc_unreachable(v: SiteView) -> dict[str, Finding]:
    with v.db.read() as s:
        rows = s.execute(select(Node.id, Node.name, Node.host_name, Node.bmc_failures,
                                Node.last_error)
                         .where(Node.bmc_failures > 0,
                                or_(Node.fault.is_(None), Node.fault != FENCE_FAULT))).all()
    return {name or node_id: Finding(
        f"the BMC of {name or node_id} failed its last {failures} calls: "
        f"{last_error or 'no answer'}"[:1000], host=host,
        detail={"node_id": node_id, "bmc_failures": int(failures)})
        for node_id, name, host, failures, last_error in rows}


def _bmc_fenced(v: SiteView) -> dict[str, Finding]:
    """Fenced machines (their BMC stopped answering: maintenance with the fault), and compute
    hosts disabled as fenced whose machine is not among them."""
    with v.db.read() as s:
        nodes = s.execute(select(Node.id, Node.name, Node.host_name, Node.maintenance_reason)
                          .where(Node.fault == FENCE_FAULT)).all()
        hosts = s.execute(select(Host.name, Host.disabled_reason)
                          .where(Host.enabled.is_(False),
                                 Host.disabled_reason.startswith(FENCED))).all()
    found = {name or node_id: Finding(
        f"{name or node_id} is fenced: {reason or FENCE_FAULT}"[:1000], host=host,
        detail={"node_id": node_id}) for node_id, name, host, reason in nodes}
    covered = {f.host for f in found.values()}
    for name, reason in hosts:
        if name not in covered:
            found[name] = Finding(f"compute host {name} is fenced: "
                                  f"{(reason or '').removeprefix(FENCED)}"[:1000], host=name,
                                  resource_type="host")
    return found


def _capacity_low(v: SiteView) -> dict[str, Finding]:
    with v.db.read() as s:
        if not s.scalar(select(func.count()).select_from(Host)):
            return {}  # a site with no hosts yet has no capacity to miss
        flavor = v.config.capacity_flavor or _biggest_that_fits(s)
    if flavor is None:
        return {}
    c = capacity(v.db, v.site, flavor)
    if c.free >= v.config.capacity_min_free:
        return {}
    return {c.flavor: Finding(
        f"{c.free} {c.flavor} servers fit now (alert below {v.config.capacity_min_free}): "
        f"{c.hosts} hosts take servers, {c.in_use} of {c.total} slots in use",
        detail={"free": c.free, "total": c.total, "hosts": c.hosts, "in_use": c.in_use})}


def _biggest_that_fits(s: Session) -> str | None:
    """The flavor with the most vCPUs that one of the site's hosts (whatever its state) holds
    when empty: a flavor no host could ever take (an admin's experiment) says nothing about
    capacity running out."""
    sizes = s.execute(select(Host.size_vcpus, Host.size_ram_mb, Host.size_disk_gb)).all()
    for f in s.execute(select(Flavor.name, Flavor.vcpus, Flavor.ram_mb, Flavor.disk_gb)
                       .order_by(Flavor.vcpus.desc(), Flavor.ram_mb.desc(), Flavor.name)):
        if any(v >= f.vcpus and r >= f.ram_mb and d >= f.disk_gb for v, r, d in sizes):
            return str(f.name)
    return None


LAUNCHING = ("scheduling", "networking", "spawning")


def _launch_failures(v: SiteView) -> dict[str, Finding]:
    c = v.config
    since = v.now - dt.timedelta(minutes=c.launch_window_minutes)
    with v.db.read() as s:
        rows = s.execute(
            select(Event.source, Event.target, func.count())
            .where(Event.at >= since, Event.kind == "state", Event.resource_type == "server",
                   Event.target.in_(("active", "error")))
            .group_by(Event.source, Event.target)).all()
    failed = sum(n for source, target, n in rows
                 if target == "error" and (source is None or source in LAUNCHING))
    done = failed + sum(n for source, target, n in rows
                        if target == "active" and source == "spawning")
    found = failure_rate(failed, done, "server launches", c)
    return {v.site: found} if found else {}


def _backup_stale(v: SiteView) -> dict[str, Finding]:
    why = None if v.backups is None else v.backups.stale(v.now)
    if why is None:
        return {}
    assert v.backups is not None
    newest = v.backups.newest()
    return {v.site: Finding(why, detail={"dir": str(v.backups.settings.dir),
                                         "last": None if newest is None else newest[1].name})}


SITE_RULES: tuple[Rule[SiteView], ...] = (
    Rule("host_down", CRITICAL, "host", _hosts_down,
         "a compute host's agent stopped heartbeating"),
    Rule("bmc_fenced", CRITICAL, "node", _bmc_fenced,
         "a machine was fenced: its BMC kept failing; its host takes no servers"),
    Rule("bmc_unreachable", WARNING, "node", _bmc_unreachable,
         "a machine's BMC failed its last calls (fenced after hardware.fence_after)"),
    Rule("capacity_low", WARNING, "flavor", _capacity_low,
         "fewer than ops.alerts.capacity_min_free servers of the flavor fit now"),
    Rule("launch_failures", CRITICAL, "site", _launch_failures,
         "too many server launches failed in the window"),
    Rule("backup_stale", WARNING, "site", _backup_stale,
         "scheduled backups are on and the newest good one is older than "
         "backup.stale_after"),
)
