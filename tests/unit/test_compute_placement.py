"""Compute services, part 1: atomic claims under concurrency, IPAM, quotas, the scheduler's
filters and weighers. On SQLite and PostgreSQL."""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter

import pytest

from infracloud.compute import scheduler
from infracloud.compute.hosts import Report
from infracloud.compute.quotas import SHOWN_ONLY, Usage
from infracloud.core.clock import FakeClock
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.settings import ComputeConfig, ComputeQuotaConfig, NetworkConfig
from infracloud.store import Database
from infracloud.store.models import Instance
from tests.unit.compute_env import (  # noqa: F401
    ADMIN,
    CI,
    UNLIMITED,
    ZUUL,
    Env,
    assert_addresses_unique,
    assert_claims_match,
    assert_within_capacity,
    env_fixture,
    gone,
    in_threads,
)

# ---- 1. atomic claims under concurrency --------------------------------------------------------


@pytest.mark.parametrize("projects", [1, 10])
def test_concurrent_creates_never_overcommit(env: Env, projects: int) -> None:
    """50 simultaneous creates for 10 slots: exactly 10 spawn. With one project the quota lock
    serialises them; with ten the claims themselves race (and the address allocation too)."""
    a, b = env.host("host-a"), env.host("host-b")
    capacity = scheduler.capacity(env.hosts.list_hosts(), scheduler.Request(8, 8192, 80))
    assert capacity == 10

    def create(i: int) -> Instance:
        caller = Caller(f"u-{i}", f"p-{i % projects}", frozenset({"member"}))
        return env.boot(caller, name=f"load-{i}")

    results = in_threads(50, create)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    states = Counter(r.state for r in results)
    assert states == {"spawning": 10, "error": 40}
    for r in results:
        stored = env.state(r.id)
        assert stored.state == r.state
        if r.state == "error":
            assert "No valid host" in stored.fault["message"]
            assert stored.host_id is None and stored.ip_address is None
        else:
            assert stored.host_id in (a.id, b.id) and stored.fault is None
    per_host = Counter(r.host_id for r in results if r.state == "spawning")
    assert per_host == {a.id: 5, b.id: 5}
    assert_within_capacity(env)
    assert_claims_match(env)
    for h in env.hosts.list_hosts():
        assert (h.used_vcpus, h.used_ram_mb, h.used_disk_gb) == (40, 40960, 400)
    assert len(assert_addresses_unique(env)) == 10
    assert Counter(env.notified) == {a.id: 5, b.id: 5}
    assert len(env.instances()) == 50


# ---- 2. IPAM -------------------------------------------------------------------------------------


def test_addresses_are_unique_under_concurrency_and_after_restart(db: Database,
                                                                  clock: FakeClock) -> None:
    # pool: 10.9.0.2 - 10.9.0.126, 125 addresses
    env = Env(db, clock, ComputeConfig(quota=UNLIMITED,
                                       network=NetworkConfig(cidr="10.9.0.0/25")))
    hosts = [env.host(f"h{i}", vcpus=64, ram_mb=65536, disk_gb=1000) for i in range(3)]

    def create(i: int) -> Instance:
        caller = Caller(f"u-{i}", f"p-{i % 10}", frozenset({"member"}))
        return env.boot(caller, name=f"ip-{i}", flavor="ci.small")

    first = in_threads(100, create)
    assert [r for r in first if isinstance(r, Exception)] == []
    assert all(r.state == "spawning" for r in first)
    ports = assert_addresses_unique(env)
    assert len(ports) == 100 and {p.device_id for p in ports} == {r.id for r in first}
    assert all(p.device_owner == "compute:nova" and p.status == "DOWN" for p in ports)

    # 20 deletions the agents have confirmed, 10 still being deleted (their addresses in use)
    for r in first[:30]:
        env.servers.delete(ADMIN, r.id)
    for h in hosts:
        env.hosts.report(h.id, [Report(r.id, "absent") for r in first[:20]])
    assert all(gone(env, r.id) for r in first[:20])
    assert all(env.state(r.id).state == "deleting" for r in first[20:30])
    in_use = {p.ip_address for p in env.ports()}
    assert len(in_use) == 80

    # 40 more: 25 to the end of the pool, then 15 from the gaps the 20 deletions left
    second = in_threads(40, lambda i: create(100 + i))
    assert [r for r in second if isinstance(r, Exception)] == []
    assert all(r.state == "spawning" for r in second)
    assert not {r.ip_address for r in second} & in_use
    assert {f"10.9.0.{i}" for i in range(102, 127)} <= {r.ip_address for r in second}
    assert len(assert_addresses_unique(env)) == 120

    env.restart()
    third = [env.boot(ZUUL, name=f"after-{i}", flavor="ci.small") for i in range(5)]
    assert all(r.state == "spawning" for r in third)
    assert len(assert_addresses_unique(env)) == 125  # the pool is now full
    full = env.boot(ZUUL, name="one-too-many", flavor="ci.small")
    assert full.state == "error" and "No more IP addresses" in full.fault["message"]
    assert_claims_match(env)


