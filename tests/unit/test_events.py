"""Events: every state change is recorded in its own transaction with who, when, where and
why; usage records follow a server's life; queries filter and page; retention prunes."""

from __future__ import annotations

import json

import pytest

from infracloud.api.middleware import route_template
from infracloud.compute.hosts import Report
from infracloud.core.clock import FakeClock
from infracloud.ops import context
from infracloud.ops.events import EventLog, Query
from infracloud.store import Database
from infracloud.store.models import UsageRecord
from tests.unit.compute_env import ADMIN, CI, ZUUL, Env


@pytest.fixture
def log(db: Database, clock: FakeClock) -> EventLog:
    events = EventLog(db, "vanilla", clock, retention_days=30)
    events.install()
    return events


def changes(log: EventLog, **filters: object) -> list[tuple[str, str, str | None, str | None]]:
    return [(e.resource_type, e.action, e.source, e.target)
            for e in log.query(Query(kind="state", limit=1000, **filters))]  # type: ignore[arg-type]


def test_a_server_life_is_told_with_actor_host_and_reason(db: Database, clock: FakeClock,
                                                          log: EventLog) -> None:
    env = Env(db, clock)
    host = env.host("h12")
    with context.acting("zuul") as actor:
        actor.user_id, actor.project_id = ZUUL.user_id, ZUUL.project_id
        server = env.boot(name="job-1")
    clock.advance(30)
    with context.acting("agent"):
        env.hosts.report(host.id, [Report(server.id, "running")])
    clock.advance(60)
    with context.acting("zuul"):
        env.servers.delete(ZUUL, server.id)
    with context.acting("agent"):
        env.hosts.report(host.id, [Report(server.id, "absent")])

    rows = log.query(Query(resource_id=server.id))
    assert [(e.action, e.source, e.target) for e in rows] == [
        ("create", None, "spawning"), ("booted", "spawning", "active"),
        ("delete", "active", "deleting"), ("destroyed", "deleting", "deleted")]
    first, last = rows[0], rows[-1]
    assert first.actor == "zuul" and first.actor_id == ZUUL.user_id
    assert first.project_id == ZUUL.project_id and first.host == "h12"
    assert first.site == "vanilla" and first.resource_name == "job-1"
    assert any(e.actor == "agent" and e.target == "active" for e in rows)
    assert last.target == "deleted"
    assert [e.id for e in rows] == sorted(e.id for e in rows)
    # where and who filter
    assert {e.resource_id for e in log.query(Query(host="h12", kind="state"))} >= {server.id}
    assert log.query(Query(project_id=CI.project_id)) == []
    assert all(e.actor == "zuul" for e in log.query(Query(actor="zuul")))
    # the usage record spans creation to removal
    with db.read() as s:
        usage = s.get(UsageRecord, server.id)
    assert usage is not None and usage.host == "h12" and usage.flavor == "ci.8g"
    assert usage.ended_at is not None
    assert (usage.ended_at - usage.started_at).total_seconds() == 90


def test_failures_carry_their_reason_and_the_loop_that_caused_them(
        db: Database, clock: FakeClock, log: EventLog) -> None:
    env = Env(db, clock)
    a, b = env.host("a"), env.host("b")
    server = env.boot(name="x")
    on = a if server.host_id == a.id else b
    other = b if on is a else a
    env.hosts.report(on.id, [Report(server.id, "running")])
    clock.advance(env.config.host_down_after + 1)
    env.beat(other)
    with context.acting("system:reaper"):
        env.hosts.reap()
    down = [e for e in log.query(Query(resource_type="host", kind="state", limit=1000))
            if e.target == "down"]
    assert len(down) == 1 and down[0].host == on.name and down[0].actor == "system:reaper"
    assert down[0].action == "missed_heartbeats"
    clock.advance(env.config.instance_error_after + 1)
    env.beat(other)
    with context.acting("system:reaper"):
        env.hosts.reap()
    failed = [e for e in log.query(Query(resource_id=server.id)) if e.target == "error"]
    assert len(failed) == 1
    assert failed[0].reason and f"Compute host {on.name} is down" in failed[0].reason
    # the host comes back: its own event
    env.beat(on)
    assert ("host", "heartbeat", "down", "up") in changes(log, host=on.name)


