"""The one small interface every hypervisor driver implements (fake, sandbox and
libvirt). A single contract test suite (tests/unit/test_drivers.py) runs against each.

The agent calls these from worker threads; implementations must be thread-safe and every
method may block. `spawn` returns once the instance is booted (for the sandbox: its SSH
server accepts connections) or raises DriverError; `destroy` is idempotent and leaves
nothing behind (processes, files, addresses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class DriverError(Exception):
    """The driver could not do what was asked; the message becomes the instance's fault."""


def tail_lines(text: str, length: int | None) -> str:
    """`text`, or its last `length` lines (what `Driver.console` returns)."""
    if length is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-length:]) if length > 0 else ""


@dataclass(frozen=True)
class NetworkInfo:
    ip: str  # the instance's IPv4 address
    prefix: int  # prefix length of its subnet
    gateway: str | None
    mac: str
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceSpec:
    id: str  # uuid of the server
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    network: NetworkInfo
    config_drive: Path  # a config-2 ISO 9660 image made by the agent (agent/configdrive.py)
    image: Path | None = None  # local, verified copy of the image; None if the driver needs none
    metadata: dict[str, str] = field(default_factory=dict)


class Driver(Protocol):
    name: str
    needs_image: bool  # False: the agent does not download the image for this driver

    def validate(self) -> None:
        """Raise DriverError if this host cannot run instances with this driver."""

    def spawn(self, spec: InstanceSpec) -> None:
        """Create and boot the instance. Spawning an id that exists already is a no-op."""

    def destroy(self, instance_id: str) -> None:
        """Stop the instance and remove everything it had. Unknown ids are fine."""

    def list(self) -> list[str]:
        """Ids of the instances present on this host (including ones from before a restart
        of the agent, where the driver can find them)."""

    def console(self, instance_id: str, length: int | None = None) -> str:
        """The console log, or its last `length` lines. Unknown ids raise DriverError."""

    # ---- server actions (compute.actions); each raises DriverError when it cannot --------

    def stop(self, instance_id: str) -> None:
        """Power the instance off, keeping its disk (a guest is asked to shut down, then cut
        off). Stopping a stopped instance is a no-op; `list` still has it."""

    def start(self, spec: InstanceSpec) -> None:
        """Power a stopped instance on again (as it was spawned). A running one: a no-op."""

    def reboot(self, spec: InstanceSpec, hard: bool) -> None:
        """Restart the instance: `hard` cuts it off and boots it; otherwise the guest is asked
        to reboot. A stopped instance (hard only) is started."""

    def rebuild(self, spec: InstanceSpec) -> None:
        """Recreate the instance from `spec` (a new image): same id, address and host; its
        old disk is gone."""

    def snapshot(self, instance_id: str, dest: Path) -> None:
        """Write the instance's disk to `dest` as one standalone qcow2 file (no backing
        file). Drivers without disks raise DriverError."""

    def close(self) -> None:
        """Release what the driver itself holds (not the instances)."""
