"""Alerts: each rule fires once for a failing subject and resolves when it recovers; every
change is a log line, an event (kind alert) and a webhook POST; the agent's watch on its
controller and the pool's rules fire and resolve the same way, from memory."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from infracloud.agent.drivers.fake import FakeDriver
from infracloud.agent.runner import Agent, HostInfo
from infracloud.compute.hosts import Report
from infracloud.core.clock import FakeClock
from infracloud.core.settings import AlertsConfig
from infracloud.hardware.conductor import FENCE_FAULT
from infracloud.hardware.drain import Drainer
from infracloud.ops import alerting as al
from infracloud.ops.events import EventLog, Query
from infracloud.site import alerts as sa
from infracloud.store import Database
from infracloud.store.models import Alert, Node
from tests.unit.compute_env import ADMIN, Env, in_threads
from tests.unit.pool_env import Harness, pool_config
from tests.webhooks import Hook, flush


@pytest.fixture
def hook() -> Hook:
    return Hook()


@pytest.fixture
def events(db: Database, clock: FakeClock) -> EventLog:
    log = EventLog(db, "test", clock)
    log.install()
    return log


def site_alerts(db: Database, clock: FakeClock, events: EventLog, hook: Hook | None = None,
                **config: Any) -> sa.SiteAlerts:
    return sa.SiteAlerts(db, "test", AlertsConfig(webhook_url=hook and hook.url, **config),
                         clock, base_url="http://controller:5000",
                         record_event=sa.event_recorder(events),
                         webhook_transport=hook and hook.transport)


def changes(found: list[al.AlertRecord]) -> list[tuple[str, str, str]]:
    return sorted((a.rule, a.subject, a.state) for a in found)


def alert_events(events: EventLog) -> list[tuple[str, str | None, str, str | None]]:
    return [(e.resource_type, e.resource_name, e.action, e.actor)
            for e in events.query(Query(kind="alert"))]


# ---- the controller's rules ---------------------------------------------------------------------

def test_a_host_that_stops_heartbeating_fires_once_and_resolves_when_it_returns(
        db: Database, clock: FakeClock, events: EventLog, hook: Hook,
        caplog: pytest.LogCaptureFixture) -> None:
    env = Env(db, clock)
    alerts = site_alerts(db, clock, events, hook, capacity_min_free=0)
    try:
        h1, h2 = env.host("h1"), env.host("h2")
        alerts.tick()
        assert alerts.list() == []

        clock.advance(env.config.host_down_after + 1)
        env.beat(h2)  # h1 goes silent
        assert env.hosts.reap()["hosts_down"] == 1
        with caplog.at_level(logging.WARNING, logger="infracloud.ops.alerting"):
            alerts.tick()
        (firing,) = alerts.list()
        assert (firing.rule, firing.subject, firing.severity, firing.state, firing.host) == \
            ("host_down", "h1", "critical", "firing", "h1")
        assert "h1 is down" in firing.summary
        assert firing.started_at == clock.now()
        line = next(r for r in caplog.records if r.getMessage() == "alert firing")
        assert (line.levelname, line.rule, line.subject) == (  # type: ignore[attr-defined]
            "ERROR", "host_down", "h1")
        assert alert_events(events) == [("host", "h1", "firing", "system:alerts")]
        (body,) = hook.wait(1)
        assert body == {"status": "firing", "rule": "host_down", "subject": "h1",
                        "severity": "critical", "summary": firing.summary, "site": "test",
                        "source": "controller", "host": "h1",
                        "started_at": "2026-01-01T00:00:31Z", "resolved_at": None,
                        "dashboard": "http://controller:5000/dashboard/alerts"}

        # still down: no new alert, no new event, no new POST
        clock.advance(10)
        assert alerts.evaluate() == []
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(Alert)) == 1
        assert len(alert_events(events)) == 1

        # back
        env.beat(h1)
        assert changes(alerts.evaluate()) == [("host_down", "h1", "resolved")]
        assert alerts.list() == []
        (resolved,) = alerts.list(al.RESOLVED)
        assert resolved.id == firing.id and resolved.resolved_at == clock.now()
        assert [e[2] for e in alert_events(events)] == ["firing", "resolved"]
        bodies = hook.wait(2)
        assert (bodies[1]["status"], bodies[1]["subject"], bodies[1]["resolved_at"]) == \
            ("resolved", "h1", "2026-01-01T00:00:41Z")
        assert len(hook.bodies) == 2

        # down again: a new alert (the old one stays resolved)
        clock.advance(env.config.host_down_after + 1)
        env.beat(h2)
        env.hosts.reap()
        (again,) = alerts.evaluate()
        assert again.id != firing.id and again.state == "firing"
        assert [a.state for a in alerts.list("all")] == ["firing", "resolved"]
    finally:
        alerts.close()


def test_capacity_low_counts_the_biggest_flavor_and_only_once_there_are_hosts(
        db: Database, clock: FakeClock, events: EventLog) -> None:
    env = Env(db, clock)
    # a flavor no host could ever hold is not the one counted
    env.flavors.create(ADMIN, name="ci.huge", vcpus=512, ram_mb=1 << 20, disk_gb=10_000)
    alerts = site_alerts(db, clock, events, capacity_min_free=2)
    try:
        assert alerts.evaluate() == []  # no hosts yet: nothing to miss
        env.host("h1", vcpus=16, ram_mb=16384, disk_gb=160)  # two ci.8g
        assert alerts.evaluate() == []
        env.boot(name="a")
        (low,) = alerts.evaluate()
        assert (low.rule, low.subject, low.severity, low.resource_type) == \
            ("capacity_low", "ci.8g", "warning", "flavor")
        assert low.summary.startswith("1 ci.8g servers fit now (alert below 2)")
        assert alerts.evaluate() == []
        env.host("h2")  # room for five more
        assert changes(alerts.evaluate()) == [("capacity_low", "ci.8g", "resolved")]
        # every host down: nothing fits
        clock.advance(env.config.host_down_after + 1)
        env.hosts.reap()
        assert changes(alerts.evaluate()) == [("capacity_low", "ci.8g", "firing"),
                                              ("host_down", "h1", "firing"),
                                              ("host_down", "h2", "firing")]
    finally:
        alerts.close()


def test_a_missing_capacity_flavor_is_logged_once_and_the_other_rules_go_on(
        db: Database, clock: FakeClock, events: EventLog,
        caplog: pytest.LogCaptureFixture) -> None:
    env = Env(db, clock)
    alerts = site_alerts(db, clock, events, capacity_flavor="nope")
    try:
        env.host("h1")
        clock.advance(env.config.host_down_after + 1)
        env.hosts.reap()
        with caplog.at_level(logging.WARNING, logger="infracloud.ops.alerting"):
            assert changes(alerts.evaluate()) == [("host_down", "h1", "firing")]
            alerts.evaluate()
        assert [r.getMessage() for r in caplog.records
                if "cannot be checked" in r.getMessage()] == [
            "alert rule capacity_low cannot be checked: NotFound: Flavor nope could not be "
            "found."]
    finally:
        alerts.close()


def test_launch_failures_above_the_rate_fire_and_age_out_of_the_window(
        db: Database, clock: FakeClock, events: EventLog) -> None:
    env = Env(db, clock)
    alerts = site_alerts(db, clock, events, launch_failure_rate=0.3, launch_min_count=4,
                         launch_window_minutes=10, capacity_min_free=0)
    try:
        h = env.host("h1", vcpus=64, ram_mb=65536, disk_gb=2000)
        servers = [env.boot(name=f"s{i}", flavor="ci.small") for i in range(5)]
        env.hosts.report(h.id, [Report(servers[0].id, "running"),
                                Report(servers[1].id, "failed", fault="boom")])
        assert alerts.evaluate() == []  # 2 launches: too few to judge
        env.hosts.report(h.id, [Report(servers[2].id, "running"),
                                Report(servers[3].id, "running")])
        assert alerts.evaluate() == []  # 1 of 4 failed: 25 %
        env.hosts.report(h.id, [Report(servers[4].id, "failed", fault="boom")])
        (fired,) = alerts.evaluate()  # 2 of 5: 40 %
        assert (fired.rule, fired.subject, fired.resource_type) == \
            ("launch_failures", "test", "site")
        assert fired.summary.startswith("2 of 5 server launches failed in the last 10 min")
        clock.advance(11 * 60)
        env.beat(h)
        assert changes(alerts.evaluate()) == [("launch_failures", "test", "resolved")]
        assert alert_events(events) == [("site", "test", "firing", "system"),
                                        ("site", "test", "resolved", "system")]
    finally:
        alerts.close()


def _node(db: Database, name: str, *, host: str | None = None, fault: str | None = None,
          failures: int = 0, reason: str | None = None) -> None:
    with db.write() as s:
        s.add(Node(id=str(uuid.uuid4()), name=name, driver="fake", driver_info={},
                   properties={}, extra={}, instance_info={}, provision_state="active",
                   maintenance=fault is not None, maintenance_reason=reason, fault=fault,
                   last_error=reason or ("timed out" if failures else None),
                   bmc_failures=failures, bmc_calls=10, host_name=host))


def test_bmc_failures_warn_and_fenced_machines_are_critical(
        db: Database, clock: FakeClock, events: EventLog) -> None:
    env = Env(db, clock)
    drainer = Drainer(db, clock, env.hosts, env.servers)
    alerts = site_alerts(db, clock, events, capacity_min_free=0)
    try:
        for name in ("m1", "m3"):
            env.host(name)
        why = "BMC unreachable: 8 failed calls in a row; last: timed out"
        _node(db, "m1", host="m1", fault=FENCE_FAULT, reason=why)
        drainer.fence("m1", why)
        _node(db, "m2", failures=3)
        drainer.fence("m3", "fenced by hand")  # a host fenced with no machine record
        found = alerts.evaluate()
        assert changes(found) == [("bmc_fenced", "m1", "firing"), ("bmc_fenced", "m3", "firing"),
                                  ("bmc_unreachable", "m2", "firing")]
        by = {a.subject: a for a in found}
        assert (by["m1"].severity, by["m1"].resource_type, by["m1"].host) == \
            ("critical", "node", "m1")
        assert by["m1"].summary == f"m1 is fenced: {why}"
        assert (by["m3"].resource_type, by["m3"].summary) == \
            ("host", "compute host m3 is fenced: fenced by hand")
        assert (by["m2"].severity, by["m2"].summary) == \
            ("warning", "the BMC of m2 failed its last 3 calls: timed out")
        assert [a.severity for a in alerts.list()] == ["critical", "critical", "warning"]

        # the BMCs answer again: the conductor clears the fault and unfences the host
        with db.write() as s:
            for node in s.scalars(select(Node)):
                node.fault, node.maintenance, node.bmc_failures = None, False, 0
        drainer.unfence("m1")
        drainer.unfence("m3")
        assert changes(alerts.evaluate()) == [("bmc_fenced", "m1", "resolved"),
                                              ("bmc_fenced", "m3", "resolved"),
                                              ("bmc_unreachable", "m2", "resolved")]
        assert {(e[0], e[1], e[2]) for e in alert_events(events)} == {
            ("node", "m1", "firing"), ("host", "m3", "firing"), ("node", "m2", "firing"),
            ("node", "m1", "resolved"), ("host", "m3", "resolved"),
            ("node", "m2", "resolved")}
    finally:
        alerts.close()


def test_two_controllers_evaluating_at_once_fire_one_alert(
        db: Database, clock: FakeClock, events: EventLog) -> None:
    env = Env(db, clock)
    env.host("h1")
    clock.advance(env.config.host_down_after + 1)
    env.hosts.reap()
    n = 4
    checked = threading.Barrier(n)  # every controller has seen the host down before any writes
    (rule,) = [r for r in sa.SITE_RULES if r.name == "host_down"]

    def check(v: sa.SiteView) -> dict[str, al.Finding]:
        found = rule.check(v)
        checked.wait(30)
        return found

    controllers = [sa.SiteAlerts(db, "test", AlertsConfig(), clock, base_url="http://c",
                                 record_event=sa.event_recorder(events),
                                 rules=[dataclasses.replace(rule, check=check)])
                   for _ in range(n)]
    results = in_threads(n, lambda i: controllers[i].evaluate())
    try:
        assert not [r for r in results if isinstance(r, Exception)], results
        assert sum(len(r) for r in results) == 1
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(Alert)) == 1
        assert len(alert_events(events)) == 1
    finally:
        for c in controllers:
            c.close()


# ---- delivery -----------------------------------------------------------------------------------

def test_the_webhook_retries_and_never_holds_up_the_caller(
        hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    hook.fail = 1  # the first POST gets a 500: retried
    webhook = al.Webhook(hook.url, timeout=2, backoff=0.05, transport=hook.transport)
    try:
        webhook.send({"rule": "r", "n": 1})
        assert hook.wait(1) == [{"rule": "r", "n": 1}]
    finally:
        webhook.close()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    # nothing listens: each POST fails fast; send() returns at once
    dead = al.Webhook("http://hook.test/hook", timeout=1, attempts=2, backoff=0.01,
                      transport=httpx.MockTransport(refuse))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="infracloud.ops.alerting"):
        for n in range(50):
            dead.send({"rule": "r", "n": n})
        assert time.monotonic() - started < 0.5
        dead.close(timeout=0.2)
    failed = [r for r in caplog.records if r.getMessage() == "alert webhook failed"]
    assert failed and failed[0].error == "[Errno 111] Connection refused"  # type: ignore[attr-defined]


# ---- the agent ----------------------------------------------------------------------------------

class FakeController:
    """The agent's controller, down (connections refused) until `up`; its long-polls hold
    for a short while (or until `closing`) and are counted in `polls`."""

    ROUTES: dict[tuple[str, str], Any] = {
        ("POST", "/agent/v1/hosts"): {"host": {"id": "h-1", "name": "c1"}, "poll_seconds": 1},
        ("GET", "/agent/v1/hosts/h-1/desired"): {"generation": 1, "instances": [],
                                                 "remove": []}}

    def __init__(self) -> None:
        self.up = False
        self.polls = 0
        self.polled = threading.Condition()
        self.closing = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.method == "GET":
            self.closing.wait(0.2)  # a short long-poll
            with self.polled:
                self.polls += 1
                self.polled.notify_all()
        return httpx.Response(200, json=self.ROUTES[(request.method, request.url.path)])

    def wait_polls(self, count: int, timeout: float = 20) -> None:
        with self.polled:
            assert self.polled.wait_for(lambda: self.polls >= count, timeout), self.polls


def test_the_agent_alerts_when_its_controller_stays_unreachable(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = "http://controller.test:5000"
    controller = FakeController()
    hook = Hook(peer=controller)
    agent = Agent(url, "agent-token-for-tests-0123456789", FakeDriver(),
                  HostInfo("c1", 4, 4096, 40), tmp_path, poll_wait=1, alert_after=0.5,
                  alert_webhook=hook.url, transport=hook.transport)
    thread = threading.Thread(target=agent.run, daemon=True)
    with caplog.at_level(logging.WARNING, logger="infracloud.ops.alerting"):
        thread.start()
        try:
            (fired,) = hook.wait(1)
            assert (fired["status"], fired["rule"], fired["subject"], fired["severity"],
                    fired["source"]) == ("firing", "controller_unreachable", url, "critical",
                                         "agent:c1")
            assert fired["summary"].startswith(f"controller {url} unreachable for ")
            assert fired["dashboard"] == url + "/dashboard/alerts"
            controller.up = True
            bodies = hook.wait(2, timeout=20)
            assert (bodies[1]["status"], bodies[1]["subject"]) == ("resolved", url)
            assert bodies[1]["resolved_at"] is not None
            controller.wait_polls(controller.polls + 3)  # more polls: nothing more to tell
            assert len(hook.bodies) == 2
        finally:
            controller.closing.set()
            agent.stop()
            thread.join(20)
            agent.close()
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert ")] \
        == ["alert firing", "alert resolved"]


# ---- the pool -----------------------------------------------------------------------------------



def pool_alerts(h: Harness, state: str = "firing") -> list[tuple[str, str, str]]:
    return sorted((a.rule, a.subject, a.state) for a in h.pool.alerts.list(state))


def _until(h: Harness, cond: Callable[[], bool], what: str) -> None:
    h.until(cond, timeout=20, what=what)


def test_the_pool_alerts_on_an_unreachable_provider_and_requests_left_waiting(
        sqlite_db: Database, hook: Hook) -> None:
    h = Harness(sqlite_db, pool_config({"a": {}}, alerts={
        "interval": 0.01, "webhook-url": hook.url, "request-wait-minutes": 0.005}),
        webhook_transport=hook.transport)
    try:
        h.clouds["a"].unreachable = True
        rid = h.request()
        _until(h, lambda: pool_alerts(h) == [
            ("pool_requests_waiting", "small", "firing"),
            ("provider_unreachable", "a", "firing")], "both firing")
        (waiting,) = [a for a in h.pool.alerts.list("firing") if a.rule.startswith("pool")]
        assert waiting.summary.startswith(f"1 requests for small waiting longer than 0 s "
                                          f"(the oldest, {rid}, for")
        h.tick(5)
        assert len(hook.wait(2)) == 2
        assert len(flush(hook, h.pool.alerts.book.notifier.webhook)) == 2  # once each
        assert {b["source"] for b in hook.bodies} == {"pool:test-pool"}

        h.clouds["a"].unreachable = False
        h.pool.providers["a"].due.update(("servers", "catalog"))  # ask now, not in 10 s
        _until(h, lambda: h.state(rid) == "fulfilled" and pool_alerts(h) == [],
               "served, resolved")
        assert pool_alerts(h, "resolved") == [("pool_requests_waiting", "small", "resolved"),
                                              ("provider_unreachable", "a", "resolved")]
        bodies = hook.wait(4)
        assert sorted((b["rule"], b["status"]) for b in bodies[2:]) == [
            ("pool_requests_waiting", "resolved"), ("provider_unreachable", "resolved")]
    finally:
        h.close()


def test_the_pool_alerts_on_a_provider_whose_launches_keep_failing(
        sqlite_db: Database) -> None:
    h = Harness(sqlite_db, pool_config({"a": {}}, alerts={
        "interval": 0.01, "launch-min-count": 2, "launch-failure-rate": 0.5}))
    try:
        h.clouds["a"].fail_create = "Image demo is broken"
        rid = h.request()
        _until(h, lambda: h.state(rid) == "failed", "the request failed")
        _until(h, lambda: pool_alerts(h) == [("pool_launch_failures", "a", "firing")],
               "firing")
        (firing,) = h.pool.alerts.list("firing")
        assert firing.summary.startswith("2 of 2 launches on a failed in the last 15 min")
        h.clouds["a"].fail_create = None
        ids = [h.request() for _ in range(3)]
        _until(h, lambda: all(h.state(r) == "fulfilled" for r in ids), "served")
        _until(h, lambda: pool_alerts(h) == [], "resolved")  # 2 of 5 failed: 40 %
    finally:
        h.close()


def test_the_pool_api_lists_alerts(sqlite_db: Database) -> None:
    from infracloud.pool.auth import Open
    from infracloud.processes.pool_server import create_pool_app

    h = Harness(sqlite_db, pool_config({"a": {}}, alerts={"interval": 0.01}))
    try:
        h.clouds["a"].unreachable = True
        _until(h, lambda: bool(pool_alerts(h)), "firing")
        app = create_pool_app(h.pool, Open())

        async def get(*paths: str) -> list[httpx.Response]:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://pool") as client:
                return [await client.get(path) for path in paths]

        firing, resolved, bad = asyncio.run(get(
            "/pool/v1/alerts", "/pool/v1/alerts?state=resolved", "/pool/v1/alerts?state=x"))
        (row,) = firing.json()["alerts"]
        assert (row["rule"], row["subject"], row["state"], row["severity"]) == \
            ("provider_unreachable", "a", "firing", "critical")
        assert resolved.json() == {"alerts": []}
        assert bad.status_code == 400 and "firing, resolved or all" in bad.text
    finally:
        h.close()


def test_an_alert_view_ages_until_resolved() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    a = al.AlertRecord(id="x", rule="r", subject="s", severity="warning", state="firing",
                       summary="why", started_at=start)
    assert al.view(a, start + dt.timedelta(seconds=90))["age_seconds"] == 90
    a.state, a.resolved_at = "resolved", start + dt.timedelta(seconds=30)
    v = al.view(a, start + dt.timedelta(seconds=90))
    assert (v["age_seconds"], v["resolved_at"]) == (30, "2026-01-01T00:00:30Z")
