"""What every BMC driver offers: three small interfaces (power, management, inspection), each
with `validate()`, and one error vocabulary the conductor can act on. A driver object talks to
ONE machine's BMC; every call is bounded by `BmcAccess.timeout` and never hangs past it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

POWER_STATES = ("on", "off")
BOOT_DEVICES = ("pxe", "cd", "disk")


class BmcError(Exception):
    """A BMC call failed. `transient` errors (timeouts, 5xx, lost packets) are retried by the
    conductor with backoff; the others (bad credentials, unsupported) are not."""

    transient = False


class BmcTransient(BmcError):
    transient = True


class BmcAuthError(BmcError):
    """The BMC refused the credentials."""


class BmcUnsupported(BmcError):
    """The BMC or its protocol cannot do this (e.g. virtual media over IPMI)."""


@dataclass(frozen=True)
class BmcAccess:
    """How to reach one BMC. `password` is clear text in memory only: the store keeps it
    encrypted and nothing prints it (repr hides it)."""

    driver: str
    address: str
    username: str
    password: str = field(repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 10.0


@dataclass(frozen=True)
class Inspection:
    """What the BMC says the machine has. Fields it cannot tell are None (IPMI knows little;
    the agent reports the rest in-band when the machine boots)."""

    cpus: int | None = None
    memory_mb: int | None = None
    disk_gb: int | None = None
    macs: tuple[str, ...] = ()
    cpu_arch: str | None = None

    def as_properties(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cpus is not None:
            out["cpus"] = self.cpus
        if self.memory_mb is not None:
            out["memory_mb"] = self.memory_mb
        if self.disk_gb is not None:
            out["local_gb"] = self.disk_gb
        if self.cpu_arch:
            out["cpu_arch"] = self.cpu_arch
        if self.macs:
            out["macs"] = list(self.macs)
        return out


@runtime_checkable
class PowerInterface(Protocol):
    def validate(self) -> None:
        """Reachable, credentials accepted, the machine exists; else BmcError."""

    def get_power(self) -> str:
        """'on' or 'off'."""

    def set_power(self, state: str) -> None:
        """Ask for 'on' or 'off' (hard). Some BMCs apply it later: poll get_power."""

    def reboot(self) -> None:
        """Hard reset (power on if off)."""


@runtime_checkable
class ManagementInterface(Protocol):
    def validate(self) -> None: ...

    def get_boot_device(self) -> str:
        """'pxe', 'cd' or 'disk'."""

    def set_boot_device(self, device: str, persistent: bool = False) -> None: ...

    def insert_media(self, url: str) -> None:
        """Virtual media: attach the ISO at `url` as a CD (BmcUnsupported where impossible)."""

    def eject_media(self) -> None:
        """Detach any virtual CD (no error when none is attached)."""


@runtime_checkable
class InspectInterface(Protocol):
    def validate(self) -> None: ...

    def inspect(self) -> Inspection: ...


class Bmc(PowerInterface, ManagementInterface, InspectInterface, Protocol):
    """A driver implements all three interfaces, plus close()."""

    name: str
    virtual_media: bool  # whether insert_media can work

    def close(self) -> None: ...


def check_power_state(state: str) -> None:
    if state not in POWER_STATES:
        raise ValueError(f"power state must be one of {', '.join(POWER_STATES)}, not {state!r}")


def check_boot_device(device: str) -> None:
    if device not in BOOT_DEVICES:
        raise ValueError(f"boot device must be one of {', '.join(BOOT_DEVICES)}, not {device!r}")
