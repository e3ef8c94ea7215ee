"""Compute services, part 2: host liveness, agents' reports, the servers API calls, the
state tables, and PostgreSQL-only races run deterministically."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import event

from infracloud.compute.hosts import MAX_CONSOLE, Registration, Report
from infracloud.compute.keypairs import KeypairService
from infracloud.core.clock import FakeClock
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.states import HOST, IMAGE, INSTANCE, Machine, State, Transition
from infracloud.store import Database
from infracloud.store.models import Instance
from tests.conftest import create_pg_database
from tests.unit.compute_env import (  # noqa: F401
    ADMIN,
    BIG,
    CI,
    ZUUL,
    Env,
    FakeImage,
    assert_addresses_unique,
    assert_claims_match,
    env_fixture,
    gone,
)

# ---- 5. host liveness --------------------------------------------------------------------------


def test_silent_host_goes_down_then_its_servers_fail(env: Env, clock: FakeClock) -> None:
    c = env.config
    a, b = env.host("a"), env.host("b")
    spawning = env.boot(name="spawning")
    active = env.boot(name="active")
    assert {spawning.host_id, active.host_id} == {a.id, b.id}
    on_a = spawning if spawning.host_id == a.id else active
    env.hosts.report(a.id, [Report(on_a.id, "running")])
    on_b = active if on_a is spawning else spawning

    clock.advance(c.host_down_after - 1)
    env.beat(b)
    assert env.hosts.reap()["hosts_down"] == 0
    clock.advance(2)
    env.beat(b)
    assert env.hosts.reap() == {"hosts_down": 1, "servers_failed": 0, "spawn_timeouts": 0,
                                "deleted": 0, "action_timeouts": 0}
    down = env.host_row("a")
    assert down.state == "down" and down.down_since == clock.now()
    assert env.host_row("b").state == "up"
    assert env.state(on_a.id).state == "active"  # not yet: the grace runs
    assert env.boot(name="new", flavor="ci.small").host_id == b.id  # down hosts get nothing

    clock.advance(c.instance_error_after - 1)
    env.beat(b)
    assert env.hosts.reap()["servers_failed"] == 0
    clock.advance(1)
    env.beat(b)
    notified = len(env.notified)
    assert env.hosts.reap()["servers_failed"] == 1
    failed = env.state(on_a.id)
    assert failed.state == "error" and "Compute host a is down" in failed.fault["message"]
    assert env.state(on_b.id).state in ("spawning", "active")
    assert env.notified[notified:] == [a.id]
    assert env.hosts.desired(a.id)[2] == [on_a.id]  # the agent destroys it when it is back

    gen = env.hosts.generation(a.id)
    env.hosts.heartbeat(a.id)
    back = env.host_row("a")
    assert back.state == "up" and back.down_since is None and back.generation > gen
    assert env.boot(name="after", flavor="ci.small").host_id == a.id


def test_down_host_spawning_server_fails(env: Env, clock: FakeClock) -> None:
    a = env.host("a")
    s = env.boot(name="s")
    clock.advance(env.config.host_down_after + 1)
    env.hosts.reap()
    assert env.boot(name="t").state == "error"  # the only host is down
    clock.advance(env.config.instance_error_after)
    assert env.hosts.reap()["servers_failed"] == 1
    assert env.state(s.id).state == "error"
    assert "Compute host a is down" in env.state(s.id).fault["message"]
    env.hosts.register(Registration("a", "fake", **BIG))  # re-registering brings it back
    assert env.host_row("a").state == "up"
    assert env.hosts.desired(a.id)[1] == []


def test_spawn_timeout(env: Env, clock: FakeClock) -> None:
    h = env.host("h")
    s = env.boot(name="slow")
    quick = env.boot(name="quick")
    env.hosts.report(h.id, [Report(quick.id, "running")])
    clock.advance(env.config.spawn_timeout - 1)
    env.beat(h)
    assert env.hosts.reap()["spawn_timeouts"] == 0
    gen = env.hosts.generation(h.id)
    clock.advance(2)
    env.beat(h)
    notified = len(env.notified)
    assert env.hosts.reap() == {"hosts_down": 0, "servers_failed": 0, "spawn_timeouts": 1,
                                "deleted": 0, "action_timeouts": 0}
    failed = env.state(s.id)
    assert failed.state == "error" and "Timed out after 900 s" in failed.fault["message"]
    assert env.state(quick.id).state == "active"
    assert env.hosts.generation(h.id) > gen and env.notified[notified:] == [h.id]


def test_delete_on_an_up_host_waits_for_the_agent(env: Env) -> None:
    h = env.host("h")
    s = env.boot(name="s")
    env.hosts.report(h.id, [Report(s.id, "running")])
    gen = env.hosts.generation(h.id)
    notified = len(env.notified)
    env.servers.delete(ZUUL, s.id)
    deleting = env.state(s.id)
    assert deleting.state == "deleting"
    assert env.hosts.generation(h.id) == gen + 1 and env.notified[notified:] == [h.id]
    assert env.hosts.desired(h.id)[2] == [s.id] and env.hosts.desired(h.id)[1] == []
    assert len(env.ports()) == 1 and env.host_row("h").used_vcpus == 8  # still held
    env.servers.delete(ZUUL, s.id)  # again: still deleting
    assert env.state(s.id).state == "deleting"

    env.hosts.report(h.id, [Report(s.id, "absent")])
    assert gone(env, s.id)
    host = env.host_row("h")
    assert (host.used_vcpus, host.used_ram_mb, host.used_disk_gb) == (0, 0, 0)
    assert env.ports() == [] and env.hosts.desired(h.id)[2] == []
    with pytest.raises(NotFound):
        env.servers.delete(ZUUL, s.id)


def test_delete_on_a_down_host_is_immediate(env: Env, clock: FakeClock) -> None:
    h = env.host("h")
    s = env.boot(name="s")
    clock.advance(env.config.host_down_after + 1)
    env.hosts.reap()
    notified = len(env.notified)
    env.servers.delete(ZUUL, s.id)
    assert gone(env, s.id)
    assert env.ports() == [] and env.host_row("h").used_vcpus == 0
    assert env.notified[notified:] == []
    env.beat(h)
    assert env.hosts.desired(h.id)[1] == [] and env.hosts.desired(h.id)[2] == []


def test_deleting_times_out(env: Env, clock: FakeClock) -> None:
    h = env.host("h")
    s = env.boot(name="s")
    env.servers.delete(ZUUL, s.id)
    timeout = INSTANCE.states["deleting"].timeout or 0
    clock.advance(timeout - 1)
    env.beat(h)
    assert env.hosts.reap()["deleted"] == 0
    clock.advance(2)
    env.beat(h)
    assert env.hosts.reap()["deleted"] == 1
    assert gone(env, s.id) and env.ports() == [] and env.host_row("h").used_vcpus == 0


def test_deleting_a_failed_server_on_an_up_host(env: Env) -> None:
    """error --delete--> deleting: the agent is asked to clean up, then the record goes."""
    h = env.host("h")
    s = env.boot(name="s")
    env.hosts.report(h.id, [Report(s.id, "failed", fault="boom")])
    env.servers.delete(ZUUL, s.id)
    assert env.state(s.id).state == "deleting" and env.hosts.desired(h.id)[2] == [s.id]
    env.hosts.report(h.id, [Report(s.id, "absent")])
    assert gone(env, s.id) and env.host_row("h").used_vcpus == 0


# ---- 6. reports ------------------------------------------------------------------------------


def test_reports_drive_server_states(env: Env, clock: FakeClock) -> None:
    h = env.host("h")
    ok, bad, lost = (env.boot(name=n, flavor="ci.small") for n in ("ok", "bad", "lost"))
    clock.advance(3)
    env.hosts.report(h.id, [Report(ok.id, "running"), Report(lost.id, "running"),
                            Report(bad.id, "failed", fault="qemu: disk image is corrupt")])
    active = env.state(ok.id)
    assert active.state == "active" and active.launched_at == clock.now()
    assert active.state_changed_at == clock.now()
    assert [p.status for p in env.network.ports(ADMIN, {"device_id": ok.id})] == ["ACTIVE"]
    failed = env.state(bad.id)
    assert failed.state == "error" and failed.fault["message"] == "qemu: disk image is corrupt"
    assert failed.fault["code"] == 500
    assert [p.status for p in env.network.ports(ADMIN, {"device_id": bad.id})] == ["DOWN"]
    assert sorted(env.hosts.desired(h.id)[2]) == [bad.id]

    env.hosts.report(h.id, [Report(lost.id, "absent")])
    vanished = env.state(lost.id)
    assert vanished.state == "error" and "disappeared" in vanished.fault["message"]
    # a spawning server reported absent is not failed (the agent may not have started it)
    spawning = env.boot(name="pending", flavor="ci.small")
    env.hosts.report(h.id, [Report(spawning.id, "absent")])
    assert env.state(spawning.id).state == "spawning"
    env.hosts.report(h.id, [Report(bad.id, "running")])  # error is not left by a report
    assert env.state(bad.id).state == "error"


def test_report_without_fault_text(env: Env) -> None:
    h = env.host("h")
    s = env.boot(name="s")
    env.hosts.report(h.id, [Report(s.id, "failed")])
    assert env.state(s.id).fault["message"] == "The host failed to spawn the server."


def test_reports_only_touch_the_reporting_hosts_servers(env: Env) -> None:
    a, b = env.host("a"), env.host("b")
    on_a = env.boot(name="s")
    assert on_a.host_id == a.id
    env.hosts.report(b.id, [Report(on_a.id, "running"), Report("no-such-server", "running")])
    assert env.state(on_a.id).state == "spawning"
    with pytest.raises(NotFound):
        env.hosts.report("no-such-host", [])


def test_console_is_stored_and_truncated(env: Env) -> None:
    h = env.host("h")
    s = env.boot(name="s")
    env.hosts.report(h.id, [Report(s.id, "running", console="boot\nlogin: \n")])
    assert env.servers.console(ZUUL, s.id, None) == "boot\nlogin: \n"
    big = "".join(f"line {i:06d}\n" for i in range(10000))  # 120,000 characters
    env.hosts.report(h.id, [Report(s.id, "running", console=big)])
    stored = env.servers.console(ZUUL, s.id, None)
    assert len(stored) == MAX_CONSOLE == 64 * 1024 and big.endswith(stored)
    assert env.servers.console(ZUUL, s.id, 2) == "line 009998\nline 009999\n"
    env.hosts.report(h.id, [Report(s.id, "running")])  # no console: kept
    assert env.servers.console(ZUUL, s.id, None) == stored


# ---- 7. the server calls of the API -----------------------------------------------------------


def test_list_by_name_regex(env: Env) -> None:
    env.host("h")
    for name in ("n1", "n10", "m1", "xn1"):
        env.boot(name=name, flavor="ci.small")
    names = lambda pattern: sorted(i.name for i in env.servers.list_servers(  # noqa: E731
        ZUUL, name=pattern)[0])
    assert names("^n1$") == ["n1"]
    assert names("n") == ["n1", "n10", "xn1"]
    assert names("^n") == ["n1", "n10"]
    assert names("1$") == ["m1", "n1", "xn1"]
    with pytest.raises(BadRequest, match="regular expression"):
        env.servers.list_servers(ZUUL, name="(")


@pytest.mark.parametrize("name", [None, "^s"])
def test_pagination(env: Env, clock: FakeClock, name: str | None) -> None:
    env.host("h")
    made = []
    for i in range(11):
        made.append(env.boot(name=f"s{i}", flavor="ci.small").id)
        if i % 3 == 0:  # some share a creation time: ties are ordered by id
            clock.advance(1)
    env.boot(CI, name="someone else's", flavor="ci.small")
    everything, marker = env.servers.list_servers(ZUUL, name=name)
    assert marker is None and {i.id for i in everything} == set(made)
    keys = [(i.created_at, i.id) for i in everything]
    assert keys == sorted(keys, reverse=True)  # newest first
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        page, marker = env.servers.list_servers(ZUUL, name=name, limit=4, marker=marker)
        pages += 1
        assert len(page) == (4 if pages < 3 else 3)
        seen += [i.id for i in page]
        if marker is None:
            break
        assert marker == page[-1].id
    assert pages == 3
    assert seen == [i.id for i in everything] and len(set(seen)) == 11
    with pytest.raises(BadRequest, match="marker"):
        env.servers.list_servers(ZUUL, name=name, limit=4, marker="no-such-server")


def test_limit_zero_gives_an_empty_page_without_marker(env: Env) -> None:
    """The API accepts limit=0 (nova answers an empty list and no next link). list_servers
    returns an empty page with a marker, the id of the newest server: following it skips
    that server."""
    env.host("h")
    made = {env.boot(name=f"s{i}", flavor="ci.small").id for i in range(3)}
    page, marker = env.servers.list_servers(ZUUL, limit=0)
    assert page == []
    if marker is not None:
        rest, _ = env.servers.list_servers(ZUUL, marker=marker)
        assert {i.id for i in rest} == made, "following the marker skips a server"
    assert marker is None


def test_projects_are_isolated(env: Env) -> None:
    env.host("h")
    mine = env.boot(ZUUL, name="mine", flavor="ci.small")
    theirs = env.boot(CI, name="theirs", flavor="ci.small")
    assert [i.id for i in env.servers.list_servers(ZUUL)[0]] == [mine.id]
    assert [i.id for i in env.servers.list_servers(ZUUL, all_projects=True)[0]] == [mine.id]
    for call in (lambda: env.servers.get(CI, mine.id),
                 lambda: env.servers.delete(CI, mine.id),
                 lambda: env.servers.console(CI, mine.id, None),
                 lambda: env.servers.set_metadata(CI, mine.id, {"a": "b"}, replace=False),
                 lambda: env.servers.delete_metadata(CI, mine.id, "a")):
        with pytest.raises(NotFound):
            call()
    assert env.state(mine.id).state == "spawning"
    assert env.servers.list_servers(ADMIN)[0] == []  # its own project only
    everyone = env.servers.list_servers(ADMIN, all_projects=True)[0]
    assert {i.id for i in everyone} == {mine.id, theirs.id}
    assert [i.id for i in env.servers.list_servers(ADMIN, project_id="p-ci")[0]] == [theirs.id]
    assert env.servers.get(ADMIN, theirs.id).name == "theirs"
    env.servers.delete(ADMIN, theirs.id)
    assert env.state(theirs.id).state == "deleting"


def test_metadata_round_trips(env: Env) -> None:
    env.host("h")
    s = env.boot(name="s", metadata={"a": "1", "ünï": "çødé"})
    assert env.servers.get(ZUUL, s.id).metadata_ == {"a": "1", "ünï": "çødé"}
    assert env.servers.set_metadata(ZUUL, s.id, {"b": "2", "a": "x"}, replace=False) == {
        "a": "x", "ünï": "çødé", "b": "2"}
    assert env.servers.get(ZUUL, s.id).metadata_ == {"a": "x", "ünï": "çødé", "b": "2"}
    assert env.servers.set_metadata(ZUUL, s.id, {"c": "3"}, replace=True) == {"c": "3"}
    assert env.servers.get(ZUUL, s.id).metadata_ == {"c": "3"}
    env.servers.delete_metadata(ZUUL, s.id, "c")
    assert env.servers.get(ZUUL, s.id).metadata_ == {}
    with pytest.raises(NotFound):
        env.servers.delete_metadata(ZUUL, s.id, "c")
    for bad in ({"a": 1}, {"a": None}, {"": "x"}, {"k" * 256: "v"}, {"k": "v" * 256},
                ["a"]):
        with pytest.raises(BadRequest):
            env.servers.set_metadata(ZUUL, s.id, bad, replace=True)
    with pytest.raises(Forbidden, match="Quota exceeded for metadata_items"):  # nova's 403
        env.servers.set_metadata(ZUUL, s.id, {str(i): "v" for i in range(129)}, replace=True)
    env.servers.set_metadata(ZUUL, s.id, {str(i): "v" for i in range(128)}, replace=True)
    with pytest.raises(Forbidden):  # merged, the limit still holds
        env.servers.set_metadata(ZUUL, s.id, {"one more": "v"}, replace=False)
    assert len(env.servers.get(ZUUL, s.id).metadata_) == 128


def test_console_length(env: Env) -> None:
    h = env.host("h")
    s = env.boot(name="s")
    assert env.servers.console(ZUUL, s.id, None) == ""
    env.hosts.report(h.id, [Report(s.id, "running", console="one\ntwo\nthree\nfour")])
    assert env.servers.console(ZUUL, s.id, 2) == "three\nfour"
    assert env.servers.console(ZUUL, s.id, 1) == "four"
    assert env.servers.console(ZUUL, s.id, 10) == "one\ntwo\nthree\nfour"
    assert env.servers.console(ZUUL, s.id, 0) == ""
    assert env.servers.console(ZUUL, s.id, None) == "one\ntwo\nthree\nfour"


def test_flavor_in_use_cannot_be_deleted(env: Env) -> None:
    h = env.host("h")
    flavor = env.flavors.create(ADMIN, name="tiny", vcpus=1, ram_mb=512, disk_gb=1)
    with pytest.raises(Forbidden):
        env.flavors.create(ZUUL, name="mine", vcpus=1, ram_mb=512, disk_gb=1)
    with pytest.raises(Conflict):
        env.flavors.create(ADMIN, name="tiny", vcpus=2, ram_mb=512, disk_gb=1)
    s = env.boot(name="s", flavor=flavor.id)
    assert (s.vcpus, s.ram_mb, s.disk_gb) == (1, 512, 1)
    with pytest.raises(Forbidden):
        env.flavors.delete(ZUUL, flavor.id)
    with pytest.raises(Conflict, match="used by 1 servers"):
        env.flavors.delete(ADMIN, flavor.id)
    env.servers.delete(ZUUL, s.id)
    with pytest.raises(Conflict):  # still deleting: the server record exists
        env.flavors.delete(ADMIN, flavor.id)
    env.hosts.report(h.id, [Report(s.id, "absent")])
    env.flavors.delete(ADMIN, flavor.id)
    with pytest.raises(NotFound):
        env.flavors.get(flavor.id)
    with pytest.raises(BadRequest, match="Flavor"):
        env.boot(name="t", flavor=flavor.id)
    assert [f.name for f in env.flavors.list()] == ["ci.small", "ci.8g", "ci.8g-30"]


def md5_fingerprint(public_key: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_key.split()[1])).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def test_keypairs(env: Env) -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    pair, private = env.keypairs.create(ZUUL, "laptop", public + " me@laptop\n")
    assert private is None
    assert pair.fingerprint == md5_fingerprint(public) and len(pair.fingerprint) == 47
    assert pair.public_key == public + " me@laptop"
    with pytest.raises(Conflict):
        env.keypairs.create(ZUUL, "laptop", public)
    env.keypairs.create(CI, "laptop", public)  # per user

    made, private = env.keypairs.create(ZUUL, "generated", None)
    assert private is not None and private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(private.encode(), password=None)
    derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH).decode()
    assert made.public_key.split()[:2] == derived.split()
    assert made.fingerprint == md5_fingerprint(derived)
    assert [k.name for k in env.keypairs.list(ZUUL)] == ["generated", "laptop"]

    for name, data in (("bad", "ssh-rsa"), ("bad", "ssh-dss AAAA"), ("bad", "ssh-rsa !!!!"),
                       ("", public), ("a/b", public)):
        with pytest.raises(BadRequest):
            env.keypairs.create(ZUUL, name, data)

    env.host("h")
    s = env.boot(name="with key", key_name="laptop")
    assert s.key_name == "laptop" and s.key_data == pair.public_key
    with pytest.raises(BadRequest, match="key_name"):
        env.boot(name="bad key", key_name="nope")
    env.keypairs.delete(ZUUL, "laptop")
    with pytest.raises(NotFound):
        env.keypairs.get(ZUUL, "laptop")


def test_keypair_limit(db: Database, clock: FakeClock) -> None:
    keypairs = KeypairService(db, clock, max_per_user=2)
    keypairs.create(ZUUL, "a", None)
    keypairs.create(ZUUL, "b", None)
    with pytest.raises(Forbidden, match="Quota exceeded for key_pairs"):
        keypairs.create(ZUUL, "c", None)


def test_bad_requests_leave_nothing_behind(env: Env) -> None:
    env.host("h")
    env.images["inactive"] = FakeImage("inactive", status="queued")
    env.images["hungry"] = FakeImage("hungry", min_ram=16384)
    env.images["fat"] = FakeImage("fat", min_disk=100)
    net = env.network.network
    assert net is not None
    bad: list[tuple[Caller, dict[str, Any]]] = [
        (ZUUL, {"flavor": "no-such-flavor"}),
        (ZUUL, {"user_data": "not base64!"}),
        (ZUUL, {"user_data": base64.b64encode(b"x" * 65536).decode()}),
        (ZUUL, {"metadata": {"a": 1}}),
        (ZUUL, {"metadata": "a=1"}),
        (ZUUL, {"networks": [{"uuid": "no-such-network"}]}),
        (ZUUL, {"networks": [{"uuid": net.id, "fixed_ip": "10.42.0.9"}]}),
        (ZUUL, {"networks": [{"port": "p"}]}),
        (ZUUL, {"networks": "everything"}),
        (ZUUL, {"image_ref": "no-such-image"}),
        (ZUUL, {"image_ref": None}),
        (ZUUL, {"image_ref": "inactive"}),
        (ZUUL, {"image_ref": "hungry"}),
        (ZUUL, {"image_ref": "fat"}),
        (ZUUL, {"name": ""}),
        (ZUUL, {"name": "x" * 256}),
        (ZUUL, {"count": 2, "min_count": 3}),  # min_count must be <= max_count
        (ZUUL, {"count": 0}),
        (ZUUL, {"key_name": "nope"}),
        (ZUUL, {"availability_zone": "mars"}),
        (Caller("u-unscoped", None, frozenset()), {}),
    ]
    for caller, kw in bad:
        kw = dict(kw)
        flavor = kw.pop("flavor", "ci.8g")
        name = kw.pop("name", "bad")
        with pytest.raises(BadRequest):
            env.boot(caller, name=name, flavor=flavor, **kw)
    assert env.instances() == [] and env.ports() == []
    assert env.host_row("h").used_vcpus == 0 and env.notified == []
    ok = env.boot(name="ok", user_data=base64.b64encode(b"#!/bin/sh\n").decode(),
                  networks=[{"uuid": net.id}])
    assert ok.state == "spawning" and ok.user_data == "IyEvYmluL3NoCg=="
    for networks in (None, "auto", [], [{}]):
        assert env.boot(name="nets", flavor="ci.small", networks=networks).state == "spawning"


# ---- 8. state tables ---------------------------------------------------------------------------


def reachable(machine: Machine, start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for t in machine.transitions:
            if t.source == state and t.target not in seen:
                seen.add(t.target)
                todo.append(t.target)
    return seen


@pytest.mark.parametrize("machine", [INSTANCE, HOST, IMAGE], ids=lambda m: m.kind)
def test_in_progress_states_time_out_and_can_fail(machine: Machine) -> None:
    failures = {n for n, s in machine.states.items() if s.failure}
    assert failures
    for name, state in machine.states.items():
        if not state.stable:
            assert state.timeout is not None and state.timeout > 0, name
            direct = {t.target for t in machine.transitions if t.source == name}
            assert direct & failures, f"{name} has no direct way to a failure state"
        assert reachable(machine, name) - {name} or state.stable, name
        if state.failure:
            assert reachable(machine, name) - {name}, f"failure state {name} is a dead end"
    for t in machine.transitions:
        assert machine.next(t.source, t.event) == t.target
        assert machine.allows(t.source, t.event)


def test_instance_table() -> None:
    assert reachable(INSTANCE, "scheduling") == set(INSTANCE.states)
    # the path create takes, and the ways the controller fails or ends a server
    assert INSTANCE.next(INSTANCE.next(INSTANCE.next("scheduling", "scheduled"), "networked"),
                         "booted") == "active"
    assert INSTANCE.next("spawning", "timeout") == "error"
    assert INSTANCE.next("deleting", "timeout") == "deleted"
    assert INSTANCE.next("active", "host_lost") == "error"
    assert INSTANCE.states["deleted"].stable and not INSTANCE.states["deleted"].failure
    assert HOST.next("up", "missed_heartbeats") == "down"
    assert HOST.next("down", "heartbeat") == "up"


@pytest.mark.parametrize(("machine", "source", "event"), [
    (INSTANCE, "active", "booted"), (INSTANCE, "deleted", "delete"),
    (INSTANCE, "error", "booted"), (INSTANCE, "spawning", "scheduled"),
    (INSTANCE, "active", "no_such_event"), (HOST, "up", "heartbeat"),
    (HOST, "down", "missed_heartbeats"), (IMAGE, "deleted", "upload"),
])
def test_illegal_transition_is_a_conflict(machine: Machine, source: str, event: str) -> None:
    assert not machine.allows(source, event)
    with pytest.raises(Conflict, match="transition"):
        machine.next(source, event)


def test_machine_rejects_incomplete_tables() -> None:
    with pytest.raises(ValueError, match="no timeout"):
        Machine("x", [State("a", stable=False), State("e", stable=True, failure=True)],
                [Transition("a", "fail", "e"), Transition("e", "retry", "a")])
    with pytest.raises(ValueError, match="cannot fail"):
        Machine("x", [State("a", stable=False, timeout=1), State("b", stable=True)],
                [Transition("a", "done", "b")])
    with pytest.raises(ValueError, match="no way out"):
        Machine("x", [State("a", stable=False, timeout=1),
                      State("e", stable=True, failure=True)], [Transition("a", "fail", "e")])
    with pytest.raises(ValueError, match="unknown state"):
        Machine("x", [State("a", stable=True)], [Transition("a", "go", "b")])


# ---- 9. races on PostgreSQL (SQLite write transactions are serial) --------------------


@pytest.fixture
def pg_db(pg_admin_url: str, pg_template: str) -> Iterator[Database]:
    """PostgreSQL only, for races SQLite cannot have (its write transactions are serial)."""
    database = Database(create_pg_database(pg_admin_url, template=pg_template))
    yield database
    database.dispose()


@contextlib.contextmanager
def interleave(db: Database, fragment: str, action: Callable[[], None]) -> Iterator[None]:
    """Run `action` in another thread, up to 2 s, each time this thread's transaction has
    executed a statement containing `fragment`: a deterministic concurrent transaction."""
    me = threading.current_thread()
    others: list[threading.Thread] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread() is me and fragment in statement:
            t = threading.Thread(target=action)
            others.append(t)
            t.start()
            t.join(2)  # it may wait for a lock this transaction holds

    event.listen(db.engine, "after_cursor_execute", hook)
    try:
        yield
    finally:
        event.remove(db.engine, "after_cursor_execute", hook)
        for t in others:
            t.join(30)


@pytest.mark.pg
def test_address_allocation_is_not_starved_by_other_projects(pg_db: Database,
                                                             clock: FakeClock) -> None:
    """Creates of different projects run in parallel on PostgreSQL. A create that meets a
    competing create at every allocation (as happens with many projects creating at once)
    must still get an address: with optimistic allocation (read the highest address, insert
    the next, retry the whole transaction on a clash, at most 8 times) it failed with 'Could
    not allocate an address' although the pool had 65,000 free addresses."""
    env = Env(pg_db, clock)
    env.host("victim-host", zone="az-v")
    env.host("other-host")
    competitors: list[Instance | Exception] = []
    started: list[int] = []

    def compete() -> None:
        if len(started) >= 10:
            return
        started.append(1)
        caller = Caller("u-c", f"p-c{len(started)}", frozenset({"member"}))
        try:
            competitors.append(env.boot(caller, name="competitor", flavor="ci.small",
                                        availability_zone="nova"))
        except Exception as exc:
            competitors.append(exc)

    with interleave(pg_db, "ports.ip_int", compete):  # when it has read the used addresses
        victim = env.boot(name="victim", flavor="ci.small", availability_zone="az-v")
    assert started
    assert victim.state == "spawning" and victim.ip_address
    assert all(isinstance(c, Instance) and c.state == "spawning" for c in competitors)
    assert_addresses_unique(env)
    assert_claims_match(env)


