"""Compute hosts that die and come back: real `infracloud agent` processes (sandbox driver)
against a real controller with short timeouts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
import yaml

from tests.servers import (
    BIN,
    Running,
    free_port,
    loopback_cidr,
    sdk,
    ssh_run,
    start_controller,
    start_lone_agent,
    stop_process,
    wait_for,
)


class Site:
    def __init__(self, folder: Path, **compute: Any) -> None:
        self.folder = folder
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        (folder / "pw").write_text("admin-secret")
        (folder / "agent-token").write_text("agent-token-for-tests-0123456789")
        (folder / "c.yaml").write_text(yaml.safe_dump({
            "listen": {"host": "127.0.0.1", "port": port},
            "database": {"url": "sqlite:///c.db"},
            "bootstrap": {"admin_password_file": "pw"},
            "compute": {"agent_token_file": "agent-token", "host_down_after": 3,
                        "instance_error_after": 2, "reap_seconds": 0.5,
                        "network": {"name": "test-net", "cidr": loopback_cidr()},
                        **compute}}))
        (folder / "clouds.yaml").write_text(yaml.safe_dump({"clouds": {"c": {"auth": {
            "auth_url": self.url + "/identity", "username": "admin", "password":
            "admin-secret", "project_name": "admin", "user_domain_name": "Default",
            "project_domain_name": "Default"}}}}))
        self.controller: Running = start_controller(folder / "c.yaml", self.url)
        self.agent: subprocess.Popen[str] | None = None

    def start_agent(self) -> None:
        self.agent = subprocess.Popen(
            [str(BIN / "infracloud"), "agent", "--controller", self.url, "--driver",
             "sandbox", "--allow-unisolated-sandbox", "--name", "compute-a",
             "--state-dir", str(self.folder / "agent"),
             "--vcpus", "16", "--ram-mb", "65536", "--disk-gb", "500",
             "--reserve-vcpus", "2", "--reserve-ram-mb", "4096"],
            env={**os.environ, "INFRACLOUD_AGENT_TOKEN": "agent-token-for-tests-0123456789"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait()

    def conn(self) -> Any:
        return sdk(self.folder / "clouds.yaml", "c")

    def instance_dirs(self) -> set[str]:
        root = self.folder / "agent" / "instances"
        return {p.name for p in root.iterdir()} if root.exists() else set()

    def close(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGINT)
            try:
                self.agent.wait(20)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        self.controller.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


def _answers(ip: str, key: Any) -> bool:
    try:
        return ssh_run(ip, key, "echo up").stdout.strip() == "up"
    except (OSError, asyncssh.Error):
        return False


def status(conn: Any, server_id: str) -> str | None:
    found = conn.compute.find_server(server_id)
    return None if found is None else found.status


def hosts(conn: Any) -> dict[str, str]:
    return {h.name: h.state for h in conn.compute.hypervisors(details=True)}


def test_agent_killed_then_back_reconciles(site: Site) -> None:
    site.start_agent()
    conn = site.conn()
    wait_for("the host to register", lambda: hosts(conn) == {"compute-a": "up"}, timeout=60)
    (hyp,) = conn.compute.hypervisors(details=True)
    assert (hyp.vcpus, hyp.memory_size) == (16, 65536)
    image = conn.image.create_image(name="img", data=b"x" * 1024, disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    conn.compute.create_keypair(name="k", public_key=key.export_public_key().decode())
    servers = [conn.compute.create_server(name=f"s{n}", flavor_id="ci.small",
                                          image_id=image.id, key_name="k") for n in range(3)]
    for s in servers:
        conn.compute.wait_for_server(s, wait=60)
    assert site.instance_dirs() == {s.id for s in servers}

    # a quick agent restart: nothing fails, and the servers answer SSH again
    site.kill_agent()
    site.start_agent()
    ip = conn.compute.get_server(servers[0].id).access_ipv4
    wait_for("SSH after the restart", lambda: _answers(ip, key), timeout=60)
    assert {status(conn, s.id) for s in servers} == {"ACTIVE"}

    # the agent dies for good: host down, then its servers go to ERROR with a fault
    site.kill_agent()
    wait_for("the host down", lambda: hosts(conn) == {"compute-a": "down"}, timeout=60)
    wait_for("servers in ERROR", lambda: {status(conn, s.id) for s in servers} == {"ERROR"},
             timeout=60)
    fault = conn.compute.get_server(servers[0].id).fault
    assert "is down" in fault["message"]
    refused = conn.compute.create_server(name="no-room", flavor_id="ci.small",
                                         image_id=image.id)
    wait_for("no valid host", lambda: status(conn, refused.id) == "ERROR", timeout=60)
    assert "No valid host" in conn.compute.get_server(refused.id).fault["message"]
    conn.compute.delete_server(servers[2])  # deleted while the host is down: gone at once
    assert status(conn, servers[2].id) is None

    # back: it destroys what should not run, and the host takes new servers again
    site.start_agent()
    wait_for("the host up", lambda: hosts(conn) == {"compute-a": "up"}, timeout=60)
    wait_for("the dead servers destroyed", lambda: site.instance_dirs() == set(), timeout=60)
    fresh = conn.compute.create_server(name="fresh", flavor_id="ci.small", image_id=image.id)
    conn.compute.wait_for_server(fresh, wait=60)
    assert site.instance_dirs() == {fresh.id}
    for s in servers[:2]:
        conn.compute.delete_server(s)
    wait_for("error servers deleted", lambda: all(status(conn, s.id) is None
                                                  for s in servers[:2]), timeout=60)


def test_the_site_agent_token_opens_the_first_host_that_registers_only(site: Site) -> None:
    """compute.agent_token_file is for hosts started by hand: its token binds to the first
    host that registers with it; a wrong token is refused before the body is read."""
    def host(name: str) -> dict[str, Any]:
        return {"name": name, "driver": "fake", "vcpus": 4, "ram_mb": 4096, "disk_gb": 40}

    with httpx.Client(base_url=site.url + "/agent/v1", timeout=10, headers={
            "X-Agent-Token": "agent-token-for-tests-0123456789"}) as http:
        first = http.post("/hosts", json=host("first"))
        assert first.status_code == 200, first.text
        first_id = first.json()["host"]["id"]
        assert http.get(f"/hosts/{first_id}/desired").status_code == 200
        second = http.post("/hosts", json=host("second"))
        assert second.status_code == 403 and "cannot register as second" in second.text
        other = http.post(f"/hosts/{'0' * 32}/report", json={"instances": []})
        assert other.status_code == 403, other.text
        wrong = http.post("/hosts", json={"name": 1}, headers={"X-Agent-Token": "x" * 32})
        assert wrong.status_code == 401, wrong.text


@pytest.mark.parametrize(("args", "message"), [
    ([], "--driver is needed (libvirt, sandbox or fake): the join config names none"),
    (["--driver", "xen"], "--driver must be libvirt, sandbox or fake, not 'xen'"),
    (["--driver", "libvirt", "--virt-type", "xen"], "--virt-type must be kvm or qemu, not "
     "'xen'"),
    (["--driver", "libvirt", "--network", "bridge"], "--network bridge needs --bridge NAME "
     "(the provider network's bridge)"),
    (["--driver", "sandbox"], "--driver sandbox runs every server's commands as this user on "
     "this host, unisolated: add --allow-unisolated-sandbox to mean it (laptops and CI only)"),
])
def test_the_agent_has_no_default_driver_and_the_sandbox_only_when_meant(
        tmp_path: Path, args: list[str], message: str) -> None:
    out = subprocess.run(
        [str(BIN / "infracloud"), "agent", "--controller", "https://127.0.0.1:1", "--token",
         "t" * 24, "--state-dir", str(tmp_path), *args], capture_output=True, text=True,
        timeout=60)
    assert out.returncode == 2 and out.stderr == f"infracloud: error: {message}\n", out.stderr


def test_an_unreachable_libvirt_is_one_line(tmp_path: Path) -> None:
    from infracloud.agent.drivers.libvirt import INSTALL_DAEMON, INSTALL_MODULE

    uri = f"qemu+unix:///system?socket={tmp_path / 'no-libvirtd.sock'}"
    out = subprocess.run(
        [str(BIN / "infracloud"), "agent", "--controller", "https://127.0.0.1:1", "--token",
         "t" * 24, "--state-dir", str(tmp_path), "--driver", "libvirt", "--libvirt-uri", uri],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr == f"infracloud: error: {INSTALL_MODULE}\n" or (
        out.stderr.startswith(f"infracloud: error: cannot connect to libvirt at {uri} (")
        and out.stderr.endswith(f"): {INSTALL_DAEMON}\n")), out.stderr


def test_deploy_media_never_name_the_sandbox(tmp_path: Path) -> None:
    from infracloud.core.settings import config_errors

    (tmp_path / "c.yaml").write_text("hardware: {deploy_agent_driver: sandbox}\n")
    _, errors = config_errors(tmp_path / "c.yaml")
    assert len(errors) == 1 and "hardware.deploy_agent_driver" in errors[0], errors
    (tmp_path / "c.yaml").write_text("hardware: {deploy_agent_driver: libvirt}\n")
    assert config_errors(tmp_path / "c.yaml")[1] == []
    (tmp_path / "c.yaml").write_text("hardware: {deploy_agent_driver: xen}\n")
    _, errors = config_errors(tmp_path / "c.yaml")
    assert len(errors) == 1 and "must be libvirt or fake" in errors[0], errors


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_an_agent_stops_cleanly_on_sigterm_and_on_sigint_it_started_ignoring(
        tmp_path: Path, sig: int) -> None:
    """`kill` (systemd's SIGTERM) stops it as Ctrl-C does, closing what it holds (exit 0, not
    killed by the signal); SIGINT stops it even when it was started as a script's background
    job or under `nohup`, which hand it SIGINT ignored."""
    agent = start_lone_agent(tmp_path, "stopping",
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert agent.proc.poll() is None
    assert stop_process(agent.proc, timeout=15, sig=sig) == 0, agent.log.read_text()


@pytest.fixture
def heartbeat_site(tmp_path: Path) -> Iterator[Site]:
    """A site that records every call's heartbeat (none is fresh enough to skip): a
    long-poll the controller has begun to serve shows in the host's `updated_at`."""
    s = Site(tmp_path, heartbeat_seconds=1e-6)
    yield s
    s.close()


