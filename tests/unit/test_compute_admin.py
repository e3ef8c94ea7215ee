"""The compute admin views below the HTTP tests of the demo: where a quota limit comes from
(configuration, the default class, the project), `force`, and the hypervisor views' cost (a
fixed number of queries whatever the number of hosts and servers)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from infracloud.compute.hosts import Registration
from infracloud.compute.hypervisors import int_id
from infracloud.core.clock import FakeClock
from infracloud.core.errors import BadRequest, Forbidden
from infracloud.core.settings import ComputeConfig, ComputeQuotaConfig
from infracloud.store import Database
from tests.unit.api_env import Api, api  # noqa: F401 (the fixture)
from tests.unit.compute_env import ADMIN, CI, ZUUL, Env


def test_a_limit_comes_from_the_project_then_the_class_then_the_config(
        db: Database, clock: FakeClock) -> None:
    env = Env(db, clock, ComputeConfig(quota=ComputeQuotaConfig(instances=3, cores=20)))
    env.host("h")
    env.quotas.set_class(ADMIN, "default", {"cores": 30, "metadata_items": 64})
    env.quotas.set(ADMIN, ZUUL.project_id, {"cores": 40})
    zuul, _ = env.quotas.show(ZUUL.project_id)
    ci, _ = env.quotas.show(CI.project_id)
    assert (zuul["cores"], zuul["instances"], zuul["metadata_items"]) == (40, 3, 64)
    assert (ci["cores"], ci["instances"], ci["security_groups"]) == (30, 3, -1)
    assert env.quotas.class_limits("default")["cores"] == 30
    env.quotas.reset(ADMIN, ZUUL.project_id)
    assert env.quotas.show(ZUUL.project_id)[0]["cores"] == 30  # the class's again
    # the class's default is enforced like the configuration's
    env.quotas.set_class(ADMIN, "default", {"instances": 1})
    env.boot(name="a", flavor="ci.small")
    with pytest.raises(Forbidden, match="Quota exceeded for instances"):
        env.boot(name="b", flavor="ci.small")
    with pytest.raises(BadRequest, match="Only the quota class 'default'"):
        env.quotas.set_class(ADMIN, "gold", {"cores": 1})
    with pytest.raises(Forbidden):
        env.quotas.set_class(ZUUL, "default", {"cores": 1})
    with pytest.raises(Forbidden):
        env.quotas.reset(ZUUL, ZUUL.project_id)
    with pytest.raises(BadRequest):  # the class's rows are no project's
        env.quotas.reset(ADMIN, "class:default")
    assert env.quotas.class_limits("default")["instances"] == 1


def test_a_limit_below_the_use_needs_force(db: Database, clock: FakeClock) -> None:
    env = Env(db, clock, ComputeConfig(quota=ComputeQuotaConfig(instances=-1, cores=-1)))
    env.host("h")
    env.boot(name="a", flavor="ci.small")
    env.boot(name="b", flavor="ci.small")
    with pytest.raises(BadRequest, match=re.escape(
            "Quota limit 1 for instances must be greater than or equal to already used and "
            "reserved 2.")):
        env.quotas.set(ADMIN, ZUUL.project_id, {"instances": 1}, force=False)
    env.quotas.set(ADMIN, ZUUL.project_id, {"instances": 2, "cores": -1}, force=False)
    env.quotas.set(ADMIN, ZUUL.project_id, {"instances": 0}, force=True)
    assert env.quotas.show(ZUUL.project_id)[0]["instances"] == 0


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def _register(api: Api, n: int, start: int) -> None:  # noqa: F811
    for i in range(start, start + n):
        api.services.hosts.register(Registration(name=f"hv{i:03d}", driver="fake", vcpus=8,
                                                 ram_mb=8192, disk_gb=80))


def test_hypervisor_views_cost_the_same_for_3_hosts_and_30(api: Api) -> None:  # noqa: F811
    paths = ["/compute/v2.1/os-hypervisors/detail", "/compute/v2.1/os-hypervisors/statistics",
             "/compute/v2.1/os-hypervisors/hv/servers", "/compute/v2.1/os-services",
             "/compute/v2.1/os-availability-zone/detail"]

    def cost() -> list[int]:
        counts = []
        for path in paths:
            with statements(api.services.db) as seen:
                r = api.client.get(path, headers=api.admin)
            assert r.status_code == 200, r.text
            counts.append(len(seen))
        return counts

    _register(api, 3, 0)
    api.client.get(paths[0], headers=api.admin)  # the token is cached from here on
    few = cost()
    _register(api, 27, 3)
    many = cost()
    assert few == many, (few, many)
    body = api.client.get(paths[0], headers=api.admin).json()["hypervisors"]
    assert len({h["id"] for h in body}) == len(body) >= 30  # integer ids, all different
    one = body[0]
    shown = api.client.get(f"/compute/v2.1/os-hypervisors/{one['id']}", headers=api.admin)
    assert shown.json()["hypervisor"]["hypervisor_hostname"] == one["hypervisor_hostname"]
    host = next(h for h in api.services.hosts.list_hosts()
                if h.name == one["hypervisor_hostname"])
    assert one["id"] == int_id(host.id)
