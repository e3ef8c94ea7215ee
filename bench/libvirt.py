"""libvirt benchmark: real virtual machines (QEMU, TCG here) created through the compute API and a
real libvirt agent, each figure a ratio to the same guest started by hand with
qemu-system-x86_64 in the same run (the physical limit of this machine).

    .venv/bin/python bench/libvirt.py [--idle-seconds 6] [--budget 300]

The guest is the tiny test guest (tools/guest/build.sh, `make guest-image`; cached under
~/.cache/infracloud/guest, or GUEST_DIR / INFRACLOUD_GUEST_DIR). Flavor `bench.vm`: 1 vCPU,
512 MiB, 1 GB root disk; the baseline QEMU gets the same, with the same devices (a qcow2
overlay of the same base on virtio, the config drive as an IDE cdrom, user-mode networking
with the guest's SSH forwarded from a loopback address, the serial console to a file, a
virtio RNG) and a config drive of the same shape.

A real controller on 127.0.0.1 (plain HTTP, SQLite; bench/common.py) and a real agent process
with the libvirt driver on qemu:///system (`infracloud agent --driver libvirt`, which fetches
the guest image from the controller with its credential), its servers on 127.60.0.0/16
(user-mode networking, SSH forwarded from each server's own address); the hand-started QEMUs
use 127.60.255.x.

SSH-ready means an SSH login (key auth as root) that runs `hostname` and gets the server's
name back: user-mode networking accepts a TCP connection before the guest listens, and holds
it open, so a TCP accept proves nothing. Until the guest's SSH banner arrives, a fresh probe
connection is opened every 0.2 s (each given 2 s for the banner); then logins are tried until
one runs the command. Times start before the API's create request (or before `qemu-img
create` of the baseline's overlay) and end when the login's command has answered.

(a) create -> SSH-ready, one server alone (twice each, in the order hand, API, API, hand;
    the means); (b) four at once (1 vCPU each on 2 host cores);
(c) delete: API delete -> the domain, its files and its forward gone from the host, and ->
    404 from the API; baseline: SIGTERM to the QEMU, wait, remove its overlay;
(d) the agent's RSS and CPU per running VM over an idle window (the agent with none and
    with four idle VMs), as a share of what each VM's own QEMU uses in the same window;
(e) the image cache: create -> ACTIVE of a server whose image no other server uses (its
    base copied into the cache and hashed; nothing else running) against one beside an idle
    server of the same image (the base shared), three of each, medians. ACTIVE is the
    domain started: what follows is the same boot.

A guest whose kernel panics while booting (seen under TCG on a loaded host: "IO-APIC + timer
doesn't work") is seen on its serial console; its round is run once more, and the report
says so. Every domain, overlay, config drive and forward the run makes is removed on the way
out, on failure too; the run stops itself after --budget seconds. Without libvirt, QEMU or
the test guest it says what is missing and exits 0 (1 under CI=true)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import httpx

from common import admin_token, free_port, start_controller, stop_process
from compute import check_port_free, status_kib
from infracloud.agent import configdrive

# isort: split
# tests/ is importable once `common` has put the repository on sys.path
from tests import libvirt_env
from tests.unit.test_drivers import make_key, public_line

ROOT = Path(__file__).resolve().parents[1]
SERVERS = "/compute/v2.1/servers"
FLAVOR = {"name": "bench.vm", "vcpus": 1, "ram_mb": 512, "disk_gb": 1}
CIDR = "127.60.0.0/16"
HAND_NET = "127.60.255."  # the baseline QEMUs' forwards (the controller hands out from .0.2)
AGENT_TOKEN = secrets.token_urlsafe(32)
PROBE_EVERY = 0.2  # seconds between fresh probe connections until the banner comes
PROBE_WAIT = 2.0  # seconds a probe connection waits for the banner
BOOT_TIMEOUT = 120.0  # one server: create -> SSH-ready, at most
CACHE_RUNS = 3  # (e): servers timed with the image's base copied, and as many sharing it


class OutOfTime(Exception):
    pass


class Unavailable(Exception):
    """libvirt, QEMU or the test guest is missing: the run is skipped (failed under CI)."""


class GuestPanic(RuntimeError):
    """The guest's kernel panicked while booting (seen here under TCG on a loaded host:
    "IO-APIC + timer doesn't work", the guest's timer check starved of CPU)."""


