"""A driver that only remembers: no processes, no files, nothing on the network. For unit
tests and scale tests with thousands of instances, so every call is cheap and thread-safe."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from infracloud.agent.drivers.base import DriverError, InstanceSpec, tail_lines


@dataclass(frozen=True)
class _Booted:
    spec: InstanceSpec
    booted_at: float
    running: bool = True
    boots: int = 1


class FakeDriver:
    name = "fake"
    needs_image = False

    def __init__(self, boot_delay: float = 0.0, fail_names: set[str] | None = None) -> None:
        self.boot_delay = boot_delay
        self.fail_names = set(fail_names or ())
        self._lock = threading.Lock()
        self._instances: dict[str, _Booted] = {}

    def validate(self) -> None:
        return None

    def spawn(self, spec: InstanceSpec) -> None:
        with self._lock:
            if spec.id in self._instances:
                return
        if self.boot_delay > 0:
            time.sleep(self.boot_delay)
        if spec.name in self.fail_names:
            raise DriverError(f"instance {spec.name}: simulated failure (fake driver)")
        with self._lock:
            self._instances.setdefault(spec.id, _Booted(spec, time.time()))

    def destroy(self, instance_id: str) -> None:
        with self._lock:
            self._instances.pop(instance_id, None)

    def list(self) -> list[str]:
        with self._lock:
            return list(self._instances)

    # ---- server actions: the power state and boot count change, nothing else --------------

    def _get(self, instance_id: str) -> _Booted:
        booted = self._instances.get(instance_id)
        if booted is None:
            raise DriverError(f"no instance {instance_id} on this host")
        return booted

    def stop(self, instance_id: str) -> None:
        with self._lock:
            self._instances[instance_id] = replace(self._get(instance_id), running=False)

    def start(self, spec: InstanceSpec) -> None:
        with self._lock:
            booted = self._get(spec.id)
            if not booted.running:
                self._instances[spec.id] = replace(booted, running=True, boots=booted.boots + 1,
                                                   booted_at=time.time())

    def reboot(self, spec: InstanceSpec, hard: bool) -> None:
        with self._lock:
            booted = self._get(spec.id)
            if not booted.running and not hard:
                raise DriverError(f"instance {spec.id} is stopped: only a hard reboot starts it")
            self._instances[spec.id] = replace(booted, running=True, boots=booted.boots + 1,
                                               booted_at=time.time())

    def rebuild(self, spec: InstanceSpec) -> None:
        with self._lock:
            booted = self._get(spec.id)
            self._instances[spec.id] = _Booted(spec, time.time(), True, booted.boots + 1)

    def snapshot(self, instance_id: str, dest: Path) -> None:
        raise DriverError("createImage is not supported by the fake driver: its servers have "
                          "no disk to copy")

    def power(self, instance_id: str) -> tuple[bool, int] | None:
        """(running, boots) of the instance, None if unknown (for tests)."""
        with self._lock:
            booted = self._instances.get(instance_id)
        return (booted.running, booted.boots) if booted else None

    def spec(self, instance_id: str) -> InstanceSpec | None:
        """What the instance was spawned with (for tests), None if unknown."""
        with self._lock:
            booted = self._instances.get(instance_id)
        return booted.spec if booted else None

    def console(self, instance_id: str, length: int | None = None) -> str:
        with self._lock:
            booted = self._instances.get(instance_id)
        if booted is None:
            raise DriverError(f"no instance {instance_id} on this host")
        spec, net = booted.spec, booted.spec.network
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(booted.booted_at))
        lines = [
            f"[    0.000000] Linux version 6.1.0-fake (infracloud fake driver) {stamp}",
            f"[    0.100000] Memory: {spec.ram_mb}M available, {spec.vcpus} CPUs",
            f"[    1.000000] cloud-init: datasource ConfigDrive found for {spec.id}",
            f"[    1.100000] cloud-init: set hostname to {spec.name}",
            f"[    1.200000] cloud-init: eth0 {net.mac} {net.ip}/{net.prefix}"
            f" gateway {net.gateway or '-'}",
            f"[    1.300000] cloud-init: {spec.name} finished booting, ssh ready on {net.ip}",
            f"{spec.name} login: ",
        ]
        return tail_lines("".join(line + "\n" for line in lines), length)

    def close(self) -> None:
        return None
