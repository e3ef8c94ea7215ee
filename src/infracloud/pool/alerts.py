"""The pool's health rules, from its engine's memory: a provider (a cloud's controller) that
stopped answering, requests waiting too long, and a provider whose launches keep failing.
Checked on the engine's thread every `alerts.interval` seconds; told in the log, at
`/pool/v1/alerts` and to `alerts.webhook-url` (ops.alerting does the bookkeeping, in memory)."""

from __future__ import annotations

import math
import socket
from collections import Counter

import httpx

from infracloud.ops.alerting import (
    CRITICAL,
    WARNING,
    AlertBook,
    AlertRecord,
    Finding,
    Notifier,
    Rule,
    failure_rate,
)
from infracloud.pool.config import PoolConfig
from infracloud.pool.engine import Engine


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _providers_unreachable(pool: Engine) -> dict[str, Finding]:
    return {p.name: Finding(f"provider {p.name} (cloud {p.config.cloud}) does not answer: "
                            f"{p.unreachable} calls in a row failed; the last: "
                            f"{p.last_error}"[:1000], detail={"failed_calls": p.unreachable})
            for p in pool.providers.values() if p.down}


def _requests_waiting(pool: Engine) -> dict[str, Finding]:
    limit = pool.config.alerts.request_wait_minutes * 60
    now = pool.now()
    count: Counter[str] = Counter()
    oldest: dict[str, tuple[float, str]] = {}
    for r in pool.requests.values():
        age = (now - r.created_at).total_seconds()
        if r.final or age <= limit:
            continue
        for label in set(r.labels):
            count[label] += 1
            if label not in oldest or age > oldest[label][0]:
                oldest[label] = (age, r.id)
    return {label: Finding(
        f"{n} requests for {label} waiting longer than {_minutes(limit)} (the oldest, "
        f"{oldest[label][1]}, for {_minutes(oldest[label][0])})",
        detail={"requests": n, "oldest_seconds": round(oldest[label][0], 1)})
        for label, n in count.items()}


def _launch_failures(pool: Engine) -> dict[str, Finding]:
    c = pool.config.alerts
    since = pool.clock() - c.launch_window_minutes * 60
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for at, provider, ready in pool.outcomes:
        if at >= since:
            done[provider] += 1
            failed[provider] += not ready
    found = {name: failure_rate(failed[name], n, f"launches on {name}", c)
             for name, n in done.items()}
    return {name: f for name, f in found.items() if f is not None}


POOL_RULES: tuple[Rule[Engine], ...] = (
    Rule("provider_unreachable", CRITICAL, "provider", _providers_unreachable,
         "a provider's API (for an infracloud site: its controller) stopped answering"),
    Rule("pool_requests_waiting", WARNING, "label", _requests_waiting,
         "node requests waiting longer than alerts.request-wait-minutes"),
    Rule("pool_launch_failures", CRITICAL, "provider", _launch_failures,
         "too many of a provider's launches failed in the window"),
)


def alerts_url(config: PoolConfig) -> str:
    host = config.listen.host
    if host in ("0.0.0.0", "::", "[::]"):
        host = socket.gethostname()
    return f"{'https' if config.tls else 'http'}://{host}:{config.listen.port}/pool/v1/alerts"


class PoolAlerts:
    def __init__(self, pool: Engine, webhook_transport: httpx.BaseTransport | None = None
                 ) -> None:
        """`webhook_transport`: where the webhook's POSTs go instead of the network (tests)."""
        self.pool = pool
        self.webhook_transport = webhook_transport
        self.book = AlertBook(Notifier(site=pool.config.name, source=f"pool:{pool.config.name}",
                                       dashboard=alerts_url(pool.config)), pool.now)
        self._follow_config()
        self._last = -math.inf

    def tick(self) -> None:
        """On the engine's thread, after each tick: evaluate when the interval is up."""
        t = self.pool.clock()
        if t - self._last >= self.pool.config.alerts.interval:
            self._last = t
            self.evaluate()

    def evaluate(self) -> list[AlertRecord]:
        self._follow_config()
        with self.pool.lock:
            return self.book.evaluate(POOL_RULES, self.pool)

    def list(self, state: str) -> list[AlertRecord]:
        return self.book.list(state)

    def close(self) -> None:
        self.book.close()

    def _follow_config(self) -> None:
        c = self.pool.config.alerts  # the file may have been reloaded
        self.book.notifier.set_webhook(c.webhook_url, c.webhook_timeout, self.webhook_transport)
