"""Alerts: health rules, and what happens when one starts or stops failing.

A rule is data: a name, a severity, the kind of thing it is about, and a check that returns
the subjects failing now (a host name, a node, a flavor, the site...) with a one-line summary
each. Evaluating rules compares what fails now with the alerts firing: a new failing (rule,
subject) fires an alert, one that no longer fails is resolved. Every change is told three
ways: a log line (`alert firing` / `alert resolved`), a JSON POST to a webhook (on a
background thread, retried, never holding up the evaluation) and, on a controller, an event
(kind `alert`) and the `alerts` table the dashboard and `/ops/v1/alerts` read.

The bookkeeping works on a `Ledger`: rows of the `alerts` table on a controller (`SiteAlerts`;
with several controllers on PostgreSQL one evaluates at a time under an advisory lock), or
memory in the agent and the pool (`AlertBook`). The site's rules are at the bottom."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

import httpx
from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock, isoformat
from infracloud.core.errors import InfracloudError
from infracloud.core.settings import AlertsConfig
from infracloud.hardware.capacity import capacity
from infracloud.hardware.conductor import FENCE_FAULT
from infracloud.hardware.drain import FENCED
from infracloud.ops import context
from infracloud.ops.events import EventLog
from infracloud.store import Database
from infracloud.store.models import Alert, Event, Flavor, Host, Instance, Node

log = logging.getLogger(__name__)

CRITICAL, WARNING = "critical", "warning"
FIRING, RESOLVED = "firing", "resolved"
STATES = (FIRING, RESOLVED, "all")
MAX_LIST = 1000
WEBHOOK_ATTEMPTS = 3
WEBHOOK_BACKOFF = 1.0  # seconds before the first retry; doubles
WEBHOOK_QUEUE = 1000
_LEAD_KEY = 74_610_232  # pg advisory lock: one controller evaluates at a time
T = TypeVar("T")


@dataclass(frozen=True)
class Finding:
    """One failing subject: why, in a line, and where."""

    summary: str
    host: str | None = None
    detail: dict[str, Any] | None = None
    resource_type: str | None = None  # when not the rule's


@dataclass(frozen=True)
class Rule(Generic[T]):
    name: str
    severity: str
    resource_type: str  # what the subjects are: host, node, flavor, site, provider, label...
    check: Callable[[T], dict[str, Finding]]  # subject → finding, for the subjects failing now
    doc: str = ""


@dataclass
class AlertRecord:
    id: str
    rule: str
    subject: str
    severity: str
    state: str
    summary: str
    started_at: dt.datetime
    resolved_at: dt.datetime | None = None
    resource_type: str = "site"
    host: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return alert_key(self.rule, self.subject)


def alert_key(rule: str, subject: str) -> str:
    return f"{rule}:{subject}"[:255]


def view(a: AlertRecord, now: dt.datetime) -> dict[str, Any]:
    """The JSON of an alert (the APIs)."""
    return {"id": a.id, "rule": a.rule, "subject": a.subject, "severity": a.severity,
            "state": a.state, "summary": a.summary, "resource_type": a.resource_type,
            "host": a.host, "started_at": isoformat(a.started_at),
            "resolved_at": isoformat(a.resolved_at),
            "age_seconds": round(max(((a.resolved_at or now) - a.started_at).total_seconds(),
                                     0.0), 1)}


def payload(a: AlertRecord, *, site: str | None, source: str, dashboard: str | None
            ) -> dict[str, Any]:
    """What the webhook gets."""
    return {"status": a.state, "rule": a.rule, "subject": a.subject, "severity": a.severity,
            "summary": a.summary, "site": site, "source": source, "host": a.host,
            "started_at": isoformat(a.started_at), "resolved_at": isoformat(a.resolved_at),
            "dashboard": dashboard}


# ---- delivery -----------------------------------------------------------------------------------

class Webhook:
    """JSON POSTs on a background thread: a few attempts each, with backoff; a full queue
    drops (and says so) rather than holding up the caller."""

    def __init__(self, url: str, timeout: float = 5, *, attempts: int = WEBHOOK_ATTEMPTS,
                 backoff: float = WEBHOOK_BACKOFF, verify: bool | str = True) -> None:
        self.url = url
        self.attempts = attempts
        self.backoff = backoff
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(WEBHOOK_QUEUE)
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=timeout, verify=verify,
                                  headers={"User-Agent": "infracloud-alerts"})
        self._thread = threading.Thread(target=self._loop, name="alert-webhook", daemon=True)
        self._thread.start()

    def send(self, body: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            log.error("alert webhook queue full: dropped", extra={"url": self.url,
                                                                  "rule": body.get("rule")})

    def _loop(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            self._post(body)

    def _post(self, body: dict[str, Any]) -> None:
        error = ""
        for attempt in range(self.attempts):
            try:
                r = self._http.post(self.url, json=body)
                if r.is_success:
                    return
                error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                error = str(exc) or type(exc).__name__
            if attempt + 1 < self.attempts and self._stop.wait(self.backoff * 2 ** attempt):
                break  # closing: no more waiting
        log.warning("alert webhook failed", extra={"url": self.url, "rule": body.get("rule"),
                                                   "subject": body.get("subject"),
                                                   "error": error})

    def close(self, timeout: float = 5) -> None:
        """Deliver what is queued (for at most `timeout` seconds), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(1)
        self._http.close()


