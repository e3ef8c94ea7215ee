"""An in-memory `Cloud` for the pool engine's unit tests: deterministic (a server is BUILD for
a set number of `list_servers` calls, no clocks, no sleeping), thread-safe (one lock), with
nova-like quotas and knobs that make it fail the ways real providers do."""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from infracloud.pool.cloud import (
    CloudError,
    CloudUnreachable,
    Flavor,
    Image,
    Limits,
    Port,
    QuotaExceeded,
    Server,
)

T = TypeVar("T")

DEFAULT_FLAVORS = (Flavor(id="ci.8g", name="ci.8g", vcpus=8, ram_mb=8192, disk_gb=80),
                   Flavor(id="ci.small", name="ci.small", vcpus=1, ram_mb=1024, disk_gb=10))
BUILD = "BUILD"
ACTIVE = "ACTIVE"
ERROR = "ERROR"


@dataclass
class _Server:
    server: Server  # as list_servers reports it once ACTIVE
    vcpus: int
    ram_mb: int
    polls_left: int  # list_servers calls still answered with BUILD
    fault: str | None  # not None: it goes to ERROR with this fault instead of ACTIVE
    image_id: str = ""
    flavor_id: str = ""
    network: str | None = None
    key_name: str | None = None


@dataclass
class _Image:
    image: Image
    meta: dict[str, str] = field(default_factory=dict)


