"""The pool's `Cloud` contract, one suite run against both implementations: the in-memory
`FakeCloud` the engine's unit tests use, and `OpenStackCloud` (openstacksdk) against a real
infracloud demo site (one compute host, fake agent driver), so the fake cannot drift from
what a real cloud does. Also: the error mapping, and `POST /v2.0/ports`."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml
from openstack import exceptions as os_exc

from infracloud.pool.cloud import Cloud, CloudError, CloudUnreachable, QuotaExceeded, Server
from infracloud.pool.fakecloud import FakeCloud
from infracloud.pool.openstack import OpenStackCloud, map_error
from tests.servers import Running, free_port, sdk, start_demo, wait_for

T = TypeVar("T")
NETWORK = "demo-net"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_demo(Path(tmp_path_factory.mktemp("pool-site")), "--site", "none",
                         "--hosts", "1", "--driver", "fake")
    yield running
    assert running.stop() == 0, "".join(running.lines)


@dataclass
class Harness:
    """A cloud under test and what the suite does behind its back."""

    cloud: Cloud
    add_port: Callable[[], str]  # a leaked port: DOWN, compute:nova, nobody's device
    set_instances: Callable[[int], None]  # the project's instance quota
    unreachable: Callable[[], Cloud]  # the same cloud, not answering


def fake_harness() -> Harness:
    cloud = FakeCloud("fake")

    def unreachable() -> Cloud:
        down = FakeCloud("fake-down")
        down.unreachable = True
        return down

    return Harness(cloud, lambda: cloud.add_port(device_id=str(uuid.uuid4())),
                   lambda n: setattr(cloud, "instances", n),
                   unreachable)


def openstack_harness(site: Running, tmp: Path) -> Harness:
    cloud = OpenStackCloud("infracloud", "infracloud-ci", clouds_file=site.clouds_yaml)
    admin = sdk(site.clouds_yaml, "infracloud-admin")
    project_id = admin.identity.find_project("ci", ignore_missing=False).id
    member = sdk(site.clouds_yaml, "infracloud-ci")

    def add_port() -> str:
        network = member.network.find_network(NETWORK, ignore_missing=False)
        return str(member.network.create_port(network_id=network.id, device_owner="compute:nova",
                                              device_id=str(uuid.uuid4())).id)

    def unreachable() -> Cloud:
        clouds = yaml.safe_load(site.clouds_yaml.read_text())
        entry = clouds["clouds"]["infracloud-ci"]
        entry["auth"]["auth_url"] = f"https://127.0.0.1:{free_port()}/identity"
        path = tmp / "down.yaml"
        path.write_text(yaml.safe_dump({"clouds": {"down": entry}}))
        return OpenStackCloud("down", "down", clouds_file=path, timeout=5)

    return Harness(cloud, add_port,
                   lambda n: admin.compute.update_quota_set(project_id, instances=n),
                   unreachable)


@pytest.fixture(scope="module", params=["fake", "openstack"])
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Harness]:
    if request.param == "fake":
        h = fake_harness()
    else:
        site = request.getfixturevalue("site")
        h = openstack_harness(site, tmp_path_factory.mktemp("clouds"))
    yield h
    h.cloud.close()


def demo_image(cloud: Cloud) -> str:
    (image,) = [i for i in cloud.images() if i.name == "demo"]
    return image.id


def find(cloud: Cloud, server_id: str) -> Server | None:
    return next((s for s in cloud.list_servers() if s.id == server_id), None)


def gone(cloud: Cloud, server_id: str) -> None:
    wait_for(f"server {server_id} deleted", lambda: find(cloud, server_id) is None)


# ---- the contract ----------------------------------------------------------------------------

def test_catalog(harness: Harness) -> None:
    cloud = harness.cloud
    cloud.validate()
    flavors = {f.name: f for f in cloud.flavors()}
    assert {"ci.8g", "ci.small"} <= set(flavors)
    small = flavors["ci.small"]
    assert (small.vcpus, small.ram_mb, small.disk_gb) == (1, 1024, 10)
    assert (flavors["ci.8g"].vcpus, flavors["ci.8g"].ram_mb) == (8, 8192)
    demo = [i for i in cloud.images() if i.name == "demo"]
    assert len(demo) == 1 and demo[0].status == "active"


def test_server_lifecycle(harness: Harness) -> None:
    cloud = harness.cloud
    name = f"pool-{uuid.uuid4().hex[:8]}"
    before = cloud.limits()
    meta = {"nodepool_node_id": "0000000042", "nodepool_provider_name": "infracloud"}
    server_id = cloud.create_server(name, demo_image(cloud), "ci.small", NETWORK, None, meta)
    listed = find(cloud, server_id)
    assert listed is not None and listed.name == name and dict(listed.metadata) == meta
    assert listed.status in ("BUILD", "ACTIVE")

    active = wait_for("ACTIVE", lambda: (s := find(cloud, server_id)) and s.status == "ACTIVE"
                      and s)
    assert active.ip and active.fault == ""
    used = cloud.limits()
    assert used.instances_used == before.instances_used + 1
    assert used.cores_used == before.cores_used + 1
    assert used.ram_mb_used == before.ram_mb_used + 1024
    assert isinstance(cloud.console_log(server_id, 20), str)

    cloud.delete_server(server_id)
    gone(cloud, server_id)
    cloud.delete_server(server_id)  # already gone: fine
    wait_for("usage back", lambda: cloud.limits().instances_used == before.instances_used)


def test_instance_quota(harness: Harness) -> None:
    cloud = harness.cloud
    image = demo_image(cloud)
    limits = cloud.limits()
    used = limits.instances_used
    harness.set_instances(used + 1)
    made: list[str] = []
    try:
        assert cloud.limits().instances == used + 1
        made.append(cloud.create_server("quota-1", image, "ci.small", None, None, {}))
        with pytest.raises(QuotaExceeded, match=r"(?i)quota exceeded for instances"):
            cloud.create_server("quota-2", image, "ci.small", None, None, {})
    finally:
        harness.set_instances(limits.instances)
        for server_id in made:
            cloud.delete_server(server_id)
    assert cloud.limits().instances == limits.instances
    for server_id in made:
        gone(cloud, server_id)


def test_leaked_port(harness: Harness) -> None:
    cloud = harness.cloud
    port_id = harness.add_port()
    (port,) = [p for p in cloud.list_ports() if p.id == port_id]
    assert (port.status, port.device_owner) == ("DOWN", "compute:nova") and port.device_id != ""
    cloud.delete_port(port_id)
    assert port_id not in {p.id for p in cloud.list_ports()}
    cloud.delete_port(port_id)  # already gone: fine


def test_upload_and_delete_image(harness: Harness, tmp_path: Path) -> None:
    cloud = harness.cloud
    path = tmp_path / "disk.raw"
    path.write_bytes(b"\0" * 65536 + b"pool")
    name = f"pool-image-{uuid.uuid4().hex[:6]}"
    image_id = cloud.upload_image(name, path, "raw", "bare", {"nodepool_build": "1"})
    (image,) = [i for i in cloud.images() if i.id == image_id]
    assert (image.name, image.status) == (name, "active")
    cloud.delete_image(image_id)
    assert image_id not in {i.id for i in cloud.images()}
    cloud.delete_image(image_id)  # already gone: fine


def test_unreachable_cloud(harness: Harness) -> None:
    down = harness.unreachable()
    calls: list[Callable[[], Any]] = [
        down.validate, down.list_servers, down.limits, down.flavors, down.list_ports,
        lambda: down.create_server("x", "image", "ci.small", None, None, {}),
        lambda: down.delete_server(str(uuid.uuid4()))]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(CloudUnreachable) as caught:
            call()
        assert time.monotonic() - started < 5
        assert "\n" not in caught.value.message
    down.close()


def test_many_threads_share_one_cloud(harness: Harness) -> None:
    """The first calls, from many threads at once, share the connection made lazily."""
    cloud = harness.cloud
    if isinstance(cloud, OpenStackCloud):
        cloud = OpenStackCloud("fresh", cloud.cloud, clouds_file=cloud.clouds_file)
    calls = [cloud.flavors, cloud.list_servers, cloud.images, cloud.list_ports, cloud.limits]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: calls[i % len(calls)](), range(40)))
    assert all(isinstance(r, list) for i, r in enumerate(results) if i % len(calls) != 4)
    if cloud is not harness.cloud:
        cloud.close()
        with pytest.raises(CloudError, match="closed"):
            cloud.flavors()


# ---- FakeCloud only: its knobs and helpers -----------------------------------------------------

def test_fake_builds_for_a_set_number_of_polls() -> None:
    cloud = FakeCloud(build_polls=2, ip_prefix="127.201.")
    image = demo_image(cloud)
    first = cloud.create_server("a", image, "ci.8g", "any-net", "key", {"k": "v"})
    assert [s.status for s in cloud.list_servers()] == ["BUILD"]
    assert [s.status for s in cloud.list_servers()] == ["BUILD"]
    (active,) = cloud.list_servers()
    assert (active.status, active.ip) == ("ACTIVE", "127.201.1")
    assert cloud.networks == ["any-net"] and cloud.calls["list_servers"] == 3
    cloud.error_fault = "No valid host was found. There are not enough hosts available."
    second = cloud.create_server("b", image, "ci.small", None, None, {})
    for _ in range(3):
        cloud.list_servers()
    errored = cloud.servers_by_id()[second]
    assert (errored.status, errored.ip, errored.fault) == ("ERROR", None,
                                                           cloud.error_fault)
    assert cloud.servers_by_id()[first].status == "ACTIVE"
    cloud.console = "line 1\nline 2\nline 3\n"
    assert cloud.console_log(first, 2) == "line 2\nline 3\n"


def test_fake_quota_knobs_and_helpers(tmp_path: Path) -> None:
    cloud = FakeCloud(cores=8, images=["a", "b"])
    image = cloud.images()[0].id
    cloud.add_server("behind-the-back", {"x": "1"}, flavor_id="ci.small")
    with pytest.raises(QuotaExceeded, match="Quota exceeded for cores: Requested 8, but "
                       "already used 1 of 8 cores"):
        cloud.create_server("big", image, "ci.8g", None, None, {})
    assert cloud.limits().cores_used == 1
    cloud.fail_create = "Image is broken"
    with pytest.raises(CloudError, match=r"^Image is broken$") as caught:
        cloud.create_server("x", image, "ci.small", None, None, {})
    assert type(caught.value) is CloudError
    cloud.fail_create = None
    cloud.unreachable = True
    with pytest.raises(CloudUnreachable):
        cloud.images()
    cloud.unreachable = False
    path = tmp_path / "img"
    path.write_bytes(b"x")
    uploaded = cloud.upload_image("c", path, "raw", "bare", {"m": "1"})
    assert cloud.uploads == {"c": path} and cloud.image_meta(uploaded) == {"m": "1"}
    assert sorted(i.name for i in cloud.images()) == ["a", "b", "c"]
    cloud.delete_server("nope")
    cloud.delete_port("nope")
    assert cloud.deleted_servers == ["nope"] and cloud.deleted_ports == ["nope"]
    assert cloud.calls["images"] == 3 and cloud.calls["create_server"] == 2


# ---- OpenStackCloud only -----------------------------------------------------------------


class _Answer503(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"Service down\n")

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


def test_a_proxy_answering_503_is_unreachable(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer503)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = tmp_path / "clouds.yaml"
        path.write_text(yaml.safe_dump({"clouds": {"proxied": {
            "auth": {"auth_url": f"http://127.0.0.1:{server.server_port}/identity",
                     "username": "u", "password": "p", "project_name": "p",
                     "user_domain_name": "Default", "project_domain_name": "Default"},
            "identity_api_version": 3}}}))
        cloud = OpenStackCloud("proxied", "proxied", clouds_file=path, timeout=5)
        with pytest.raises(CloudUnreachable):
            cloud.validate()
        cloud.close()
    finally:
        server.shutdown()
        server.server_close()


def _http_error(status: int, message: str) -> os_exc.HttpException:
    response = requests.Response()
    response.status_code = status
    response.url = "https://cloud.example/compute/v2.1/servers"
    return os_exc.HttpException(message=message, response=response, details=message)


@pytest.mark.parametrize(("status", "message", "kind"), [
    (403, "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances",
     QuotaExceeded),
    (413, "Maximum number of ports exceeded (quota)", QuotaExceeded),
    (403, "Policy doesn't allow os_compute_api:servers:create", CloudError),
    (400, "Invalid imageRef provided.\nSecond line", CloudError),
    (500, "oops", CloudError),
    (502, "Bad Gateway", CloudUnreachable),
    (503, "Service Unavailable", CloudUnreachable),
    (504, "Gateway Timeout", CloudUnreachable),
])
def test_error_mapping(status: int, message: str, kind: type[CloudError]) -> None:
    mapped = map_error(_http_error(status, message), "cloud c: create server x")
    assert type(mapped) is kind
    assert f"HTTP {status}" in mapped.message and "\n" not in mapped.message
    assert mapped.message.startswith("cloud c: create server x: ")


def test_error_mapping_of_transport_failures() -> None:
    from keystoneauth1 import exceptions as ksa_exc

    for exc in (ksa_exc.ConnectFailure("refused"), ksa_exc.ConnectTimeout("slow"),
                ksa_exc.DiscoveryFailure("no versions")):
        assert type(map_error(exc, "c")) is CloudUnreachable
    assert type(map_error(os_exc.ResourceTimeout("waited"), "c")) is CloudError
    assert type(map_error(ValueError("bad json"), "c")) is CloudError


# ---- POST /v2.0/ports on infracloud -----------------------------------------------------------

def test_port_create_api(site: Running) -> None:
    member = sdk(site.clouds_yaml, "infracloud")
    network = member.network.find_network(NETWORK, ignore_missing=False)
    with site.http() as c:
        headers = {"X-Auth-Token": member.auth_token}
        made = c.post("/network/v2.0/ports", headers=headers, json={"port": {
            "network_id": network.id, "name": "ignored", "admin_state_up": True}})
        assert made.status_code == 201, made.text
        port = made.json()["port"]
        assert port["status"] == "DOWN" and port["device_id"] == "" and port["device_owner"] == ""
        assert port["project_id"] == member.current_project_id
        assert site.owns(port["fixed_ips"][0]["ip_address"])
        assert c.get(f"/network/v2.0/ports/{port['id']}", headers=headers).status_code == 200
        for body, status in (({"port": {"network_id": str(uuid.uuid4())}}, 404),
                             ({"port": {}}, 400), ({"ports": {}}, 400), ([], 400),
                             ({"port": {"network_id": network.id, "device_id": 7}}, 400),
                             ({"port": {"network_id": network.id, "admin_state_up": "x"}}, 400),
                             ({"port": {"network_id": network.id, "fixed_ips": []}}, 400)):
            r = c.post("/network/v2.0/ports", headers=headers, json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["NeutronError"]["message"]
        r = c.post("/network/v2.0/ports", headers=headers, content=b"{not json")
        assert r.status_code == 400 and "NeutronError" in r.json()
        assert c.post("/network/v2.0/ports", json={"port": {}}).status_code == 401
        assert c.delete(f"/network/v2.0/ports/{port['id']}", headers=headers).status_code == 204