def test_nothing_is_recorded_when_the_transaction_rolls_back(
        db: Database, clock: FakeClock, log: EventLog) -> None:
    env = Env(db, clock)
    env.host("h")
    before = log.latest_id()
    with pytest.raises(Exception, match="Flavor"):
        env.boot(name="bad", flavor="nope")
    assert log.latest_id() == before


def test_api_writes_are_batched_and_name_the_caller(db: Database, clock: FakeClock,
                                                    log: EventLog) -> None:
    actor = context.Actor(name="zuul", user_id=ZUUL.user_id, project_id=ZUUL.project_id,
                          request_id="req-1")
    log.api_write("POST", "/compute/v2.1/os-keypairs", "/compute/v2.1/os-keypairs", 200,
                  actor, "127.0.0.1")
    log.api_write("GET", "/compute/v2.1/servers", "/compute/v2.1/servers", 200, actor, None)
    log.api_write("POST", "/identity/v3/auth/tokens", "/identity/v3/auth/tokens", 201, actor,
                  None)
    log.api_write("DELETE", "/compute/v2.1/servers/abc", "/compute/v2.1/servers/{server_id}",
                  404, actor, None)
    log.drain()
    rows = log.query(Query(kind="api"))
    assert [(e.action, e.target, e.actor, e.project_id, e.request_id) for e in rows] == [
        ("POST /compute/v2.1/os-keypairs", "200", "zuul", ZUUL.project_id, "req-1"),
        ("DELETE /compute/v2.1/servers/{server_id}", "404", "zuul", ZUUL.project_id,
         "req-1")]
    assert rows[0].resource_type == "os-keypairs" and rows[1].resource_type == "servers"
    assert rows[0].detail == {"method": "POST", "path": "/compute/v2.1/os-keypairs",
                              "status": 200, "client": "127.0.0.1"}


def test_queries_page_by_id_and_export_every_event(db: Database, clock: FakeClock,
                                                   log: EventLog) -> None:
    for i in range(25):
        log.record(kind="alert", resource_type="host", action="firing", resource_id=f"h{i}",
                   host=f"h{i}", reason="down")
        clock.advance(60)
    page = log.query(Query(kind="alert", limit=10))
    assert len(page) == 10
    rest = log.query(Query(kind="alert", after=page[-1].id, limit=100))
    assert len(rest) == 15 and rest[0].id > page[-1].id
    since = log.query(Query(since=page[5].at))
    assert since[0].id == page[5].id
    lines = "".join(log.export(Query(kind="alert"))).splitlines()
    assert len(lines) == 25
    assert json.loads(lines[0])["resource_id"] == "h0"
    assert json.loads(lines[-1])["at"].endswith("Z")


def test_retention_prunes_old_events(db: Database, clock: FakeClock, log: EventLog) -> None:
    log.record(kind="alert", resource_type="site", action="firing")
    clock.advance(31 * 86400)
    log.record(kind="alert", resource_type="site", action="resolved")
    assert log.prune() == 1
    assert [e.action for e in log.query(Query())] == ["resolved"]


def test_admin_actions_on_hosts_are_events(db: Database, clock: FakeClock,
                                           log: EventLog) -> None:
    env = Env(db, clock)
    env.host("h1")
    with context.acting("admin") as actor:
        actor.user_id = ADMIN.user_id
        env.hosts.set_enabled(ADMIN, "h1", False, "disk died")
        env.hosts.set_enabled(ADMIN, "h1", True)
    flags = [(e.action, e.source, e.target, e.reason, e.actor)
             for e in log.query(Query(host="h1")) if e.action == "enabled"]
    assert flags == [("enabled", "true", "false", "disk died", "admin"),
                     ("enabled", "false", "true", None, "admin")]


def test_route_templates_of_nested_routers_keep_their_prefixes() -> None:
    class Route:
        def __init__(self, fmt: str) -> None:
            self.path_format = fmt

    def template(fmt: str, path: str) -> str | None:
        return route_template({"route": Route(fmt), "path": path})

    assert template("/nodes/{ident}/states/provision",
                    "/baremetal/v1/nodes/n1/states/provision") == \
        "/baremetal/v1/nodes/{ident}/states/provision"
    assert template("/compute/v2.1/servers/{server_id}", "/compute/v2.1/servers/abc") == \
        "/compute/v2.1/servers/{server_id}"
    assert route_template({"path": "/nowhere"}) is None
