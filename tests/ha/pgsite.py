"""A site for the PostgreSQL high-availability tests: HTTPS controllers (separate processes) on
one PostgreSQL database behind Debian's HAProxy with deploy/haproxy.cfg (addresses changed), a
compute host's agent (fake driver) that reaches them through HAProxy, and openstacksdk churn
through HAProxy that counts the calls it made, those that failed and those it made again."""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from infracloud.api.tls import ensure_certificates
from infracloud.store.db import normalise_url
from infracloud.store.models import Host, Instance, Port
from tests import pgcluster
from tests.integration.test_haproxy import CONFIG, haproxy_config
from tests.servers import BIN, _reader, free_port, loopback_cidr, stop_process, wait_for

AGENT_TOKEN = "ha-tests-agent-token-0123456789"
FLAVOR = "churn.small"
PASSWORD = "admin-secret"
POLL = 0.5  # seconds between a churn client's looks at its server (the SDK's default is 2)
# "controllers/controller2 is UP" / "is DOWN" / "is stopping" (a 404 under disable-on-404)
_STATE = re.compile(r"[Ss]erver controllers/(controller\d+) is (UP|DOWN|stopping)")
# httplog: "... infracloud~ controllers/controller1 0/0/1/5/6 200 345 - - ---- ..."
_REQUEST = re.compile(r"\] infracloud~? controllers/(\S+) \S+ (-?\d+) \S+ \S+ \S+ (\S{4}) "
                      r".*\"(\S+) (\S+)")


@dataclass
class Controller:
    number: int  # 1, 2, 3: HAProxy's controller1...
    config: Path
    url: str
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def errors(self) -> list[str]:
        """The lines this controller logged at level error (tracebacks included)."""
        return [line for line in self.lines if '"level":"error"' in line]

    def output(self, last: int = 30) -> str:
        return "".join(self.lines[-last:])


@dataclass
class Logged:
    """A request as HAProxy logged it."""
    server: str
    status: int
    termination: str  # HAProxy's termination state: ---- when nothing went wrong
    method: str
    path: str


