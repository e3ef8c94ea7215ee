"""Servers a host runs that the database does not know (compute.unknown), with an injected
clock: nothing is destroyed before the grace, everything unknown past it is handled once with
its event, a server the database knows was deleted goes at once, their addresses are held
meanwhile, and `adopt` makes a consistent one a server again (or reaps it, saying why)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from infracloud.compute import scheduler
from infracloud.compute.hosts import Report
from infracloud.compute.unknown import HELD, Unknown
from infracloud.core.clock import FakeClock
from infracloud.core.settings import ComputeConfig, UnknownServersConfig
from infracloud.core.states import UNKNOWN_SERVER
from infracloud.ops import context
from infracloud.ops.events import EventLog, Query
from infracloud.store import Database
from infracloud.store.models import Instance, Port, Project, Subnet, UnknownServer, UsageRecord
from tests.unit.compute_env import (
    UNLIMITED,
    ZUUL,
    Env,
    assert_addresses_unique,
    assert_claims_match,
    gone,
)

GRACE = 600.0


@pytest.fixture
def log(db: Database, clock: FakeClock) -> EventLog:
    events = EventLog(db, "vanilla", clock)
    events.install()
    return events


def make_env(db: Database, clock: FakeClock, action: str = "reap") -> Env:
    env = Env(db, clock, ComputeConfig(quota=UNLIMITED, unknown_servers=UnknownServersConfig(
        action=action, grace=GRACE)))
    with db.write() as s:  # the project of the test's servers (the identity service's table)
        if s.get(Project, ZUUL.project_id) is None:
            s.add(Project(id=ZUUL.project_id, name="zuul"))
    return env


def known_of(env: Env, server: Instance) -> Unknown:
    """What the agent of its host kept of a server when it spawned it."""
    with env.db.read() as s:
        inst = s.get(Instance, server.id)
        assert inst is not None
        return Unknown(id=inst.id, name=inst.name, project_id=inst.project_id,
                       user_id=inst.user_id, flavor_id=inst.flavor_id, image_id=inst.image_id,
                       ip=inst.ip_address, mac=inst.mac_address, vcpus=inst.vcpus,
                       ram_mb=inst.ram_mb, disk_gb=inst.disk_gb, key_name=inst.key_name,
                       availability_zone=inst.availability_zone, meta=dict(inst.metadata_),
                       launched_at="2025-12-31T23:00:00Z")


def forget(env: Env, server: Instance, *, rewind_cursor: bool = False) -> Unknown:
    """The database as a backup taken before `server` was created would restore it: no
    record, no claim, no port, no usage record (Core statements: no flush hook sees it).
    `rewind_cursor`: IPAM's cursor back to its address, as the backup had it."""
    known = known_of(env, server)
    with env.db.write() as s:
        inst = s.get(Instance, server.id)
        assert inst is not None and inst.host_id is not None
        scheduler.release(s, inst.host_id, inst.vcpus, inst.ram_mb, inst.disk_gb)
        s.expunge(inst)
        s.execute(delete(Port).where(Port.device_id == server.id))
        s.execute(delete(UsageRecord).where(UsageRecord.instance_id == server.id))
        s.execute(delete(Instance).where(Instance.id == server.id))
        if rewind_cursor:
            assert known.ip is not None
            s.execute(update(Subnet).values(next_ip=int(ipaddress.ip_address(known.ip))))
    return known


def running(env: Env, host: Any, *names: str) -> list[Instance]:
    servers = [env.boot(name=n) for n in names]
    env.hosts.report(host.id, [Report(s.id, "running") for s in servers])
    return servers


def remove(env: Env, host: Any) -> set[str]:
    return set(env.hosts.desired(host.id)[2])


def records(env: Env) -> dict[str, str]:
    return {r.id: r.state for r in env.hosts.unknown.pending()}


def steps(log: EventLog, server_id: str) -> list[tuple[str, str | None, str | None]]:
    return [(e.action, e.source, e.target)
            for e in log.query(Query(resource_id=server_id, resource_type="unknown-server"))]


def report(env: Env, host: Any, *unknown: Unknown, items: list[Report] | None = None) -> None:
    with context.acting("agent"):
        env.hosts.report(host.id, items or [], list(unknown))


