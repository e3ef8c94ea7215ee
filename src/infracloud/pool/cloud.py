"""What the pool needs from a provider, as three small interfaces (servers, catalog, ports).
`pool.openstack` implements them through openstacksdk, so any OpenStack cloud and any
infracloud site are alike; `pool.fakecloud` is the in-memory fake the unit tests run on. One
contract suite (tests/integration/test_pool_cloud.py) runs against both.

Errors say what the pool should do about them:
- `QuotaExceeded`: wait for capacity. Never a launch failure, never held against the provider.
- `CloudUnreachable`: the provider is down (connection refused, timeouts, 5xx from a proxy);
  its launches move elsewhere.
- `CloudError`: anything else (a bad image, a 400): the launch failed.
Deleting something already gone is not an error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class CloudError(Exception):
    """A provider call failed (the launch counts as failed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QuotaExceeded(CloudError):
    """The provider is at a quota or out of capacity: wait, do not count a failure."""


class CloudUnreachable(CloudError):
    """The provider did not answer."""


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    status: str  # glance's: queued, saving, active, killed, deleted, ...


@dataclass(frozen=True)
class Server:
    id: str
    name: str
    status: str  # nova's: BUILD, ACTIVE, ERROR, DELETED, ...
    ip: str | None  # the address to reach it on (first IPv4, else first IPv6)
    metadata: Mapping[str, str] = field(default_factory=dict)
    fault: str = ""  # nova's fault message when status is ERROR


@dataclass(frozen=True)
class Port:
    id: str
    status: str  # ACTIVE, DOWN, ...
    device_owner: str
    device_id: str


@dataclass(frozen=True)
class Limits:
    """Absolute compute limits of the pool's project; -1 means unlimited."""

    instances: int
    cores: int
    ram_mb: int
    instances_used: int
    cores_used: int
    ram_mb_used: int

    def room(self, vcpus: int, ram_mb: int) -> int | None:
        """How many more servers of this size fit in the quota (None: unlimited)."""
        fits: list[int] = []
        for limit, used, each in ((self.instances, self.instances_used, 1),
                                  (self.cores, self.cores_used, vcpus),
                                  (self.ram_mb, self.ram_mb_used, ram_mb)):
            if limit >= 0 and each > 0:
                fits.append(max(0, (limit - used) // each))
        return min(fits) if fits else None


class Servers(Protocol):
    def create_server(self, name: str, image_id: str, flavor_id: str, network: str | None,
                      key_name: str | None, metadata: Mapping[str, str]) -> str:
        """Start creating a server; returns its id at once (no waiting for ACTIVE)."""

    def list_servers(self) -> list[Server]:
        """Every server of the pool's project, one API call."""

    def delete_server(self, server_id: str) -> None: ...

    def console_log(self, server_id: str, lines: int = 200) -> str: ...

    def limits(self) -> Limits: ...


class Catalog(Protocol):
    def flavors(self) -> list[Flavor]: ...

    def images(self) -> list[Image]:
        """Images the project can boot (its own and public ones)."""

    def upload_image(self, name: str, path: Path, disk_format: str, container_format: str,
                     meta: Mapping[str, str]) -> str:
        """Create an image from a local file (streamed, not read into memory); its id once
        it is active."""

    def delete_image(self, image_id: str) -> None: ...


class Ports(Protocol):
    def list_ports(self) -> list[Port]: ...

    def delete_port(self, port_id: str) -> None: ...


class Cloud(Servers, Catalog, Ports, Protocol):
    name: str

    def validate(self) -> None:
        """Raise CloudUnreachable or CloudError unless the provider answers with the
        credentials given."""

    def close(self) -> None: ...


_CAPACITY_FAULTS = ("no valid host", "quota exceeded", "exceeds quota", "would exceed")


def is_capacity_fault(message: str) -> bool:
    """A server that went to ERROR because the cloud was full or at quota (nova's "No valid
    host was found", "Quota exceeded"): a wait, not a failure of the launch."""
    low = message.lower()
    return any(words in low for words in _CAPACITY_FAULTS)