def test_a_stopping_controller_sends_long_polling_agents_away(heartbeat_site: Site) -> None:
    """A long-poll in flight when the controller stops answers 503 with `Connection: close`,
    so an agent polling again at once on its keep-alive connection cannot hold the shutdown
    (the graceful wait would last 30 s): it finds nobody there and backs off."""
    site = heartbeat_site
    conn = site.conn()

    def heartbeat() -> str:
        (service,) = [s for s in conn.compute.services() if s.host == "poller"]
        return str(service.updated_at)

    with httpx.Client(base_url=site.url + "/agent/v1", timeout=40, headers={
            "X-Agent-Token": "agent-token-for-tests-0123456789"}) as http:
        r = http.post("/hosts", json={"name": "poller", "driver": "fake", "vcpus": 4,
                                      "ram_mb": 4096, "disk_gb": 40})
        assert r.status_code in (200, 201), r.text
        host_id = r.json()["host"]["id"]
        generation = http.get(f"/hosts/{host_id}/desired").json()["generation"]
        before = heartbeat()
        answers: list[Any] = []

        def poll() -> None:  # again at once, as an agent does after each answer
            while len(answers) < 10_000:
                try:
                    r = http.get(f"/hosts/{host_id}/desired",
                                 params={"generation": generation, "wait": 30})
                except httpx.HTTPError:
                    answers.append("gone")
                    return
                answers.append((r.status_code, r.headers.get("connection")))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        wait_for("the controller to take the long-poll", lambda: heartbeat() != before)
        assert answers == []  # it waits
        started = time.monotonic()
        site.controller.proc.send_signal(signal.SIGINT)
        try:
            assert site.controller.proc.wait(20) == 0
        finally:
            took = time.monotonic() - started
            poller.join(5)
    assert answers[0] == (503, "close"), answers[:3]
    assert answers[-1] == "gone" and len(answers) <= 3, answers[:5]
    assert took < 10
