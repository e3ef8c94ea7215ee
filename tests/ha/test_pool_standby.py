"""Two `infracloud pool` processes on one PostgreSQL database, behind Debian's HAProxy with the
shipped deploy/haproxy-pool.cfg (only addresses and certificate folder changed), launching on
a real infracloud demo site (fake agent driver) through openstacksdk. One process is active,
the other stands by.

- `kill -9` of the active process while requestors churn through HAProxy (requests waiting,
  nodes building, nodes in use): the standby takes over within the issue's 15 s, every
  request is fulfilled, every node known before the kill ends deleted, none is served twice or
  launched twice, no server is left on the cloud, and no requestor call failed (the pool
  client tries again a call whose answer was lost, with the same Idempotency-Key).
- The standby's API: reads from the database, writes applied by the active process;
  `infracloud pool status` names the active process; a clean stop hands over at once (before
  the stopped process's lease could have run out)."""

from __future__ import annotations

import datetime as dt
import json
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infracloud.api.tls import ensure_certificates
from infracloud.core.errors import NotFound
from infracloud.pool.client import PoolClient
from tests.conftest import create_pg_database
from tests.integration.test_haproxy import haproxy_config
from tests.servers import (
    Running,
    free_port,
    infracloud,
    sdk,
    start_demo,
    start_pool,
    stop_process,
    verify_context,
    wait_for,
)

pytestmark = pytest.mark.pg

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy-pool.cfg"
TOKEN = "ha-pool-token-0123456789"
POOL = "ha-pool"
PROVIDER = "infracloud"
TAKEOVER_WITHIN = 15.0  # seconds: the bound for a standby to take over


@dataclass
class PoolProcess:
    name: str
    config: Path
    log: Path
    url: str
    ca: str
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc, url = start_pool(self.config, self.log)
        assert url == self.url

    def readyz(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(self.url + "/readyz", verify=verify_context(self.ca), timeout=2)
        except httpx.HTTPError:
            return None
        return dict(r.json()) if r.status_code == 200 else None

    def role(self) -> str | None:
        ready = self.readyz()
        return None if ready is None else str(ready["role"])


@dataclass
class Site:
    demo: Running
    pools: list[PoolProcess]
    public: str  # HAProxy's address
    ca: str
    proxy: subprocess.Popen[bytes]
    haproxy_log: Path
    clients: list[PoolClient] = field(default_factory=list)

    def client(self, url: str | None = None) -> PoolClient:
        c = PoolClient(url or self.public, TOKEN, self.ca)
        self.clients.append(c)
        return c

    def active(self) -> PoolProcess:
        return next(p for p in self.pools if p.role() == "active")

    def standby(self) -> PoolProcess:
        return next(p for p in self.pools if p.role() == "standby")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.log.read_text()[-6000:]}" for p in self.pools)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_demo(Path(tmp_path_factory.mktemp("pool-ha-site")), "--site", "none",
                         "--hosts", "1", "--driver", "fake", "--min-ready", "0")
    yield running
    assert running.stop() == 0, "".join(running.lines[-30:])