def test_nothing_is_destroyed_before_the_grace_and_all_after_it_once(
        db: Database, clock: FakeClock, log: EventLog) -> None:
    env = make_env(db, clock)
    h = env.host("h1")
    kept, a, b = running(env, h, "kept", "after-1", "after-2")
    unknown = [forget(env, a, rewind_cursor=True), forget(env, b)]
    report(env, h, *unknown)
    assert records(env) == {a.id: "seen", b.id: "seen"}
    assert remove(env, h) == set()  # the agent keeps them running
    # their addresses are held: the next server does not get one (IPAM's cursor points there)
    held = {p.device_id: p for p in env.ports() if p.device_owner == HELD}
    assert {d: p.ip_address for d, p in held.items()} == {a.id: a.ip_address,
                                                          b.id: b.ip_address}
    fresh = env.boot(name="fresh")
    assert fresh.ip_address not in {a.ip_address, b.ip_address}

    with context.acting("system:reaper"):
        clock.advance(GRACE / 2)
        report(env, h, *unknown)  # the agent says so again on later answers
        assert env.hosts.unknown.expire() == {"reaped": 0, "adopted": 0, "unreaped": 0}
        clock.advance(GRACE / 2 - 1)
        assert env.hosts.unknown.expire()["reaped"] == 0
        assert remove(env, h) == set()
        env.notified.clear()
        clock.advance(1)
        assert env.hosts.unknown.expire() == {"reaped": 2, "adopted": 0, "unreaped": 0}
    assert remove(env, h) == {a.id, b.id}
    assert env.notified == [h.id]  # its agent's long-poll answers now
    with context.acting("system:reaper"):
        assert env.hosts.unknown.expire()["reaped"] == 0  # once
    report(env, h, *unknown)  # reported again before the agent got to them: nothing new
    assert records(env) == {a.id: "reaping", b.id: "reaping"}

    report(env, h, items=[Report(a.id, "absent"), Report(b.id, "absent")])
    assert records(env) == {}
    assert not [p for p in env.ports() if p.device_owner == HELD]  # the addresses are free
    for server in (a, b):
        assert steps(log, server.id) == [("create", None, "seen"), ("reap", "seen", "reaping"),
                                         ("destroyed", "reaping", "destroyed")]
    events = log.query(Query(resource_id=a.id, resource_type="unknown-server"))
    assert events[0].host == "h1" and events[0].resource_name == "after-1"
    assert events[0].project_id == ZUUL.project_id
    assert "does not know it" in (events[0].reason or "")
    assert events[1].actor == "system:reaper" and "action: reap" in (events[1].reason or "")
    assert (events[1].at - events[0].at).total_seconds() == GRACE
    assert env.state(kept.id).state == "active"
    assert_addresses_unique(env)


def test_the_events_carry_the_times_the_grace_was_counted_from(
        db: Database, clock: FakeClock) -> None:
    """The flush that records an event comes a little after the report or round that decided
    the change (a slow report: here 3 s). The events say when it was decided, so the first
    report and the reap in the event log are never less than the grace apart."""
    flushed = FakeClock(clock.now())
    EventLog(db, "vanilla", flushed).install()
    env = make_env(db, clock)
    h = env.host("h1")
    (a,) = running(env, h, "after-1")
    unknown = forget(env, a)
    seen_at = clock.now()
    flushed.advance(3)
    report(env, h, unknown)
    clock.advance(GRACE)
    flushed.advance(GRACE)
    with context.acting("system:reaper"):
        assert env.hosts.unknown.expire()["reaped"] == 1
    events = EventLog(db, "vanilla", clock).query(
        Query(resource_id=a.id, resource_type="unknown-server"))
    assert [(e.target, e.at) for e in events] == [("seen", seen_at),
                                                  ("reaping", seen_at + dt.timedelta(
                                                      seconds=GRACE))]


def test_a_server_deleted_while_its_host_was_down_is_destroyed_at_once(
        db: Database, clock: FakeClock, log: EventLog) -> None:
    env = make_env(db, clock)
    h = env.host("h1")
    (s1,) = running(env, h, "s1")
    known = known_of(env, s1)
    clock.advance(env.config.host_down_after + 1)
    env.hosts.reap()  # the host is down
    env.servers.delete(ZUUL, s1.id)  # removed at once: its usage record is closed
    assert gone(env, s1.id)
    report(env, h, known)  # the agent is back and still has it
    assert records(env) == {s1.id: "reaping"}
    assert remove(env, h) == {s1.id}
    reasons = [e.reason for e in log.query(Query(resource_id=s1.id,
                                                 resource_type="unknown-server"))]
    assert "deleted while its host was down" in (reasons[-1] or "")


