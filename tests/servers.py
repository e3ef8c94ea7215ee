"""Start real infracloud processes for integration tests and stop them cleanly."""

from __future__ import annotations

import ipaddress
import itertools
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

BIN = Path(sys.executable).parent


def worker() -> int:
    """This pytest-xdist worker's number (0 without xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


_cidrs = itertools.count()
# the first of the 32 second octets this run's two workers use (127.110-141 by default); a
# second test run beside this one on the same machine sets another (e.g. 150 or 190)
LOOPBACK_BASE = int(os.environ.get("INFRACLOUD_TEST_LOOPBACK_BASE", "110"))
_site_cidrs: dict[Path, str] = {}


def loopback_cidr(state_dir: Path | None = None) -> str:
    """A /16 of 127.0.0.0/8 for one site's servers (their SSH listens on port 22 of their own
    address): each worker has 16 of its own, handed out in turn, so sites that run at once,
    in one worker or two, never share an address. A site restarted on the same state
    directory keeps its network."""
    if state_dir is not None and state_dir in _site_cidrs:
        return _site_cidrs[state_dir]
    cidr = f"127.{LOOPBACK_BASE + 16 * worker() + next(_cidrs) % 16}.0.0/16"
    if state_dir is not None:
        _site_cidrs[state_dir] = cidr
    return cidr


def verify_context(ca: str | bool) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=ca) if isinstance(ca, str) else ca


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30,
                 sig: int = signal.SIGINT) -> int:
    """Ask a process to stop with `sig`; kill it if it has not after `timeout` seconds,
    having asked an infracloud command for its threads' stacks first (SIGUSR1: in its
    output, for the failure's message)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class Running:
    proc: subprocess.Popen[str]
    base_url: str
    state_dir: Path | None = None
    lines: list[str] = field(default_factory=list)
    cidr: str | None = None  # the servers' network
    reader: threading.Thread | None = None  # takes in `lines` until the output ends

    def owns(self, ip: str) -> bool:
        """Whether `ip` is on this site's servers' network."""
        assert self.cidr is not None
        return ipaddress.ip_address(ip) in ipaddress.ip_network(self.cidr)

    @property
    def clouds_yaml(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "clouds.yaml"

    @property
    def cacert(self) -> str | bool:
        if self.state_dir is not None and (self.state_dir / "tls" / "ca.pem").exists():
            return str(self.state_dir / "tls" / "ca.pem")
        return True

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=verify_context(self.cacert),
                            timeout=30, **kwargs)

    def stop(self, timeout: float = 30) -> int:
        """Stop it (SIGINT); its exit code. A process that did not stop in time is killed,
        and an AssertionError shows the end of its output (its threads' stacks)."""
        count = len(self.lines)
        if self.proc.poll() is not None:  # gone already (a test killed it)
            return self.proc.returncode
        rc = stop_process(self.proc, timeout)
        if rc == -signal.SIGKILL:
            if self.reader is not None:  # it takes in the last lines
                self.reader.join(5)
            raise AssertionError(f"did not stop within {timeout} s of SIGINT:\n" +
                                 "".join(self.lines[max(count - 20, 0):])[-12000:])
        return rc