@pytest.mark.pg
def test_report_does_not_lose_a_concurrent_generation_bump(pg_db: Database,
                                                           clock: FakeClock) -> None:
    """Every change bumps the host's generation (agents long-poll on it). report() writes
    `host.generation += 1` from the host it read: if a create could commit in between (its
    claim bumped the generation), the two changes would share one number and an agent that
    read the generation after the create would never learn of the report's."""
    env = Env(pg_db, clock)
    h = env.host("h")
    s = env.boot(name="s")
    before = env.hosts.generation(h.id)
    creates: list[Instance] = []
    started: list[bool] = []

    def create() -> None:
        if not started:
            started.append(True)
            creates.append(env.boot(CI, name="concurrent", flavor="ci.small"))

    clock.advance(1)
    with interleave(pg_db, "WHERE hosts.id =", create):  # right after report() reads the host
        env.hosts.report(h.id, [Report(s.id, "failed", fault="boom")])
    assert env.state(s.id).state == "error"
    assert len(creates) == 1 and env.state(creates[0].id).host_id == h.id
    assert env.hosts.generation(h.id) == before + 2, (
        "two committed changes (a claim and a report), but the generation moved once")


@pytest.mark.pg
def test_reap_does_not_mark_down_a_host_whose_heartbeat_just_arrived(pg_db: Database,
                                                                     clock: FakeClock) -> None:
    """reap() selects the silent hosts, then writes state=down from that read. A heartbeat
    that commits in between (the agent was slow, not gone) is overwritten: the host is down
    with a fresh heartbeat, and until its next heartbeat every create fails with 'No valid
    host'."""
    env = Env(pg_db, clock)
    h = env.host("h")
    clock.advance(env.config.host_down_after + 1)
    started: list[bool] = []

    def heartbeat() -> None:
        if not started:
            started.append(True)
            env.hosts.heartbeat(h.id)

    with interleave(pg_db, "hosts.last_heartbeat <", heartbeat):
        env.hosts.reap()
    assert started
    host = env.host_row("h")
    assert host.last_heartbeat == clock.now()
    assert host.state == "up", "down, although its heartbeat arrived during the reap"
    assert env.boot(name="s").host_id == h.id


