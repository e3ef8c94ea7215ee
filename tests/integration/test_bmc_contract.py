"""ONE contract for every BMC driver: the in-process fake, Redfish against the sushy-tools
emulator, IPMI against pyghmi's BMC server (tests/bmc_peers.py). No mocks: each driver talks
to its real peer over loopback.

Machine 0 of each peer serves the quick cases; machines 1-3 the power sequences, which run
concurrently because sushy-tools' fake driver applies every power change up to 11 s late."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infracloud.core.settings import HardwareConfig
from infracloud.hardware.bmc import ipmi as ipmi_driver
from infracloud.hardware.bmc.base import (
    BmcAccess,
    BmcAuthError,
    BmcTransient,
    BmcUnsupported,
    InspectInterface,
    Inspection,
    ManagementInterface,
    PowerInterface,
)
from infracloud.hardware.bmc.fake import FakeBmc, Simulator
from infracloud.hardware.bmc.registry import make_bmc
from tests.bmc_peers import (
    DRIVE_BYTES,
    IpmiPeer,
    RedfishPeer,
    free_udp_ports,
    silent_tcp_server,
    start_ipmi,
    start_redfish,
)
from tests.servers import free_port, wait_for

DRIVERS = ["fake", "redfish", "ipmi"]
POWER_WAIT = 30.0  # the emulator applies a change after up to 11 s
UNREACHABLE_TIMEOUT = 2.0
BMC_TIMEOUT = HardwareConfig().bmc_timeout  # a controller's default for one call
WRONG_PASSWORD = "not-the-Secret-3310"
FAKE_PASSWORD = "fake-Secret-9120"
FAKE_HARDWARE = {"cpus": 6, "memory_mb": 12288, "disk_gb": 250, "cpu_arch": "x86_64",
                 "macs": ["52:54:00:aa:00:01", "52:54:00:aa:00:02"]}


@dataclass
class Env:
    """One driver and its peer, as the contract tests see them."""

    driver: str
    address: Callable[[int], str]
    options: Callable[[int], dict[str, Any]]
    username: str
    password: str = field(repr=False)
    make: Callable[[BmcAccess], Any] = make_bmc
    virtual_media: bool = True
    media_url: str = "http://127.0.0.1:9/boot.iso"
    media: Callable[[int], str | None] | None = None  # what the peer says is inserted
    expected: Inspection | None = None  # what inspection must find on machine 0
    unreachable: Callable[[], Iterator[tuple[str, BmcAccess]]] | None = None
    secrets: tuple[str, ...] = ()

    def access(self, machine: int = 0, password: str | None = None,
               timeout: float = BMC_TIMEOUT) -> BmcAccess:
        return BmcAccess(self.driver, self.address(machine), self.username,
                         self.password if password is None else password,
                         self.options(machine), timeout)

    def bmc(self, machine: int = 0, password: str | None = None) -> Any:
        return self.make(self.access(machine, password))


# ---- peers ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redfish_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedfishPeer]:
    peer = start_redfish(Path(tmp_path_factory.mktemp("sushy")), systems=4)
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def ipmi_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpmiPeer]:
    peer = start_ipmi(Path(tmp_path_factory.mktemp("ipmi")), bmcs=4)
    yield peer
    ipmi_driver.close_all()
    peer.stop()


def fake_env() -> Env:
    sim = Simulator()

    def unreachable() -> Iterator[tuple[str, BmcAccess]]:
        yield "hanging BMC", BmcAccess("fake", "hung", "admin", FAKE_PASSWORD, {"hang": True},
                                       UNREACHABLE_TIMEOUT)

    expected = Inspection(cpus=6, memory_mb=12288, disk_gb=250, cpu_arch="x86_64",
                          macs=("52:54:00:aa:00:01", "52:54:00:aa:00:02"))
    return Env("fake", lambda i: f"machine-{i}", lambda i: dict(FAKE_HARDWARE), "admin",
               FAKE_PASSWORD, make=lambda access: FakeBmc(access, simulator=sim),
               media=lambda i: sim.machines[f"machine-{i}"].media, expected=expected,
               unreachable=unreachable, secrets=(FAKE_PASSWORD,))


def redfish_env(peer: RedfishPeer) -> Env:
    def unreachable() -> Iterator[tuple[str, BmcAccess]]:
        opts = {"system_id": peer.systems[0]}
        yield "closed TCP port", BmcAccess("redfish", f"http://127.0.0.1:{free_port()}",
                                           peer.username, peer.password, opts,
                                           UNREACHABLE_TIMEOUT)
        with silent_tcp_server() as silent:
            yield "TCP server that never answers", BmcAccess(
                "redfish", f"http://127.0.0.1:{silent.port}", peer.username, peer.password,
                opts, UNREACHABLE_TIMEOUT)

    # sushy-tools' fake driver reports no CPU count, memory size or architecture
    # (ProcessorSummary/MemorySummary carry only Status): only disk and MACs are known
    expected = Inspection(disk_gb=DRIVE_BYTES // 2**30, macs=(peer.macs[0],))
    return Env("redfish",
               # the three accepted spellings of address and system_id
               lambda i: peer.url + ("/redfish/v1/" if i == 1 else ""),
               lambda i: {"system_id": peer.system_path(i) if i else peer.systems[i]},
               peer.username, peer.password, media_url=peer.media_url, media=peer.media,
               expected=expected, unreachable=unreachable, secrets=(peer.password,))


def ipmi_env(peer: IpmiPeer) -> Env:
    def unreachable() -> Iterator[tuple[str, BmcAccess]]:
        yield "UDP port without a BMC", BmcAccess(
            "ipmi", f"127.0.0.1:{free_udp_ports(1)[0]}", peer.username, peer.password, {},
            UNREACHABLE_TIMEOUT)

    return Env("ipmi",
               # both spellings of the port
               lambda i: f"127.0.0.1:{peer.ports[i]}" if i else "127.0.0.1",
               lambda i: {} if i else {"port": peer.ports[0]},
               peer.username, peer.password, virtual_media=False, expected=Inspection(),
               unreachable=unreachable, secrets=(peer.password,))


@pytest.fixture(params=DRIVERS)
def env(request: pytest.FixtureRequest) -> Env:
    if request.param == "fake":
        return fake_env()
    if request.param == "redfish":
        return redfish_env(request.getfixturevalue("redfish_peer"))
    peer: IpmiPeer = request.getfixturevalue("ipmi_peer")
    request.addfinalizer(peer.check)
    return ipmi_env(peer)


# ---- helpers ----------------------------------------------------------------------------------

def assert_no_secret(obj: object, secrets: tuple[str, ...]) -> None:
    """Neither the object nor (for exceptions) anything it was raised from shows a secret."""
    seen: set[int] = set()
    todo: list[object] = [obj]
    while todo:
        o = todo.pop()
        if o is None or id(o) in seen:
            continue
        seen.add(id(o))
        for secret in secrets:
            assert secret not in str(o), f"secret in str() of {type(o).__name__}"
            assert secret not in repr(o), f"secret in repr() of {type(o).__name__}"
        if isinstance(o, BaseException):
            todo += [o.__cause__, o.__context__]


def wait_power(bmc: Any, want: str, timeout: float = POWER_WAIT) -> float:
    """Seconds until the BMC says `want`."""
    start = time.monotonic()
    wait_for(f"power {want!r}", lambda: bmc.get_power() == want, timeout, 0.25)
    return time.monotonic() - start


# ---- the contract -----------------------------------------------------------------------------

def test_validate(env: Env) -> None:
    bmc = env.bmc()
    assert isinstance(bmc, PowerInterface)
    assert isinstance(bmc, ManagementInterface)
    assert isinstance(bmc, InspectInterface)
    assert bmc.name == env.driver
    assert bmc.virtual_media is env.virtual_media
    bmc.validate()
    assert bmc.get_power() in ("on", "off")
    assert_no_secret(bmc, env.secrets)
    bmc.close()


def test_wrong_password_is_refused(env: Env) -> None:
    env.bmc().validate()  # the machine exists and the right password works
    bad = env.bmc(password=WRONG_PASSWORD)
    with pytest.raises(BmcAuthError) as err:
        bad.validate()
    assert not err.value.transient
    assert_no_secret(err.value, (*env.secrets, WRONG_PASSWORD))
    assert_no_secret(bad, (*env.secrets, WRONG_PASSWORD))
    env.bmc().validate()  # a refused login does not spoil the good one


def test_power(env: Env) -> None:
    """Three machines at once, each needing at most two (slow, on the emulator) changes:
    1 powers on then off, 2 powers on then hard-reboots, 3 is rebooted while off."""

    def on_then(machine: int, then: str) -> None:
        bmc = env.bmc(machine)
        bmc.set_power("on")
        wait_power(bmc, "on")
        if then == "off":
            bmc.set_power("off")
            wait_power(bmc, "off")
        else:
            bmc.reboot()
            wait_power(bmc, "on")

    def reboot_from_off(machine: int) -> None:
        bmc = env.bmc(machine)
        bmc.set_power("off")
        wait_power(bmc, "off")
        bmc.reboot()
        wait_power(bmc, "on")

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(on_then, 1, "off"), pool.submit(on_then, 2, "reboot"),
                   pool.submit(reboot_from_off, 3)]
        for future in futures:
            future.result()
    with pytest.raises(ValueError):
        env.bmc(1).set_power("sideways")


@pytest.mark.parametrize("persistent", [False, True])
def test_boot_device_round_trip(env: Env, persistent: bool) -> None:
    # Every peer reports the target it was given. They do not report persistence honestly
    # (sushy-tools says Continuous for Once, pyghmi's server drops the flag), and the
    # interface does not read it back, so only the device is compared.
    bmc = env.bmc()
    for device in ("pxe", "cd", "disk"):
        bmc.set_boot_device(device, persistent=persistent)
        assert bmc.get_boot_device() == device
    with pytest.raises(ValueError):
        bmc.set_boot_device("floppy")


def test_virtual_media(env: Env) -> None:
    bmc = env.bmc()
    if not env.virtual_media:
        with pytest.raises(BmcUnsupported):
            bmc.insert_media(env.media_url)
        bmc.eject_media()  # nothing attached: no error
        return
    assert env.media is not None
    bmc.eject_media()
    assert env.media(0) is None
    bmc.eject_media()  # nothing attached: still no error
    bmc.insert_media(env.media_url)
    assert env.media(0) == env.media_url
    bmc.insert_media(env.media_url)  # again: no error, still attached
    assert env.media(0) == env.media_url
    bmc.eject_media()
    assert env.media(0) is None


def test_inspect(env: Env) -> None:
    found = env.bmc().inspect()
    assert isinstance(found, Inspection)
    for value in (found.cpus, found.memory_mb, found.disk_gb):
        assert value is None or (isinstance(value, int) and value > 0)
    assert found.cpu_arch is None or isinstance(found.cpu_arch, str)
    assert isinstance(found.macs, tuple)
    assert all(isinstance(m, str) and m == m.lower() and m.count(":") == 5 for m in found.macs)
    assert found == env.expected


def test_unreachable_bmc_fails_fast(env: Env) -> None:
    assert env.unreachable is not None
    for label, access in env.unreachable():
        bmc = env.make(access)
        for call in (bmc.validate, bmc.get_power):
            start = time.monotonic()
            with pytest.raises(BmcTransient) as err:
                call()
            took = time.monotonic() - start
            assert took < access.timeout + 3, f"{label}: {call.__name__} took {took:.1f} s"
            assert err.value.transient
            assert_no_secret(err.value, env.secrets)
        bmc.close()


def test_ipmi_call_not_answered_says_where_it_waits_and_the_bmc_is_usable_after(
        ipmi_peer: IpmiPeer, caplog: pytest.LogCaptureFixture) -> None:
    """A BMC that stops answering mid-session (its process frozen): the call gives up after
    its timeout with one log record telling where the call waits and whether pyghmi's I/O
    thread lives; once the BMC answers again, the same session serves the next call."""
    env = ipmi_env(ipmi_peer)
    bmc = env.make(env.access(3))
    bmc.validate()
    ipmi_peer.server.proc.send_signal(signal.SIGSTOP)
    try:
        frozen = env.make(env.access(3, timeout=UNREACHABLE_TIMEOUT))
        with caplog.at_level(logging.WARNING, logger=ipmi_driver.__name__), \
                pytest.raises(BmcTransient):
            frozen.get_power()
    finally:
        ipmi_peer.server.proc.send_signal(signal.SIGCONT)
    [record] = [r for r in caplog.records if r.getMessage() == "IPMI call not answered in time"]
    assert record.call == "power status"  # type: ignore[attr-defined]
    assert record.pyghmi_io_thread == "alive"  # type: ignore[attr-defined]
    assert "pyghmi" in record.worker_stack  # type: ignore[attr-defined]
    wait_for("the BMC answering again", lambda: _answers(bmc), 30, 0.25)


def _answers(bmc: Any) -> bool:
    try:
        return bmc.get_power() in ("on", "off")
    except BmcTransient:
        return False
