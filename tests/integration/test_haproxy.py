"""deploy/haproxy.cfg in front of real controllers: Debian's HAProxy with the shipped file (only
addresses and certificate folder changed), two HTTPS controllers on one PostgreSQL database and
a third server that never answers. Clients use HAProxy's address; a controller killed with
SIGKILL costs them nothing: HAProxy sends the requests it cannot deliver to the other."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infracloud.api.tls import ensure_certificates
from tests.conftest import create_pg_database
from tests.servers import (
    Running,
    free_port,
    start_controller,
    stop_process,
    verify_context,
    wait_for,
    write_controller_config,
)

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
LOGIN = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": "admin-secret"}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}


def haproxy_config(text: str, folder: Path, port: int, servers: list[int], *,
                   listen: int = 8443, name: str = "controller", shipped: int = 3) -> str:
    """A shipped HAProxy file (deploy/) for this test: its certificate folder, its front
    port on loopback, and `servers` in place of the `shipped` example `name` lines."""
    text, bases = re.subn(r"(?m)^(\s*(?:crt|ca)-base) /etc/haproxy$", rf"\1 {folder}", text)
    text, binds = re.subn(rf"(?m)^(\s*bind) :{listen} ", rf"\1 127.0.0.1:{port} ", text)
    lines = [f"    server {name}{i + 1} 127.0.0.1:{p}" for i, p in enumerate(servers)]
    text, count = re.subn(rf"(?m)^    server {name}\d .*\n", "", text)
    assert (bases, binds, count) == (2, 1, shipped), "the shipped file changed shape"
    return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def admin_through(client: httpx.Client, proxy: subprocess.Popen[bytes]) -> dict[str, str]:
    """Once HAProxy (`proxy`, the `client`'s address) sees a ready controller: the admin's
    token header, logged in through it."""
    def ready() -> bool:
        assert proxy.poll() is None, "haproxy exited"
        try:
            return client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("HAProxy to see a ready controller", ready)
    r = client.post("/identity/v3/auth/tokens", json=LOGIN)
    assert r.status_code == 201, r.text
    return {"X-Auth-Token": r.headers["X-Subject-Token"]}


@dataclass
class Site:
    public: str  # HAProxy's address
    ca: str
    controllers: list[Running]
    proxy: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def site(tmp_path: Path, pg_admin_url: str) -> Iterator[Site]:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    ca, cert, key = ensure_certificates(tmp_path / "tls", ["127.0.0.1"])
    (tmp_path / "infracloud.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    shutil.copy(ca, tmp_path / "infracloud-ca.pem")
    front = free_port()
    public = f"https://127.0.0.1:{front}"
    db = create_pg_database(pg_admin_url)
    controllers: list[Running] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for name in ("c1", "c2"):
            folder = tmp_path / name
            folder.mkdir()
            path, url = write_controller_config(folder, db, sections={
                "public_url": public,
                "tls": {"cert": str(cert), "key": str(key), "ca": str(ca)},
                "hardware": {"secret_key_file": str(tmp_path / "secret.key")}})
            controllers.append(start_controller(path, url.replace("http://", "https://"),
                                                verify=str(ca)))
        ports = [int(c.base_url.rsplit(":", 1)[1]) for c in controllers] + [free_port()]
        (tmp_path / "haproxy.cfg").write_text(
            haproxy_config(CONFIG.read_text(), tmp_path, front, ports))
        log = (tmp_path / "haproxy.log").open("wb")
        proxy = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                 stdout=log, stderr=subprocess.STDOUT)
        yield Site(public, str(ca), controllers, proxy, tmp_path / "haproxy.log")
    finally:
        if proxy is not None:
            stop_process(proxy, sig=15)
        for c in controllers:
            c.stop()


@pytest.mark.pg
def test_a_killed_controller_costs_the_clients_nothing(site: Site) -> None:
    public, (c1, c2) = site.public, site.controllers
    with httpx.Client(base_url=public, verify=verify_context(site.ca), timeout=30) as client:
        token = admin_through(client, site.proxy)
        catalog = client.get("/", headers=token).json()
        assert catalog["services"][0]["url"].startswith(public)  # public_url: HAProxy's
        for _ in range(10):
            assert client.get("/compute/v2.1/flavors", headers=token).status_code == 200
        c1.proc.kill()  # SIGKILL: HAProxy has not seen it go yet (checks every second)
        c1.proc.wait()
        answers = [client.get("/compute/v2.1/flavors", headers=token).status_code
                   for _ in range(20)]
        logins = [client.post("/identity/v3/auth/tokens", json=LOGIN).status_code
                  for _ in range(5)]
        assert answers == [200] * 20
        assert logins == [201] * 5
        assert c2.proc.poll() is None
