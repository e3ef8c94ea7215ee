"""Prometheus metrics: the site collector's values from the database, the process's
histograms and counters as servers, API requests, BMC calls, pool launches and agent polls
happen, and labels that never carry ids."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest

from infracloud.agent.hosts import host_info, make_driver
from infracloud.agent.runner import Agent
from infracloud.api.middleware import RequestIdMiddleware
from infracloud.compute.hosts import Report
from infracloud.core.settings import HardwareConfig
from infracloud.hardware.bmc import BmcAuthError
from infracloud.hardware.conductor import Calls
from infracloud.hardware.drain import Drainer
from infracloud.ops.metrics import REGISTRY, observe_request
from infracloud.pool.auth import Open
from infracloud.processes.pool_server import create_pool_app
from infracloud.site.collectors import PoolCollector, SiteCollector, agent_registry
from infracloud.store import Database
from tests.unit.compute_env import ADMIN, Env, env_fixture  # noqa: F401
from tests.unit.pool_env import Harness, pool_config


def value(name: str, **labels: str) -> float:
    """A sample of the process registry (0 when it has not been observed yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def registry_of(collector: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


class Ticks:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_site_collector_reads_hosts_capacity_and_servers(env: Env) -> None:
    clock = Ticks()
    site = registry_of(SiteCollector(env.db, "vanilla", "RegionOne", ttl=5, clock=clock))

    def get(name: str, **labels: str) -> float | None:
        return site.get_sample_value(name, labels)

    for name in "abcde":
        env.host(name)
    env.clock.advance(env.config.host_down_after + 1)
    env.beat(*(env.host_row(n) for n in "abcd"))
    assert env.hosts.reap()["hosts_down"] == 1  # e
    env.hosts.set_enabled(ADMIN, "c", False, "repairs")
    Drainer(env.db, env.clock, env.hosts, env.servers).fence("d", "BMC does not answer")
    first, second = env.boot(name="one"), env.boot(name="two")
    on_host = {s.host_id for s in (first, second)}
    assert on_host == {env.host_row("a").id, env.host_row("b").id}  # spread over a and b
    failures = value("infracloud_server_failures_total", reason="no_valid_host")
    pinned = env.boot(ADMIN, name="pinned", availability_zone="nova:c")  # c is disabled
    assert env.state(pinned.id).state == "error"
    assert value("infracloud_server_failures_total", reason="no_valid_host") == failures + 1
    env.hosts.report(first.host_id or "", [Report(first.id, "running")])

    assert {s: get("infracloud_hosts", state=s) for s in ("up", "down", "disabled",
                                                          "fenced")} == \
        {"up": 2, "down": 1, "disabled": 1, "fenced": 1}
    # five hosts of 40 vCPUs, 40 GiB, 400 GB; two ci.8g (8 vCPUs, 8 GiB, 80 GB) on a and b
    assert get("infracloud_capacity", resource="vcpus") == 200
    assert get("infracloud_capacity", resource="ram_mb") == 5 * 40960
    assert get("infracloud_used", resource="vcpus") == 16
    assert get("infracloud_used", resource="disk_gb") == 160
    # free: only where new servers can go (a and b are up and enabled)
    assert get("infracloud_free", resource="vcpus") == 80 - 16
    assert get("infracloud_free", resource="ram_mb") == 2 * 40960 - 2 * 8192
    assert get("infracloud_instances", state="active") == 1
    assert get("infracloud_instances", state="spawning") == 1
    assert get("infracloud_instances", state="error") == 1
    assert get("infracloud_instances", state="deleting") == 0  # every state shows
    assert get("infracloud_nodes", provision_state="available") == 0
    assert get("infracloud_site_info", site="vanilla", region="RegionOne",
               version="0.1.0") == 1

    # read at most once per `ttl`: a new server shows once the cache is stale
    env.boot(name="three")
    assert get("infracloud_instances", state="spawning") == 1
    clock.t += 5
    assert get("infracloud_instances", state="spawning") == 2


def test_launch_time_to_active_and_failures_by_reason(env: Env) -> None:
    a = env.host("a")
    count = value("infracloud_server_launch_seconds_count", stage="active")
    total = value("infracloud_server_launch_seconds_sum", stage="active")
    server = env.boot()
    env.clock.advance(7)
    env.hosts.report(a.id, [Report(server.id, "running")])
    assert value("infracloud_server_launch_seconds_count", stage="active") == count + 1
    assert value("infracloud_server_launch_seconds_sum", stage="active") == \
        pytest.approx(total + 7)
    assert value("infracloud_server_launch_seconds_bucket", stage="active", le="10.0") >= 1

    lost = value("infracloud_server_failures_total", reason="host_lost")
    spawn = value("infracloud_server_failures_total", reason="driver_error")
    broken = env.boot(name="broken")
    env.hosts.report(a.id, [Report(broken.id, "failed", fault="no disk")])
    assert value("infracloud_server_failures_total", reason="driver_error") == spawn + 1
    env.clock.advance(env.config.host_down_after + 1)
    env.hosts.reap()  # a goes down ...
    env.clock.advance(env.config.instance_error_after + 1)
    env.hosts.reap()  # ... and after the grace its active server is lost
    assert env.state(server.id).state == "error"
    assert value("infracloud_server_failures_total", reason="host_lost") == lost + 1


def test_scheduler_decisions_are_timed(env: Env) -> None:
    env.host("a")
    count = value("infracloud_scheduler_decision_seconds_count")
    env.boot()
    env.boot(name="two")
    assert value("infracloud_scheduler_decision_seconds_count") == count + 2


def test_api_requests_are_labelled_by_route_template() -> None:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.add_middleware(RequestIdMiddleware, access_log=False, observe=observe_request)
    template = {"method": "GET", "route": "/things/{thing_id}", "status": "200"}
    unmatched = {"method": "GET", "route": "other", "status": "404"}
    strange = {"method": "other", "route": "other", "status": "404"}
    before = [value("infracloud_api_request_seconds_count", **x)
              for x in (template, unmatched, strange)]

    async def calls() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as client:
            return [(await client.request(method, path)).status_code for method, path in (
                ("GET", "/things/id-4f3a9c"), ("GET", "/things/id-77b1e0"),
                ("GET", "/nothing/id-0d9e21"), ("BREW", "/nothing/id-0d9e21"))]

    assert asyncio.run(calls()) == [200, 200, 404, 404]
    after = [value("infracloud_api_request_seconds_count", **x)
             for x in (template, unmatched, strange)]
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 1, 1]
    assert b"id-" not in generate_latest(REGISTRY)  # no id ever becomes a label value


class StubBmc:
    name = "fake"
    virtual_media = False

    def get_power(self) -> str:
        return "on"

    def set_power(self, state: str) -> None:
        raise BmcAuthError("the BMC refused the credentials")


def test_bmc_calls_are_timed_and_errors_counted() -> None:
    calls = Calls(StubBmc(), HardwareConfig(), threading.Event())  # type: ignore[arg-type]
    get = {"driver": "fake", "call": "get_power"}
    put = {"driver": "fake", "call": "set_power"}
    before = (value("infracloud_bmc_call_seconds_count", **get),
              value("infracloud_bmc_call_seconds_count", **put),
              value("infracloud_bmc_errors_total", **get),
              value("infracloud_bmc_errors_total", **put))
    assert calls(calls.bmc.get_power) == "on"
    with pytest.raises(BmcAuthError):  # not transient: one attempt
        calls(calls.bmc.set_power, "on")
    after = (value("infracloud_bmc_call_seconds_count", **get),
             value("infracloud_bmc_call_seconds_count", **put),
             value("infracloud_bmc_errors_total", **get),
             value("infracloud_bmc_errors_total", **put))
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 0, 1]