def test_small_network_runs_out_and_releases_the_claim(db: Database, clock: FakeClock) -> None:
    env = Env(db, clock, ComputeConfig(quota=UNLIMITED,
                                       network=NetworkConfig(cidr="10.7.0.0/29")))
    subnet = env.network.subnet
    assert subnet is not None  # 10.7.0.2 - 10.7.0.6: five addresses
    assert (str(ipaddress.ip_address(subnet.pool_start)),
            str(ipaddress.ip_address(subnet.pool_end))) == ("10.7.0.2", "10.7.0.6")
    env.host("h", vcpus=64, ram_mb=65536, disk_gb=1000)
    ok = [env.boot(name=f"s{i}", flavor="ci.small") for i in range(5)]
    assert [s.ip_address for s in ok] == [f"10.7.0.{i}" for i in range(2, 7)]
    notified = len(env.notified)
    failed = env.boot(name="s5", flavor="ci.small")
    assert failed.state == "error"
    stored = env.state(failed.id)
    assert stored.state == "error" and stored.host_id is None and stored.ip_address is None
    assert "No more IP addresses available" in stored.fault["message"]
    host = env.host_row("h")
    assert (host.used_vcpus, host.used_ram_mb, host.used_disk_gb) == (5, 5 * 1024, 50)
    assert len(env.ports()) == 5 and len(env.notified) == notified
    # deleting one frees its address for the next server
    env.servers.delete(ZUUL, ok[2].id)
    env.hosts.report(host.id, [Report(ok[2].id, "absent")])
    again = env.boot(name="s6", flavor="ci.small")
    assert again.state == "spawning" and again.ip_address == "10.7.0.4"
    assert_addresses_unique(env)


def test_address_of_a_deleted_server_is_not_handed_out_at_once(env: Env) -> None:
    """Addresses are handed out in order and reused only after the cursor has wrapped around
    the pool: the newest server's address is not the next server's when it is deleted."""
    h = env.host("h")
    first = env.boot(name="a", flavor="ci.small")
    second = env.boot(name="b", flavor="ci.small")
    assert (first.ip_address, second.ip_address) == ("10.42.0.2", "10.42.0.3")
    env.servers.delete(ZUUL, second.id)
    env.hosts.report(h.id, [Report(second.id, "absent")])
    assert gone(env, second.id)
    third = env.boot(name="c", flavor="ci.small")
    assert third.ip_address == "10.42.0.4", (
        "the address of the server deleted a moment ago was handed out again although "
        "most of the pool has never been used")
    env.restart()  # the cursor is kept in the database
    assert env.boot(name="d", flavor="ci.small").ip_address == "10.42.0.5"


# ---- 3. quotas -----------------------------------------------------------------------------------


def quota_env(db: Database, clock: FakeClock, **limits: int) -> Env:
    quota = ComputeQuotaConfig(**{"instances": -1, "cores": -1, "ram_mb": -1, **limits})
    env = Env(db, clock, ComputeConfig(quota=quota))
    env.host("h", vcpus=128, ram_mb=131072, disk_gb=2000)
    return env


def test_quota_instances(db: Database, clock: FakeClock) -> None:
    env = quota_env(db, clock, instances=2)
    env.boot(name="a", flavor="ci.small")
    env.boot(name="b", flavor="ci.small")
    with pytest.raises(Forbidden) as exc:
        env.boot(name="c", flavor="ci.small")
    assert exc.value.message.startswith(
        "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances")
    assert len(env.instances()) == 2
    assert env.host_row("h").used_vcpus == 2  # nothing claimed for the refused one
    limits, usage = env.quotas.show(ZUUL.project_id or "")
    assert limits["instances"] == 2 and usage == Usage(2, 2, 2048)
    env.boot(CI, name="other project", flavor="ci.small")  # quotas are per project


def test_quota_cores_and_ram(db: Database, clock: FakeClock) -> None:
    env = quota_env(db, clock, cores=12)
    env.boot(name="a")
    with pytest.raises(Forbidden) as exc:
        env.boot(name="b")
    assert exc.value.message.startswith(
        "Quota exceeded for cores: Requested 8, but already used 8 of 12 cores")
    env.boot(name="small", flavor="ci.small")  # 9 of 12 cores

    env = quota_env(db, clock, ram_mb=10000)
    env.boot(CI, name="a")
    with pytest.raises(Forbidden) as exc:
        env.boot(CI, name="b")
    assert exc.value.message.startswith(
        "Quota exceeded for ram: Requested 8192, but already used 8192 of 10000 ram")
    assert env.quotas.show(CI.project_id or "")[1] == Usage(1, 8, 8192)