def check_console(console: Path, name: str) -> None:
    try:
        text = console.read_bytes()
    except (FileNotFoundError, PermissionError):
        return
    if b"Kernel panic" in text:
        line = next(ln for ln in text.decode(errors="replace").splitlines()
                    if "Kernel panic" in ln)
        raise GuestPanic(f"{name}'s kernel panicked: {' '.join(line.split())[:200]}")


def _out_of_time(_sig: int, _frame: Any) -> None:
    raise OutOfTime("the benchmark ran out of its time budget")


def _terminated(sig: int, _frame: Any) -> None:
    raise SystemExit(f"stopped by signal {sig}")


# ---- SSH readiness --------------------------------------------------------------------------

async def _banner(ip: str) -> bool:
    """Whether the guest's SSH server greets a fresh connection within PROBE_WAIT."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, 22), PROBE_WAIT)
        line = await asyncio.wait_for(reader.readline(), PROBE_WAIT)
        return line.startswith(b"SSH-")
    except (TimeoutError, OSError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _login(ip: str, key: asyncssh.SSHKey, name: str) -> bool:
    try:
        async with asyncssh.connect(ip, 22, username="root", client_keys=[key],
                                    known_hosts=None, connect_timeout=10) as conn:
            done = await conn.run("hostname", check=False, timeout=10)
    except (TimeoutError, OSError, asyncssh.Error):
        return False
    return done.exit_status == 0 and str(done.stdout).strip() == name


async def ssh_ready(ip: str, key: asyncssh.SSHKey, name: str, deadline: float,
                    console: Path) -> float:
    """The time (monotonic) an SSH login into the guest `name` at `ip` ran `hostname`;
    GuestPanic as soon as its serial console shows a kernel panic."""
    pending: set[asyncio.Task[bool]] = set()
    next_probe = 0.0
    try:
        greeted = False
        while not greeted:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"{name} ({ip}): no SSH banner in time")
            check_console(console, name)
            if now >= next_probe:
                pending.add(asyncio.create_task(_banner(ip)))
                next_probe = now + PROBE_EVERY
            if not pending:  # the last probe was refused at once: wait for the next
                await asyncio.sleep(next_probe - now)
                continue
            done, pending = await asyncio.wait(pending, timeout=max(next_probe - now, 0.01),
                                               return_when=asyncio.FIRST_COMPLETED)
            greeted = any(t.result() for t in done)
        while time.monotonic() < deadline:
            check_console(console, name)
            if await _login(ip, key, name):
                return time.monotonic()
            await asyncio.sleep(PROBE_EVERY)
        raise TimeoutError(f"{name} ({ip}): no SSH login in time")
    finally:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


# ---- the baseline: the guest started by hand ------------------------------------------------

@dataclass
class Boot:
    name: str
    ip: str
    t0: float
    ssh: float = 0.0  # seconds from t0
    active: float = 0.0  # seconds from t0 to ACTIVE (through the API only)
    server_id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    folder: Path | None = None


class Hand:
    """QEMU started by hand: the devices of the driver's domain, no libvirt."""

    def __init__(self, folder: Path, base: Path, key: asyncssh.SSHKey) -> None:
        self.folder, self.base, self.key = folder, base, key
        self.procs: list[subprocess.Popen[bytes]] = []
        self.live: dict[str, Boot] = {}  # started, not deleted yet
        self.count = 0

    def _prepare(self) -> tuple[str, str, Path, str]:
        self.count += 1
        name, ip = f"hand-{self.count}", f"{HAND_NET}{9 + self.count}"
        if not port_free(ip):
            raise SystemExit(f"{ip}:22 is in use (another run of this benchmark?)")
        folder = self.folder / name
        folder.mkdir()
        mac = f"fa:16:3e:60:ff:{self.count:02x}"
        # the config drive the driver gives a user-mode guest: DHCP on the port's MAC
        configdrive.build(
            folder / "config.iso",
            meta_data=configdrive.meta_data(uuid=str(uuid.uuid4()), name=name, project_id="b",
                                            public_keys={"me": public_line(self.key)}),
            network_data={"links": [{"id": "tap0", "type": "phy",
                                     "ethernet_mac_address": mac}],
                          "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": "tap0",
                                        "network_id": ""}]},
            user_data=None)
        return name, ip, folder, mac

    async def boot(self, deadline: float) -> Boot:
        name, ip, folder, mac = self._prepare()
        t0 = time.monotonic()
        overlay = await asyncio.create_subprocess_exec(
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.base), "-F", "raw",
            str(folder / "disk.qcow2"), f"{FLAVOR['disk_gb']}G")
        if await overlay.wait() != 0:
            raise RuntimeError("qemu-img create failed")
        proc = subprocess.Popen([
            "qemu-system-x86_64", "-name", name, "-machine", "pc,accel=tcg", "-cpu", "qemu64",
            "-m", str(FLAVOR["ram_mb"]), "-smp", str(FLAVOR["vcpus"]), "-display", "none",
            "-no-user-config", "-nodefaults", "-no-shutdown",
            "-blockdev", f'{{"driver":"qcow2","node-name":"vda","file":{{"driver":"file",'
                         f'"filename":"{folder}/disk.qcow2"}}}}',
            "-device", "virtio-blk-pci,drive=vda,bootindex=1",
            "-drive", f"file={folder}/config.iso,format=raw,if=none,id=cd,media=cdrom,"
                      "readonly=on",
            "-device", "ide-cd,bus=ide.1,unit=1,drive=cd",
            "-netdev", f"user,id=ic0,ipv6=off,restrict=on,hostfwd=tcp:{ip}:22-:22",
            "-device", f"virtio-net-pci,netdev=ic0,mac={mac},addr=0x10",
            "-chardev", f"file,id=ser0,path={folder}/console.log", "-serial", "chardev:ser0",
            "-object", "rng-random,id=rng0,filename=/dev/urandom",
            "-device", "virtio-rng-pci,rng=rng0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(folder / "qemu.log").open("wb"))
        self.procs.append(proc)
        boot = Boot(name, ip, t0, proc=proc, folder=folder)
        self.live[name] = boot
        boot.ssh = await ssh_ready(ip, self.key, name, min(deadline, t0 + BOOT_TIMEOUT),
                                   folder / "console.log") - t0
        return boot

    async def delete(self, boot: Boot) -> float:
        """SIGTERM, wait, remove the overlay: seconds until the forward is free."""
        assert boot.proc is not None and boot.folder is not None
        t0 = time.monotonic()
        boot.proc.terminate()
        while boot.proc.poll() is None:
            await asyncio.sleep(0.01)
        shutil.rmtree(boot.folder)
        await wait_until(lambda: port_free(boot.ip), time.monotonic() + 30, "forward freed")
        self.live.pop(boot.name, None)
        return time.monotonic() - t0

    async def delete_live(self) -> None:
        await asyncio.gather(*(self.delete(b) for b in list(self.live.values())))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def port_free(ip: str) -> bool:
    """Whether nothing listens on ip:22 (a server's forward)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, 22))
        except OSError:
            return False
    return True


async def wait_until(probe: Any, deadline: float, what: str, every: float = 0.02) -> None:
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


# ---- through the API and the agent ----------------------------------------------------------

class Site:
    """A controller and one libvirt agent process; servers through the compute API."""

    def __init__(self, folder: Path, port: int, guest: Path, key: asyncssh.SSHKey) -> None:
        self.folder, self.guest, self.key = folder, guest, key
        self.base = f"http://127.0.0.1:{port}"
        self.state = folder / "agent"
        self.controller: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}
        self.image_id = ""
        self.server_ids: list[str] = []
        self.live: dict[str, Boot] = {}  # created, not deleted yet
        self.leftover: Any = None  # a LibvirtDriver on the agent's directories (read, clean)
        (folder / "agent-token").write_text(AGENT_TOKEN + "\n")
        check_port_free(port)
        self.controller = start_controller(folder, port, compute={
            "agent_token_file": str(folder / "agent-token"),
            "network": {"name": "bench-net", "cidr": CIDR},
            "flavors": [FLAVOR], "cpu_allocation_ratio": 4.0})
        self.headers = {"X-Auth-Token": admin_token(self.base)}

    def setup(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=60) as c:
            r = c.post("/image/v2/images", json={"name": "guest", "disk_format": "raw",
                                                 "container_format": "bare"})
            r.raise_for_status()
            self.image_id = r.json()["id"]
            c.put(f"/image/v2/images/{self.image_id}/file", content=self.guest.read_bytes(),
                  headers={"Content-Type": "application/octet-stream"}).raise_for_status()
            c.post("/compute/v2.1/os-keypairs", json={"keypair": {
                "name": "me", "public_key": public_line(self.key)}}).raise_for_status()
        self.agent = subprocess.Popen(
            [str(Path(sys.executable).parent / "infracloud"), "agent", "--controller",
             self.base, "--driver", "libvirt", "--libvirt-uri", libvirt_env.QEMU_URI,
             "--network", "user", "--state-dir", str(self.state), "--name", "bench-lv",
             "--log-format", "text"], cwd=ROOT,
            env={**os.environ, "INFRACLOUD_AGENT_TOKEN": AGENT_TOKEN},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(self.folder / "agent.log").open("wb"))
        from infracloud.agent.drivers.libvirt import LibvirtDriver

        self.leftover = LibvirtDriver(self.state / "instances", self.state / "images",
                                      uri=libvirt_env.QEMU_URI)
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as c:
            while not c.get("/compute/v2.1/os-hypervisors").json().get("hypervisors"):
                if self.agent.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the agent did not register: see "
                                       f"{self.folder / 'agent.log'}:\n" + self.agent_log())
                time.sleep(0.1)

    def agent_log(self) -> str:
        return (self.folder / "agent.log").read_text(errors="replace")[-3000:]

    async def boot(self, c: httpx.AsyncClient, name: str, deadline: float,
                   ssh: bool = True) -> Boot:
        """Create -> ACTIVE and (`ssh`) create -> SSH-ready of a new server."""
        deadline = min(deadline, time.monotonic() + BOOT_TIMEOUT)
        t0 = time.monotonic()
        r = await c.post(SERVERS, json={"server": {
            "name": name, "imageRef": self.image_id, "flavorRef": FLAVOR["name"],
            "key_name": "me"}})
        if r.status_code != 202:
            raise RuntimeError(f"create answered {r.status_code}: {r.text[:300]}")
        sid = r.json()["server"]["id"]
        self.server_ids.append(sid)
        boot = Boot(name, "", t0, server_id=sid)
        self.live[sid] = boot
        while True:  # the address is handed out at create
            server = (await c.get(f"{SERVERS}/{sid}")).raise_for_status().json()["server"]
            addrs = [a["addr"] for net in server.get("addresses", {}).values() for a in net]
            if addrs:
                boot.ip = addrs[0]
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} got no address")
            await asyncio.sleep(0.05)

        async def active() -> None:
            while True:
                s = (await c.get(f"{SERVERS}/{sid}")).raise_for_status().json()["server"]
                if s["status"] == "ACTIVE":
                    boot.active = time.monotonic() - t0
                    return
                if s["status"] == "ERROR" or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is {s['status']}: {s.get('fault')}")
                await asyncio.sleep(0.05)

        if not ssh:
            await active()
            return boot
        console = self.state / "instances" / sid / "console.log"
        done = await asyncio.gather(active(), ssh_ready(boot.ip, self.key, name, deadline,
                                                        console))
        boot.ssh = done[1] - t0
        return boot

    async def delete(self, c: httpx.AsyncClient, boot: Boot) -> tuple[float, float]:
        """API delete -> (the domain, its files and its forward gone; 404 from the API)."""
        t0 = time.monotonic()
        r = await c.delete(f"{SERVERS}/{boot.server_id}")
        if r.status_code not in (204, 404):
            raise RuntimeError(f"delete answered {r.status_code}: {r.text[:300]}")
        deadline = t0 + 60
        host = api = 0.0
        while not (host and api):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{boot.name} not deleted in time")
            if not host and boot.server_id not in self.leftover.list() and (
                    not boot.ip or port_free(boot.ip)):
                host = time.monotonic() - t0
            if not api and (await c.get(f"{SERVERS}/{boot.server_id}")).status_code == 404:
                api = time.monotonic() - t0
            await asyncio.sleep(0.02)
        self.live.pop(boot.server_id, None)
        return host, api

    async def delete_live(self, c: httpx.AsyncClient) -> None:
        await asyncio.gather(*(self.delete(c, b) for b in list(self.live.values())))

    def qemu_pid(self, server_id: str) -> int:
        return int(Path(f"/run/libvirt/qemu/infracloud-{server_id}.pid").read_text())

    def close(self) -> list[str]:
        """Deletes what is left through the API, stops the agent and the controller, then
        destroys whatever domain of the agent's is still there. What it had to destroy."""
        if self.controller is not None and self.server_ids:
            with contextlib.suppress(httpx.HTTPError), httpx.Client(
                    base_url=self.base, headers=self.headers, timeout=10) as c:
                for sid in self.server_ids:
                    c.delete(f"{SERVERS}/{sid}")
        if self.agent is not None:
            stop_process(self.agent, timeout=20)
        if self.controller is not None:
            stop_process(self.controller, timeout=20)
        destroyed: list[str] = []
        if self.leftover is not None:
            for instance_id in self.leftover.list():
                self.leftover.destroy(instance_id)
                destroyed.append(instance_id)
            self.leftover.close()
        return destroyed


# ---- measuring a process --------------------------------------------------------------------

@dataclass
class Usage:
    cores: dict[int, float] = field(default_factory=dict)  # pid -> cores used in the window
    rss_mib: dict[int, float] = field(default_factory=dict)  # pid -> VmRSS at its end


def cpu_time(pid: int) -> float:
    """CPU seconds the threads of a process have run, to the nanosecond (schedstat; the
    clock ticks of /proc/PID/stat are too coarse for an idle agent)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def idle_window(pids: list[int], seconds: float) -> Usage:
    c0 = {p: cpu_time(p) for p in pids}
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    return Usage({p: (cpu_time(p) - c0[p]) / elapsed for p in pids},
                 {p: status_kib(p, "VmRSS") / 1024 for p in pids})


# ---- the run --------------------------------------------------------------------------------

@dataclass
class Results:
    hand1: list[Boot] = field(default_factory=list)
    api1: list[Boot] = field(default_factory=list)
    cache_cold: list[float] = field(default_factory=list)  # create -> ACTIVE, base copied
    cache_warm: list[float] = field(default_factory=list)  # create -> ACTIVE, base shared
    hand4: list[Boot] = field(default_factory=list)
    api4: list[Boot] = field(default_factory=list)
    del_hand1: list[float] = field(default_factory=list)
    del_api1: list[tuple[float, float]] = field(default_factory=list)  # (host side, API 404)
    del_hand4: float = 0.0
    del_api4: tuple[float, float] = (0.0, 0.0)
    agent0: Usage | None = None
    agent4: Usage | None = None
    agent_after_rss: float = 0.0
    qemu4: Usage | None = None
    left: list[str] = field(default_factory=list)
    panics: list[str] = field(default_factory=list)  # rounds run again


async def together(coros: list[Awaitable[Boot]]) -> list[Boot]:
    """The boots at once; the others cancelled when one fails."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def once_more(out: Results, label: str, boots: Callable[[], list[Awaitable[Boot]]],
                    cleanup: Callable[[], Awaitable[None]]) -> list[Boot]:
    """A round of boots; if a guest's kernel panics, its round is cleaned up and run again
    once (and the panic reported)."""
    for attempt in (1, 2):
        try:
            return await together(boots())
        except GuestPanic as e:
            out.panics.append(f"{label}: {e}")
            print(f"  {e}; the round again", flush=True)
            await cleanup()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def scenario(site: Site, hand: Hand, out: Results, idle: float, deadline: float) -> None:
    assert site.agent is not None
    agent_pid = site.agent.pid
    async with httpx.AsyncClient(base_url=site.base, headers=site.headers, timeout=30) as c:
        print(f"agent idle, no VM ({idle:g} s) ...", flush=True)
        out.agent0 = await idle_window([agent_pid], idle)

        def site_cleanup() -> Awaitable[None]:
            return site.delete_live(c)

        # by hand, through the API, through the API, by hand: a drift of the machine's load
        # during the four weighs on both sides alike
        print("(a) one server at a time: by hand, API, API, by hand ...", flush=True)
        for n, by_hand in enumerate((True, False, False, True)):
            if by_hand:
                b, = await once_more(out, "one by hand", lambda: [hand.boot(deadline)],
                                     hand.delete_live)
                out.hand1.append(b)
                out.del_hand1.append(await hand.delete(b))
            else:
                b, = await once_more(out, "one through the API", lambda n=n: [
                    site.boot(c, f"api-1-{n}", deadline)], site_cleanup)
                out.api1.append(b)
                out.del_api1.append(await site.delete(c, b))
        print(f"(e) create -> ACTIVE, {CACHE_RUNS} servers of an image no other server uses, "
              f"{CACHE_RUNS} beside an idle one that does ...", flush=True)
        for n in range(CACHE_RUNS):  # deleted at once: its base goes with it
            cold = await site.boot(c, f"cold-{n}", deadline, ssh=False)
            out.cache_cold.append(cold.active)
            await site.delete(c, cold)
        holder = await site.boot(c, "holder", deadline)
        for n in range(CACHE_RUNS):
            warm = await site.boot(c, f"warm-{n}", deadline, ssh=False)
            out.cache_warm.append(warm.active)
            await site.delete(c, warm)
        await site.delete(c, holder)

        print("(b) four at once: by hand, then through the API ...", flush=True)
        out.hand4 = await once_more(out, "four by hand",
                                    lambda: [hand.boot(deadline) for _ in range(4)],
                                    hand.delete_live)
        t0 = time.monotonic()
        await asyncio.gather(*(hand.delete(b) for b in out.hand4))
        out.del_hand4 = time.monotonic() - t0
        out.api4 = await once_more(out, "four through the API", lambda: [
            site.boot(c, f"api-4-{n}", deadline) for n in range(1, 5)], site_cleanup)
        print(f"(d) agent with four idle VMs ({idle:g} s) ...", flush=True)
        qemus = [site.qemu_pid(b.server_id) for b in out.api4]
        usage = await idle_window([agent_pid, *qemus], idle)
        out.agent4 = Usage({agent_pid: usage.cores[agent_pid]},
                           {agent_pid: usage.rss_mib[agent_pid]})
        out.qemu4 = Usage({p: usage.cores[p] for p in qemus},
                          {p: usage.rss_mib[p] for p in qemus})
        deletes = await asyncio.gather(*(site.delete(c, b) for b in out.api4))
        out.del_api4 = (max(d[0] for d in deletes), max(d[1] for d in deletes))
        out.agent_after_rss = status_kib(agent_pid, "VmRSS") / 1024


def guest_image() -> Path:
    if os.environ.get("GUEST_DIR") and not os.environ.get("INFRACLOUD_GUEST_DIR"):
        os.environ["INFRACLOUD_GUEST_DIR"] = os.environ["GUEST_DIR"]
    try:
        return libvirt_env.guest_image()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # pytest's skip (or, under CI=true, fail) outcome
        raise Unavailable(f"no test guest (make guest-image): {e}") from None


@contextlib.contextmanager
def time_budget(seconds: int) -> Iterator[None]:
    old_alarm = signal.signal(signal.SIGALRM, _out_of_time)
    old_term = signal.signal(signal.SIGTERM, _terminated)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)


