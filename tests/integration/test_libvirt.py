"""Real virtual machines: the libvirt driver on qemu:///system (QEMU TCG here) booting the
tiny test guest (tools/guest/build.sh). A handful of boots, each ~10 s: two servers of one
image at once, one behind a real controller and a killed agent, one on a bridge inside a
network namespace the test makes. Every wait is on a condition (the guest's READY line on
its console, an SSH login), never a sleep."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from infracloud.agent import configdrive
from infracloud.agent.drivers.base import InstanceSpec, NetworkInfo
from infracloud.agent.drivers.libvirt import LibvirtDriver, load_libvirt
from tests import libvirt_env
from tests.servers import (
    Running,
    loopback_cidr,
    sdk,
    ssh_run,
    start_controller,
    stop_process,
    wait_for,
    write_controller_config,
)
from tests.unit.test_drivers import make_key, make_spec, public_line

BOOT = 180  # seconds a boot may take on a busy 2-CPU machine (about 10 alone)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def guest() -> Path:
    libvirt_env.require(libvirt_env.QEMU_URI)
    return libvirt_env.guest_image()


@pytest.fixture
def driver(tmp_path: Path, guest: Path) -> Iterator[LibvirtDriver]:
    d = LibvirtDriver(tmp_path / "instances", tmp_path / "images", uri=libvirt_env.QEMU_URI)
    yield d
    for instance_id in d.list():
        d.destroy(instance_id)
    d.close()


def ready(driver: LibvirtDriver, spec: InstanceSpec) -> str:
    """Waits for the guest's READY line on its serial console; the console."""
    return wait_for(f"{spec.name}'s READY line", lambda: (
        c if "infracloud-guest: READY" in (c := driver.console(spec.id)) else ""), timeout=BOOT)


def login(ip: str, key: asyncssh.SSHKey, command: str, netns: str | None = None) -> str:
    """Run `command` in the guest over SSH once it answers (slirp accepts a connection before
    the guest listens, so a refused login is retried until the boot timeout)."""
    def attempt() -> str | None:
        try:
            if netns is None:
                done = ssh_run(ip, key, command)
                return str(done.stdout) if done.exit_status == 0 else None
            return _ssh_in_netns(netns, ip, key, command)
        except (OSError, asyncssh.Error):
            return None
    return wait_for(f"an SSH login to {ip}", attempt, timeout=BOOT, every=0.5)


def _ssh_in_netns(netns: str, ip: str, key: asyncssh.SSHKey, command: str) -> str | None:
    keyfile = Path(os.environ.get("TMPDIR", "/tmp")) / f"ic-key-{os.getpid()}"
    key.write_private_key(str(keyfile))
    keyfile.chmod(0o600)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", netns, "ssh", "-q", "-i", str(keyfile), "-o",
             "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=3", f"root@{ip}", command],
            capture_output=True, text=True, timeout=30, check=False)
    finally:
        keyfile.unlink(missing_ok=True)
    return done.stdout if done.returncode == 0 else None


def port_free(ip: str, port: int = 22) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def backing_file(overlay: Path) -> str:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    return str(info["backing-filename"])