def test_error_servers_count_until_deleted(db: Database, clock: FakeClock) -> None:
    env = quota_env(db, clock, instances=1)
    env.servers.delete(ZUUL, env.boot(name="a").id)  # spawning on an up host: deleting
    with pytest.raises(Forbidden, match="already used 1 of 1 instances"):
        env.boot(name="b")
    env.hosts.set_enabled(ADMIN, "h", False, "maintenance")
    env.hosts.report(env.host_row("h").id, [Report(s.id, "absent") for s in env.instances()])
    failed = env.boot(name="no host")
    assert failed.state == "error"
    assert env.quotas.show("p-zuul")[1] == Usage(1, 8, 8192)
    with pytest.raises(Forbidden, match="instances"):
        env.boot(name="c")
    env.servers.delete(ZUUL, failed.id)  # never placed: removed at once
    assert env.quotas.show("p-zuul")[1] == Usage(0, 0, 0)


def test_port_quota_counts_servers_ports_and_api_ports(db: Database, clock: FakeClock) -> None:
    env = quota_env(db, clock, ports=2)
    net = env.network.network
    assert net is not None
    env.boot(name="a", flavor="ci.small")  # its port counts
    env.network.create_port(ZUUL, net.id)
    with pytest.raises(Conflict, match=r"Quota exceeded for resources: \['port'\]"):
        env.network.create_port(ZUUL, net.id)
    with pytest.raises(Forbidden, match="Maximum number of ports exceeded"):
        env.boot(name="b", flavor="ci.small")
    assert len(env.instances()) == 1 and len(env.ports()) == 2  # nothing of b stays
    assert env.host_row("h").used_vcpus == 1
    env.boot(CI, name="other project", flavor="ci.small")  # per project
    env.quotas.set(ADMIN, "p-zuul", {"port": 3})  # Neutron's `openstack quota set --ports`
    assert env.quotas.show("p-zuul")[0]["port"] == 3
    env.boot(name="b", flavor="ci.small")
    assert ComputeQuotaConfig().ports == 50  # Neutron's default


def test_project_quota_overrides_defaults(db: Database, clock: FakeClock) -> None:
    env = quota_env(db, clock, instances=1)
    with pytest.raises(Forbidden):
        env.quotas.set(ZUUL, "p-zuul", {"instances": 10})
    env.quotas.set(ADMIN, "p-zuul", {"instances": 3, "cores": 100, "unknown": 5})
    limits, _ = env.quotas.show("p-zuul")
    assert limits["instances"] == 3 and limits["cores"] == 100 and "unknown" not in limits
    assert env.quotas.show("p-ci")[0]["instances"] == 1  # others keep the default
    for i in range(3):
        env.boot(name=f"s{i}", flavor="ci.small")
    with pytest.raises(Forbidden) as exc:
        env.boot(name="s3", flavor="ci.small")
    assert exc.value.message.startswith(
        "Quota exceeded for instances: Requested 1, but already used 3 of 3 instances")
    env.boot(CI, name="c0", flavor="ci.small")
    with pytest.raises(Forbidden, match="used 1 of 1 instances"):
        env.boot(CI, name="c1", flavor="ci.small")
    env.quotas.set(ADMIN, "p-zuul", {"instances": -1})  # unlimited; updates the row
    env.boot(name="s3", flavor="ci.small")
    assert env.quotas.show("p-zuul") == (
        {"instances": -1, "cores": 100, "ram": -1, "key_pairs": 100, "port": 50,
         "server_groups": 10, "server_group_members": 10, **SHOWN_ONLY}, Usage(4, 4, 4096))
    with pytest.raises(BadRequest):
        env.quotas.set(ADMIN, "p-zuul", {"cores": -2})


def test_quota_holds_under_concurrency(db: Database, clock: FakeClock) -> None:
    env = quota_env(db, clock, instances=5)
    results = in_threads(20, lambda i: env.boot(name=f"q{i}", flavor="ci.small"))
    created = [r for r in results if isinstance(r, Instance)]
    refused = [r for r in results if isinstance(r, Forbidden)]
    assert len(created) == 5 and len(refused) == 15
    assert all("Quota exceeded for instances" in r.message for r in refused)
    assert env.quotas.show("p-zuul")[1].instances == 5


# ---- 4. filters and weighers -----------------------------------------------------------------