@pytest.fixture
def site(demo: Running, tmp_path: Path, pg_admin_url: str) -> Iterator[Site]:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    ca, cert, key = ensure_certificates(tmp_path / "tls", ["127.0.0.1"])
    (tmp_path / "pool.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    shutil.copy(ca, tmp_path / "pool-ca.pem")
    (tmp_path / "token").write_text(TOKEN + "\n")
    db = create_pg_database(pg_admin_url)
    pools = []
    for name in ("pool1", "pool2"):
        port = free_port()
        config = {
            "name": POOL, "listen": {"host": "127.0.0.1", "port": port},
            "tls": {"cert": str(cert), "key": str(key)}, "database": db,
            "auth": {"static-token-file": str(tmp_path / "token")}, "cleanup-interval": 2,
            "labels": [{"name": "small"}],
            "providers": [{"name": PROVIDER, "cloud": "infracloud-ci",
                           "clouds-file": str(demo.clouds_yaml), "max-servers": 4,
                           "status-interval": 0.2,
                           "pools": [{"name": "main", "host-key-checking": False,
                                      "labels": [{"name": "small", "image": "demo",
                                                  "flavor-name": "ci.small"}]}]}],
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        pools.append(PoolProcess(name, path, tmp_path / f"{name}.log",
                                 f"https://127.0.0.1:{port}", str(ca)))
    proxy: subprocess.Popen[bytes] | None = None
    running: Site | None = None
    try:
        pools[0].start()  # alone: active at once
        pools[1].start()
        assert [p.role() for p in pools] == ["active", "standby"]
        front = free_port()
        (tmp_path / "haproxy.cfg").write_text(haproxy_config(
            CONFIG.read_text(), tmp_path, front, [int(p.url.rsplit(":", 1)[1]) for p in pools],
            listen=8450, name="pool", shipped=2))
        log = tmp_path / "haproxy.log"
        with log.open("wb") as out:
            proxy = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                     stdout=out, stderr=subprocess.STDOUT)
        running = Site(demo, pools, f"https://127.0.0.1:{front}", str(ca), proxy, log)
        public = running.client()
        wait_for("HAProxy to answer", lambda: _both_up(running, public))
        yield running
    finally:
        if running is not None:
            for c in running.clients:
                c.close()
        if proxy is not None:
            stop_process(proxy, sig=signal.SIGTERM)
        for p in pools:
            if p.proc is not None:
                code = stop_process(p.proc)
                assert code in (0, -signal.SIGKILL), p.log.read_text()[-3000:]


def _both_up(site: Site, client: PoolClient) -> bool:
    assert site.proxy.poll() is None, "haproxy exited:\n" + site.haproxy_log.read_text()
    try:
        return [label["name"] for label in client.list_labels()] == ["small"]
    except Exception:
        return False


# ---- what the cloud saw ------------------------------------------------------------------------

def cloud_servers(demo: Running) -> list[Any]:
    """The pool's servers on the demo site now (by the metadata naming the pool)."""
    conn = sdk(demo.clouds_yaml, "infracloud-ci")
    try:
        return [s for s in conn.compute.servers()
                if (s.metadata or {}).get("infracloud_pool") == POOL]
    finally:
        conn.close()


def server_creations(demo: Running) -> Counter[str]:
    """How many servers the site made under each name (the pool names a server after its
    node: `small-infracloud-<node id>`)."""
    names: Counter[str] = Counter()
    after = 0
    with demo.http() as http:
        while True:
            r = http.get("/ops/v1/events", params={"resource_type": "server", "kind": "state",
                                                   "after": after, "limit": 1000})
            assert r.status_code == 200, r.text
            page = r.json()["events"]
            if not page:
                return names
            names.update(e["resource_name"] for e in page
                         if e["source"] is None and str(e["resource_name"]).startswith(
                             f"small-{PROVIDER}-"))
            after = r.json()["next"]


def node_fates(client: PoolClient, node_ids: set[str]) -> dict[str, str]:
    """The last state each node's events tell (the pool's events, through the API)."""
    fates: dict[str, str] = {}
    for node_id in node_ids:
        events = client.call("GET", "/pool/v1/events", params={"resource": node_id,
                                                               "limit": 500})["events"]
        if events:
            fates[node_id] = events[-1]["target"]
    return fates


# ---- a requestor ----------------------------------------------------------------------------

@dataclass
class Requestors:
    """Threads that wait for each request (long-polls through HAProxy), release its nodes,
    and remember what they got; every call that failed after the client's retries counts."""

    site: Site
    todo: queue.Queue[str] = field(default_factory=queue.Queue)
    served: dict[str, list[str]] = field(default_factory=dict)  # request -> its node ids
    failed: list[str] = field(default_factory=list)
    calls: int = 0
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, count: int) -> None:
        for i in range(count):
            t = threading.Thread(target=self._run, name=f"requestor-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _count(self) -> None:
        with self.lock:
            self.calls += 1

    def _run(self) -> None:
        client = self.site.client()
        while True:
            rid = self.todo.get()
            if rid == "":
                return
            try:
                req = client.get_request(rid)
                self._count()
                while req["state"] not in ("fulfilled", "failed", "cancelled"):
                    req = client.get_request(rid, wait=10)
                    self._count()
                if req["state"] != "fulfilled":
                    self.failed.append(f"{rid}: {req['state']}: {req.get('reason')}")
                    continue
                for node in req["node_ids"]:
                    client.release(node)
                    self._count()
                with self.lock:
                    self.served[rid] = list(req["node_ids"])
            except Exception as exc:  # a failed call: the test's count of failures
                self.failed.append(f"{rid}: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        for _ in self.threads:
            self.todo.put("")
        for t in self.threads:
            t.join(120)
            assert not t.is_alive(), "a requestor is stuck"


def create(client: PoolClient, count: int, requestors: Requestors) -> list[str]:
    ids = []
    for _ in range(count):
        try:
            rid = str(client.create_request(["small"], "zuul")["id"])
        except Exception as exc:
            requestors.failed.append(f"create: {type(exc).__name__}: {exc}")
            continue
        requestors._count()
        ids.append(rid)
        requestors.todo.put(rid)
    return ids


def settle(site: Site, client: PoolClient) -> None:
    """Every node deleted and no server of the pool left on the cloud."""
    def clean() -> bool:
        for node in client.list_nodes(state="in-use"):
            client.release(node["id"])
        return not client.list_nodes() and not cloud_servers(site.demo)

    try:
        wait_for("the pool's nodes and servers all gone", clean, timeout=90, every=1)
    except AssertionError:
        raise AssertionError(f"left: {client.list_nodes()}\n{cloud_servers(site.demo)}\n"
                             f"{site.logs()}") from None


# ---- the tests ------------------------------------------------------------------------------

def test_killing_the_active_pool_costs_its_requestors_nothing(site: Site) -> None:
    client = site.client()
    active, standby = site.active(), site.standby()
    requestors = Requestors(site)
    requestors.start(3)
    before = create(client, 16, requestors)  # 4 at a time fit: the rest wait
    wait_for("some requests served", lambda: len(requestors.served) >= 4, timeout=60)

    def in_flight() -> bool:
        nodes = client.list_nodes()
        return any(n["state"] == "building" for n in nodes) and \
            any(r["state"] == "requested" for r in client.list_requests())

    wait_for("nodes building and requests waiting", in_flight, timeout=30, every=0.05)
    known = {n["id"] for n in client.list_nodes()} | \
        {n for nodes in list(requestors.served.values()) for n in nodes}
    assert active.proc is not None
    killed_at = time.monotonic()
    active.proc.kill()  # SIGKILL: no goodbye, its lease runs out by itself
    active.proc.wait()
    after: list[str] = []
    writer = threading.Thread(target=lambda: after.extend(create(client, 8, requestors)))
    writer.start()  # new requests meanwhile: the standby holds them for the next active one
    wait_for("the standby to take over", lambda: standby.role() == "active",
             timeout=TAKEOVER_WITHIN + 15, every=0.05)
    took = time.monotonic() - killed_at
    print(f"pool takeover after kill -9: {took:.1f} s")
    assert took < TAKEOVER_WITHIN, f"the standby took {took:.1f} s to take over"
    writer.join(60)
    assert len(after) == 8, requestors.failed

    wait_for("every request served", lambda: len(requestors.served) == len(before) + 8
             or bool(requestors.failed), timeout=120, every=0.5)
    requestors.stop()
    assert requestors.failed == [], requestors.failed[:5]
    assert set(requestors.served) == {*before, *after}
    nodes = [n for ids in requestors.served.values() for n in ids]
    assert len(nodes) == len(set(nodes)) == len(before) + 8  # none served twice
    settle(site, client)
    fates = node_fates(client, known | set(nodes))
    assert set(fates) == known | set(nodes)  # no node lost: each one's story ends...
    assert set(fates.values()) == {"deleted"}  # ...deleted, its server too
    made = server_creations(site.demo)
    assert made and max(made.values()) == 1, made.most_common(3)  # no node launched twice
    status = site.client(standby.url).status()
    assert status["active"]["owner"] == status["this"]["owner"]
    assert status["active"]["generation"] == 2
    retried = sum(c.retries for c in site.clients)
    print(f"requestor calls: {requestors.calls}, tried again: {retried}, failed: 0; "
          f"requests: {len(nodes)}; servers made: {sum(made.values())} for {len(made)} nodes")


def test_the_standby_serves_and_a_clean_stop_hands_over_at_once(site: Site) -> None:
    active, standby = site.active(), site.standby()
    both = f"{active.url},{standby.url}"
    env = {"INFRACLOUD_POOL_URL": both, "INFRACLOUD_POOL_TOKEN": TOKEN,
           "INFRACLOUD_POOL_CACERT": site.ca}
    shown = infracloud("pool", "status", "--format", "json", env=env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert active.proc is not None
    assert status["active"]["owner"].endswith(f":{active.url.rsplit(':', 1)[1]}/"
                                              f"{active.proc.pid}")
    assert sorted(p["role"] for p in status["processes"]) == ["active", "standby"]
    text = infracloud("pool", "status", env={**env, "INFRACLOUD_POOL_URL": standby.url})
    assert text.returncode == 0, text.stderr
    assert f"active process {status['active']['owner']}" in text.stdout
    assert "(standby)" in text.stdout  # the standby answered

    # the standby's own API: a write it hands on, reads from the database
    on_standby = site.client(standby.url)
    req = on_standby.create_request(["small"], "zuul")
    done = on_standby.get_request(req["id"], wait=30)
    while done["state"] not in ("fulfilled", "failed"):
        done = on_standby.get_request(req["id"], wait=30)
    assert done["state"] == "fulfilled", done
    (node,) = done["node_ids"]
    assert on_standby.get_node(node)["state"] == "in-use"
    assert on_standby.release(node)["state"] in ("used", "deleting")
    with pytest.raises(NotFound, match="could not be found"):
        on_standby.release("9999999999")

    # a clean stop: the lease is given back, the standby takes it before it could run out
    expires = dt.datetime.fromisoformat(site.client(active.url).status()["active"]
                                        ["expires_at"])
    assert stop_process(active.proc) == 0, active.log.read_text()[-3000:]
    wait_for("the standby to take over", lambda: standby.role() == "active", timeout=30,
             every=0.05)
    now_active = site.client(standby.url).status()["active"]
    assert dt.datetime.fromisoformat(now_active["since"]) < expires
    client = site.client()
    again = client.create_request(["small"], "zuul")
    assert client.get_request(again["id"], wait=30)["state"] in ("pending", "fulfilled")
    settle(site, client)
