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
memory in the agent and the pool (`AlertBook`). The site's rules and its table are in
`site.alerts`."""

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

from infracloud.clients import http
from infracloud.core.clock import isoformat
from infracloud.core.errors import InfracloudError

log = logging.getLogger(__name__)

CRITICAL, WARNING = "critical", "warning"
FIRING, RESOLVED = "firing", "resolved"
STATES = (FIRING, RESOLVED, "all")
MAX_LIST = 1000
WEBHOOK_ATTEMPTS = 3
WEBHOOK_BACKOFF = 1.0  # seconds before the first retry; doubles
WEBHOOK_QUEUE = 1000
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
                 backoff: float = WEBHOOK_BACKOFF, verify: bool | str = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self.attempts = attempts
        self.backoff = backoff
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(WEBHOOK_QUEUE)
        self._stop = threading.Event()
        self._http = http.client("alerts", timeout=timeout, verify=verify, transport=transport)
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

    def set_webhook(self, url: str | None, timeout: float,
                    transport: httpx.BaseTransport | None = None) -> None:
        """Follow a changed configuration (the pool reloads its file)."""
        if self.webhook is not None and (url is None or url != self.webhook.url):
            self.webhook.close()
            self.webhook = None
        if url and self.webhook is None:
            self.webhook = Webhook(url, timeout, transport=transport)

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
                     webhook_url: str | None, webhook_timeout: float = 5, *,
                     transport: httpx.BaseTransport | None = None) -> OutageWatch:
    """The agent's watch on its controller: the log always, the webhook when given."""
    notifier = Notifier(site=None, source=f"agent:{reporter}",
                        dashboard=controller.rstrip("/") + "/dashboard/alerts")
    notifier.set_webhook(webhook_url, webhook_timeout, transport)
    return OutageWatch(AlertBook(notifier, lambda: dt.datetime.now(dt.UTC)),
                       controller.rstrip("/"), after)


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