def test_disabled_host_gets_nothing(env: Env) -> None:
    a, b = env.host("a"), env.host("b")
    with pytest.raises(Forbidden):
        env.hosts.set_enabled(ZUUL, "a", False)
    disabled = env.hosts.set_enabled(ADMIN, "a", False, "maintenance")
    assert not disabled.enabled and disabled.disabled_reason == "maintenance"
    placed = [env.boot(name=f"s{i}") for i in range(6)]
    assert [s.host_id for s in placed[:5]] == [b.id] * 5
    assert placed[5].state == "error" and "No valid host" in placed[5].fault["message"]
    assert env.host_row("a").used_vcpus == 0
    env.hosts.set_enabled(ADMIN, a.id, True)  # by id as well as by name
    assert env.host_row("a").disabled_reason is None
    assert env.boot(name="again").host_id == a.id
    with pytest.raises(NotFound):
        env.hosts.set_enabled(ADMIN, "nowhere", False)


def test_reserved_resources_reduce_capacity(env: Env) -> None:
    env.host("r", reserved_vcpus=16)  # 24 usable vCPUs: three ci.8g
    env.host("m", reserved_ram_mb=8192, disk_gb=1000)  # 32 GiB usable: four
    hosts = env.hosts.list_hosts()
    assert scheduler.capacity(hosts, scheduler.Request(8, 8192, 80)) == 7
    placed = [env.boot(name=f"s{i}") for i in range(8)]
    per_host = Counter(s.host_id for s in placed if s.state == "spawning")
    assert per_host == {env.host_row("r").id: 3, env.host_row("m").id: 4}
    assert placed[-1].state == "error"
    assert_within_capacity(env)


def test_spread_alternates_hosts(env: Env) -> None:
    hosts = [env.host(n) for n in ("a", "b", "c")]
    placed = [env.boot(name=f"s{i}", flavor="ci.small").host_id for i in range(9)]
    assert all(x != y for x, y in itertools.pairwise(placed))
    assert Counter(placed) == {h.id: 3 for h in hosts}


def test_pack_fills_one_host_first(db: Database, clock: FakeClock) -> None:
    env = Env(db, clock, ComputeConfig(quota=UNLIMITED, scheduler="pack"))
    a, b = env.host("a"), env.host("b")
    placed = [env.boot(name=f"s{i}").host_id for i in range(10)]
    assert placed == [a.id] * 5 + [b.id] * 5
    on_b = next(i for i in env.instances() if i.host_id == b.id)
    env.servers.delete(ZUUL, on_b.id)
    env.hosts.report(b.id, [Report(on_b.id, "absent")])
    assert env.boot(name="refill").host_id == b.id  # the only room left


def test_availability_zone(env: Env) -> None:
    env.host("nova-1")
    az2 = env.host("az2-1", zone="az2")
    assert env.servers.availability_zones() == ["az2", "nova"]
    placed = [env.boot(name=f"z{i}", availability_zone="az2") for i in range(6)]
    assert [s.host_id for s in placed[:5]] == [az2.id] * 5
    assert all(s.availability_zone == "az2" for s in placed[:5])
    assert placed[5].state == "error"  # az2 is full; nova has room but is not asked
    assert env.host_row("nova-1").used_vcpus == 0
    assert env.boot(name="any").availability_zone == "nova"
    with pytest.raises(BadRequest, match="availability zone"):
        env.boot(name="mars", availability_zone="mars")


@pytest.mark.parametrize(("ratio", "fits"), [(1.0, 2), (2.0, 4)])
def test_cpu_allocation_ratio(db: Database, clock: FakeClock, ratio: float, fits: int) -> None:
    env = Env(db, clock, ComputeConfig(quota=UNLIMITED, cpu_allocation_ratio=ratio))
    env.host("h", vcpus=16, ram_mb=65536, disk_gb=1000)
    placed = [env.boot(name=f"s{i}") for i in range(fits + 1)]
    assert [s.state for s in placed] == ["spawning"] * fits + ["error"]
    host = env.host_row("h")
    assert host.cpu_ratio == ratio and host.used_vcpus == 8 * fits


def test_capacity_is_the_bound_for_empty_hosts(env: Env) -> None:
    env.host("a")
    env.host("b", vcpus=20)
    req = scheduler.Request(8, 8192, 80)
    assert scheduler.capacity(env.hosts.list_hosts(), req) == 5 + 2
    env.boot(name="x")
    assert scheduler.capacity(env.hosts.list_hosts(), req) == 7  # usage does not count
    assert scheduler.capacity(env.hosts.list_hosts(), scheduler.Request(1, 1024, 0)) == 40 + 20
    assert scheduler.capacity([], req) == 0


