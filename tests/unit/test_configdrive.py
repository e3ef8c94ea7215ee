"""The config drive image: what cloud-init and glean read back from it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pycdlib
import pytest

from infracloud.agent import configdrive

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0sVBHZq0mXGvm2vUmB2s0kPl8pHPcvnYxUs9lUvB8x me@laptop"


def _meta() -> dict:
    return configdrive.meta_data(uuid="6f1c1b3e-0000-4000-8000-000000000001", name="node-1",
                                 project_id="p1", meta={"nodepool_node_id": "0000001"},
                                 public_keys={"mykey": KEY})


def _net() -> dict:
    return configdrive.network_data("10.1.2.3", 24, "10.1.2.1", "fa:16:3e:11:22:33",
                                    ["10.1.2.1", "9.9.9.9"], network_id="net-1")


def _walk(iso: pycdlib.PyCdlib, **root: str) -> set[str]:
    found: set[str] = set()
    for folder, dirs, files in iso.walk(**root):
        found.update(f"{folder.rstrip('/')}/{n}" for n in [*dirs, *files])
    return found


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "disk.config"
    configdrive.build(path, meta_data=_meta(), network_data=_net(),
                      user_data=b"#cloud-config\nhostname: x\n")
    for version in configdrive.VERSIONS:
        drive = configdrive.read(path, version)
        assert drive.meta_data == _meta()
        assert drive.network_data == _net()
        assert drive.user_data == b"#cloud-config\nhostname: x\n"
    assert configdrive.read(path).meta_data["public_keys"] == {"mykey": KEY}


def test_label_names_and_dated_folder(tmp_path: Path) -> None:
    path = tmp_path / "disk.config"
    configdrive.build(path, meta_data=_meta(), network_data=_net(), user_data=b"hi")
    assert configdrive.label(path) == "config-2"
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().rstrip() == "config-2"
        expected = {"/openstack", "/openstack/latest", "/openstack/2012-08-10"} | {
            f"/openstack/{v}/{f}" for v in ("latest", "2012-08-10")
            for f in ("meta_data.json", "network_data.json", "user_data")}
        assert _walk(iso, rr_path="/") == expected  # Rock Ridge: what Linux mounts show
        assert _walk(iso, joliet_path="/") == expected
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, joliet_path="/openstack/2012-08-10/meta_data.json")
        assert json.loads(out.getvalue())["uuid"] == _meta()["uuid"]
    finally:
        iso.close()


def test_without_user_data_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "disk.config"
    configdrive.build(path, meta_data={"uuid": "a"}, network_data={}, user_data=b"old")
    configdrive.build(path, meta_data={"uuid": "b"}, network_data={}, user_data=None)
    drive = configdrive.read(path)
    assert drive.meta_data == {"uuid": "b"}
    assert drive.user_data is None
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert "/openstack/latest/user_data" not in _walk(iso, rr_path="/")
    finally:
        iso.close()
    assert [p.name for p in path.parent.iterdir()] == ["disk.config"]  # no temp files left


def test_read_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.iso"
    bad.write_bytes(b"not an iso" * 1000)
    with pytest.raises(configdrive.ConfigDriveError):
        configdrive.read(bad)
    with pytest.raises(configdrive.ConfigDriveError):
        configdrive.read(tmp_path / "missing.iso")


def test_meta_data_document() -> None:
    meta = _meta()
    assert meta["uuid"] == "6f1c1b3e-0000-4000-8000-000000000001"
    assert meta["name"] == meta["hostname"] == "node-1"
    assert meta["availability_zone"] == "nova"
    assert meta["project_id"] == "p1"
    assert meta["launch_index"] == 0
    assert meta["meta"] == {"nodepool_node_id": "0000001"}
    assert meta["public_keys"] == {"mykey": KEY}
    assert meta["keys"] == [{"name": "mykey", "type": "ssh", "data": KEY}]
    bare = configdrive.meta_data(uuid="u", name="n", project_id="p", hostname="h.example")
    assert bare["hostname"] == "h.example"
    assert bare["public_keys"] == {} and bare["keys"] == [] and bare["meta"] == {}


def test_network_data_document() -> None:
    net = _net()
    (link,) = net["links"]
    assert link == {"id": link["id"], "type": "phy", "ethernet_mac_address": "fa:16:3e:11:22:33",
                    "mtu": 1500}
    (network,) = net["networks"]
    assert network["type"] == "ipv4" and network["link"] == link["id"]
    assert network["ip_address"] == "10.1.2.3"
    assert network["netmask"] == "255.255.255.0"
    assert network["network_id"] == "net-1"
    assert network["routes"] == [{"network": "0.0.0.0", "netmask": "0.0.0.0",
                                  "gateway": "10.1.2.1"}]
    assert net["services"] == [{"type": "dns", "address": "10.1.2.1"},
                               {"type": "dns", "address": "9.9.9.9"}]
    lone = configdrive.network_data("127.100.0.5", 8, None, "fa:16:3e:00:00:01", ())
    assert lone["networks"][0]["routes"] == []
    assert lone["networks"][0]["netmask"] == "255.0.0.0"
    assert lone["services"] == []