def test_an_unknown_server_its_agent_no_longer_has_is_forgotten(
        db: Database, clock: FakeClock, log: EventLog) -> None:
    env = make_env(db, clock)
    h = env.host("h1")
    (s1,) = running(env, h, "s1")
    known = forget(env, s1)
    report(env, h, known)
    report(env, h)  # an empty list: it has none now
    assert records(env) == {}
    assert steps(log, s1.id) == [("create", None, "seen"), ("gone", "seen", "gone")]
    assert not [p for p in env.ports() if p.device_owner == HELD]
    with context.acting("system:reaper"):
        clock.advance(GRACE)
        assert env.hosts.unknown.expire()["reaped"] == 0


def test_a_reap_its_agent_does_not_confirm_is_asked_again(
        db: Database, clock: FakeClock, log: EventLog) -> None:
    env = make_env(db, clock)
    h = env.host("h1")
    (s1,) = running(env, h, "s1")
    known = forget(env, s1)
    report(env, h, known)
    clock.advance(GRACE)
    env.hosts.unknown.expire()
    timeout = UNKNOWN_SERVER.states["reaping"].timeout or 0
    clock.advance(timeout + 1)
    assert env.hosts.unknown.expire()["unreaped"] == 1
    assert records(env) == {s1.id: "unreaped"}
    assert remove(env, h) == {s1.id}  # still asked to destroy it
    report(env, h, known)  # still there
    assert records(env) == {s1.id: "reaping"}
    report(env, h, items=[Report(s1.id, "absent")])
    assert records(env) == {}
    assert [a for a, _, _ in steps(log, s1.id)] == ["create", "reap", "timeout", "reap",
                                                     "destroyed"]


def test_adopt_makes_a_consistent_unknown_server_a_server_again(
        db: Database, clock: FakeClock, log: EventLog) -> None:
    env = make_env(db, clock, action="adopt")
    h = env.host("h1")
    (s1,) = running(env, h, "s1")
    known = forget(env, s1, rewind_cursor=True)
    report(env, h, known)
    with pytest.raises(Exception, match="could not be found"):
        env.state(s1.id)
    clock.advance(GRACE)
    with context.acting("system:reaper"):
        assert env.hosts.unknown.expire() == {"reaped": 0, "adopted": 1, "unreaped": 0}
    adopted = env.state(s1.id)
    assert (adopted.state, adopted.host_id, adopted.name, adopted.project_id) == (
        "active", h.id, "s1", ZUUL.project_id)
    assert (adopted.ip_address, adopted.mac_address) == (s1.ip_address, s1.mac_address)
    assert adopted.flavor_id == s1.flavor_id and adopted.user_id == s1.user_id
    assert records(env) == {} and remove(env, h) == set()
    (port,) = env.network.ports(ZUUL, {"device_id": s1.id})  # its project's port now
    assert port.device_owner == "compute:nova"
    assert_claims_match(env)
    assert_addresses_unique(env)
    assert steps(log, s1.id) == [("create", None, "seen"), ("adopt", "seen", "adopted")]
    servers = [(e.action, e.target) for e in log.query(Query(resource_id=s1.id,
                                                             resource_type="server"))]
    assert servers[-1] == ("create", "active")
    # it lives on as any server: deleted through the API, destroyed by its agent
    env.servers.delete(ZUUL, s1.id)
    assert remove(env, h) == {s1.id}


@pytest.mark.parametrize(("change", "why"), [
    ({"project_id": "p-none"}, "its project p-none is not in the database"),
    ({"flavor_id": "no-such-flavor"}, "its flavor no-such-flavor is not in the database"),
    ({"vcpus": 3}, "is not the size it runs with"),
    ({"user_id": None}, "its user is not known"),
    ({"ip": "10.255.255.1"}, "outside the pool"),
])
def test_adopt_reaps_what_the_database_cannot_take_and_says_why(
        db: Database, clock: FakeClock, log: EventLog, change: dict[str, Any], why: str
) -> None:
    env = make_env(db, clock, action="adopt")
    h = env.host("h1")
    (s1,) = running(env, h, "s1")
    known = forget(env, s1)
    report(env, h, Unknown(**{**known.__dict__, **change}))
    clock.advance(GRACE)
    assert env.hosts.unknown.expire() == {"reaped": 1, "adopted": 0, "unreaped": 0}
    assert remove(env, h) == {s1.id}
    reason = log.query(Query(resource_id=s1.id, resource_type="unknown-server"))[-1].reason
    assert reason is not None and reason.startswith("Not adopted: ") and why in reason, reason