class Notifier:
    """Tells each change: the log, `record` (the controller's events) and the webhook."""

    def __init__(self, *, site: str | None, source: str, dashboard: str | None = None,
                 webhook: Webhook | None = None,
                 record: Callable[[AlertRecord], None] | None = None) -> None:
        self.site = site
        self.source = source
        self.dashboard = dashboard
        self.webhook = webhook
        self.record = record

    def announce(self, a: AlertRecord) -> None:
        extra = {"event": f"alert.{a.state}", "rule": a.rule, "subject": a.subject,
                 "severity": a.severity, "summary": a.summary, "alert_id": a.id,
                 "host": a.host}
        if a.state == FIRING:
            log.error("alert firing", extra=extra)
        else:
            log.warning("alert resolved", extra=extra)
        if self.record is not None:
            try:
                self.record(a)
            except Exception:  # the log line above and the webhook still tell it
                log.exception("could not record the alert's event")
        if self.webhook is not None:
            self.webhook.send(payload(a, site=self.site, source=self.source,
                                      dashboard=self.dashboard))

    def set_webhook(self, url: str | None, timeout: float) -> None:
        """Follow a changed configuration (the pool reloads its file)."""
        if self.webhook is not None and (url is None or url != self.webhook.url):
            self.webhook.close()
            self.webhook = None
        if url and self.webhook is None:
            self.webhook = Webhook(url, timeout)

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()


# ---- bookkeeping --------------------------------------------------------------------------------

class Ledger(Protocol):
    """Where the alerts live: the alerts table (in one transaction) or memory."""

    def firing(self) -> list[AlertRecord]: ...

    def opened(self, a: AlertRecord) -> None: ...

    def closed(self, a: AlertRecord) -> None: ...

    def updated(self, a: AlertRecord) -> None: ...


class Checker:
    """Runs checks; a check that raises keeps its rule's alerts as they are and is logged
    (once per distinct error, not every round)."""

    def __init__(self) -> None:
        self._errors: dict[str, str] = {}

    def run(self, rules: Sequence[Rule[T]], target: T) -> dict[str, dict[str, Finding]]:
        found: dict[str, dict[str, Finding]] = {}
        for rule in rules:
            try:
                found[rule.name] = rule.check(target)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                if self._errors.get(rule.name) != message:
                    self._errors[rule.name] = message
                    log.warning("alert rule %s cannot be checked: %s", rule.name, message,
                                exc_info=not isinstance(exc, InfracloudError | ValueError))
                continue
            self._errors.pop(rule.name, None)
        return found