class Site:
    """`controllers` controllers on `db_url` (migrated already, or `auto_upgrade`), HAProxy in
    front, an agent behind it. `env` is every controller's extra environment."""

    def __init__(self, folder: Path, db_url: str, controllers: int = 3, *,
                 drain_seconds: float = 0.0, auto_upgrade: bool = True) -> None:
        self.folder = folder
        self.db_url = db_url
        self.ca, cert, key = ensure_certificates(folder / "tls", ["127.0.0.1"])
        (folder / "infracloud.pem").write_bytes(cert.read_bytes() + key.read_bytes())
        shutil.copy(self.ca, folder / "infracloud-ca.pem")
        (folder / "agent-token").write_text(AGENT_TOKEN)
        (folder / "admin-password").write_text(PASSWORD + "\n")
        self.front = free_port()
        self.public = f"https://127.0.0.1:{self.front}"
        cidr = loopback_cidr()
        self.controllers: list[Controller] = []
        for n in range(1, controllers + 1):
            port = free_port()
            config = {
                "site": "vanilla", "region": "vanilla", "public_url": self.public,
                "listen": {"host": "127.0.0.1", "port": port, "drain_seconds": drain_seconds},
                "tls": {"cert": str(cert), "key": str(key), "ca": str(self.ca)},
                "database": {"url": db_url, "auto_upgrade": auto_upgrade, "pool_size": 5},
                "identity": {"password_hash": {"time_cost": 1, "memory_cost_kib": 1024,
                                               "parallelism": 1}},
                "bootstrap": {"admin_password_file": str(folder / "admin-password")},
                "hardware": {"secret_key_file": str(folder / "secret.key")},
                "images": {"store_path": str(folder / "images")},
                "compute": {"agent_token_file": str(folder / "agent-token"),
                            "flavors": [{"name": FLAVOR, "vcpus": 1, "ram_mb": 512,
                                         "disk_gb": 1}],
                            "network": {"name": "provider", "cidr": cidr}},
                "logging": {"format": "json", "access_log": False},
            }
            path = folder / f"controller{n}.yaml"
            path.write_text(yaml.safe_dump(config))
            self.controllers.append(Controller(n, path, f"https://127.0.0.1:{port}"))
        self.proxy: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[str] | None = None
        self.agent_metrics = free_port()
        self._engine: Engine | None = None

    # ---- processes -------------------------------------------------------------------------

    def start(self) -> None:
        """Every controller (at once), HAProxy, then the agent; returns once the agent's host
        is up."""
        for c in self.controllers:
            self.launch(c)
        for c in self.controllers:
            self.wait_serving(c)
        ports = [int(c.url.rsplit(":", 1)[1]) for c in self.controllers]
        (self.folder / "haproxy.cfg").write_text(
            haproxy_config(CONFIG.read_text(), self.folder, self.front, ports))
        with (self.folder / "haproxy.log").open("wb") as log:
            self.proxy = subprocess.Popen(
                [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f",
                 str(self.folder / "haproxy.cfg")], stdout=log, stderr=subprocess.STDOUT)
        wait_for("HAProxy to answer", self._proxy_ready)
        self.clouds_yaml()
        self.start_agent()

    def launch(self, c: Controller, env: dict[str, str] | None = None) -> None:
        """Start controller `c` (its process, not waiting for it)."""
        c.lines = []
        c.proc = subprocess.Popen(
            [str(BIN / "infracloud"), "controller", "--config", str(c.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})})
        threading.Thread(target=_reader, args=(c.proc, c.lines, queue.Queue()),
                         daemon=True).start()

    def wait_serving(self, c: Controller, timeout: float = 90) -> None:
        def serving() -> bool:
            assert c.proc is not None
            if c.proc.poll() is not None:
                raise AssertionError(f"controller{c.number} exited:\n{c.output()}")
            try:
                return httpx.get(c.url + "/healthz", verify=str(self.ca),
                                 timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(f"controller{c.number} to serve", serving, timeout=timeout, every=0.1)

    def stop_controller(self, c: Controller, sig: int = signal.SIGTERM,
                        timeout: float = 60) -> int:
        assert c.proc is not None
        rc = stop_process(c.proc, timeout=timeout, sig=sig)
        assert rc != -signal.SIGKILL, f"controller{c.number} did not stop:\n{c.output()}"
        return rc

    def wait_proxy_ready(self, deadline: float) -> None:
        """What a client waits on before it tries a failed call again: HAProxy has a ready
        controller (one that reaches the database) to send it to."""
        wait_for("a controller ready behind HAProxy", self._proxy_ready,
                 max(1.0, deadline - time.monotonic()))

    def _proxy_ready(self) -> bool:
        assert self.proxy is not None
        assert self.proxy.poll() is None, "haproxy exited:\n" + self.haproxy_log()
        try:
            return httpx.get(self.public + "/readyz", verify=str(self.ca),
                             timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def start_agent(self) -> None:
        log = (self.folder / "agent.log").open("w")
        self.agent = subprocess.Popen(
            [str(BIN / "infracloud"), "agent", "--controller", self.public, "--cacert",
             str(self.ca), "--token", AGENT_TOKEN, "--driver", "fake", "--name", "compute-1",
             "--state-dir", str(self.folder / "agent"), "--vcpus", "64", "--ram-mb", "131072",
             "--disk-gb", "2000", "--metrics-port", str(self.agent_metrics),
             "--log-format", "text"], stdout=subprocess.DEVNULL, stderr=log, text=True)
        log.close()
        wait_for("the agent's host to be up", lambda: self.hosts_up() == 1, timeout=60)

    def hosts_up(self) -> int:
        with self.engine().connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Host)
                                   .where(Host.state == "up")) or 0)

    def agent_instances(self) -> int | None:
        """Instances the agent's driver runs now (its metrics), None while it does not say."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.agent_metrics}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        m = re.search(r'^infracloud_agent_instances\{state="running"\} (\S+)$', text, re.M)
        return int(float(m.group(1))) if m else None

    def close(self) -> None:
        """Every process at once (the controllers drain for listen.drain_seconds, and answer
        the agent's long-poll as they stop), HAProxy last."""
        running = [c.proc for c in self.controllers if c.proc and c.proc.poll() is None]
        if self.agent is not None and self.agent.poll() is None:
            running.append(self.agent)
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(proc, timeout=5)
        if self.proxy is not None:
            stop_process(self.proxy, timeout=10, sig=signal.SIGTERM)
        if self._engine is not None:
            self._engine.dispose()

    # ---- what HAProxy saw ------------------------------------------------------------------

    def haproxy_log(self) -> str:
        return (self.folder / "haproxy.log").read_text(errors="replace")

    def states(self, c: Controller) -> list[str]:
        """HAProxy's state changes of controller `c`, oldest first (it starts UP; each is
        logged twice: to stderr and to the log)."""
        states: list[str] = []
        for m in _STATE.finditer(self.haproxy_log()):
            if m.group(1) == f"controller{c.number}" and states[-1:] != [m.group(2)]:
                states.append(m.group(2))
        return states

    def up_in_haproxy(self, c: Controller) -> bool:
        states = self.states(c)
        return not states or states[-1] == "UP"

    def logged_requests(self) -> list[Logged]:
        out = []
        for line in self.haproxy_log().splitlines():
            m = _REQUEST.search(line)
            if m:
                out.append(Logged(m.group(1), int(m.group(2)), m.group(3), m.group(4),
                                  m.group(5)))
        return out

    # ---- clients and the database ----------------------------------------------------------

    def clouds_yaml(self) -> Path:
        path = self.folder / "clouds.yaml"
        path.write_text(yaml.safe_dump({"clouds": {"ha": {
            "auth": {"auth_url": self.public + "/identity", "username": "admin",
                     "password": PASSWORD, "project_name": "admin",
                     "user_domain_name": "Default", "project_domain_name": "Default"},
            "cacert": str(self.ca), "api_timeout": 30}}}))
        return path

    def sdk(self) -> Any:
        import openstack.config
        import openstack.connection

        path = self.folder / "clouds.yaml"
        if not path.exists():
            self.clouds_yaml()
        config = openstack.config.OpenStackConfig(config_files=[str(path)])
        return openstack.connection.Connection(config=config.get_one("ha"))

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(normalise_url(self.db_url), pool_pre_ping=True)
        return self._engine

    def leftovers(self) -> dict[str, int]:
        """Servers, ports (addresses) and claimed host capacity left in the database."""
        with self.engine().connect() as conn:
            return {
                "servers": int(conn.scalar(select(func.count()).select_from(Instance)) or 0),
                "ports": int(conn.scalar(select(func.count()).select_from(Port)) or 0),
                "claimed_vcpus": int(conn.scalar(select(func.coalesce(
                    func.sum(Host.used_vcpus), 0))) or 0),
                "claimed_ram_mb": int(conn.scalar(select(func.coalesce(
                    func.sum(Host.used_ram_mb), 0))) or 0),
            }


# ---- churn ---------------------------------------------------------------------------------

@dataclass
class Tally:
    """What the churn did. `calls`: SDK calls made; `failed`: those that raised; `retried`:
    calls made again after one failed; `answers`: every HTTP answer's status (a response
    hook on the SDK's session, so keystoneauth's own calls count too)."""
    cycles: int = 0
    creates: int = 0  # servers created (202)
    calls: int = 0
    failed: int = 0
    retried: int = 0
    cleaned: int = 0  # servers a failed create had made after all, found and deleted
    dropped: int = 0  # failed calls with no answer (a connection closed by HAProxy)
    answers: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)  # what failed, first 50
    bad_503s: list[str] = field(default_factory=list)  # 503s without body or Retry-After
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> str:
        return (f"{self.cycles} cycles, {self.calls} calls, {self.failed} failed "
                f"({self.dropped} with no answer), {self.retried} retried, {self.cleaned} "
                f"cleaned up; answers "
                f"{dict(sorted(self.answers.items()))}")