@pytest.mark.pg
def test_delete_racing_the_agents_absent_report(pg_db: Database, clock: FakeClock) -> None:
    """A second DELETE of a server being deleted (clients repeat them) while the agent's
    'absent' report removes the record: the request may find the server gone (404) or
    succeed, but not fail with an internal error."""
    env = Env(pg_db, clock)
    h = env.host("h")
    s = env.boot(name="s")
    env.servers.delete(ZUUL, s.id)
    started: list[bool] = []

    def absent() -> None:
        if not started:
            started.append(True)
            env.hosts.report(h.id, [Report(s.id, "absent")])

    clock.advance(5)
    with interleave(pg_db, "WHERE instances.id =", absent), contextlib.suppress(NotFound):
        env.servers.delete(ZUUL, s.id)
    assert started and gone(env, s.id)
    assert env.host_row("h").used_vcpus == 0 and env.ports() == []


@pytest.mark.pg
def test_delete_and_the_agents_report_do_not_deadlock(pg_db: Database,
                                                       clock: FakeClock) -> None:
    """An agent's report locks its host's row, then its servers'; a DELETE that wrote the
    server's row before moving its host's generation took them in the other order, and the
    two deadlocked (PostgreSQL ended one: a 500 seen under churn). The report runs as soon as
    the DELETE has written the server's row; both must succeed."""
    env = Env(pg_db, clock)
    h = env.host("h")
    s = env.boot(name="s")
    failed: list[BaseException] = []

    def report() -> None:
        try:
            env.hosts.report(h.id, [Report(s.id, "running")])
        except BaseException as exc:
            failed.append(exc)

    with interleave(pg_db, "UPDATE instances SET", report):
        env.servers.delete(ZUUL, s.id)
    assert failed == []
    assert env.servers.get(ZUUL, s.id).state == "deleting"