def _new(rule: Rule[Any], subject: str, finding: Finding, now: dt.datetime) -> AlertRecord:
    return AlertRecord(id=uuid.uuid4().hex, rule=rule.name, subject=subject[:255],
                       severity=rule.severity, state=FIRING, summary=finding.summary,
                       started_at=now, resource_type=finding.resource_type or rule.resource_type,
                       host=finding.host, detail=finding.detail or {})


def apply(ledger: Ledger, rules: Iterable[Rule[Any]], found: dict[str, dict[str, Finding]],
          now: dt.datetime) -> list[AlertRecord]:
    """Bring the ledger in line with what was found; returns the alerts that fired or
    resolved. Rules missing from `found` (their check failed) are left alone."""
    firing: dict[str, dict[str, AlertRecord]] = {}
    for a in ledger.firing():
        firing.setdefault(a.rule, {})[a.subject] = a
    changes = []
    for rule in rules:
        if rule.name not in found:
            continue
        now_failing, was = found[rule.name], firing.get(rule.name, {})
        for subject, finding in now_failing.items():
            old = was.get(subject)
            if old is None:
                new = _new(rule, subject, finding, now)
                ledger.opened(new)
                changes.append(new)
            elif old.summary != finding.summary or old.host != finding.host:
                old.summary, old.host = finding.summary, finding.host
                old.detail = finding.detail or {}
                ledger.updated(old)
        for subject, old in was.items():
            if subject not in now_failing:
                old.state, old.resolved_at = RESOLVED, now
                ledger.closed(old)
                changes.append(old)
    return changes


class _Memory:
    def __init__(self, keep: int) -> None:
        self.active: dict[str, AlertRecord] = {}
        self.history: deque[AlertRecord] = deque(maxlen=keep)

    def firing(self) -> list[AlertRecord]:
        return list(self.active.values())

    def opened(self, a: AlertRecord) -> None:
        self.active[a.key] = a

    def closed(self, a: AlertRecord) -> None:
        self.active.pop(a.key, None)
        self.history.appendleft(a)

    def updated(self, a: AlertRecord) -> None:
        pass


class AlertBook:
    """Alerts kept in memory (the agent, the pool): the last `keep` resolved ones too."""

    def __init__(self, notifier: Notifier, now: Callable[[], dt.datetime], keep: int = 200
                 ) -> None:
        self.notifier = notifier
        self.now = now
        self.checker = Checker()
        self._ledger = _Memory(keep)
        self._lock = threading.Lock()

    def evaluate(self, rules: Sequence[Rule[T]], target: T) -> list[AlertRecord]:
        found = self.checker.run(rules, target)
        with self._lock:
            changes = [replace(a) for a in apply(self._ledger, rules, found, self.now())]
        for a in changes:
            self.notifier.announce(a)
        return changes

    def fire(self, rule: Rule[Any], subject: str, finding: Finding) -> bool:
        """Fire one alert now (unless it fires already); True when it started."""
        with self._lock:
            if alert_key(rule.name, subject) in self._ledger.active:
                return False
            new = _new(rule, subject, finding, self.now())
            self._ledger.opened(new)
            done = replace(new)
        self.notifier.announce(done)
        return True

    def resolve(self, rule: Rule[Any], subject: str) -> bool:
        """Resolve one alert now (if it fires); True when it did."""
        with self._lock:
            old = self._ledger.active.get(alert_key(rule.name, subject))
            if old is None:
                return False
            old.state, old.resolved_at = RESOLVED, self.now()
            self._ledger.closed(old)
            done = replace(old)
        self.notifier.announce(done)
        return True

    def firing(self, key: str) -> bool:
        with self._lock:
            return key in self._ledger.active

    def list(self, state: str = FIRING) -> list[AlertRecord]:
        with self._lock:
            active = sorted(self._ledger.active.values(),
                            key=lambda a: (a.severity, -a.started_at.timestamp(), a.id))
            history = list(self._ledger.history)
        if state == FIRING:
            return [replace(a) for a in active]
        if state == RESOLVED:
            return [replace(a) for a in history]
        return [replace(a) for a in active + history]

    def close(self) -> None:
        self.notifier.close()