def test_two_servers_of_one_image_are_real_vms_and_leave_nothing(
        driver: LibvirtDriver, guest: Path, tmp_path: Path) -> None:
    key = make_key()
    specs = [replace(make_spec(tmp_path, name=f"guest-{n}", keys={"me": public_line(key)}),
                     image=guest) for n in range(2)]
    marker = tmp_path / f"host-only-{uuid.uuid4().hex}"
    marker.write_text("made on the host\n")
    errors: list[BaseException] = []

    def spawn(spec: InstanceSpec) -> None:
        try:
            driver.spawn(spec)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=spawn, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(driver.list()) == sorted(s.id for s in specs)
    # one base for both, each server on its own overlay of it
    (base_sha, refs), = driver.cache.usage().items()
    assert refs == 2
    overlays = [driver.instance_dir / s.id / "disk.qcow2" for s in specs]
    assert {backing_file(o) for o in overlays} == {str(driver.cache_dir / "bases" / base_sha)}

    # a service on the host's loopback (as the controller is in the demo): slirp would show
    # it to the guest as 10.0.2.2, unless restricted
    host_service = socket.socket()
    host_service.bind(("127.0.0.1", 0))
    host_service.listen()
    host_service.settimeout(0)
    service_port = host_service.getsockname()[1]
    for spec in specs:
        console = ready(driver, spec)
        assert f"READY hostname={spec.name} uuid={spec.id}" in console
        assert "-----BEGIN SSH HOST KEY KEYS-----" in console
        out = login(spec.network.ip, key, f"hostname; test -e {marker} && echo HOST || "
                    "echo isolated; cat /proc/1/comm; ls /root/.ssh; timeout 5 nc 10.0.2.2 "
                    f"{service_port} </dev/null; echo tried")
        # the guest's own hostname, no host file, its own init: not the host
        assert out.split() == [spec.name, "isolated", "init", "authorized_keys", "tried"]
    with pytest.raises(BlockingIOError):  # and no way to the host's loopback services
        host_service.accept()
    host_service.close()
    assert "Pubkey auth succeeded for 'root'" in driver.console(specs[0].id)

    first, second = specs
    conn = driver._connection()
    driver.destroy(first.id)
    assert first.id not in [d.UUIDString() for d in conn.listAllDomains()]
    assert not (driver.instance_dir / first.id).exists()
    assert port_free(first.network.ip)  # the forward went with its QEMU
    assert driver.cache.usage() == {base_sha: 1}  # the other server still uses the base
    driver.destroy(second.id)
    assert driver.list() == [] and driver.cache.usage() == {}
    assert not (driver.cache_dir / "bases" / base_sha).exists()


# -- a real controller, a libvirt agent killed with SIGKILL and started again ----------------


class Site:
    TOKEN = "agent-token-for-libvirt-tests-0123"

    def __init__(self, folder: Path, guest: Path) -> None:
        self.folder, self.guest = folder, guest
        (folder / "agent-token").write_text(self.TOKEN)
        # the host must not be declared down while its agent restarts
        config, self.url = write_controller_config(folder, f"sqlite:///{folder / 'c.db'}",
                                                   sections={"compute": {
            "agent_token_file": str(folder / "agent-token"), "host_down_after": 120,
            "reap_seconds": 0.5,
            "network": {"name": "test-net", "cidr": loopback_cidr()}}})
        (folder / "clouds.yaml").write_text(json.dumps({"clouds": {"c": {"auth": {
            "auth_url": self.url + "/identity", "username": "admin", "password":
            "admin-secret", "project_name": "admin", "user_domain_name": "Default",
            "project_domain_name": "Default"}}}}))
        self.controller: Running = start_controller(config, self.url)
        self.agent: subprocess.Popen[str] | None = None

    def start_agent(self) -> None:
        """`infracloud agent --driver libvirt`, which fetches its servers' images from the
        controller with its credential."""
        self.agent = subprocess.Popen(
            [str(Path(sys.executable).parent / "infracloud"), "agent", "--controller",
             self.url, "--driver", "libvirt", "--libvirt-uri", libvirt_env.QEMU_URI,
             "--network", "user", "--state-dir", str(self.folder / "agent"), "--name",
             "compute-lv", "--log-format", "text"], cwd=ROOT,
            env={**os.environ, "INFRACLOUD_AGENT_TOKEN": self.TOKEN},
            stdout=subprocess.DEVNULL, stderr=(self.folder / "agent.log").open("a"), text=True)

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait()

    def conn(self) -> Any:
        return sdk(self.folder / "clouds.yaml", "c")

    def close(self) -> None:
        if self.agent is not None:
            stop_process(self.agent, timeout=20)
        self.controller.stop()


@pytest.fixture
def site(tmp_path: Path, guest: Path) -> Iterator[Site]:
    s = Site(tmp_path, guest)
    yield s
    s.close()
    leftover = LibvirtDriver(tmp_path / "agent" / "instances", tmp_path / "agent" / "images",
                             uri=libvirt_env.QEMU_URI)
    for instance_id in leftover.list():  # only what a failed test left
        leftover.destroy(instance_id)
    leftover.close()


