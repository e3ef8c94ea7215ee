"""What one caller can grow, through the controller's whole application in process (no
sockets): request bodies, credentials before bodies on the agents' routes, numeric query
values and long-polls, logins, API events and the access log, the servers' name filter."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from infracloud.api.app import create_app
from infracloud.core.settings import ControllerConfig
from infracloud.site.services import Services, build_services

ADMIN_PASSWORD = "admin-secret"
MEMBER_PASSWORD = "member-secret"


@dataclass
class Site:
    services: Services
    app: FastAPI

    def client(self, address: str = "192.0.2.10") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://controller")

    def call(self, method: str, path: str, address: str = "192.0.2.10", **kw: Any
             ) -> httpx.Response:
        async def go() -> httpx.Response:
            async with self.client(address) as c:
                return await c.request(method, path, **kw)

        return asyncio.run(go())

    def login(self, user: str = "admin", password: str = ADMIN_PASSWORD,
              address: str = "192.0.2.10", project: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": user, "domain": {"id": "default"}, "password": password}}}}}
        if project:
            body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
        return self.call("POST", "/identity/v3/auth/tokens", address, json=body)

    def token(self, user: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        r = self.login(user, password, project=user)
        assert r.status_code == 201, r.text
        return r.headers["X-Subject-Token"]


def make_site(tmp_path: Path, **sections: Any) -> Iterator[Site]:
    config = ControllerConfig.model_validate({
        "database": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "images": {"store_path": str(tmp_path / "images")},
        "identity": {"password_hash": {"time_cost": 1, "memory_cost_kib": 8},
                     **sections.pop("identity", {})},
        **sections})
    services = build_services(config)
    services.identity.ensure_account("admin", ADMIN_PASSWORD, "admin", "admin")
    services.identity.ensure_account("member", MEMBER_PASSWORD, "member", "member")
    try:
        yield Site(services, create_app(services))
    finally:
        services.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from make_site(tmp_path, limits={"max_body_bytes": 4096})


# ---- request bodies ------------------------------------------------------------------------

def test_a_body_over_the_limit_is_refused_from_its_length(site: Site) -> None:
    big = json.dumps({"auth": {"identity": {"methods": ["password"], "pad": "x" * 5000}}})
    r = site.call("POST", "/identity/v3/auth/tokens", content=big,
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["message"] == "The request body is larger than 4096 bytes."
    assert r.headers["x-openstack-request-id"].startswith("req-")
    # in the shape of the route's service
    r = site.call("POST", "/compute/v2.1/os-keypairs", content=big)
    assert r.status_code == 413 and r.json()["overLimit"]["code"] == 413


def test_a_chunked_body_is_cut_off_as_it_streams_past_the_limit() -> None:
    read: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:  # an app that reads everything it is given
            message = await receive()
            read.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    from infracloud.api.limits import BodyLimitMiddleware

    limited = BodyLimitMiddleware(app, max_bytes=3000)
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b"x" * 1000, "more_body": True}
              for _ in range(100)]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/network/v2.0/ports",
             "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(limited(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["NeutronError"]["message"].startswith(
        "The request body is larger than 3000 bytes")
    assert len(read) == 3 and len(chunks) == 96  # the fourth chunk was the last one read


def test_image_data_is_not_held_to_the_body_limit(site: Site) -> None:
    token = site.token()
    r = site.call("POST", "/image/v2/images", headers={"X-Auth-Token": token},
                  json={"name": "big", "disk_format": "raw", "container_format": "bare"})
    assert r.status_code == 201, r.text
    r = site.call("PUT", f"/image/v2/images/{r.json()['id']}/file", content=b"x" * 10000,
                  headers={"X-Auth-Token": token,
                           "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text


def test_agent_routes_check_credentials_before_the_body(site: Site) -> None:
    for body in ("not json at all", json.dumps({"name": 5})):
        r = site.call("POST", "/agent/v1/hosts", content=body,
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 401, r.text
        assert "name" not in r.text and "driver" not in r.text
        r = site.call("POST", "/agent/v1/hosts/some-host/report", content=body,
                      headers={"Content-Type": "application/json",
                               "X-Agent-Token": "not-a-credential-at-all"})
        assert r.status_code == 401, r.text


# ---- numeric query values and long-polls -------------------------------------------------

def _numeric_query_fields(routes: list[Any]) -> Iterator[tuple[str, Any]]:
    def walk(dependant: Any) -> Iterator[Any]:
        yield from dependant.query_params
        for sub in dependant.dependencies:
            yield from walk(sub)

    for route in routes:
        included = getattr(route, "original_router", None)  # an included router
        if included is not None:
            yield from _numeric_query_fields(included.routes)
            continue
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            continue
        for field in walk(dependant):
            annotation = str(field.field_info.annotation)
            if "int" in annotation or "float" in annotation:
                yield f"{sorted(route.methods)} {route.path} {field.alias}", field


def test_every_numeric_query_value_is_finite_and_not_negative(site: Site) -> None:
    """Walks every route of the controller and the pool (a new route with a bare `float` or
    `int` query value fails here)."""
    from infracloud.api import pool

    found = dict(_numeric_query_fields([*site.app.routes, *pool.router.routes]))
    assert "['GET'] /ops/v1/events wait" in found  # the walk sees them
    assert "['GET'] /agent/v1/hosts/{host_id}/desired wait" in found
    for where, field in found.items():
        for bad in ("nan", "inf", "-inf", "-5", "1e400"):
            _, errors = field.validate(bad, {}, loc=("query", field.alias))
            assert errors, f"{where} takes {bad!r}"


def test_events_wait_nan_is_a_400_not_a_hang(site: Site) -> None:
    for bad in ("nan", "inf", "-1"):
        r = site.call("GET", "/ops/v1/events", params={"after": 10**6, "wait": bad})
        assert r.status_code == 400, r.text
    r = site.call("GET", "/compute/v2.1/flavors", params={"minRam": "nan"},
                  headers={"X-Auth-Token": site.token()})
    assert r.status_code == 400 and "minRam" in r.text


def test_long_polls_are_capped_per_client_address(tmp_path: Path) -> None:
    from infracloud.core import lifecycle
    from tests.servers import async_wait_for

    site = next(make_site(tmp_path, limits={"long_polls_per_client": 2}))
    polls = site.app.state.long_polls
    query = {"after": 10**6, "wait": 60}

    async def scenario() -> list[int]:
        async with site.client("192.0.2.1") as one, site.client("192.0.2.2") as two:
            held = [asyncio.create_task(one.get("/ops/v1/events", params=query))
                    for _ in range(2)]
            await async_wait_for("two long-polls", lambda: polls.held("192.0.2.1") == 2)
            third = await one.get("/ops/v1/events", params=query)
            assert third.status_code == 429 and third.headers["Retry-After"] == "1"
            other = asyncio.create_task(two.get("/ops/v1/events", params=query))
            await async_wait_for("another address", lambda: polls.held("192.0.2.2") == 1)
            lifecycle.stopping.set()  # a shutdown answers them all
            try:
                answers = await asyncio.gather(*held, other)
            finally:
                lifecycle.stopping.clear()
            return [r.status_code for r in answers]

    try:
        assert asyncio.run(scenario()) == [200, 200, 200]
        assert polls.held("192.0.2.1") == polls.held("192.0.2.2") == 0
    finally:
        site.services.close()


# ---- logins --------------------------------------------------------------------------------

def test_buckets_refill_at_their_rate() -> None:
    from infracloud.core.ratelimit import Buckets

    now = [0.0]
    buckets = Buckets(per_minute=6, burst=2, clock=lambda: now[0])  # a token every 10 s
    assert buckets.take("a") == buckets.take("a") == 0
    assert buckets.take("a") == 10 and buckets.take("b") == 0  # keys apart
    now[0] = 4.0
    assert buckets.take("a") == 6
    now[0] = 10.0
    assert buckets.take("a") == 0 and buckets.take("a") == 10
    buckets.give_back("a")
    assert buckets.take("a") == 0
    assert Buckets(per_minute=0, burst=1).take("a") == 0  # no limit


def test_logins_are_limited_per_address_and_per_user_name(tmp_path: Path) -> None:
    site = next(make_site(tmp_path, identity={"login_limit": {
        "per_address": {"per_minute": 1, "burst": 4},
        "per_user": {"per_minute": 1, "burst": 2}}}))
    try:
        # failures use up the user's share, from any address; then even the right password
        assert site.login("member", "wrong", "192.0.2.1").status_code == 401
        assert site.login("member", "wrong", "192.0.2.2").status_code == 401
        r = site.login("member", MEMBER_PASSWORD, "192.0.2.3")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert r.json()["error"]["code"] == 429
        # successes give their user turn back; the address's share still runs out
        for _ in range(4):
            assert site.login("admin", ADMIN_PASSWORD, "192.0.2.4").status_code == 201
        r = site.login("admin", ADMIN_PASSWORD, "192.0.2.4")
        assert r.status_code == 429 and "192.0.2.4" in r.json()["error"]["message"]
        assert site.login("admin", ADMIN_PASSWORD, "192.0.2.5").status_code == 201
        # the dashboard's sign-in counts the same
        r = site.call("POST", "/dashboard/login", "192.0.2.3",
                      data={"username": "member", "password": MEMBER_PASSWORD})
        assert r.status_code == 429 and r.headers["Retry-After"]
    finally:
        site.services.close()


# ---- API events and the access log ---------------------------------------------------------

def _sample(name: str) -> float:
    from infracloud.ops.metrics import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


def test_only_authenticated_writes_are_events_and_clients_show_to_admins(site: Site) -> None:
    refused = _sample("infracloud_api_writes_unauthenticated_total")
    for _ in range(3):
        r = site.call("POST", "/compute/v2.1/os-keypairs", json={"keypair": {"name": "k"}})
        assert r.status_code == 401
    member = site.token("member", MEMBER_PASSWORD)
    r = site.call("POST", "/compute/v2.1/os-keypairs", "198.51.100.7",
                  headers={"X-Auth-Token": member}, json={"keypair": {"name": "k"}})
    assert r.status_code == 200, r.text
    site.services.events.drain()
    assert _sample("infracloud_api_writes_unauthenticated_total") == refused + 3

    def api_events(**kw: Any) -> list[dict[str, Any]]:
        r = site.call("GET", "/ops/v1/events", params={"kind": "api"}, **kw)
        assert r.status_code == 200, r.text
        return list(r.json()["events"])

    anonymous = api_events()
    assert [(e["actor"], e["target"]) for e in anonymous] == [("member", "200")]
    assert "client" not in anonymous[0]["detail"]
    assert "client" not in api_events(headers={"X-Auth-Token": member})[0]["detail"]
    admin = api_events(headers={"X-Auth-Token": site.token()})
    assert admin[0]["detail"]["client"] == "198.51.100.7"
    lines = site.call("GET", "/ops/v1/events", params={"kind": "api", "format": "jsonl"}).text
    assert "198.51.100.7" not in lines and '"actor":"member"' in lines


def test_the_events_queue_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    import threading

    from infracloud.core.clock import Clock
    from infracloud.ops import context
    from infracloud.ops.events import EventLog
    from infracloud.store import Database

    db = Database(f"sqlite:///{tmp_path / 'e.db'}")
    db.migrate()
    log = EventLog(db, "test", Clock(), queue_size=2)
    flush, entered, release = log._flush, threading.Event(), threading.Event()

    def held_flush(batch: list[dict[str, Any]]) -> None:
        entered.set()
        release.wait(30)
        flush(batch)

    log._flush = held_flush  # type: ignore[method-assign]
    actor = context.Actor(name="zuul", user_id="u-zuul", project_id="p-zuul")
    dropped = _sample("infracloud_api_events_dropped_total")

    def write(n: int) -> None:
        for _ in range(n):
            log.api_write("POST", "/compute/v2.1/os-keypairs", None, 200, actor, None)

    try:
        write(1)
        assert entered.wait(30)  # the writer holds the first one; the queue is empty
        write(5)  # two wait, three go
        assert _sample("infracloud_api_events_dropped_total") == dropped + 3
    finally:
        release.set()
        log.drain()
    assert log.latest_id() == 3
    db.dispose()


def test_the_access_log_carries_the_query_string_without_secrets(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    token = site.token()
    with caplog.at_level(logging.INFO, logger="infracloud.access"):
        site.call("GET", "/network/v2.0/ports", headers={"X-Auth-Token": token},
                  params={"status": "DOWN", "token": "s3cr3t-value", "password": "hunter2",
                          "sort_key": "name"})
    line = next(r for r in caplog.records if r.name == "infracloud.access"
                and "/network/v2.0/ports" in r.getMessage())
    message = line.getMessage()
    assert "status=DOWN" in message and "sort_key=name" in message
    assert "s3cr3t-value" not in message and "hunter2" not in message
    assert "token=***" in message and line.query == message.split("?", 1)[1].rsplit(" ", 1)[0]


# ---- the servers' name filter ----------------------------------------------------------------

def test_costly_name_patterns_are_refused() -> None:
    from infracloud.compute.namefilter import MAX_LENGTH, name_filter
    from infracloud.core.errors import BadRequest

    for costly in ("(a+)+$", "(a|aa)*b", "(x)\\1", "(.*)*", ".*a.*b.*c", "a" * (MAX_LENGTH + 1),
                   "(unclosed"):
        with pytest.raises(BadRequest):
            name_filter(costly)
    assert name_filter("ci-node").literal == "ci-node"
    assert name_filter("^ci-[0-9]{1,4}$").matches("ci-42")
    assert name_filter("50%_off").literal == "50%_off"


def test_name_and_status_filters_run_in_sql_and_keep_the_limit(db: Any, clock: Any) -> None:
    from sqlalchemy import event

    from infracloud.compute.hosts import Report
    from infracloud.compute.servers import api_status
    from infracloud.core.errors import BadRequest
    from tests.unit.compute_env import ADMIN, ZUUL, Env

    env = Env(db, clock)
    h = env.host("h", vcpus=64, ram_mb=65536, disk_gb=1000)
    servers = [env.boot(name=f"ci-{i}", flavor="ci.small") for i in range(6)]
    env.hosts.report(h.id, [Report(s.id, "running") for s in servers[:4]]
                     + [Report(servers[4].id, "failed", fault="boom")])
    env.servers.delete(ZUUL, servers[0].id)  # launched, deleting: still ACTIVE
    env.hosts.report(h.id, [Report(s.id, "running") for s in servers[1:4]]
                     + [Report(servers[4].id, "failed", fault="boom")])
    env.servers.delete(ZUUL, servers[4].id)  # faulted, deleting: ERROR
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    everything, _ = env.servers.list_servers(ADMIN, all_projects=True)
    for status in ("ACTIVE", "ERROR", "BUILD", "DELETED", "SHUTOFF"):
        statements.clear()
        page, _ = env.servers.list_servers(ADMIN, all_projects=True, status=status, limit=50)
        assert [s.id for s in page] == [s.id for s in everything if api_status(s) == status]
        assert any("LIMIT" in st and "state" in st for st in statements), statements
    page, marker = env.servers.list_servers(ZUUL, status="ACTIVE", limit=2)
    assert len(page) == 2 and marker == page[-1].id
    statements.clear()
    named, _ = env.servers.list_servers(ZUUL, name="ci-3", limit=10)
    assert [s.name for s in named] == ["ci-3"]
    assert any("LIKE" in st.upper() for st in statements)
    regex, _ = env.servers.list_servers(ZUUL, name="^ci-[12]$")
    assert sorted(s.name for s in regex) == ["ci-1", "ci-2"]
    with pytest.raises(BadRequest, match="not accepted"):
        env.servers.list_servers(ZUUL, name="(a+)+$")