class FakeCloud:
    """`Cloud` in memory. Knobs (plain attributes, settable any time): `unreachable`,
    `fail_create`, `error_fault`, `console`. What happened: `calls`, `deleted_servers`,
    `deleted_ports`, `uploads`, `networks`."""

    def __init__(self, name: str = "fake", *, instances: int = -1, cores: int = -1,
                 ram_mb: int = -1, flavors: list[Flavor] | None = None,
                 images: list[str] | None = None, build_polls: int = 1,
                 ip_prefix: str = "127.200.") -> None:
        self.name = name
        self.instances = instances
        self.cores = cores
        self.ram_mb = ram_mb
        self.build_polls = build_polls
        self.ip_prefix = ip_prefix
        # knobs
        self.unreachable = False
        self.fail_create: str | None = None
        self.error_fault: str | None = None
        self.console = "fake console\n"
        # what happened
        self.calls: collections.Counter[str] = collections.Counter()
        self.deleted_servers: list[str] = []  # every id delete_server was called with
        self.deleted_ports: list[str] = []  # every id delete_port was called with
        self.uploads: dict[str, Path] = {}  # image name -> the file uploaded
        self.networks: list[str | None] = []  # the network of every server created
        self.closed = False

        self._lock = threading.RLock()
        self._flavors = list(DEFAULT_FLAVORS if flavors is None else flavors)
        self._images: dict[str, _Image] = {}
        for image_name in ["demo"] if images is None else images:
            self._new_image(image_name, {})
        self._servers: dict[str, _Server] = {}
        self._ports: dict[str, Port] = {}
        self._ips = 0

    def __repr__(self) -> str:
        return f"FakeCloud({self.name!r})"

    # ---- plumbing ----------------------------------------------------------------------------

    def _call(self, method: str, body: Callable[[], T]) -> T:
        """Count the call, fail it if the cloud is unreachable, else run `body` locked."""
        with self._lock:
            self.calls[method] += 1
            if self.unreachable:
                raise CloudUnreachable(f"cloud {self.name}: {method}: connection refused")
            return body()

    def _new_image(self, name: str, meta: Mapping[str, str]) -> str:
        image_id = str(uuid.uuid4())
        self._images[image_id] = _Image(Image(id=image_id, name=name, status="active"),
                                        dict(meta))
        return image_id

    def _next_ip(self) -> str:
        self._ips += 1
        return f"{self.ip_prefix}{self._ips}"

    def _flavor(self, flavor_id: str) -> Flavor:
        for flavor in self._flavors:
            if flavor_id in (flavor.id, flavor.name):
                return flavor
        raise CloudError(f"cloud {self.name}: Flavor {flavor_id} could not be found.")

    def _usage(self) -> tuple[int, int, int]:
        servers = list(self._servers.values())
        return (len(servers), sum(s.vcpus for s in servers), sum(s.ram_mb for s in servers))

    def _check_quota(self, vcpus: int, ram_mb: int) -> None:
        """Nova's check and message, resource by resource."""
        used = dict(zip(("instances", "cores", "ram"), self._usage(), strict=True))
        for resource, limit, wanted in (("instances", self.instances, 1),
                                        ("cores", self.cores, vcpus),
                                        ("ram", self.ram_mb, ram_mb)):
            if limit >= 0 and used[resource] + wanted > limit:
                raise QuotaExceeded(
                    f"Quota exceeded for {resource}: Requested {wanted}, but already used "
                    f"{used[resource]} of {limit} {resource}")

    def _view(self, s: _Server) -> Server:
        if s.server.status == ACTIVE:
            return s.server
        return replace(s.server, ip=None)

    def _advance(self, s: _Server) -> None:
        """One list_servers call's worth of building."""
        if s.server.status != BUILD:
            return
        if s.polls_left > 0:
            s.polls_left -= 1
        elif s.fault is not None:
            s.server = replace(s.server, status=ERROR, fault=s.fault)
        else:
            s.server = replace(s.server, status=ACTIVE)

    # ---- servers -----------------------------------------------------------------------------

    def create_server(self, name: str, image_id: str, flavor_id: str, network: str | None,
                      key_name: str | None, metadata: Mapping[str, str]) -> str:
        def body() -> str:
            if self.fail_create is not None:
                raise CloudError(self.fail_create)
            flavor = self._flavor(flavor_id)
            image = self._images.get(image_id)
            if image is None or image.image.status != "active":
                raise CloudError(f"cloud {self.name}: Image {image_id} could not be found.")
            self._check_quota(flavor.vcpus, flavor.ram_mb)
            server_id = str(uuid.uuid4())
            self._servers[server_id] = _Server(
                Server(id=server_id, name=name, status=BUILD, ip=self._next_ip(),
                       metadata=dict(metadata)),
                flavor.vcpus, flavor.ram_mb, self.build_polls, self.error_fault,
                image_id=image_id, flavor_id=flavor.id, network=network, key_name=key_name)
            self.networks.append(network)
            return server_id

        return self._call("create_server", body)

    def list_servers(self) -> list[Server]:
        def body() -> list[Server]:
            out = []
            for s in self._servers.values():
                self._advance(s)
                out.append(self._view(s))
            return out

        return self._call("list_servers", body)

    def delete_server(self, server_id: str) -> None:
        def body() -> None:
            self.deleted_servers.append(server_id)
            self._servers.pop(server_id, None)

        self._call("delete_server", body)

    def console_log(self, server_id: str, lines: int = 200) -> str:
        def body() -> str:
            if server_id not in self._servers:
                raise CloudError(f"cloud {self.name}: Instance {server_id} could not be found.")
            kept = self.console.splitlines(keepends=True)
            return "".join(kept[-lines:]) if lines > 0 else ""

        return self._call("console_log", body)

    def limits(self) -> Limits:
        def body() -> Limits:
            instances, cores, ram_mb = self._usage()
            return Limits(instances=self.instances, cores=self.cores, ram_mb=self.ram_mb,
                          instances_used=instances, cores_used=cores, ram_mb_used=ram_mb)

        return self._call("limits", body)

    # ---- catalog -----------------------------------------------------------------------------

    def flavors(self) -> list[Flavor]:
        return self._call("flavors", lambda: list(self._flavors))

    def images(self) -> list[Image]:
        return self._call("images", lambda: [i.image for i in self._images.values()])

    def upload_image(self, name: str, path: Path, disk_format: str, container_format: str,
                     meta: Mapping[str, str]) -> str:
        def body() -> str:
            if not Path(path).is_file():
                raise CloudError(f"cloud {self.name}: upload image {name}: no file {path}")
            self.uploads[name] = Path(path)
            return self._new_image(name, meta)

        return self._call("upload_image", body)

    def delete_image(self, image_id: str) -> None:
        def body() -> None:
            self._images.pop(image_id, None)

        self._call("delete_image", body)

    # ---- ports -------------------------------------------------------------------------------

    def list_ports(self) -> list[Port]:
        return self._call("list_ports", lambda: list(self._ports.values()))

    def delete_port(self, port_id: str) -> None:
        def body() -> None:
            self.deleted_ports.append(port_id)
            self._ports.pop(port_id, None)

        self._call("delete_port", body)

    # ---- the provider ------------------------------------------------------------------------

    def validate(self) -> None:
        self._call("validate", lambda: None)

    def close(self) -> None:
        with self._lock:
            self.calls["close"] += 1
            self.closed = True

    # ---- test helpers (not counted in `calls`, never unreachable) ----------------------------

    def add_server(self, name: str, metadata: Mapping[str, str], status: str = ACTIVE, *,
                   flavor_id: str | None = None) -> str:
        """A server made behind the pool's back. It counts against the quota: as one
        instance of `flavor_id`'s size, or of no size when none is given. A BUILD one builds
        like the pool's own."""
        with self._lock:
            flavor = self._flavor(flavor_id) if flavor_id is not None else None
            server_id = str(uuid.uuid4())
            self._servers[server_id] = _Server(
                Server(id=server_id, name=name, status=status, ip=self._next_ip(),
                       metadata=dict(metadata)),
                flavor.vcpus if flavor else 0, flavor.ram_mb if flavor else 0,
                self.build_polls, None, flavor_id=flavor.id if flavor else "")
            return server_id

    def add_port(self, status: str = "DOWN", device_owner: str = "compute:nova",
                 device_id: str = "") -> str:
        """A port made behind the pool's back (a leaked one, by default)."""
        with self._lock:
            port_id = str(uuid.uuid4())
            self._ports[port_id] = Port(id=port_id, status=status, device_owner=device_owner,
                                        device_id=device_id)
            return port_id

    def build_now(self) -> None:
        """Every server still building is built at the next server list."""
        with self._lock:
            for s in self._servers.values():
                s.polls_left = 0

    def servers_by_id(self) -> dict[str, Server]:
        """The servers as they are now, without a list_servers call's building."""
        with self._lock:
            return {server_id: self._view(s) for server_id, s in self._servers.items()}

    def image_meta(self, image_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._images[image_id].meta)