def check_image_access(site: Site, image_id: str, conn: Any) -> None:
    """The host's credential reads the image its server boots, and no other; a user's token
    reads nothing there. The agent fetched it that way and keeps one verified copy."""
    data = site.guest.read_bytes()
    other = conn.image.create_image(name="not-booted", data=b"x" * 1024, disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    assert (site.folder / "agent" / "downloads" / image_id).read_bytes() == data
    with httpx.Client(base_url=site.url + "/agent/v1",
                      headers={"X-Agent-Token": site.TOKEN}) as api:
        host = api.post("/hosts", json={"name": "compute-lv", "driver": "libvirt",
                                        "vcpus": 2, "ram_mb": 4096, "disk_gb": 20})
        host_id = host.raise_for_status().json()["host"]["id"]
        meta = api.get(f"/hosts/{host_id}/images/{image_id}")
        assert meta.status_code == 200, meta.text
        assert meta.json()["os_hash_value"] == hashlib.sha512(data).hexdigest()
        part = api.get(f"/hosts/{host_id}/images/{image_id}/file",
                       headers={"Range": "bytes=0-9"})
        assert (part.status_code, part.content) == (206, data[:10])
        for path in (f"/hosts/{host_id}/images/{other.id}",
                     f"/hosts/{host_id}/images/{other.id}/file"):
            assert api.get(path).status_code == 403
        user = api.get(f"/hosts/{host_id}/images/{image_id}/file",
                       headers={"X-Agent-Token": "", "X-Auth-Token": conn.auth_token})
        assert user.status_code == 401
    conn.image.delete_image(other)


def qemu_pid(server_id: str) -> int:
    return int(Path(f"/run/libvirt/qemu/infracloud-{server_id}.pid").read_text())


def test_agent_killed_leaves_vms_running_and_adopts_them_again(site: Site) -> None:
    libvirt = load_libvirt()  # present: `guest` required it
    lv = libvirt.open(libvirt_env.QEMU_URI)
    foreign_id = str(uuid.uuid4())
    lv.defineXML(f"<domain type='qemu'><name>not-infracloud-{foreign_id[:8]}</name>"
                 f"<uuid>{foreign_id}</uuid><memory unit='MiB'>64</memory>"
                 f"<os><type arch='x86_64'>hvm</type></os></domain>")
    try:
        site.start_agent()
        conn = site.conn()
        wait_for("the host to register", lambda: [h.name for h in conn.compute.hypervisors()],
                 timeout=60)
        image = conn.image.create_image(name="guest", data=site.guest.read_bytes(),
                                        disk_format="raw", container_format="bare",
                                        allow_duplicates=True)
        key = make_key()
        conn.compute.create_keypair(name="me", public_key=public_line(key))
        server = conn.compute.create_server(name="vm-a", flavor_id="ci.small",
                                            image_id=image.id, key_name="me")
        server = conn.compute.wait_for_server(server, wait=BOOT)
        ip = server.access_ipv4
        wait_for("READY in the console API", lambda: "READY hostname=vm-a" in (
            conn.compute.get_server_console_output(server)["output"]), timeout=BOOT)
        assert login(ip, key, "hostname; echo before > /tmp/state").split() == ["vm-a"]
        check_image_access(site, image.id, conn)
        pid = qemu_pid(server.id)

        site.kill_agent()  # the VM does not notice
        assert lv.lookupByUUIDString(server.id).isActive()
        site.start_agent()
        # adopted without a reboot: the same QEMU, the guest's RAM-only /tmp intact; and
        # the new agent reads its console (what the guest writes now reaches the API)
        assert login(ip, key, "cat /tmp/state; echo adopted-now > /dev/console").split() == [
            "before"]
        wait_for("the new agent's console report", lambda: "adopted-now" in (
            conn.compute.get_server_console_output(server)["output"]), timeout=60)
        assert qemu_pid(server.id) == pid
        assert conn.compute.get_server(server.id).status == "ACTIVE"

        # deleted while the agent is dead: the agent back destroys it, nothing else
        site.kill_agent()
        conn.compute.delete_server(server)
        site.start_agent()
        wait_for("the server gone", lambda: conn.compute.find_server(server.id) is None,
                 timeout=60)
        assert server.id not in [d.UUIDString() for d in lv.listAllDomains()]
        assert not (site.folder / "agent" / "instances" / server.id).exists()
        assert port_free(ip)
        assert list((site.folder / "agent" / "images" / "bases").iterdir()) == []
        wait_for("the downloaded image dropped", lambda: not any(
            (site.folder / "agent" / "downloads").iterdir()), timeout=60)
        assert lv.lookupByUUIDString(foreign_id).name().startswith("not-infracloud-")
    finally:
        lv.lookupByUUIDString(foreign_id).undefine()
        lv.close()


# -- bridge networking inside a network namespace the test makes ---------------------------


@pytest.fixture
def segment() -> Iterator[tuple[str, str]]:
    """An L2 segment that reaches nothing: a bridge without an address in the host's
    namespace (IPv6 off, so the host sends nothing on it), whose only other port is a veth
    into a new network namespace holding 10.77.0.1/24. (bridge, netns)"""
    tag = uuid.uuid4().hex[:6]
    bridge, netns, up, down = f"icbr{tag}", f"ic-site-{tag}", f"icup{tag}", f"icdn{tag}"
    steps = [
        ["ip", "netns", "add", netns],
        ["ip", "-n", netns, "link", "set", "lo", "up"],
        ["ip", "link", "add", bridge, "type", "bridge"],
        ["sysctl", "-qw", f"net.ipv6.conf.{bridge}.disable_ipv6=1"],
        ["ip", "link", "add", up, "type", "veth", "peer", "name", down],
        ["sysctl", "-qw", f"net.ipv6.conf.{up}.disable_ipv6=1"],
        ["ip", "link", "set", down, "netns", netns],
        ["ip", "link", "set", up, "master", bridge],
        ["ip", "link", "set", up, "up"],
        ["ip", "link", "set", bridge, "up"],
        ["ip", "-n", netns, "addr", "add", "10.77.0.1/24", "dev", down],
        ["ip", "-n", netns, "link", "set", down, "up"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                libvirt_env.unavailable(f"cannot make the test network ({' '.join(step)}): "
                                        f"{done.stderr.strip()}")
        yield bridge, netns
    finally:
        for step in (["ip", "link", "del", up], ["ip", "link", "del", bridge],
                     ["ip", "netns", "del", netns]):
            subprocess.run(step, capture_output=True, check=False)


def test_bridge_mode_guest_takes_the_ports_address(segment: tuple[str, str], guest: Path,
                                                    tmp_path: Path) -> None:
    bridge, netns = segment
    d = LibvirtDriver(tmp_path / "instances", tmp_path / "images", uri=libvirt_env.QEMU_URI,
                      network="bridge", bridge=bridge)
    try:
        key = make_key()
        server_id, ip, mac = str(uuid.uuid4()), "10.77.0.23", "fa:16:3e:77:00:17"
        drive = tmp_path / "config.iso"
        configdrive.build(drive, meta_data=configdrive.meta_data(
            uuid=server_id, name="bridged", project_id="p",
            public_keys={"me": public_line(key)}),
            network_data=configdrive.network_data(ip, 24, "10.77.0.1", mac), user_data=None)
        spec = InstanceSpec(id=server_id, name="bridged", vcpus=1, ram_mb=256, disk_gb=1,
                            network=NetworkInfo(ip=ip, prefix=24, gateway="10.77.0.1",
                                                mac=mac),
                            config_drive=drive, image=guest)
        d.spawn(spec)
        console = ready(d, spec)
        assert f"ip={ip}" in console and "route default via 10.77.0.1" in console
        out = login(ip, key, "hostname; cat /sys/class/net/eth0/address; ping -c1 -W5 "
                    "10.77.0.1 >/dev/null && echo gateway-answers", netns=netns)
        assert out.split() == ["bridged", mac, "gateway-answers"]
        d.destroy(server_id)
        assert d.list() == []
    finally:
        for instance_id in d.list():
            d.destroy(instance_id)
        d.close()