class OutageWatch:
    """Something this process calls (the agent's controller): after `after` seconds of failed
    calls, one alert fires; the first call that gets through resolves it."""

    RULE: Rule[Any] = Rule("controller_unreachable", CRITICAL, "controller",
                           lambda _: {}, "the controller does not answer this agent")

    def __init__(self, book: AlertBook, subject: str, after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.book = book
        self.subject = subject
        self.after = after
        self.clock = clock
        self._since: float | None = None

    def failed(self, why: str) -> None:
        now = self.clock()
        if self._since is None:
            self._since = now
        if now - self._since >= self.after and not self.book.firing(
                alert_key(self.RULE.name, self.subject)):
            self.book.fire(self.RULE, self.subject, Finding(
                f"controller {self.subject} unreachable for {now - self._since:.0f} s: "
                f"{why}"[:1000]))

    def reached(self) -> None:
        self._since = None
        if self.book.firing(alert_key(self.RULE.name, self.subject)):
            self.book.resolve(self.RULE, self.subject)

    def close(self) -> None:
        self.book.close()


def controller_watch(controller: str, reporter: str, after: float,
                     webhook_url: str | None, webhook_timeout: float = 5) -> OutageWatch:
    """The agent's watch on its controller: the log always, the webhook when given."""
    notifier = Notifier(site=None, source=f"agent:{reporter}",
                        dashboard=controller.rstrip("/") + "/dashboard/alerts",
                        webhook=Webhook(webhook_url, webhook_timeout) if webhook_url else None)
    return OutageWatch(AlertBook(notifier, lambda: dt.datetime.now(dt.UTC)),
                       controller.rstrip("/"), after)


# ---- the site's alerts (a controller) -----------------------------------------------------------

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


class SiteAlerts:
    """The controller's rules over its database, evaluated every `ops.alerts.interval`."""

    def __init__(self, db: Database, site: str, config: AlertsConfig, clock: Clock, *,
                 base_url: str, record_event: Callable[[AlertRecord], None] | None = None,
                 rules: Sequence[Rule[SiteView]] | None = None) -> None:
        self.db = db
        self.site = site
        self.config = config
        self.clock = clock
        self.rules = tuple(SITE_RULES if rules is None else rules)
        self.checker = Checker()
        webhook = Webhook(config.webhook_url, config.webhook_timeout) \
            if config.webhook_url else None
        self.notifier = Notifier(site=site, source="controller",
                                 dashboard=base_url.rstrip("/") + "/dashboard/alerts",
                                 webhook=webhook, record=record_event)

    def tick(self) -> None:
        """The periodic job (runtime.serve)."""
        with context.acting("system:alerts"):
            self.evaluate()

    def evaluate(self) -> list[AlertRecord]:
        """Check every rule; fire and resolve. Returns the changes (none when another
        controller is evaluating right now)."""
        now = self.clock.now()
        found = self.checker.run(self.rules, SiteView(self.db, self.site, self.config, now))
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
        if self.db.is_sqlite:
            return True
        return bool(s.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                              {"k": _LEAD_KEY}).scalar())

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


class LaunchLimits(Protocol):
    launch_window_minutes: float
    launch_failure_rate: float
    launch_min_count: int


def failure_rate(failed: int, done: int, what: str, c: LaunchLimits) -> Finding | None:
    """A finding when more than `launch_failure_rate` of the `done` launches of the window
    failed, once at least `launch_min_count` finished (the site's and the pool's rule)."""
    if done < c.launch_min_count or failed <= c.launch_failure_rate * done:
        return None
    return Finding(f"{failed} of {done} {what} failed in the last "
                   f"{c.launch_window_minutes:g} min ({failed / done:.0%}; alert above "
                   f"{c.launch_failure_rate:.0%})",
                   detail={"failed": failed, "launches": done})


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
)