def test_pool_collector_and_launch_times(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'pool.db'}")
    db.migrate()
    h = Harness(db, pool_config({"a": {"max-servers": 1}}))
    pool = registry_of(PoolCollector(h.pool))
    launches = value("infracloud_pool_launch_seconds_count", provider="a", stage="ready")
    fulfilled = value("infracloud_pool_request_seconds_count", state="fulfilled")
    try:
        first = h.request()
        h.until(lambda: h.state(first) == "fulfilled")
        second = h.request()  # max-servers 1, taken: it waits
        h.tick(3)
        get = pool.get_sample_value
        assert get("infracloud_pool_nodes", {"provider": "a", "label": "small",
                                             "state": "in-use"}) == 1
        assert get("infracloud_pool_nodes", {"provider": "a", "label": "small",
                                             "state": "ready"}) == 0
        assert get("infracloud_pool_requests_waiting", {"label": "small"}) == 1
        assert (get("infracloud_pool_request_oldest_wait_seconds", {}) or 0) > 0
        assert get("infracloud_pool_provider_max_servers", {"provider": "a"}) == 1
        assert get("infracloud_pool_provider_state", {"provider": "a", "state": "up"}) == 1
        assert value("infracloud_pool_launch_seconds_count", provider="a",
                     stage="ready") == launches + 1
        assert value("infracloud_pool_request_seconds_count", state="fulfilled") == \
            fulfilled + 1
        h.pool.release(h.nodes("in-use")[0]["id"], None)
        h.until(lambda: h.state(second) == "fulfilled")
        assert get("infracloud_pool_requests_waiting", {"label": "small"}) == 0
        assert get("infracloud_pool_request_oldest_wait_seconds", {}) == 0

        # the pool's own server serves them, with the process's, on an open /metrics
        app = create_pool_app(h.pool, Open())

        async def scrape() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://pool") as client:
                await client.get("/healthz")
                return await client.get("/metrics")

        r = asyncio.run(scrape())
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert 'infracloud_pool_nodes{label="small",provider="a",state="in-use"} 1.0' in r.text
        assert 'infracloud_api_request_seconds_count{method="GET",route="/healthz",' \
               'status="200"}' in r.text
        assert "infracloud_hosts" not in r.text  # no site here
    finally:
        h.pool.stop()
        db.dispose()


def test_agent_metrics_follow_its_polls(tmp_path: Path) -> None:
    agent = Agent("https://127.0.0.1:1", "token", make_driver("fake", tmp_path),
                  host_info("h1", 4, 4096, 40), tmp_path, poll_wait=1)
    registry = agent_registry(agent)
    seen: list[float | None] = []

    def controller(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/hosts"):
            return httpx.Response(200, json={"host": {"id": "h1"}, "poll_seconds": 1})
        if not seen:  # the first long-poll answers
            seen.append(registry.get_sample_value("infracloud_agent_controller_up"))
            return httpx.Response(200, json={"generation": 1, "instances": [], "remove": []})
        seen.append(registry.get_sample_value("infracloud_agent_controller_up"))
        agent.stop()  # the next finds no controller
        raise httpx.ConnectError("connection refused", request=request)

    agent.http = httpx.Client(base_url="https://127.0.0.1:1/agent/v1",
                              transport=httpx.MockTransport(controller))
    try:
        agent.run()
    finally:
        agent.close()
    assert seen == [0, 1]  # up once the controller answered ...
    assert registry.get_sample_value("infracloud_agent_controller_up") == 0  # ... down now
    assert registry.get_sample_value("infracloud_agent_poll_seconds_count") == 1
    assert registry.get_sample_value("infracloud_agent_instances", {"state": "running"}) == 0
