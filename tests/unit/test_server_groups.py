"""Server groups and multi-create in the compute services (nova's behaviour at 2.1): the
scheduler honours affinity and anti-affinity, also for creates that race; multi-create is all
or nothing within quota and placed whole or not at all. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter

import pytest

from infracloud.compute.groups import ServerGroupService
from infracloud.compute.servers import CreateRequest
from infracloud.core.clock import FakeClock
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Forbidden, NotFound
from infracloud.core.settings import ComputeConfig, ComputeQuotaConfig
from infracloud.store import Database
from infracloud.store.models import Instance
from tests.unit.compute_env import (  # noqa: F401
    ADMIN,
    CI,
    IMAGE_ID,
    ZUUL,
    Env,
    assert_addresses_unique,
    assert_claims_match,
    assert_within_capacity,
    env_fixture,
    in_threads,
)


def _req(name: str, count: int = 1, min_count: int | None = None, group: str | None = None
         ) -> CreateRequest:
    return CreateRequest(name=name, flavor_ref="ci.8g", image_ref=IMAGE_ID, count=count,
                         min_count=min_count, group=group)


def groups(env: Env) -> ServerGroupService:
    return ServerGroupService(env.db, env.clock, env.quotas)


def members(env: Env, group_id: str) -> list[str]:
    return groups(env).get(ADMIN, group_id)[1]


# ---- server groups -------------------------------------------------------------------------

def test_anti_affinity_puts_each_member_on_its_own_host(env: Env) -> None:
    for n in range(3):
        env.host(f"h{n}")
    g = groups(env).create(ZUUL, "ci-job", "anti-affinity")
    made = [env.boot(name=f"node-{i}", group=g.id) for i in range(3)]
    assert len({m.host_id for m in made}) == 3 and all(m.host_id for m in made)
    # a fourth member has no host of its own left, though every host has room
    fourth = env.boot(name="node-3", group=g.id)
    assert fourth.state == "error" and "No valid host" in fourth.fault["message"]
    assert set(members(env, g.id)) == {m.id for m in (*made, fourth)}
    assert_claims_match(env)


def test_affinity_keeps_members_on_one_host_until_it_is_full(env: Env) -> None:
    env.host("h0")
    env.host("h1")
    g = groups(env).create(ZUUL, "together", "affinity")
    made = [env.boot(name=f"n{i}", group=g.id) for i in range(5)]  # a host holds 5 ci.8g
    assert len({m.host_id for m in made}) == 1
    full = env.boot(name="n5", group=g.id)  # h1 is empty, but not the group's host
    assert full.state == "error" and "No valid host" in full.fault["message"]
    other = env.boot(name="free")  # outside the group: placed on the other host
    assert other.host_id not in (None, made[0].host_id)


def test_racing_creates_into_one_anti_affinity_group_land_on_distinct_hosts(env: Env
                                                                            ) -> None:
    """The group's row is locked in the creating transaction: six creates at once never share
    a host, though each host has room for five. The callers are admins of six projects (an
    admin may use any project's group), so the projects' quota locks do not serialise them:
    only the group's lock does."""
    for n in range(6):
        env.host(f"h{n}")
    for round_ in range(3):
        g = groups(env).create(ZUUL, f"race-{round_}", "anti-affinity")
        callers = [Caller(f"u-{i}", f"p-{i}", frozenset({"admin", "member"}))
                   for i in range(6)]
        results = in_threads(6, lambda i, g=g, c=callers: env.boot(c[i], name=f"r{i}",
                                                                     group=g.id))
        assert [r for r in results if isinstance(r, Exception)] == []
        hosts = [r.host_id for r in results]
        assert None not in hosts and len(set(hosts)) == 6, Counter(hosts)
    assert_within_capacity(env)
    assert_claims_match(env)


def test_deleting_a_server_takes_it_out_of_its_group(env: Env) -> None:
    env.host("h0")
    g = groups(env).create(ZUUL, "g", "affinity")
    a = env.boot(name="a", group=g.id)
    b = env.boot(name="b", group=g.id)
    with env.db.write() as s:  # never started on its host: removed at once when deleted
        env.servers.remove(s, s.get(Instance, a.id))
    assert members(env, g.id) == [b.id]


def test_group_quotas_and_who_sees_a_group(db: Database, clock: FakeClock) -> None:
    env = Env(db, clock, ComputeConfig(quota=ComputeQuotaConfig(
        instances=-1, cores=-1, ram_mb=-1, server_groups=2, server_group_members=2)))
    env.host("h0")
    env.host("h1")
    env.host("h2")
    sg = groups(env)
    g = sg.create(ZUUL, "a", "anti-affinity")
    sg.create(ZUUL, "b", "affinity")
    with pytest.raises(Forbidden, match=r"Quota exceeded, too many server groups\."):
        sg.create(ZUUL, "c", "affinity")
    sg.create(CI, "theirs", "affinity")  # another project has its own quota
    env.quotas.set(ADMIN, "p-ci", {"server_groups": 0})  # os-quota-sets sets it per project
    with pytest.raises(Forbidden, match="too many server groups"):
        sg.create(CI, "more", "affinity")
    assert sg.count("p-zuul") == 2
    env.boot(name="m1", group=g.id)
    with pytest.raises(Forbidden, match="too many servers in group"):
        env.boot(name="m23", group=g.id, count=2)
    env.boot(name="m2", group=g.id)
    with pytest.raises(Forbidden, match="too many servers in group"):
        env.boot(name="m3", group=g.id)
    assert {x.name for x, _ in sg.listing(ZUUL)} == {"a", "b"}
    assert {x.name for x, _ in sg.listing(ADMIN, all_projects=True)} == {"a", "b", "theirs"}
    with pytest.raises(NotFound):
        sg.get(CI, g.id)
    with pytest.raises(BadRequest, match="could not be found"):  # another project's group
        env.boot(CI, name="x", group=g.id)
    with pytest.raises(BadRequest, match="is not a 'uuid'"):
        env.boot(name="x", group="not-a-uuid")
    with pytest.raises(BadRequest, match="policies"):
        sg.create(ZUUL, "soft", "soft-anti-affinity")  # 2.15 and later only
    sg.delete(ZUUL, g.id)  # with members, as nova allows; they belong to none now
    assert all(i.server_group_id is None for i in env.instances())


# ---- multi-create ----------------------------------------------------------------------------

def test_multi_create_names_reservation_and_addresses(env: Env) -> None:
    env.host("h0")
    env.host("h1")
    made = env.servers.create_many(ZUUL, _req("job", count=3, min_count=2))
    assert [m.name for m in made] == ["job-1", "job-2", "job-3"]
    assert all(m.state == "spawning" for m in made)
    rid = made[0].reservation_id
    assert rid and rid.startswith("r-") and len(rid) == 10
    assert {m.reservation_id for m in made} == {rid}
    assert len({m.ip_address for m in made}) == 3
    listed, _ = env.servers.list_servers(ZUUL, reservation_id=rid)
    assert {m.id for m in listed} == {m.id for m in made}
    one = env.boot(name="single")  # one server keeps its name as given
    assert one.name == "single" and one.reservation_id != rid
    assert_addresses_unique(env)


def test_multi_create_takes_what_the_quota_allows_down_to_min_count(db: Database,
                                                                    clock: FakeClock) -> None:
    env = Env(db, clock, ComputeConfig(quota=ComputeQuotaConfig(instances=5, cores=-1,
                                                                ram_mb=-1)))
    env.host("h0")
    env.host("h1")
    assert len(env.servers.create_many(ZUUL, _req("a", count=3))) == 3
    with pytest.raises(Forbidden, match="Quota exceeded for instances: Requested 3, but "
                                        "already used 3 of 5 instances"):
        env.servers.create_many(ZUUL, _req("b", count=4, min_count=3))
    assert len(env.instances()) == 3  # nothing of the refused request
    made = env.servers.create_many(ZUUL, _req("c", count=4, min_count=1))
    assert [m.name for m in made] == ["c-1", "c-2"]  # the two that fit
    with pytest.raises(BadRequest, match="min_count must be <= max_count"):
        env.servers.create_many(ZUUL, _req("d", count=1, min_count=2))


def test_multi_create_that_cannot_be_placed_whole_is_not_placed(env: Env) -> None:
    """As nova's scheduler: fewer hosts than servers fail the whole request, every server
    ERROR with No valid host, and no claim stays."""
    env.host("h0")
    env.host("h1")
    g = groups(env).create(ZUUL, "spread", "anti-affinity")
    made = env.servers.create_many(ZUUL, _req("mn", count=3, group=g.id))
    assert [m.state for m in made] == ["error"] * 3
    assert all("No valid host" in m.fault["message"] and m.host_id is None for m in made)
    assert all(h.used_vcpus == 0 for h in env.hosts.list_hosts())
    assert env.ports() == []
    two = env.servers.create_many(ZUUL, _req("ok", count=2, group=g.id))
    assert len({m.host_id for m in two}) == 2 and None not in {m.host_id for m in two}


def test_multi_create_counts_the_ports_each_server_needs(db: Database, clock: FakeClock
                                                         ) -> None:
    """As nova asks Neutron: max_count shrinks to the ports the project may still make."""
    env = Env(db, clock, ComputeConfig(quota=ComputeQuotaConfig(instances=-1, cores=-1,
                                                                ram_mb=-1, ports=3)))
    env.host("h0")
    env.host("h1")
    with pytest.raises(Forbidden, match="Maximum number of ports exceeded"):
        env.servers.create_many(ZUUL, _req("p", count=5))  # min_count is max_count: 5
    assert env.instances() == [] and env.ports() == []
    made = env.servers.create_many(ZUUL, _req("p", count=5, min_count=2))
    assert [m.name for m in made] == ["p-1", "p-2", "p-3"]
    assert len(env.ports()) == 3