def _reader(proc: subprocess.Popen[str], lines: list[str], q: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        q.put(line)


def infracloud(*args: str, env: dict[str, str] | None = None, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "infracloud"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start_demo(state_dir: Path, *args: str, port: int | None = None,
               timeout: float = 90) -> Running:
    port = port or free_port()
    if "--driver" not in args:  # the tests' demos run no real VMs unless they ask
        args = (*args, "--driver", "sandbox")
    if "--network-cidr" not in args:
        args = (*args, "--network-cidr", loopback_cidr(state_dir))
    cidr = args[args.index("--network-cidr") + 1]
    proc = subprocess.Popen([str(BIN / "infracloud"), "demo", "--state-dir", str(state_dir),
                             "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    q: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_reader, args=(proc, lines, q), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        m = re.search(r"ready at (https?://\S+)", line)
        if m:
            return Running(proc, m.group(1), state_dir, lines, cidr, reader)
    proc.kill()
    raise AssertionError("demo did not become ready:\n" + "".join(lines))


def start_controller(config_file: Path, base_url: str, timeout: float = 90,
                     verify: str | bool = True) -> Running:
    """`verify`: the CA file for a controller that serves HTTPS."""
    proc = subprocess.Popen([str(BIN / "infracloud"), "controller", "--config", str(config_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=_reader, args=(proc, lines, queue.Queue()), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(base_url + "/healthz", timeout=1,
                         verify=verify_context(verify)).status_code == 200:
                return Running(proc, base_url, None, lines, reader=reader)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("controller did not start:\n" + "".join(lines))


def openstack_cli(clouds_yaml: Path, *args: str, timeout: float = 120
                  ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml)}
    for key in ("OS_CLOUD", "OS_AUTH_URL", "OS_PASSWORD", "OS_USERNAME", "OS_PROJECT_NAME"):
        env.pop(key, None)
    return subprocess.run([str(BIN / "openstack"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def sdk(clouds_yaml: Path, cloud: str, **overrides: Any) -> Any:
    import openstack.config
    import openstack.connection

    config = openstack.config.OpenStackConfig(config_files=[str(clouds_yaml)])
    return openstack.connection.Connection(config=config.get_one(cloud, **overrides))


def ssh_run(ip: str, key: Any, command: str, port: int = 22) -> Any:
    """Log in over SSH (asyncssh) as root with `key` and run `command`."""
    import asyncio

    import asyncssh

    async def go() -> Any:
        async with asyncssh.connect(ip, port, username="root", client_keys=[key],
                                    known_hosts=None, connect_timeout=20) as conn:
            return await conn.run(command)

    return asyncio.run(go())


def wait_for(what: str, probe: Any, timeout: float = 30, every: float = 0.2) -> Any:
    """Call `probe` until it returns something true (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


async def async_wait_for(what: str, probe: Any, timeout: float = 30, every: float = 0.01
                         ) -> Any:
    """`wait_for` on an event loop: the loop runs on between the calls of `probe`."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(every)


def write_controller_config(folder: Path, db_url: str, *, sections: dict[str, Any] | None = None,
                            **identity: object) -> tuple[Path, str]:
    """controller.yaml in `folder` for one plain-HTTP controller on 127.0.0.1 (fast password
    hashing; an admin whose password is `admin-secret`), with `identity` settings and whole
    `sections` merged in. The file and the controller's base URL."""
    port = free_port()
    (folder / "admin-password").write_text("admin-secret\n")
    config = {
        "site": "vanilla",
        "region": "vanilla",
        "listen": {"host": "127.0.0.1", "port": port},
        "database": {"url": db_url},
        "identity": {"password_hash": {"time_cost": 1, "memory_cost_kib": 1024,
                                       "parallelism": 1}, **identity},
        "bootstrap": {"admin_password_file": "admin-password"},
        "logging": {"format": "json"},
        # the site's secret key (token keys, BMC passwords): beside a SQLite file by default
        **({} if db_url.startswith("sqlite") else {"hardware": {"secret_key_file": "secret.key"}}),
        **(sections or {}),
    }
    path = folder / "controller.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, f"http://127.0.0.1:{port}"


def password_token(site: Running, user: str = "admin", password: str = "admin-secret",
                   project: str = "admin") -> str:
    """A project-scoped token from a password login."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    with site.http() as h:
        r = h.post("/identity/v3/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


@dataclass
class LoneAgent:
    """An `infracloud agent` (fake driver) whose controller is not there, with its metrics
    served on 127.0.0.1 and its log in a file."""

    proc: subprocess.Popen[str]
    controller: str
    metrics_port: int
    log: Path

    def metrics(self) -> str | None:
        """Its /metrics text, or None while it does not answer."""
        try:
            r = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None


def start_lone_agent(folder: Path, name: str, **popen: Any) -> LoneAgent:
    """Start one (extra Popen arguments: `preexec_fn`...); returns once its metrics answer."""
    log = folder / "agent.log"
    controller, port = f"https://127.0.0.1:{free_port()}", free_port()
    proc = subprocess.Popen(
        [str(BIN / "infracloud"), "agent", "--controller", controller, "--token", "t" * 24,
         "--driver", "fake", "--name", name, "--state-dir", str(folder / "agent"),
         "--metrics-port", str(port), "--log-format", "text"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True, **popen)
    agent = LoneAgent(proc, controller, port, log)
    try:
        wait_for("the agent's metrics", agent.metrics, timeout=30)
    except AssertionError:
        stop_process(agent.proc, timeout=5)
        raise
    return agent


def start_pool(config_file: Path, log_file: Path, timeout: float = 60
               ) -> tuple[subprocess.Popen[str], str]:
    """`infracloud pool --config FILE`: its log (stderr) goes to `log_file`, its stdout is
    read to the end by a thread (an unread pipe would fill and block it). Returns the process
    and the URL it serves."""
    with open(log_file, "w") as log:
        proc = subprocess.Popen([str(BIN / "infracloud"), "pool", "--config", str(config_file)],
                                stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc, [], lines), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = ""
    if not line.startswith("infracloud pool serving at "):
        proc.kill()
        raise AssertionError(line + log_file.read_text())
    return proc, line.split()[-1]


def env_file(path: Path) -> dict[str, str]:
    """The KEY=value lines of a demo's infracloud.env (what `source` would set)."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("'\"")
    return out
