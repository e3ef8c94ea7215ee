"""Simulated BMCs for demos, tests and benchmarks. Each simulated machine lives in a
process-wide `Simulator`; a `FakeBmc` reaches it by address (its name). The machine's hardware
and misbehaviour come from the BMC options (so an inventory file describes them):

    cpus, memory_mb, disk_gb, macs, cpu_arch      what inspection finds
    failure_rate   fraction of calls that fail (half time out, half answer HTTP 500)
    hang           the BMC never answers: every call times out
    power_delay    seconds before a power change applies (like real BMCs and sushy-tools)
    boot_delay     seconds from power-on until the machine has booted

When a machine has booted, the simulator calls its boot handler (the conductor's simulation
starts an in-process agent there); when it powers off, the power-off handler.

A test hook: with INFRACLOUD_FAKE_BMC_JOURNAL naming a file in the environment of the process,
every call its simulated BMCs answer is appended there as one line (wall time, process id,
BMC address, call, argument), so a test running several controllers sees which process drove
which machine, and when. Only the environment sets it, never the API."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infracloud.hardware.bmc.base import (
    BmcAccess,
    BmcAuthError,
    BmcTransient,
    Inspection,
    check_boot_device,
    check_power_state,
)

Handler = Callable[["SimulatedMachine"], None]
JOURNAL_ENV = "INFRACLOUD_FAKE_BMC_JOURNAL"


@dataclass
class SimulatedMachine:
    name: str
    password: str = field(repr=False)
    cpus: int = 8
    memory_mb: int = 16384
    disk_gb: int = 200
    macs: tuple[str, ...] = ()
    cpu_arch: str = "x86_64"
    failure_rate: float = 0.0
    hang: bool = False
    power_delay: float = 0.0
    boot_delay: float = 0.0
    power: str = "off"
    boot_device: str = "disk"
    media: str | None = None
    calls: int = 0
    boots: int = 0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # bumped by every power change, so a stale delayed change or boot is dropped
    epoch: int = 0

    @classmethod
    def from_options(cls, name: str, password: str, options: Mapping[str, Any]
                     ) -> SimulatedMachine:
        m = cls(name=name, password=password)
        for key in ("cpus", "memory_mb", "disk_gb"):
            if key in options:
                setattr(m, key, int(options[key]))
        for key in ("failure_rate", "power_delay", "boot_delay"):
            if key in options:
                setattr(m, key, float(options[key]))
        m.hang = bool(options.get("hang", False))
        m.cpu_arch = str(options.get("cpu_arch", "x86_64"))
        m.macs = tuple(str(x).lower() for x in options.get("macs", ()))
        if "seed" in options:
            m.rng = random.Random(int(options["seed"]))
        return m


class Simulator:
    """Every simulated machine of this process."""

    def __init__(self) -> None:
        self.machines: dict[str, SimulatedMachine] = {}
        self.on_boot: Handler | None = None
        self.on_power_off: Handler | None = None
        self._lock = threading.Lock()

    def machine(self, access: BmcAccess) -> SimulatedMachine:
        """The machine behind this BMC address (made on first contact). Its misbehaviour
        knobs follow the latest options, so a test or a demo can make a BMC die or heal."""
        with self._lock:
            m = self.machines.get(access.address)
            if m is None:
                m = SimulatedMachine.from_options(access.address, access.password,
                                                  access.options)
                self.machines[access.address] = m
            else:
                m.hang = bool(access.options.get("hang", False))
                m.failure_rate = float(access.options.get("failure_rate", 0.0))
            return m

    def reset(self) -> None:
        with self._lock:
            self.machines.clear()
            self.on_boot = None
            self.on_power_off = None

    def calls(self) -> int:
        return sum(m.calls for m in self.machines.values())

    # ---- power changes, applied now or after the machine's power delay --------------------

    def apply_power(self, m: SimulatedMachine, state: str, epoch: int) -> None:
        with m.lock:
            if m.epoch != epoch or m.power == state:
                return
            m.power = state
        if state == "on":
            self._later(m.boot_delay, self._booted, m, epoch)
        elif self.on_power_off is not None:
            self.on_power_off(m)

    def _booted(self, m: SimulatedMachine, epoch: int) -> None:
        with m.lock:
            if m.epoch != epoch or m.power != "on":
                return
            m.boots += 1
        if self.on_boot is not None:
            self.on_boot(m)

    @staticmethod
    def _later(delay: float, fn: Callable[..., None], *args: Any) -> None:
        if delay <= 0:
            fn(*args)
            return
        t = threading.Timer(delay, fn, args)
        t.daemon = True
        t.start()


SIMULATOR = Simulator()


class FakeBmc:
    name = "fake"
    virtual_media = True

    def __init__(self, access: BmcAccess, simulator: Simulator | None = None) -> None:
        self.access = access
        self.sim = simulator or SIMULATOR
        self.machine = self.sim.machine(access)

    def _call(self, what: str, arg: str = "-") -> SimulatedMachine:
        """Every BMC call goes through here: counts it (and writes it to the journal, when
        there is one), then misbehaves as configured."""
        m = self.machine
        journal = os.environ.get(JOURNAL_ENV)
        if journal:
            with open(journal, "a") as f:
                f.write(f"{time.time():.6f} {os.getpid()} {m.name} {what} {arg}\n")
        with m.lock:
            m.calls += 1
            fail = m.hang or (m.failure_rate > 0 and m.rng.random() < m.failure_rate)
            times_out = m.hang or m.rng.random() < 0.5
        if fail:
            if times_out:
                time.sleep(self.access.timeout)
                raise BmcTransient(f"BMC {m.name}: no answer within {self.access.timeout:g} s")
            raise BmcTransient(f"BMC {m.name}: HTTP 500 Internal Server Error")
        if self.access.password != m.password or not self.access.username:
            raise BmcAuthError(f"BMC {m.name}: authentication failed")
        return m

    # ---- power ----------------------------------------------------------------------------

    def validate(self) -> None:
        self._call("validate")

    def get_power(self) -> str:
        return self._call("get_power").power

    def set_power(self, state: str) -> None:
        check_power_state(state)
        m = self._call("set_power", state)
        with m.lock:
            m.epoch += 1
            epoch = m.epoch
        self.sim._later(m.power_delay, self.sim.apply_power, m, state, epoch)

    def reboot(self) -> None:
        m = self._call("reboot")
        with m.lock:
            m.epoch += 1
            epoch = m.epoch
            was_on = m.power == "on"
            m.power = "off"
        if was_on and self.sim.on_power_off is not None:
            self.sim.on_power_off(m)
        self.sim._later(m.power_delay, self.sim.apply_power, m, "on", epoch)

    # ---- management -----------------------------------------------------------------------

    def get_boot_device(self) -> str:
        return self._call("get_boot_device").boot_device

    def set_boot_device(self, device: str, persistent: bool = False) -> None:
        check_boot_device(device)
        m = self._call("set_boot_device", device)
        with m.lock:
            m.boot_device = device

    def insert_media(self, url: str) -> None:
        m = self._call("insert_media")
        with m.lock:
            m.media = url

    def eject_media(self) -> None:
        m = self._call("eject_media")
        with m.lock:
            m.media = None

    # ---- inspection -----------------------------------------------------------------------

    def inspect(self) -> Inspection:
        m = self._call("inspect")
        return Inspection(cpus=m.cpus, memory_mb=m.memory_mb, disk_gb=m.disk_gb, macs=m.macs,
                          cpu_arch=m.cpu_arch)

    def close(self) -> None:
        pass