def _libvirt_python() -> None:
    """This file is bench/libvirt.py and bench/ is on sys.path: import libvirt-python with
    bench/ out of the way, so the driver's `import libvirt` finds it (in sys.modules)."""
    here = Path(__file__).resolve().parent
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    try:
        import libvirt  # noqa: F401
    except ImportError:
        raise Unavailable("libvirt-python is missing (apt-get install libvirt-dev "
                          "pkg-config, then make bench installs it)") from None
    finally:
        sys.path[:] = saved


def prerequisites() -> Path:
    """The test guest's disk, once libvirt and QEMU answer; Unavailable if not."""
    _libvirt_python()
    from infracloud.agent.drivers.libvirt import load_libvirt

    try:
        load_libvirt().open(libvirt_env.QEMU_URI).close()
    except Exception as e:
        raise Unavailable(f"cannot use libvirt at {libvirt_env.QEMU_URI}: {e}") from None
    if shutil.which("qemu-system-x86_64") is None:
        raise Unavailable("qemu-system-x86_64 is missing (apt-get install qemu-system-x86)")
    return guest_image()


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        guest = prerequisites()
    except Unavailable as e:
        print(f"bench/libvirt.py skipped: {e}", flush=True)
        return 1 if os.environ.get("CI", "").lower() in ("1", "true", "yes") else 0
    key = make_key()
    out = Results()
    with time_budget(args.budget), tempfile.TemporaryDirectory(prefix="bench-libvirt-") as tmp:
        folder = Path(tmp)
        hand = Hand(folder, guest, key)
        site = None
        try:
            site = Site(folder, args.port or free_port(), guest, key)
            print(f"controller up after {time.monotonic() - started:.1f} s", flush=True)
            site.setup()
            print(f"agent registered after {time.monotonic() - started:.1f} s", flush=True)
            asyncio.run(scenario(site, hand, out, args.idle_seconds, time.monotonic() +
                                 args.budget - 30))
        except BaseException:
            if site is not None and site.agent is not None:
                print("agent log (tail):\n" + site.agent_log(), file=sys.stderr)
            for log in sorted(folder.glob("**/console.log")):
                tail = log.read_text(errors="replace").splitlines()[-4:]
                print(f"{log.relative_to(folder)}:\n  " + "\n  ".join(tail), file=sys.stderr)
            raise
        finally:
            signal.alarm(0)
            hand.close()
            if site is not None:
                out.left = site.close()
    report(out, guest, time.monotonic() - started)
    return 0


