"""Shared setup of the compute service tests: the services wired as services.py wires
them, on the `db` fixture (SQLite and PostgreSQL), with a FakeClock."""


from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from infracloud.compute.flavors import FlavorService
from infracloud.compute.hosts import HostService, Registration
from infracloud.compute.keypairs import KeypairService
from infracloud.compute.quotas import Quotas
from infracloud.compute.servers import CreateRequest, ServerService
from infracloud.core.clock import FakeClock
from infracloud.core.context import Caller
from infracloud.core.errors import NotFound
from infracloud.core.settings import ComputeConfig, ComputeQuotaConfig
from infracloud.network.service import NetworkService
from infracloud.store import Database
from infracloud.store.models import Host, Instance, Port

ZUUL = Caller("u-zuul", "p-zuul", frozenset({"member", "reader"}))
CI = Caller("u-ci", "p-ci", frozenset({"member", "reader"}))
ADMIN = Caller("u-admin", "p-admin", frozenset({"admin", "member", "reader"}))
UNLIMITED = ComputeQuotaConfig(instances=-1, cores=-1, ram_mb=-1)
IMAGE_ID = "11111111-2222-3333-4444-555555555555"
BIG = {"vcpus": 40, "ram_mb": 40960, "disk_gb": 400}  # room for 5 ci.8g (8 vCPU, 8 GiB, 80 GB)


@dataclass
class FakeImage:
    id: str
    status: str = "active"
    min_ram: int = 0
    min_disk: int = 0


class Env:
    """The compute services as services.py wires them, with a fake image lookup and a notify
    that records host ids."""

    def __init__(self, db: Database, clock: FakeClock, config: ComputeConfig | None = None
                 ) -> None:
        self.db, self.clock = db, clock
        self.config = config or ComputeConfig(quota=UNLIMITED)
        self.images: dict[str, FakeImage] = {IMAGE_ID: FakeImage(IMAGE_ID)}
        self.notified: list[str] = []
        self.flavors = FlavorService(db, clock)
        self.flavors.ensure(self.config.flavors)
        self.keypairs = KeypairService(db, clock, self.config.quota.key_pairs)
        self.quotas = Quotas(db, self.config.quota)
        self.restart()
        self.hosts = HostService(db, self.config, clock, self.servers, self.notified.append)

    def restart(self) -> None:
        """A new controller on the same database: fresh network and server services."""
        self.network = NetworkService(self.db, self.config.network, self.clock,
                                      self.quotas.port_limit)
        self.network.ensure()
        self.servers = ServerService(self.db, self.config, self.clock, self.flavors,
                                     self.keypairs, self.quotas, self.network, self.find_image,
                                     self.notified.append)
        if hasattr(self, "hosts"):
            self.hosts.servers = self.servers

    def find_image(self, caller: Caller, image_id: str) -> FakeImage:
        image = self.images.get(image_id)
        if image is None:
            raise NotFound(f"Image {image_id} could not be found.")
        return image

    def host(self, name: str, zone: str = "nova", **kw: int) -> Host:
        size = {**BIG, **kw}
        return self.hosts.register(Registration(name=name, driver="fake",
                                                availability_zone=zone, **size))

    def boot(self, caller: Caller = ZUUL, name: str = "n", flavor: str = "ci.8g",
             **kw: Any) -> Instance:
        kw.setdefault("image_ref", IMAGE_ID)
        return self.servers.create(caller, CreateRequest(name=name, flavor_ref=flavor, **kw))

    def host_row(self, name: str) -> Host:
        return next(h for h in self.hosts.list_hosts() if h.name == name)

    def state(self, server_id: str) -> Instance:
        return self.servers.get(ADMIN, server_id)

    def ports(self) -> list[Port]:
        return self.network.ports(ADMIN, {})

    def instances(self) -> list[Instance]:
        rows, _ = self.servers.list_servers(ADMIN, all_projects=True)
        return rows

    def beat(self, *hosts: Host) -> None:
        for h in hosts:
            self.hosts.heartbeat(h.id)


@pytest.fixture(name="env")
def env_fixture(db: Database, clock: FakeClock) -> Env:
    return Env(db, clock)


def in_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) in n threads that start together; results or exceptions, in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return results


def assert_within_capacity(env: Env) -> None:
    for h in env.hosts.list_hosts():
        assert 0 <= h.used_vcpus <= h.vcpus * h.cpu_ratio - h.reserved_vcpus, h.name
        assert 0 <= h.used_ram_mb <= h.ram_mb * h.ram_ratio - h.reserved_ram_mb, h.name
        assert 0 <= h.used_disk_gb <= h.disk_gb * h.disk_ratio - h.reserved_disk_gb, h.name


def assert_claims_match(env: Env) -> None:
    """Every host's claims are the sum of the servers placed on it."""
    placed: dict[str, list[int]] = {}
    for inst in env.instances():
        if inst.host_id:
            sums = placed.setdefault(inst.host_id, [0, 0, 0])
            sums[0] += inst.vcpus
            sums[1] += inst.ram_mb
            sums[2] += inst.disk_gb
    for h in env.hosts.list_hosts():
        assert [h.used_vcpus, h.used_ram_mb, h.used_disk_gb] == placed.get(h.id, [0, 0, 0])


def assert_addresses_unique(env: Env) -> list[Port]:
    ports = env.ports()
    subnet = env.network.subnet
    assert subnet is not None
    ips = [p.ip_address for p in ports]
    assert len(ips) == len(set(ips)), [ip for ip, n in Counter(ips).items() if n > 1]
    for p in ports:
        assert subnet.pool_start <= int(ipaddress.ip_address(p.ip_address)) <= subnet.pool_end
        assert p.ip_int == int(ipaddress.ip_address(p.ip_address))
    by_device = {p.device_id: p for p in ports}
    assert len(by_device) == len(ports), "one port per server"
    live = {i.id: i for i in env.instances() if i.ip_address}
    assert set(by_device) == set(live)
    for sid, inst in live.items():
        assert by_device[sid].ip_address == inst.ip_address
        assert by_device[sid].mac_address == inst.mac_address
    return ports


def gone(env: Env, server_id: str) -> bool:
    try:
        env.state(server_id)
    except NotFound:
        return True
    return False