def test_adopt_needs_its_own_address_and_room_on_the_host(
        db: Database, clock: FakeClock, log: EventLog) -> None:
    env = make_env(db, clock, action="adopt")
    h = env.host("h1", vcpus=24)  # room for three ci.8g
    a, b, c = running(env, h, "a", "b", "c")
    unknown = [forget(env, a), forget(env, b, rewind_cursor=True), forget(env, c)]
    # before the agent reported them, the restored controller gave b's address and two of
    # the three slots away
    took = [env.boot(name="took-b-address")]
    with db.write() as s:  # the other one's address is none of theirs
        s.execute(update(Subnet).values(next_ip=Subnet.pool_start + 100))
    took.append(env.boot(name="took-a-slot"))
    assert took[0].ip_address == b.ip_address
    assert {t.host_id for t in took} == {h.id}
    report(env, h, *unknown)
    clock.advance(GRACE)
    assert env.hosts.unknown.expire() == {"reaped": 2, "adopted": 1, "unreaped": 0}
    last = {sid: log.query(Query(resource_id=sid, resource_type="unknown-server"))[-1]
            for sid in (a.id, b.id, c.id)}
    assert "its address could not be held for it" in (last[b.id].reason or "")
    assert "another port's" in (last[b.id].reason or "")
    adopted = [sid for sid in (a.id, c.id) if last[sid].action == "adopt"]
    (refused,) = {a.id, c.id} - set(adopted)
    assert len(adopted) == 1 and "its host has no room for it" in (last[refused].reason or "")
    assert remove(env, h) == {b.id, refused}
    assert_claims_match(env)
    ips = [p.ip_address for p in env.ports()]  # the refused one's address held until it goes
    assert len(ips) == len(set(ips))
    report(env, h, items=[Report(refused, "absent"), Report(b.id, "absent")])
    assert_addresses_unique(env)


def test_a_server_its_host_lacks_goes_to_error_and_keeps_its_port_until_deleted(
        db: Database, clock: FakeClock) -> None:
    """The other half of a restore: the database has a server its host no longer runs
    (deleted after the backup). Its agent reports it absent: ERROR with a fault saying so,
    never ACTIVE; deleting it frees its address."""
    env = make_env(db, clock)
    h = env.host("h1")
    (s1,) = running(env, h, "deleted-after-the-backup")
    report(env, h, items=[Report(s1.id, "absent")])
    lost = env.state(s1.id)
    assert lost.state == "error" and "deleted after the backup" in lost.fault["message"]
    assert s1.id in remove(env, h)
    env.servers.delete(ZUUL, s1.id)
    report(env, h, items=[Report(s1.id, "absent")])
    assert gone(env, s1.id)
    assert env.network.ports(ZUUL, {"device_id": s1.id}) == []


def test_two_reapers_handle_each_unknown_server_once(db: Database, clock: FakeClock,
                                                     log: EventLog) -> None:
    """Two controllers' reapers on one database (a second HostService): one reap each."""
    env = make_env(db, clock)
    other = make_env(db, clock)
    h = env.host("h1")
    servers = running(env, h, *(f"s{n}" for n in range(4)))
    report(env, h, *[forget(env, s) for s in servers])
    clock.advance(GRACE)
    counts = [env.hosts.unknown.expire()["reaped"], other.hosts.unknown.expire()["reaped"]]
    assert sorted(counts) == [0, 4]
    with db.read() as s:
        assert set(s.scalars(select(UnknownServer.state))) == {"reaping"}
    for server in servers:
        assert [a for a, _, _ in steps(log, server.id)] == ["create", "reap"]


def test_a_controller_restored_from_an_old_backup_gives_its_hosts_time_to_call(
        db: Database, clock: FakeClock) -> None:
    """The restored hosts' last heartbeats are as old as the backup: they count from the
    controller's start, so its agents have `host_down_after` to fail over before their hosts
    go down (and their servers, `instance_error_after` later, to ERROR)."""
    env = make_env(db, clock)
    h = env.host("h1")
    running(env, h, "s1")
    clock.advance(3600)  # the backup is an hour old; a new controller starts on it now
    restored = make_env(db, clock)
    assert restored.hosts.reap()["hosts_down"] == 0
    clock.advance(restored.config.host_down_after - 1)
    assert restored.hosts.reap()["hosts_down"] == 0
    restored.beat(h)  # its agent is back in time: nothing happened to it
    clock.advance(restored.config.host_down_after + 1)
    assert restored.hosts.reap()["hosts_down"] == 1  # silent since: down as ever
