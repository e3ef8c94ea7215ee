"""`Cloud` through openstacksdk: any OpenStack cloud, infracloud's own sites included.

One connection per provider, made on first use (constructing does no network I/O) and shared
by the pool's threads, as nodepool shares it: keystoneauth's token fetch is locked, and so are
the things the sdk makes lazily (the per-service proxies, whose creation does discovery) and
this class's network-name cache. Every call has an API timeout, and every error leaves as one
of `cloud.py`'s three (`map_error`), never as a raw sdk exception."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import openstack.config
import openstack.connection
import openstack.utils
import requests
from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc

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

UNREACHABLE_STATUS = frozenset({502, 503, 504})
QUOTA_STATUS = frozenset({403, 413})
_NOT_THERE = (ksa_exc.ConnectionError, ksa_exc.DiscoveryFailure, requests.ConnectionError,
              requests.Timeout, TimeoutError, ConnectionError)
_LONGEST = 400  # characters of a provider's message kept in ours


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _LONGEST else line[:_LONGEST - 3] + "..."


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return None


def map_error(exc: BaseException, what: str) -> CloudError:
    """The pool's error for whatever the sdk (or keystoneauth, or requests) raised while doing
    `what` ("cloud X: create server"): what the pool should do about it, in one line."""
    if isinstance(exc, CloudError):
        return exc
    status = _status(exc)
    if isinstance(exc, os_exc.HttpException):
        detail = exc.details or exc.message or ""
    else:
        detail = str(getattr(exc, "details", None) or exc) or type(exc).__name__
    detail = _one_line(detail)
    if status is None and isinstance(exc, _NOT_THERE):
        return CloudUnreachable(f"{what}: unreachable: {detail}")
    if status is not None:
        if status in UNREACHABLE_STATUS:
            return CloudUnreachable(f"{what}: HTTP {status}: {detail}")
        if status in QUOTA_STATUS and "quota" in f"{detail} {exc}".lower():
            return QuotaExceeded(f"{what}: HTTP {status}: {detail}")
        return CloudError(f"{what}: HTTP {status}: {detail}")
    if isinstance(exc, os_exc.ResourceTimeout):
        return CloudError(f"{what}: timed out: {detail}")
    return CloudError(f"{what}: {type(exc).__name__}: {detail}")


def _ip(server: Any) -> str | None:
    """The first IPv4 address in `addresses`, else the first IPv6, else the access IPs."""
    found: dict[int, str] = {}
    for entries in (server.addresses or {}).values():
        for entry in entries or []:
            try:
                addr = ipaddress.ip_address(str(entry.get("addr", "")))
            except ValueError:
                continue
            found.setdefault(addr.version, str(addr))
    return (found.get(4) or found.get(6) or server.access_ipv4 or server.access_ipv6
            or None)


def _fault(server: Any) -> str:
    fault = server.fault
    if isinstance(fault, Mapping):
        return str(fault.get("message") or "")
    return str(fault or "")


class OpenStackCloud:
    """A provider reached through a clouds.yaml entry."""

    image_timeout: float = 3600.0  # seconds an upload may take to become active

    def __init__(self, name: str, cloud: str, region: str | None = None,
                 clouds_file: Path | None = None, timeout: float = 30,
                 connections: int = 16) -> None:
        self.name = name
        self.connections = connections
        self.cloud = cloud
        self.region = region
        self.clouds_file = clouds_file
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connection: openstack.connection.Connection | None = None
        self._proxies: dict[str, Any] = {}
        self._networks: dict[str, str] = {}  # network name -> id
        self._closed = False

    def __repr__(self) -> str:
        return f"OpenStackCloud({self.name!r}, cloud={self.cloud!r}, region={self.region!r})"

    # ---- plumbing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Every provider call runs inside this: whatever it raises leaves as a CloudError."""
        try:
            yield
        except CloudError:
            raise
        except Exception as exc:
            raise map_error(exc, f"cloud {self.name}: {what}") from exc

    def _service(self, kind: str) -> Any:
        """The sdk's proxy for `kind` (compute, image, network), made once under the lock."""
        proxy = self._proxies.get(kind)
        if proxy is not None:
            return proxy
        with self._lock:
            if self._closed:
                raise CloudError(f"cloud {self.name}: closed")
            if self._connection is None:
                files = [str(self.clouds_file)] if self.clouds_file else None
                config = openstack.config.OpenStackConfig(config_files=files)
                region = config.get_one(self.cloud, region_name=self.region,
                                        api_timeout=self.timeout)
                self._connection = openstack.connection.Connection(config=region)
                # as many kept-alive HTTP connections as the pool has calls in flight
                # (requests keeps 10: more threads would reconnect and log a warning each time)
                adapter = requests.adapters.HTTPAdapter(pool_connections=4,
                                                        pool_maxsize=self.connections)
                for scheme in ("https://", "http://"):
                    self._connection.session.session.mount(scheme, adapter)
            proxy = self._proxies.get(kind)
            if proxy is None:
                proxy = getattr(self._connection, kind)
                self._proxies[kind] = proxy
            return proxy

    def _network_id(self, name: str) -> str:
        with self._lock:
            known = self._networks.get(name)
        if known is not None:
            return known
        network = self._service("network").find_network(name, ignore_missing=False)
        with self._lock:
            self._networks[name] = str(network.id)
        return str(network.id)

    # ---- servers -----------------------------------------------------------------------------

    def create_server(self, name: str, image_id: str, flavor_id: str, network: str | None,
                      key_name: str | None, metadata: Mapping[str, str]) -> str:
        with self._calling(f"create server {name}"):
            compute = self._service("compute")
            args: dict[str, Any] = {"name": name, "image_id": image_id,
                                    "flavor_id": flavor_id, "metadata": dict(metadata)}
            if network:
                args["networks"] = [{"uuid": self._network_id(network)}]
            elif openstack.utils.supports_microversion(compute, "2.37"):
                args["networks"] = "auto"  # required from 2.37 on; earlier ones want none
            if key_name:
                args["key_name"] = key_name
            return str(compute.create_server(**args).id)

    def list_servers(self) -> list[Server]:
        with self._calling("list servers"):
            return [Server(id=str(s.id), name=str(s.name or ""), status=str(s.status or ""),
                           ip=_ip(s), metadata={str(k): str(v) for k, v in
                                                (s.metadata or {}).items()},
                           fault=_fault(s))
                    for s in self._service("compute").servers(details=True)]

    def delete_server(self, server_id: str) -> None:
        with self._calling(f"delete server {server_id}"):
            self._service("compute").delete_server(server_id, ignore_missing=True)

    def console_log(self, server_id: str, lines: int = 200) -> str:
        with self._calling(f"console log of {server_id}"):
            out = self._service("compute").get_server_console_output(server_id, length=lines)
            return str((out or {}).get("output") or "")

    def limits(self) -> Limits:
        with self._calling("limits"):
            a = self._service("compute").get_limits().absolute

            def number(value: Any) -> int:
                return -1 if value is None else int(value)

            return Limits(instances=number(a.instances), cores=number(a.total_cores),
                          ram_mb=number(a.total_ram), instances_used=int(a.instances_used or 0),
                          cores_used=int(a.total_cores_used or 0),
                          ram_mb_used=int(a.total_ram_used or 0))

    # ---- catalog -----------------------------------------------------------------------------

    def flavors(self) -> list[Flavor]:
        with self._calling("list flavors"):
            return [Flavor(id=str(f.id), name=str(f.name), vcpus=int(f.vcpus or 0),
                           ram_mb=int(f.ram or 0), disk_gb=int(f.disk or 0))
                    for f in self._service("compute").flavors(details=True)]

    def images(self) -> list[Image]:
        with self._calling("list images"):
            return [Image(id=str(i.id), name=str(i.name or ""), status=str(i.status or ""))
                    for i in self._service("image").images()]

    def upload_image(self, name: str, path: Path, disk_format: str, container_format: str,
                     meta: Mapping[str, str]) -> str:
        with self._calling(f"upload image {name}"):
            image_api = self._service("image")
            with open(path, "rb") as data:  # streamed: the sdk sends the file object
                image = image_api.create_image(
                    name, data=data, disk_format=disk_format,
                    container_format=container_format, visibility="private",
                    allow_duplicates=True, disable_vendor_agent=False,
                    meta={str(k): str(v) for k, v in meta.items()})
            try:
                image = image_api.wait_for_status(image, "active",
                                                  failures=["killed", "deleted"],
                                                  interval=1, wait=int(self.image_timeout))
            except Exception:
                with contextlib.suppress(Exception):
                    image_api.delete_image(image.id, ignore_missing=True)
                raise
            return str(image.id)

    def delete_image(self, image_id: str) -> None:
        with self._calling(f"delete image {image_id}"):
            self._service("image").delete_image(image_id, ignore_missing=True)

    # ---- ports -------------------------------------------------------------------------------

    def list_ports(self) -> list[Port]:
        with self._calling("list ports"):
            return [Port(id=str(p.id), status=str(p.status or ""),
                         device_owner=str(p.device_owner or ""),
                         device_id=str(p.device_id or ""))
                    for p in self._service("network").ports()]

    def delete_port(self, port_id: str) -> None:
        with self._calling(f"delete port {port_id}"):
            self._service("network").delete_port(port_id, ignore_missing=True)

    # ---- the provider ------------------------------------------------------------------------

    def validate(self) -> None:
        """Authenticate and make one cheap call (the first flavor)."""
        with self._calling("validate"):
            compute = self._service("compute")
            next(iter(compute.flavors(details=False, limit=1)), None)

    def close(self) -> None:
        with self._lock:
            conn, self._connection = self._connection, None
            self._proxies.clear()
            self._closed = True
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
