"""Compute, network and block-storage limits through the `openstack` CLI, openstacksdk, raw
HTTP and nodepool 11's OpenStack adapter, against the demo site: 4 compute hosts with the
sandbox driver, whose servers really answer SSH on loopback addresses."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.nodepool_peer import adapter
from tests.servers import Running, openstack_cli, sdk, ssh_run


def cli(demo: Running, cloud: str, *args: str) -> Any:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", cloud, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "-f" in args and "json" in args else r.stdout


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[asyncssh.SSHKey, Path]:
    private = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path_factory.mktemp("keys") / "id_ed25519.pub"
    path.write_bytes(private.export_public_key())
    return private, path


def test_cli_create_ssh_delete(demo: Running, key: tuple[asyncssh.SSHKey, Path]) -> None:
    private, pub = key
    name = f"k-{uuid.uuid4().hex[:6]}"
    cli(demo, "infracloud", "keypair", "create", "--public-key", str(pub), name)
    server = f"n-{uuid.uuid4().hex[:6]}"
    created = cli(demo, "infracloud", "server", "create", "--flavor", "ci.8g", "--image",
                  "demo", "--key-name", name, "--wait", server, "-f", "json")
    assert created["status"] == "ACTIVE"
    ip = created["accessIPv4"]
    assert demo.owns(ip)
    done = ssh_run(ip, private, "uname -a && echo $HOME && exit 3")
    assert done.exit_status == 3
    assert str(done.stdout).startswith("Linux") and "/home" in str(done.stdout)
    listed = cli(demo, "infracloud", "server", "list", "-f", "json")
    assert {s["Name"]: s["Status"] for s in listed}[server] == "ACTIVE"
    console = cli(demo, "infracloud", "console", "log", "show", server)
    assert server in console
    cli(demo, "infracloud", "server", "delete", "--wait", server)
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "server", "show", server)
    assert r.returncode != 0 and "No Server found" in r.stderr


def test_other_projects_get_404(demo: Running) -> None:
    zuul = sdk(demo.clouds_yaml, "infracloud")
    server = zuul.compute.create_server(name="private-job", flavor_id="ci.small",
                                        image_id=zuul.image.find_image("demo").id)
    ci = sdk(demo.clouds_yaml, "infracloud-ci")
    with demo.http() as c:
        headers = {"X-Auth-Token": ci.auth_token}
        assert c.get(f"/compute/v2.1/servers/{server.id}", headers=headers).status_code == 404
        r = c.delete(f"/compute/v2.1/servers/{server.id}", headers=headers)
        assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404
        listed = c.get("/compute/v2.1/servers/detail", headers=headers).json()["servers"]
        assert server.id not in {s["id"] for s in listed}
        ports = c.get(f"/network/v2.0/ports?device_id={server.id}", headers=headers).json()
        assert ports["ports"] == []
    zuul.compute.delete_server(server)
    zuul.compute.wait_for_delete(server, wait=60)


def test_api_shapes_without_microversion(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    server = conn.compute.create_server(name="shape", flavor_id="ci.small",
                                        image_id=conn.image.find_image("demo").id,
                                        metadata={"a": "1", "nodepool_node_id": "0000000007"})
    conn.compute.wait_for_server(server, wait=60)
    with demo.http() as c:
        headers = {"X-Auth-Token": conn.auth_token}
        body = c.get("/compute/v2.1/servers/detail", headers=headers).json()
        mine = next(s for s in body["servers"] if s["id"] == server.id)
        assert mine["flavor"]["id"] == "ci.small" and "hostId" in mine
        assert mine["metadata"] == {"a": "1", "nodepool_node_id": "0000000007"}
        assert mine["accessIPv4"] and mine["OS-EXT-AZ:availability_zone"] == "nova"
        assert c.get("/compute/v2.1", headers={}).json()["version"]["version"] == "2.1"
        assert c.get("/volume/v3/").status_code == 200
        pid = conn.current_project_id
        lim = c.get(f"/volume/v3/{pid}/limits", headers=headers).json()["limits"]["absolute"]
        assert lim["maxTotalVolumes"] == -1
        assert c.get(f"/volume/v3/{pid}/volumes/detail", headers=headers).json() == {
            "volumes": []}
        nets = c.get("/network/v2.0/networks", headers=headers).json()["networks"]
        assert [n["name"] for n in nets] == ["demo-net"]
        ports = c.get(f"/network/v2.0/ports?device_id={server.id}", headers=headers).json()
        (port,) = ports["ports"]
        assert port["fixed_ips"][0]["ip_address"] == mine["accessIPv4"]
        assert port["device_owner"] == "compute:nova" and port["status"] == "ACTIVE"
        assert c.get("/network/v2.0/floatingips", headers=headers).json() == {
            "floatingips": []}
    second = conn.compute.create_server(name="shape-2", flavor_id="ci.small",
                                        image_id=conn.image.find_image("demo").id)
    with demo.http() as c:
        # two servers at least, one per page: the next link must lead to the other one
        page = c.get("/compute/v2.1/servers/detail?limit=1&name=^shape",
                     headers=headers).json()
        assert [s["id"] for s in page["servers"]] == [second.id]
        (link,) = page["servers_links"]
        assert link["rel"] == "next" and "name=%5Eshape" in link["href"]
        rest = c.get(link["href"].replace(demo.base_url, ""), headers=headers).json()
        assert [s["id"] for s in rest["servers"]] == [server.id]
        assert "servers_links" not in rest
    for s in (server, second):
        conn.compute.delete_server(s)
        conn.compute.wait_for_delete(s, wait=60)


def _advance(sm: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not sm.complete:
        assert time.monotonic() < deadline, "nodepool's state machine did not finish"
        result = sm.advance()
        if sm.complete:
            return result
        time.sleep(0.5)
    return None


def test_nodepool_adapter_full_flow(demo: Running, tmp_path: Path,
                                    key: tuple[asyncssh.SSHKey, Path]) -> None:
    from nodepool import exceptions as npexc
    from nodepool.nodeutils import nodescan

    private, pub = key
    zuul = sdk(demo.clouds_yaml, "infracloud")
    if zuul.compute.find_keypair("nodepool") is None:
        zuul.compute.create_keypair(name="nodepool", public_key=pub.read_text())
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    if admin.compute.find_flavor("ci.huge") is None:
        admin.compute.create_flavor(name="ci.huge", vcpus=500, ram=8192, disk=10)
    labels = [{"name": "ubuntu-noble", "cloud-image": "noble", "flavor-name": "ci.8g",
               "key-name": "nodepool", "console-log": True},
              {"name": "huge", "cloud-image": "noble", "flavor-name": "ci.huge"}]
    np = adapter(demo.clouds_yaml, "infracloud", tmp_path, image="demo", labels=labels)
    log = logging.getLogger("test.nodepool")
    try:
        limits = np.getQuotaLimits()
        assert limits.quota["compute"]["instances"] == 100
        label = np.provider.pools["main"].labels["ubuntu-noble"]
        assert np.getQuotaForLabel(label).quota["compute"]["cores"] == 8
        assert np.getAZs() == ["nova"]
        meta = {"nodepool_node_id": "0000000042", "nodepool_provider_name": "infracloud",
                "nodepool_pool_name": "main"}
        sm = np.getCreateStateMachine("np0000000042", label, None, meta, None, "nova", log)
        instance = _advance(sm)
        assert demo.owns(instance.interface_ip)
        assert instance.metadata["nodepool_node_id"] == "0000000042"
        keys = nodescan(instance.interface_ip, port=22, timeout=30)
        assert any(k.startswith("ssh-ed25519 ") for k in keys)
        done = ssh_run(instance.interface_ip, private, "echo job ran on $(hostname)")
        assert done.exit_status == 0 and "job ran" in str(done.stdout)
        listed = {i.external_id: i for i in np.listInstances()}
        assert sm.external_id in listed
        assert "np0000000042" in np.getConsoleLog(label, sm.external_id)
        dsm = np.getDeleteStateMachine(sm.external_id, log)
        _advance(dsm)
        assert sm.external_id not in {i.external_id for i in np.listInstances()}
        assert zuul.compute.find_server(sm.external_id) is None
        # a server no host can hold: ERROR with a fault, which nodepool reports
        huge = np.provider.pools["main"].labels["huge"]
        bad = np.getCreateStateMachine("np0000000043", huge, None, meta, None, None, log)
        with pytest.raises(Exception) as err:
            _advance(bad)
        assert not isinstance(err.value, npexc.QuotaException)
        assert "No valid host" in str(err.value)  # the SDK carries the fault message
        failed = zuul.compute.find_server("np0000000043")
        assert failed.status == "ERROR" and "No valid host" in failed.fault["message"]
        assert failed.metadata["nodepool_node_id"] == "0000000042"  # found by leak cleanup
        _advance(np.getDeleteStateMachine(failed.id, log))
        # over quota: a 403 nodepool recognises as a quota problem, not a failure
        used = zuul.compute.get_limits().absolute.instances_used
        admin.compute.update_quota_set(zuul.current_project_id, instances=used)
        try:
            over = np.getCreateStateMachine("np0000000044", label, None, meta, None, None,
                                            log)
            with pytest.raises(npexc.QuotaException):
                _advance(over)
        finally:
            admin.compute.update_quota_set(zuul.current_project_id, instances=100)
    finally:
        np.stop()


def test_disabled_host_gets_no_new_servers(demo: Running) -> None:
    admin = ("--os-cloud", "infracloud-admin")
    listed = json.loads(openstack_cli(demo.clouds_yaml, *admin, "compute", "service", "list",
                                      "-f", "json").stdout)
    hosts = sorted(s["Host"] for s in listed)
    assert len(hosts) == 4 and {s["State"] for s in listed} == {"up"}
    keep = hosts[0]
    for host in hosts[1:]:
        r = openstack_cli(demo.clouds_yaml, *admin, "compute", "service", "set", "--disable",
                          "--disable-reason", "disk dying", host, "nova-compute")
        assert r.returncode == 0, r.stderr
    try:
        conn = sdk(demo.clouds_yaml, "infracloud-admin")
        image = conn.image.find_image("demo").id
        made = [conn.compute.create_server(name=f"only-{n}", flavor_id="ci.small",
                                           image_id=image) for n in range(3)]
        placed = {conn.compute.get_server(s.id).compute_host for s in made}
        assert placed == {keep}
        for s in made:
            conn.compute.delete_server(s)
    finally:
        for host in hosts[1:]:
            openstack_cli(demo.clouds_yaml, *admin, "compute", "service", "set", "--enable",
                          host, "nova-compute")