class Churn:
    """`threads` clients, each: create a server -> ACTIVE -> delete -> gone, again and again
    until stopped, each call tried again until it succeeds (once HAProxy has a ready controller) as
    nodepool would: a create that failed is followed by a search for a server it made after
    all (deleted if found). A cycle that does not finish within `cycle_timeout` is an error."""

    def __init__(self, site: Site, image_id: str, flavor_id: str, *, threads: int = 3,
                 cycle_timeout: float = 120, prefix: str = "churn") -> None:
        self.site = site
        self.image_id = image_id
        self.flavor_id = flavor_id
        self.tally = Tally()
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.cycle_timeout = cycle_timeout
        self.prefix = prefix
        self.threads = [threading.Thread(target=self._worker, args=(n,), daemon=True)
                        for n in range(threads)]
        self.watchers: list[Callable[[str], None]] = []  # told of each created server id

    def start(self) -> Churn:
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout: float = 180) -> Tally:
        """Let each client finish its cycle (nothing left behind), then return the tally."""
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "a churn client did not finish its cycle"
        if self.errors:
            raise AssertionError(f"churn failed: {self.errors[0]!r}; {self.tally.summary()}"
                                 ) from self.errors[0]
        return self.tally

    def cycles(self) -> int:
        return self.tally.cycles

    def creates(self) -> int:
        return self.tally.creates

    def _worker(self, n: int) -> None:
        try:
            conn = self.site.sdk()
            conn.session.session.hooks["response"].append(self._answered)
            i = 0
            while not self.stopping.is_set() and not self.errors:
                self._cycle(conn, f"{self.prefix}-{n}-{i}")
                i += 1
                with self.tally.lock:
                    self.tally.cycles += 1
        except BaseException as exc:
            self.errors.append(exc)

    def _answered(self, response: Any, *args: Any, **kwargs: Any) -> None:
        with self.tally.lock:
            self.tally.answers[response.status_code] += 1
            if response.status_code == 503:
                message = ""
                try:
                    body = response.json()
                    message = next(iter(body.values())).get("message", "")
                except (ValueError, AttributeError, StopIteration):
                    pass
                if not message or not response.headers.get("Retry-After"):
                    self.tally.bad_503s.append(f"{response.request.method} "
                                               f"{response.url}: {response.text[:200]}")

    def _failed(self, what: str, status: int | None) -> None:
        """A call failed and will be made again."""
        with self.tally.lock:
            self.tally.failed += 1
            self.tally.retried += 1
            self.tally.dropped += status is None
            if len(self.tally.failures) < 50:
                self.tally.failures.append(what)

    def _call(self, what: str, fn: Callable[[], Any], deadline: float) -> Any:
        from openstack import exceptions

        while True:
            with self.tally.lock:
                self.tally.calls += 1
            try:
                return fn()
            except exceptions.NotFoundException:
                raise
            except Exception as exc:  # SDK, keystoneauth and requests errors alike
                status = getattr(exc, "status_code", None)
                self._failed(f"{what}: {status} {type(exc).__name__}: {str(exc)[:160]}",
                             status)
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what} still failing at the cycle's deadline: "
                                         f"{exc!r}") from exc
                self.site.wait_proxy_ready(deadline)

    def _cycle(self, conn: Any, name: str) -> None:
        deadline = time.monotonic() + self.cycle_timeout
        compute = conn.compute
        while True:
            try:
                server = compute.create_server(name=name, image_id=self.image_id,
                                               flavor_id=self.flavor_id)
                with self.tally.lock:
                    self.tally.calls += 1
                    self.tally.creates += 1
                break
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                with self.tally.lock:
                    self.tally.calls += 1
                self._failed(f"create {name}: {status} {str(exc)[:160]}", status)
                if time.monotonic() > deadline:
                    raise AssertionError(f"create {name} still failing: {exc!r}") from exc
                # the create may have been done before its answer was lost: nodepool's
                # leak cleanup, at once
                for found in self._call("list", lambda: list(compute.servers(name=f"^{name}$")),
                                        deadline):
                    self._delete(conn, found.id, deadline)
                    with self.tally.lock:
                        self.tally.cleaned += 1
                self.site.wait_proxy_ready(deadline)
        for watcher in self.watchers:
            watcher(server.id)
        while True:
            status = self._call("get", lambda: compute.get_server(server.id).status, deadline)
            if status == "ACTIVE" or self.stopping.is_set():  # stopping: delete it now
                break
            if status == "ERROR":
                raise AssertionError(f"server {name} went to ERROR")
            if time.monotonic() > deadline:
                raise AssertionError(f"server {name} still {status} at the cycle's deadline")
            time.sleep(POLL)  # polling, as the SDK's wait_for_server does
        self._delete(conn, server.id, deadline)

    def _delete(self, conn: Any, server_id: str, deadline: float) -> None:
        from openstack import exceptions

        self._call("delete", lambda: conn.compute.delete_server(server_id), deadline)
        while True:
            try:
                self._call("get", lambda: conn.compute.get_server(server_id), deadline)
            except exceptions.NotFoundException:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"server {server_id} not gone at the cycle's deadline")
            time.sleep(POLL)


def prepare(site: Site) -> tuple[str, str]:
    """An image and the churn's flavor, through HAProxy: their ids."""
    conn = site.sdk()
    image = conn.image.create_image(name="churn-image", data=b"\0" * 4096, disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    wait_for("the image to be active",
             lambda: conn.image.get_image(image.id).status == "active", timeout=30)
    flavor = conn.compute.find_flavor(FLAVOR, ignore_missing=False)
    return str(image.id), str(flavor.id)


@contextlib.contextmanager
def own_cluster(prefix: str = "infracloud-ha-pg-") -> Iterator[tuple[Path, str]]:
    """A PostgreSQL cluster of the test's own (tests/pgcluster.py), which it may stop and
    start: its folder and a superuser URL. In /tmp itself: the postgres user must reach it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        url = pgcluster.start(folder)
        yield folder, url
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pgcluster.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)