def report(r: Results, guest: Path, total: float) -> None:
    assert r.hand1 and r.api1 and r.cache_cold and r.cache_warm
    assert r.agent0 and r.agent4 and r.qemu4
    mean = statistics.mean
    print()
    print(f"libvirt benchmark: {os.cpu_count()} cores, QEMU TCG, flavor {FLAVOR['name']} "
          f"({FLAVOR['vcpus']} vCPU, {FLAVOR['ram_mb']} MiB, {FLAVOR['disk_gb']} GB), the test "
          f"guest ({guest.stat().st_size // 2**20} MiB raw)")
    print("baseline: the same guest started by hand with qemu-system-x86_64 in this run")
    print()
    print(f"  {'':44} {'seconds':>8} {'baseline':>9} {'ratio':>6}")

    def row(label: str, value: float, base: float) -> None:
        print(f"  {label:44} {value:8.2f} {base:9.2f} {value / base:6.2f}")

    row("(a) create -> SSH-ready, one server", mean(b.ssh for b in r.api1),
        mean(b.ssh for b in r.hand1))
    print(f"      each, API: {' '.join(f'{b.ssh:.1f}' for b in r.api1)}; by hand: "
          f"{' '.join(f'{b.ssh:.1f}' for b in r.hand1)}; ACTIVE after "
          f"{' '.join(f'{b.active:.2f}' for b in r.api1)}")
    hand4 = [b.ssh for b in r.hand4]
    api4 = [b.ssh for b in r.api4]
    row("(b) four at once: all SSH-ready", max(api4), max(hand4))
    row("    four at once: median", statistics.median(api4), statistics.median(hand4))
    print(f"      each, API: {' '.join(f'{s:.1f}' for s in sorted(api4))}; by hand: "
          f"{' '.join(f'{s:.1f}' for s in sorted(hand4))}; ACTIVE after "
          f"{' '.join(f'{b.active:.1f}' for b in sorted(r.api4, key=lambda b: b.active))}")
    row("(c) delete one: gone from the host", mean(d[0] for d in r.del_api1),
        mean(r.del_hand1))
    row("    delete one: 404 from the API", mean(d[1] for d in r.del_api1), mean(r.del_hand1))
    row("    delete four at once: gone from the host", r.del_api4[0], r.del_hand4)
    row("    delete four at once: 404 from the API", r.del_api4[1], r.del_hand4)
    (agent_pid, cores0), = r.agent0.cores.items()
    rss0 = r.agent0.rss_mib[agent_pid]
    cores4, rss4 = r.agent4.cores[agent_pid], r.agent4.rss_mib[agent_pid]
    qemu_cores = statistics.mean(r.qemu4.cores.values())
    qemu_rss = statistics.mean(r.qemu4.rss_mib.values())
    per_vm_cores = (cores4 - cores0) / 4
    per_vm_rss = (rss4 - rss0) / 4
    print()
    print(f"  (d) agent per running VM (idle guests)     {'agent':>9} {'a QEMU':>9} {'ratio':>6}")
    print(f"      RSS, MiB: (4 VMs - none) / 4          {per_vm_rss:9.2f} {qemu_rss:9.1f} "
          f"{per_vm_rss / qemu_rss:6.3f}")
    print(f"      CPU, cores: (4 VMs - none) / 4        {per_vm_cores:9.4f} {qemu_cores:9.4f} "
          f"{per_vm_cores / qemu_cores if qemu_cores else float('nan'):6.3f}")
    print(f"      agent RSS {rss0:.1f} MiB with none, {rss4:.1f} with 4, {r.agent_after_rss:.1f}"
          f" after; CPU {cores0:.4f} cores with none, {cores4:.4f} with 4")
    print()
    print(f"  (e) image cache, create -> ACTIVE         {'shared':>10} {'copied':>9} "
          f"{'ratio':>6}")
    row("    medians: base shared / base copied", statistics.median(r.cache_warm),
        statistics.median(r.cache_cold))
    print(f"      each, shared: {' '.join(f'{t:.2f}' for t in r.cache_warm)}; copied: "
          f"{' '.join(f'{t:.2f}' for t in r.cache_cold)}")
    for p in r.panics:
        print(f"  run again after a guest kernel panic: {p}")
    print()
    print(f"left behind: {', '.join(r.left) if r.left else 'nothing'} (every domain, overlay "
          f"and forward removed); total run time {total:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=6.0,
                        help="the idle windows measuring the agent (default 6)")
    parser.add_argument("--budget", type=int, default=300,
                        help="the run stops (and cleans up) after this many seconds")
    parser.add_argument("--port", type=int, default=0, help="the controller's (default: free)")
    args = parser.parse_args()
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
