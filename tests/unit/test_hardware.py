"""The conductor and the node service on SQLite and PostgreSQL, with simulated BMCs: the
provisioning walk, flaky and dead BMCs, fencing and healing, paced power sync, timeouts,
passwords at rest; and the inventory formats."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from infracloud.compute.credentials import HostCredentials
from infracloud.compute.hosts import Registration
from infracloud.compute.servers import CreateRequest
from infracloud.core.clock import FakeClock
from infracloud.core.errors import BadRequest, ConfigError, Conflict, NotFound, Unauthorized
from infracloud.core.secrets import SecretBox
from infracloud.core.settings import ControllerConfig, HardwareConfig
from infracloud.core.states import PROVISION
from infracloud.hardware import inventory
from infracloud.hardware.bmc import BmcAccess
from infracloud.hardware.bmc.fake import FakeBmc, Simulator
from infracloud.hardware.conductor import Conductor
from infracloud.hardware.drain import Drainer
from infracloud.hardware.nodes import TARGETS, NodeService
from infracloud.store import Database
from infracloud.store.models import Host, Instance, Node
from tests.unit.compute_env import ADMIN, IMAGE_ID, Env

PASSWORD = "Bmc-Unit-Secret-77"
FAST = {"bmc_timeout": 0.05, "retries": 8, "backoff": 0.0, "backoff_max": 0.0,
        "fence_after": 8, "power_wait": 5, "power_sync_interval": 60,
        "fault_recovery_interval": 30}


class Site:
    def __init__(self, db: Database, tmp: Path, **hardware: Any) -> None:
        self.clock = FakeClock()
        self.env = Env(db, self.clock)
        self.sim = Simulator()
        self.config = HardwareConfig(**{**FAST, **hardware})
        controller = ControllerConfig(database={"url": "sqlite:///unused.db"},
                                      hardware={"secret_key_file": str(tmp / "bmc.key")})
        self.box = SecretBox(controller)
        self.nodes = NodeService(db, self.config, self.clock, self.box)
        self.credentials = HostCredentials(db, self.box, self.clock, None)
        self.conductor = Conductor(db, self.config, self.clock, self.nodes,
                                   Drainer(db, self.clock, self.env.hosts, self.env.servers),
                                   "https://controller.invalid", "test-conductor",
                                   make=lambda access: FakeBmc(access, self.sim))
        self.db = db

    def add(self, name: str, **options: Any) -> Node:
        return self.nodes.create({"name": name, "driver": "fake", "driver_info": {
            "bmc_address": f"{name}-bmc", "bmc_password": PASSWORD,
            "bmc_options": {"cpus": 16, "memory_mb": 32768, "disk_gb": 400, **options}},
            "properties": {"cpus": 16}})

    def settle(self, done: Callable[[], bool], limit: float = 20) -> None:
        deadline = time.monotonic() + limit
        while not done():
            self.conductor.tick()
            while not self.conductor.idle():
                time.sleep(0.005)
            if time.monotonic() > deadline:
                raise AssertionError("the conductor did not get there")

    def state(self, name: str) -> str:
        return self.nodes.get(name).provision_state

    def walk(self, name: str, target: str, expect: str) -> Node:
        self.nodes.provision(name, target)
        self.settle(lambda: self.state(name) in (expect, "enroll", "inspect failed",
                                                 "clean failed", "deploy failed")
                    and self.nodes.get(name).reserved_until is None)
        return self.nodes.get(name)

    def close(self) -> None:
        self.conductor.stop()


@pytest.fixture
def site(db: Database, tmp_path: Path) -> Iterator[Site]:
    s = Site(db, tmp_path)
    yield s
    s.close()


def to_available(site: Site, name: str) -> None:
    assert site.walk(name, "manage", "manageable").provision_state == "manageable"
    assert site.walk(name, "inspect", "manageable").inspection_finished_at is not None
    assert site.walk(name, "provide", "available").provision_state == "available"


def deploy_and_join(site: Site, name: str) -> tuple[str, str]:
    """Deploys the node, joins it as its agent would; returns its join token and its host's
    credential."""
    node = site.walk(name, "active", "wait call-back")
    assert node.provision_state == "wait call-back" and node.media_id and node.join_secret
    machine = site.sim.machines[f"{name}-bmc"]
    assert machine.power == "on" and machine.boot_device == "cd"
    assert machine.media == f"https://controller.invalid/hardware/v1/media/{node.media_id}.iso"
    found, token = site.nodes.media(node.media_id)
    assert found.id == node.id
    assert site.nodes.joining(token).id == node.id
    site.nodes.joined(token, name)
    host, credential = site.credentials.enrol(site.env.hosts, Registration(
        name=name, driver="fake", vcpus=16, ram_mb=32768, disk_gb=400))
    node = site.nodes.get(name)
    assert node.provision_state == "active" and node.host_name == name
    assert node.media_id is None and node.join_secret is None  # the media is served no more
    for _ in range(2):  # the join token works once
        with pytest.raises(Unauthorized, match="already used"):
            site.nodes.joined(token, name)
    assert site.credentials.authenticate(credential).host_id == host.id
    return token, credential


def test_every_api_target_is_an_event_of_the_table() -> None:
    events = {t.event for t in PROVISION.transitions}
    assert set(TARGETS.values()) <= events
    for state in PROVISION.states.values():
        if not state.stable:
            assert state.timeout, state.name


def test_a_machine_walks_from_enrolment_to_compute_host_and_back(site: Site) -> None:
    site.add("m1")
    to_available(site, "m1")
    node = site.nodes.get("m1")
    assert node.power_state == "power off" and node.properties["memory_mb"] == 32768
    token, credential = deploy_and_join(site, "m1")
    server = site.env.servers.create(ADMIN, CreateRequest(name="s1", flavor_ref="ci.small",
                                                          image_ref=IMAGE_ID))
    assert server.host_id is not None
    # undeploy drains: no new servers, and it waits while a server is there
    site.nodes.provision("m1", "deleted")
    for _ in range(3):
        site.conductor.tick()
        while not site.conductor.idle():
            time.sleep(0.005)
    assert site.state("m1") == "deleting"
    with site.db.read() as s:
        host = s.scalar(select(Host).where(Host.name == "m1"))
        assert host is not None and not host.enabled
    site.env.servers.delete(ADMIN, server.id)
    with site.db.write() as s:  # the agent destroyed it
        inst = s.get(Instance, server.id)
        if inst is not None:
            site.env.servers.remove(s, inst)
    site.clock.advance(6)  # the drain is checked again a few seconds later
    site.settle(lambda: site.state("m1") == "available")
    node = site.nodes.get("m1")
    assert node.power_state == "power off" and node.host_name is None
    assert site.sim.machines["m1-bmc"].media is None
    with site.db.read() as s:
        assert s.scalar(select(Host).where(Host.name == "m1")) is None
    with pytest.raises(Unauthorized):  # its join token died with the join
        site.nodes.joining(token)
    with pytest.raises(Unauthorized):  # and its host's credential with the undeploy
        site.credentials.authenticate(credential)


def test_undeploy_with_evict_deletes_the_servers(site: Site) -> None:
    site.add("m2")
    to_available(site, "m2")
    deploy_and_join(site, "m2")
    server = site.env.servers.create(ADMIN, CreateRequest(name="s2", flavor_ref="ci.small",
                                                          image_ref=IMAGE_ID))
    site.nodes.provision("m2", "deleted", evict=True)
    site.conductor.tick()
    while not site.conductor.idle():
        time.sleep(0.005)
    with site.db.read() as s:
        assert s.get(Instance, server.id).state == "deleting"  # type: ignore[union-attr]


def test_flaky_bmcs_still_get_there(site: Site) -> None:
    for i in range(4):
        site.add(f"flaky{i}", failure_rate=0.3, seed=i)
    for name in [f"flaky{i}" for i in range(4)]:
        site.nodes.provision(name, "manage")
    site.settle(lambda: all(site.state(f"flaky{i}") == "manageable" for i in range(4)))
    calls = sum(site.nodes.get(f"flaky{i}").bmc_calls for i in range(4))
    assert calls > 8  # two calls each when nothing fails; the failures were retried
    assert all(not site.nodes.get(f"flaky{i}").maintenance for i in range(4))


def test_a_bmc_that_never_answers_is_fenced_quickly_and_the_others_go_on(site: Site) -> None:
    site.add("dead", hang=True)
    site.add("alive")
    started = time.monotonic()
    site.nodes.provision("dead", "manage")
    site.nodes.provision("alive", "manage")
    site.settle(lambda: site.state("alive") == "manageable" and
                site.nodes.get("dead").maintenance)
    assert time.monotonic() - started < 10  # 8 calls of 0.05 s, not a hang
    dead = site.nodes.get("dead")
    assert dead.fault == "power failure" and dead.provision_state == "enroll"
    assert "BMC unreachable" in (dead.maintenance_reason or "")
    with pytest.raises(BadRequest, match="maintenance"):
        site.nodes.provision("dead", "inspect")


def test_fencing_a_compute_host_loses_its_servers_and_healing_brings_it_back(
        site: Site) -> None:
    site.add("m3")
    to_available(site, "m3")
    deploy_and_join(site, "m3")
    server = site.env.servers.create(ADMIN, CreateRequest(name="s3", flavor_ref="ci.small",
                                                          image_ref=IMAGE_ID))
    with site.db.write() as s:
        s.get(Instance, server.id).state = "active"  # type: ignore[union-attr]
    site.nodes.update("m3", {("driver_info", "bmc_options"): {"hang": True}}, [])
    site.clock.advance(61)  # its power check is due
    site.settle(lambda: site.nodes.get("m3").maintenance)
    with site.db.read() as s:
        inst = s.get(Instance, server.id)
        host = s.scalar(select(Host).where(Host.name == "m3"))
    assert inst is not None and inst.state == "error" and "fenced" in inst.fault["message"]
    assert host is not None and not host.enabled
    site.nodes.update("m3", {("driver_info", "bmc_options"): {"hang": False}}, [])
    site.clock.advance(31)  # a fenced BMC is probed every fault_recovery_interval
    site.settle(lambda: not site.nodes.get("m3").maintenance)
    node = site.nodes.get("m3")
    assert node.fault is None and "answers again" in (node.last_error or "")
    with site.db.read() as s:
        assert s.scalar(select(Host.enabled).where(Host.name == "m3")) is True


def test_power_sync_is_a_steady_trickle_not_a_storm(db: Database, tmp_path: Path) -> None:
    site = Site(db, tmp_path, power_sync_interval=20)
    try:
        names = [f"n{i:02d}" for i in range(40)]
        for name in names:
            site.add(name)
        with db.write() as s:  # 40 verified machines, never power-checked
            for node in s.scalars(select(Node)):
                node.provision_state = "manageable"
        per_tick = []
        for _ in range(5):
            before = site.sim.calls()
            site.conductor._sync()
            while not site.conductor.idle():
                time.sleep(0.005)
            per_tick.append(site.sim.calls() - before)
            site.clock.advance(1)
        assert per_tick == [2] * 5  # 40 machines over 20 s: 2 a second, never 40 at once
    finally:
        site.close()


def test_a_machine_that_never_calls_back_fails_its_deploy(site: Site) -> None:
    site.add("silent")
    to_available(site, "silent")
    site.walk("silent", "active", "wait call-back")
    site.clock.advance(PROVISION.states["wait call-back"].timeout + 1)  # type: ignore[operator]
    site.settle(lambda: site.state("silent") == "deploy failed")
    node = site.nodes.get("silent")
    assert "Timed out" in (node.last_error or "")
    with pytest.raises(NotFound):
        site.nodes.media("anything")


def test_requests_the_state_machine_refuses(site: Site) -> None:
    site.add("r1")
    with pytest.raises(BadRequest, match="can not be performed"):
        site.nodes.provision("r1", "active")
    with pytest.raises(BadRequest, match="not a supported provision target"):
        site.nodes.provision("r1", "explode")
    with pytest.raises(BadRequest):
        site.nodes.power("r1", "power sideways")
    to_available(site, "r1")
    deploy_and_join(site, "r1")
    with pytest.raises(Conflict, match="maintenance mode"):
        site.nodes.delete("r1")
    with pytest.raises(Conflict):
        site.nodes.create({"name": "r1", "driver": "fake"})
    with pytest.raises(BadRequest, match="driver"):
        site.nodes.create({"name": "r2", "driver": "carrier-pigeon"})


def test_bmc_passwords_are_encrypted_at_rest_with_a_private_key_file(site: Site,
                                                                     tmp_path: Path) -> None:
    node = site.add("p1")
    with site.db.read() as s:
        stored = s.get(Node, node.id)
    assert stored is not None and stored.bmc_password and PASSWORD not in stored.bmc_password
    assert PASSWORD not in json.dumps(stored.driver_info)
    assert site.nodes.access(stored).password == PASSWORD
    assert oct(os.stat(tmp_path / "bmc.key").st_mode & 0o777) == "0o600"
    assert PASSWORD not in repr(site.nodes.access(stored))
    other = ControllerConfig(database={"url": "sqlite:///unused.db"},
                             hardware={"secret_key_file": str(tmp_path / "other.key")})
    with pytest.raises(ConfigError, match="key file"):
        SecretBox(other).decrypt(stored.bmc_password)


# ---- inventories ------------------------------------------------------------------------------


def test_infracloud_inventory_with_defaults() -> None:
    inv = inventory.parse("""
