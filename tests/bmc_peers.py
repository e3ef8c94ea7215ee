"""Real BMC peers for tests, each a subprocess on 127.0.0.1 with free ports in a folder of its
own (shared/specs/test-peers.md sections 1 and 2):

* `start_redfish()`: the sushy-tools emulator with its fake driver (N systems, basic auth
  from a bcrypt htpasswd file, one 100 GiB drive each) plus `python -m http.server` serving a
  small ISO, since the emulator really downloads what InsertMedia points at.
* `start_ipmi()`: tests/ipmi_bmc_server.py, pyghmi's BMC server patched so pyghmi's own client
  can log in, serving N BMCs on UDP ports.
* `SilentTcpServer`: accepts TCP connections (the kernel does) and never answers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx

from tests.servers import BIN, free_port, stop_process

HERE = Path(__file__).resolve().parent
DRIVE_BYTES = 100 * 2**30


def free_udp_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Proc:
    """A peer subprocess whose output goes to a log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
              ) -> Proc:
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                    env={**os.environ, **(env or {})},
                                    stdin=subprocess.DEVNULL)
        return cls(proc, log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> None:
        stop_process(self.proc, timeout, signal.SIGTERM)

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Poll `ready()` until true; fail if the process died or the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{what} exited with {self.proc.returncode}:\n"
                                     + self.output())
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{what} not ready within {timeout:g} s:\n" + self.output())


def _http_ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    return httpx.get(url, timeout=1, auth=auth).status_code == 200


# ---- Redfish: sushy-tools emulator -----------------------------------------------------------

@dataclass
class RedfishPeer:
    emulator: Proc
    media_server: Proc
    url: str  # the BMC base URL (no /redfish/v1)
    systems: list[str]  # system ids
    macs: list[str]
    username: str
    password: str = field(repr=False)
    media_url: str  # a small ISO the emulator can download

    def system_path(self, i: int) -> str:
        return f"/redfish/v1/Systems/{self.systems[i]}"

    def get(self, path: str) -> dict[str, object]:
        r = httpx.get(self.url + path, auth=(self.username, self.password), timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def media(self, i: int) -> str | None:
        """The image the emulator says is in system i's virtual CD, or None."""
        cd = self.get(self.system_path(i) + "/VirtualMedia/Cd")
        return str(cd["Image"]) if cd.get("Inserted") and cd.get("Image") else None

    def stop(self) -> None:
        self.emulator.stop()
        self.media_server.stop()


def start_redfish(folder: Path, systems: int = 3, username: str = "admin",
                  password: str = "rf-Secret-8841") -> RedfishPeer:
    folder.mkdir(parents=True, exist_ok=True)
    port, media_port = free_port(), free_port()
    uuids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(1, systems + 1)]
    macs = [f"52:54:00:00:01:{i:02x}" for i in range(1, systems + 1)]
    # bcrypt at its cheapest: the emulator checks the password on every request
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (folder / "htpasswd").write_text(f"{username}:{digest}\n")
    fake_systems = [{"uuid": u, "name": f"node-{i}", "power_state": "Off",
                     "external_notifier": False,
                     "nics": [{"mac": macs[i], "ip": f"127.0.1.{10 + i}"}]}
                    for i, u in enumerate(uuids)]
    storage = {u: [{"Id": "1", "Name": "Local Storage Controller", "Drives": ["d1"]}]
               for u in uuids}
    drives = {(u, "1"): [{"Id": "d1", "Name": "Drive", "CapacityBytes": DRIVE_BYTES,
                          "Protocol": "SATA"}] for u in uuids}
    (folder / "emulator.conf").write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(folder / 'state')!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(folder / 'htpasswd')!r}\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake_systems!r}\n"
        f"SUSHY_EMULATOR_STORAGE = {storage!r}\n"
        f"SUSHY_EMULATOR_DRIVES = {drives!r}\n")
    www = folder / "www"
    www.mkdir(exist_ok=True)
    (www / "boot.iso").write_bytes(b"\0" * 32768 + b"CD001" + b"\0" * 32763)
    media = Proc.start([sys.executable, "-m", "http.server", str(media_port),
                        "--bind", "127.0.0.1", "--directory", str(www)],
                       folder / "http.log", folder)
    emulator = Proc.start([str(BIN / "sushy-emulator"), "--config",
                           str(folder / "emulator.conf")], folder / "emulator.log", folder)
    url = f"http://127.0.0.1:{port}"
    media_url = f"http://127.0.0.1:{media_port}/boot.iso"
    peer = RedfishPeer(emulator, media, url, uuids, macs, username, password, media_url)
    try:
        media.wait_until(lambda: _http_ok(media_url), "http.server")
        emulator.wait_until(lambda: _http_ok(url + "/redfish/v1/Systems",
                                             (username, password)), "sushy-emulator")
    except BaseException:
        peer.stop()
        raise
    return peer


# ---- IPMI: pyghmi BMC server -----------------------------------------------------------------

@dataclass
class IpmiPeer:
    server: Proc
    ports: list[int]
    username: str
    password: str = field(repr=False)

    def stop(self) -> None:
        self.server.stop()

    def check(self) -> None:
        """Fail, with the emulator's log, if it died or logged a traceback."""
        log = self.server.output()
        assert self.server.proc.poll() is None and "Traceback" not in log, \
            f"the pyghmi BMC server failed:\n{log}"


def start_ipmi(folder: Path, bmcs: int = 3, username: str = "admin",
               password: str = "ipmi-Secret-5527") -> IpmiPeer:
    folder.mkdir(parents=True, exist_ok=True)
    ports = free_udp_ports(bmcs)
    server = Proc.start([sys.executable, "-u", str(HERE / "ipmi_bmc_server.py"),
                         "--ports", ",".join(map(str, ports)), "--user", username,
                         "--password", password], folder / "ipmi.log", folder)
    # the server prints `ready` once every UDP socket is bound; packets queue from then on
    server.wait_until(lambda: "ready" in server.output(), "pyghmi BMC server")
    return IpmiPeer(server, ports, username, password)


# ---- a peer that never answers ---------------------------------------------------------------

class SilentTcpServer:
    """Listens on a free port; the kernel completes handshakes, nobody ever reads or answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def silent_tcp_server() -> Iterator[SilentTcpServer]:
    server = SilentTcpServer()
    try:
        yield server
    finally:
        server.close()
