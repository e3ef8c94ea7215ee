"""The node pool end to end: two demo sites (two controllers, two databases, sandbox servers
that answer SSH) are the providers of one `infracloud pool` process, reached only through
openstacksdk. Requests are served and every node is logged into over SSH with its recorded
host keys pinned; quota is a wait; max-servers 0 drains; a server and a port made behind the
pool's back are deleted after two sightings; fair share; and a site killed mid-way hands its
requests to the other."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
import yaml

from infracloud.pool.client import run_on_node
from tests.servers import Running, free_port, sdk, start_demo, start_pool, stop_process, wait_for

KEY = "pooltest"


@dataclass
class Pool:
    proc: subprocess.Popen[str]
    url: str
    token: str
    config_file: Path
    config: dict[str, Any]
    log: Path
    http: httpx.Client | None = None

    def api(self, method: str, path: str, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        # one client for the test: a new httpx client costs ~50 ms (its TLS context)
        if self.http is None:
            self.http = httpx.Client(base_url=f"{self.url}/pool/v1", timeout=90,
                                     headers={"X-Auth-Token": self.token})
        r = self.http.request(method, path, **kwargs)
        assert r.status_code < 300 or r.status_code in ok, (r.status_code, r.text)
        return r.json()

    def request(self, count: int = 1, requestor: str = "zuul") -> str:
        return str(self.api("POST", "/requests", json={"labels": ["small"] * count,
                                                       "requestor": requestor})["request"]["id"])

    def wait(self, request_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            req = self.api("GET", f"/requests/{request_id}", params={"wait": 10})["request"]
            if req["state"] in ("fulfilled", "failed", "cancelled") or \
                    time.monotonic() > deadline:
                return dict(req)

    def nodes(self, state: str | None = None) -> list[dict[str, Any]]:
        return list(self.api("GET", "/nodes", params={"state": state} if state else {})
                    ["nodes"])

    def release_all(self) -> None:
        for node in self.nodes("in-use"):
            self.api("POST", f"/nodes/{node['id']}/release")

    def settle(self, timeout: float = 60) -> None:
        """Release what is in use and wait until every node is deleted."""
        def gone() -> bool:
            self.release_all()
            return not self.nodes()

        try:
            until(gone, timeout=timeout, what="all nodes deleted")
        except AssertionError:
            states = [(n["id"], n["provider"], n["state"], n["failure"]) for n in self.nodes()]
            raise AssertionError(f"nodes left: {states}\n"
                                 f"{self.log.read_text()[-4000:]}") from None

    def events(self, after: int) -> list[dict[str, Any]]:
        """Every pool event after id `after`, page by page."""
        events: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", "/events", params={"after": after, "limit": 500})
            if not page["events"]:
                return events
            events += page["events"]
            after = page["next"]
        return events

    def provider(self, name: str) -> dict[str, Any]:
        return next(p for p in self.api("GET", "/providers")["providers"] if p["name"] == name)

    def rewrite(self, **provider_changes: dict[str, Any]) -> None:
        for p in self.config["providers"]:
            p.update(provider_changes.get(p["name"], {}))
        self.config_file.write_text(yaml.safe_dump(self.config))


def until(cond: Any, timeout: float = 60, what: str = "") -> None:
    wait_for(what, cond, timeout)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    started: dict[str, Running] = {}
    try:
        for name in ("vanilla", "chocolate"):
            started[name] = start_demo(tmp_path_factory.mktemp(name), "--site", "none",
                                       "--hosts", "1", "--min-ready", "0")
        yield started
    finally:
        for running in started.values():
            if running.proc.poll() is None:
                assert running.stop() == 0, "".join(running.lines[-30:])


@pytest.fixture(scope="module")
def ssh_key(sites: dict[str, Running]) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode()
    for running in sites.values():
        sdk(running.clouds_yaml, "infracloud-ci").compute.create_keypair(name=KEY,
                                                                         public_key=public)
    return key


@pytest.fixture(scope="module")
def pool(sites: dict[str, Running], ssh_key: asyncssh.SSHKey,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("pool")
    (tmp / "token").write_text("s3cret-pool-token\n")
    port = free_port()
    config: dict[str, Any] = {
        "name": "itest", "listen": {"host": "127.0.0.1", "port": port},
        "database": f"sqlite:///{tmp / 'pool.db'}",
        "auth": {"static-token-file": str(tmp / "token")}, "cleanup-interval": 2,
        "labels": [{"name": "small"}],
        "providers": [{"name": name, "cloud": "infracloud-ci",
                       "clouds-file": str(running.clouds_yaml), "max-servers": 20,
                       "status-interval": 0.3, "boot-timeout": 30, "launch-retries": 3,
                       "pools": [{"name": "main", "labels": [
                           {"name": "small", "image": "demo", "flavor-name": "ci.small",
                            "key-name": KEY, "username": "root"}]}]}
                      for name, running in sites.items()],
    }
    path = tmp / "pool.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, url = start_pool(path, tmp / "pool.log")
    running = Pool(proc, url, "s3cret-pool-token", path, config, tmp / "pool.log")
    try:
        yield running
    finally:
        code = stop_process(proc)
        assert code == 0, (tmp / "pool.log").read_text()[-3000:]


def test_thirty_requests_are_fulfilled_on_both_sites_and_reachable(
        pool: Pool, sites: dict[str, Running], ssh_key: asyncssh.SSHKey) -> None:
    ids = [pool.request() for _ in range(30)]
    results = [pool.wait(r) for r in ids]
    assert [r["state"] for r in results] == ["fulfilled"] * 30, results
    nodes = [r["nodes"][0] for r in results]
    assert {n["provider"] for n in nodes} == {"vanilla", "chocolate"}
    assert len({n["interface_ip"] for n in nodes}) == 30
    for node in nodes:
        assert node["state"] == "in-use" and node["host_keys"]
        assert run_on_node(node, ssh_key, "uname -s").strip() == "Linux"
    # the servers carry the pool's metadata, seen through the cloud's own API
    node = nodes[0]
    conn = sdk(sites[node["provider"]].clouds_yaml, "infracloud-ci")
    server = conn.compute.get_server(node["server_id"])
    assert server.metadata["infracloud_pool"] == "itest"
    assert server.metadata["infracloud_pool_node_id"] == node["id"]
    pool.settle()
    # every state change of the node is an event: where, who, from what to what
    events = pool.api("GET", "/events", params={"resource": node["id"]})["events"]
    assert [(e["source"], e["target"]) for e in events] == [
        (None, "building"), ("building", "ready"), ("ready", "in-use"), ("in-use", "used"),
        ("used", "deleting"), ("deleting", "deleted")], events
    assert {e["host"] for e in events} == {node["provider"]}
    assert {e["site"] for e in events} == {"itest"}
    # the engine did all but the release, which the caller did (the static token: "default")
    assert [e["actor"] for e in events] == ["system:pool"] * 3 + ["default"] + \
        ["system:pool"] * 2
    # nodepool's status lists: the node and request lists need a token (no `public-lists`)
    assert httpx.get(f"{pool.url}/label-list").json() == [{"label": "small"}]
    assert httpx.get(f"{pool.url}/request-list").status_code == 401
    assert httpx.get(f"{pool.url}/request-list", headers={"X-Auth-Token": pool.token}).json()


def test_a_site_at_quota_makes_requests_wait_not_fail(pool: Pool,
                                                      sites: dict[str, Running]) -> None:
    admin = sdk(sites["vanilla"].clouds_yaml, "infracloud-admin")
    ci = admin.identity.find_project("ci")
    admin.compute.update_quota_set(ci.id, instances=2)
    pool.api("POST", "/providers/chocolate/drain", json={"reason": "quota test"})
    try:
        ids = [pool.request() for _ in range(4)]
        until(lambda: len(pool.nodes("in-use")) == 2, what="two served")

        def quota_heard() -> bool:  # the engine counts with it and has no launch in flight
            vanilla = pool.provider("vanilla")
            return bool(vanilla["quota"] and vanilla["quota"]["instances"] == 2
                        and vanilla["building"] == 0)

        until(quota_heard, what="the pool to hear vanilla's quota of 2")
        states = sorted(pool.api("GET", f"/requests/{r}")["request"]["state"] for r in ids)
        assert states == ["fulfilled", "fulfilled", "requested", "requested"], states
        vanilla = pool.provider("vanilla")
        assert vanilla["launch_failures"] == 0 and vanilla["quota"]["instances"] == 2
        assert not [n for n in pool.nodes() if n["state"] == "failed"]
        pool.release_all()
        assert [pool.wait(r)["state"] for r in ids] == ["fulfilled"] * 4
    finally:
        admin.compute.update_quota_set(ci.id, instances=100)
        pool.api("POST", "/providers/chocolate/undrain")
        pool.settle()


def test_max_servers_zero_drains_a_provider(pool: Pool) -> None:
    first = pool.wait(pool.request(4))
    on_vanilla = {n["id"] for n in first["nodes"] if n["provider"] == "vanilla"}
    pool.rewrite(vanilla={"max-servers": 0})
    try:
        until(lambda: pool.provider("vanilla")["state"] == "draining", timeout=20,
              what="config reloaded")
        later = [pool.wait(pool.request()) for _ in range(4)]
        assert {n["provider"] for r in later for n in r["nodes"]} == {"chocolate"}
        still = {n["id"] for n in pool.nodes("in-use") if n["provider"] == "vanilla"}
        assert still == on_vanilla  # existing nodes finish; nothing new
    finally:
        pool.rewrite(vanilla={"max-servers": 20})
        until(lambda: pool.provider("vanilla")["state"] == "up", timeout=20)
        pool.settle()


def test_leaks_are_deleted_after_two_sightings(pool: Pool, sites: dict[str, Running]) -> None:
    conn = sdk(sites["chocolate"].clouds_yaml, "infracloud-ci")
    image = conn.image.find_image("demo")
    flavor = conn.compute.find_flavor("ci.small")
    made = time.monotonic()
    leak = conn.compute.create_server(name="small-chocolate-leak", image_id=image.id,
                                      flavor_id=flavor.id, networks="auto",
                                      metadata={"infracloud_pool": "itest",
                                                "infracloud_pool_node_id": "0999999999"})
    theirs = conn.compute.create_server(name="not-ours", image_id=image.id,
                                        flavor_id=flavor.id, networks="auto",
                                        metadata={"infracloud_pool": "another-pool"})
    net = next(iter(conn.network.networks()))
    port = conn.network.create_port(network_id=net.id, device_owner="compute:nova",
                                    device_id="0f6c3c1e-0000-4000-8000-000000000000")
    until(lambda: conn.compute.find_server(leak.id) is None, timeout=30,
          what="leaked server deleted")
    # two sightings, `cleanup-interval` (2 s) apart: never on the first one
    assert time.monotonic() - made >= 2
    until(lambda: conn.network.find_port(port.id) is None, timeout=30,
          what="leaked port deleted")
    assert conn.compute.find_server(theirs.id) is not None
    conn.compute.delete_server(theirs.id)


def test_fair_share_serves_a_small_requestor_between_a_big_ones(pool: Pool) -> None:
    pool.rewrite(vanilla={"max-servers": 2}, chocolate={"max-servers": 0})
    big: list[str] = []
    try:
        until(lambda: pool.provider("chocolate")["state"] == "draining", timeout=20)
        big = [pool.request(requestor="big") for _ in range(100)]
        until(lambda: len(pool.nodes("in-use")) == 2, what="the first two big")
        small = [pool.request(requestor="small") for _ in range(2)]
        served: list[str] = []

        def release_until_small_served() -> bool:
            for node in pool.nodes("in-use"):
                served.append(str(node["requestor"]))
                pool.api("POST", f"/nodes/{node['id']}/release")
            return served.count("small") >= 2

        until(release_until_small_served, what="small served twice")
        assert served.count("small") == 2, served
        after_small = served[2:]  # the two in use when small asked were big's
        assert len(after_small) <= 6, served
        assert all(pool.api("GET", f"/requests/{r}")["request"]["state"] == "fulfilled"
                   for r in small)
    finally:
        for r in big:  # a 409: it ended meanwhile (fulfilled while we looked)
            pool.api("DELETE", f"/requests/{r}", ok=(409,))
        pool.rewrite(vanilla={"max-servers": 20}, chocolate={"max-servers": 20})
        pool.settle()


def test_a_site_killed_mid_way_hands_its_requests_to_the_other(
        pool: Pool, sites: dict[str, Running]) -> None:
    """Last in the module: it kills a site."""
    until(lambda: pool.provider("vanilla")["state"] == "up", timeout=20)
    pool.api("POST", "/providers/chocolate/drain", json={"reason": "all on vanilla first"})
    first = pool.api("GET", "/events", params={"order": "desc", "limit": 1})["next"]
    ids = [pool.request() for _ in range(12)]
    until(lambda: any(n["provider"] == "vanilla" and n["state"] == "building"
                      for n in pool.nodes()), timeout=30, what="launches on vanilla")
    sites["vanilla"].proc.kill()
    sites["vanilla"].proc.wait()
    pool.api("POST", "/providers/chocolate/undrain")
    results = {r: pool.wait(r, timeout=120) for r in ids}
    assert [r["state"] for r in results.values()] == ["fulfilled"] * 12, results
    # the pool's events tell which launches were still on their way on the dead site (never
    # ready: their servers, SSH included, died with it); those were launched again on the other
    targets: dict[str, set[str]] = {}
    request_of: dict[str, str] = {}
    for event in pool.events(after=first):
        detail = event["detail"] or {}
        if event["resource_type"] == "pool-node" and event["host"] == "vanilla" \
                and detail.get("request") in results:
            targets.setdefault(event["resource_id"], set()).add(event["target"])
            request_of[event["resource_id"]] = detail["request"]
    launching = {request_of[node] for node, seen in targets.items()
                 if "building" in seen and "ready" not in seen}
    assert launching, targets
    assert all([n["provider"] for n in results[r]["nodes"]] == ["chocolate"]
               for r in launching), (launching, results)
    until(lambda: pool.provider("vanilla")["state"] == "down", timeout=30)
    assert pool.provider("chocolate")["launch_failures"] == 0