name: lab
defaults:
  bmc: {driver: redfish, username: root, password_env: LAB_BMC, options: {verify_ca: false}}
  expected: {cpus: 24}
machines:
  - {name: a1, bmc: {address: "https://10.0.0.1"}, macs: ["52-54-00-00-00-01"]}
  - {name: a2, bmc: {address: "https://10.0.0.2", options: {system_id: "1"}}, role: controller}
""", "lab.yaml")
    a1, a2 = inv.machines
    assert a1.bmc.username == "root" and a1.expected.cpus == 24 and a1.macs == [
        "52:54:00:00:00:01"]
    assert a2.bmc.options == {"verify_ca": False, "system_id": "1"} and a2.role == "controller"
    os.environ["LAB_BMC"] = "from-env"
    try:
        assert a1.bmc.resolved_password() == "from-env"
    finally:
        del os.environ["LAB_BMC"]
    with pytest.raises(BadRequest, match="LAB_BMC"):
        a1.bmc.resolved_password()


def test_bifrost_inventory() -> None:
    inv = inventory.parse(json.dumps({
        "node1": {"name": "node1", "driver": "ipmi", "ipv4_address": "192.0.2.5",
                  "driver_info": {"power": {"ipmi_address": "192.0.2.105", "ipmi_port": "623",
                                            "ipmi_username": "admin", "ipmi_password": "pw"}},
                  "nics": [{"mac": "52:54:00:F9:32:F6"}],
                  "properties": {"cpu_arch": "x86_64", "ram": "3072", "disk_size": "10",
                                 "cpus": "1"}},
        "node2": {"driver": "redfish", "host_groups": ["baremetal", "controller"],
                  "driver_info": {"redfish_address": "https://192.0.2.106",
                                  "redfish_system_id": "/redfish/v1/Systems/1",
                                  "redfish_username": "root", "redfish_password": "pw2"}}}),
        "/etc/bifrost/baremetal.json", site="lab")
    n1, n2 = inv.machines
    assert inv.name == "lab"
    assert (n1.bmc.driver, n1.bmc.address, n1.macs) == ("ipmi", "192.0.2.105:623",
                                                        ["52:54:00:f9:32:f6"])
    assert (n1.expected.memory_mb, n1.expected.disk_gb, n1.expected.cpus) == (3072, 10, 1)
    assert n2.name == "node2" and n2.role == "controller"
    assert n2.bmc.options == {"system_id": "/redfish/v1/Systems/1"}


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nmachines: [{name: a, bmc: {driver: telnet, address: b}}]", "machines.0.bmc"),
    ("name: x\nmachines: [{name: a, bmc: {driver: fake, address: b}, macs: [zz]}]", "MAC"),
    ("name: x\nmachines:\n - {name: a, bmc: {driver: fake, address: b}}\n"
     " - {name: a, bmc: {driver: fake, address: c}}", "listed twice"),
    ("[1, 2]", "mapping"),
])
def test_inventory_errors_name_the_place(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        inventory.parse(text, "bad.yaml")


def test_shipped_sites_match_seed_001() -> None:
    root = Path(inventory.__file__).parent.parent / "sites"
    vanilla = inventory.load(root / "vanilla.yaml")
    chocolate = inventory.load(root / "chocolate.yaml")
    small = inventory.load(root / "small.yaml")
    assert len(vanilla.machines) == 48 and len(chocolate.machines) == 100
    assert len(small.machines) == 4
    assert {m.expected.cpus for m in vanilla.machines} == {24}
    assert {m.expected.cpus for m in chocolate.machines} == {32}
    for site in (vanilla, chocolate):
        assert {m.expected.memory_mb for m in site.machines} == {96 * 1024}
        assert {m.expected.disk_gb for m in site.machines} == {1843}  # 1.8 TiB
        assert all(m.bmc.driver == "fake" for m in site.machines)


def test_fake_bmc_repr_hides_the_password() -> None:
    access = BmcAccess("fake", "x", "admin", PASSWORD)
    assert PASSWORD not in repr(access) and PASSWORD not in str(access)


def test_the_key_file_is_made_once_when_many_threads_need_it(tmp_path: Path) -> None:
    config = ControllerConfig(database={"url": "sqlite:///unused.db"},
                              hardware={"secret_key_file": str(tmp_path / "k" / "bmc.key")})
    boxes = [SecretBox(config) for _ in range(8)]  # as if several controllers started at once
    with ThreadPoolExecutor(16) as pool:
        tokens = list(pool.map(lambda i: boxes[i % 8].encrypt(f"pw{i}"), range(64)))
    for i, token in enumerate(tokens):
        assert boxes[(i + 3) % 8].decrypt(token) == f"pw{i}"
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["bmc.key"]


def test_two_conductors_on_one_database_never_work_on_the_same_node(site: Site) -> None:
    """Several controllers share a site: each node's work is leased to one conductor."""
    other = Conductor(site.db, site.config, site.clock, site.nodes,
                      Drainer(site.db, site.clock, site.env.hosts, site.env.servers),
                      "https://controller.invalid", "other-conductor",
                      make=lambda access: FakeBmc(access, site.sim))
    try:
        names = [f"shared{i:02d}" for i in range(20)]
        for name in names:
            site.add(name)
            site.nodes.provision(name, "manage")
        deadline = time.monotonic() + 20
        while not all(site.state(n) == "manageable" for n in names):
            assert time.monotonic() < deadline
            with ThreadPoolExecutor(2) as pool:  # both pick work at the same moment
                list(pool.map(lambda c: c.tick(), [site.conductor, other]))
            while not (site.conductor.idle() and other.idle()):
                time.sleep(0.005)
        # verifying is validate() + get_power(): two calls, made by one conductor only
        assert [site.sim.machines[f"{n}-bmc"].calls for n in names] == [2] * 20
        assert {site.nodes.get(n).bmc_calls for n in names} == {2}
    finally:
        other.stop()
