"""The libvirt driver beyond the shared contract, on libvirt's test driver (no VM): the
domain it defines, what marks a domain as ours, the image cache, and the errors that say
what to install. Real boots are in tests/integration/test_libvirt.py."""

from __future__ import annotations

import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from infracloud.agent import configdrive
from infracloud.agent.drivers import libvirt_xml as lx
from infracloud.agent.drivers.base import DriverError
from infracloud.agent.drivers.libvirt import LibvirtDriver
from infracloud.agent.hosts import driver_capacity, make_driver
from infracloud.agent.imagecache import ImageCache, ImageCacheError
from tests import libvirt_env
from tests.unit.test_drivers import blank_image, make_spec

pytestmark = pytest.mark.usefixtures("test_uri")


@pytest.fixture
def test_uri() -> str:
    libvirt_env.require(libvirt_env.TEST_URI)
    return libvirt_env.TEST_URI


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[LibvirtDriver]:
    d = LibvirtDriver(tmp_path / "instances", tmp_path / "images", uri=libvirt_env.TEST_URI)
    yield d
    for instance_id in d.list():
        d.destroy(instance_id)
    d.close()


def domain_of(driver: LibvirtDriver, instance_id: str) -> ET.Element:
    conn = driver._connection()
    return ET.fromstring(conn.lookupByUUIDString(instance_id).XMLDesc())


def test_the_domain_is_the_server(driver: LibvirtDriver, tmp_path: Path) -> None:
    spec = replace(make_spec(tmp_path, name="web-1"), vcpus=2, ram_mb=768, disk_gb=3)
    driver.spawn(spec)
    dom = domain_of(driver, spec.id)
    assert dom.findtext("uuid") == spec.id
    assert dom.findtext("name") == f"infracloud-{spec.id}"
    assert dom.findtext("title") == "web-1"
    assert dom.findtext("vcpu") == "2"
    assert int(dom.findtext("memory") or 0) == 768 * 1024  # KiB
    disks = {d.get("device"): d for d in dom.iter("disk")}
    folder = tmp_path / "instances" / spec.id
    overlay = disks["disk"].find("source")
    assert overlay is not None and overlay.get("file") == str(folder / "disk.qcow2")
    cdrom = disks["cdrom"].find("source")
    assert cdrom is not None and cdrom.get("file") == str(folder / "config.iso")
    log = dom.find("devices/serial/log")
    assert log is not None and log.get("file") == str(folder / "console.log")
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(folder / "disk.qcow2")],
                          capture_output=True, text=True, check=True).stdout
    assert '"virtual-size": 3221225472' in info  # the flavor's root disk
    assert '"backing-filename-format": "raw"' in info


def test_user_mode_config_drive_says_dhcp(driver: LibvirtDriver, tmp_path: Path) -> None:
    """The guest's address is slirp's; the API's address is the SSH forward's."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheTest me@laptop"
    spec = make_spec(tmp_path, name="dhcp", keys={"me": key})
    driver.spawn(spec)
    drive = configdrive.read(tmp_path / "instances" / spec.id / "config.iso")
    assert drive.meta_data["public_keys"] == {"me": key}
    assert drive.meta_data["hostname"] == "dhcp"
    assert [n["type"] for n in drive.network_data["networks"]] == ["ipv4_dhcp"]
    assert drive.network_data["links"][0]["ethernet_mac_address"] == spec.network.mac
    assert spec.network.ip not in str(drive.network_data)


def test_domain_xml_by_mode() -> None:
    marker = lx.Marker(owner="/o", name="n", address="10.0.0.5", network="bridge", image="x")
    common = dict(id=str(uuid.uuid4()), name="n", arch="x86_64", vcpus=1, ram_mb=256,
                  disk=Path("/i/disk.qcow2"), config_drive=Path("/i/config.iso"),
                  console_log=Path("/i/console.log"), mac="fa:16:3e:00:00:05", marker=marker)
    kvm = ET.fromstring(lx.domain_xml(lx.DomainSpec(virt_type="kvm", network="bridge",
                                                    bridge="br-prov", **common)))
    assert kvm.get("type") == "kvm"
    cpu = kvm.find("cpu")
    assert cpu is not None and cpu.get("mode") == "host-passthrough"
    nic = kvm.find("devices/interface")
    assert nic is not None and nic.get("type") == "bridge"
    assert (nic.find("source").get("bridge"), nic.find("mac").get("address")) == (
        "br-prov", "fa:16:3e:00:00:05")
    assert kvm.find(f"{{{lx.QEMU_NS}}}commandline") is None
    tcg = ET.fromstring(lx.domain_xml(lx.DomainSpec(virt_type="qemu", network="user",
                                                    forward=("127.1.2.3", 22), **common)))
    assert tcg.get("type") == "qemu" and tcg.find("cpu") is None
    assert tcg.find("devices/interface") is None
    args = [a.get("value") for a in tcg.iter(f"{{{lx.QEMU_NS}}}arg")]
    assert "user,id=ic0,ipv6=off,restrict=on,hostfwd=tcp:127.1.2.3:22-:22" in args
    outbound = ET.fromstring(lx.domain_xml(lx.DomainSpec(
        virt_type="qemu", network="user", forward=("127.1.2.3", 22), outbound=True, **common)))
    assert "restrict=off" in str([a.get("value") for a in outbound.iter(f"{{{lx.QEMU_NS}}}arg")])
    with pytest.raises(ValueError, match="virt_type"):
        lx.domain_xml(lx.DomainSpec(virt_type="xen", network="user", forward=("127.0.0.2", 22),
                                    **common))


def test_foreign_domains_are_never_touched(driver: LibvirtDriver, tmp_path: Path) -> None:
    """Domains without our marker, and another agent's, are neither listed, destroyed nor
    reused; spawning a server whose UUID a foreign domain has fails."""
    conn = driver._connection()
    foreign_id = str(uuid.uuid4())
    conn.defineXML(f"<domain type='test'><name>not-ours-{foreign_id[:8]}</name>"
                   f"<uuid>{foreign_id}</uuid><memory>65536</memory>"
                   f"<os><type>hvm</type></os></domain>").create()
    other = LibvirtDriver(tmp_path / "other", tmp_path / "images", uri=libvirt_env.TEST_URI)
    theirs = make_spec(tmp_path, name="theirs")
    other.spawn(theirs)
    try:
        mine = make_spec(tmp_path, name="mine")
        driver.spawn(mine)
        assert driver.list() == [mine.id]
        for instance_id in (foreign_id, theirs.id):
            driver.destroy(instance_id)
            assert conn.lookupByUUIDString(instance_id).isActive()
            with pytest.raises(DriverError, match="not this agent's"):
                driver.spawn(replace(mine, id=instance_id))
        assert other.list() == [theirs.id]
    finally:
        other.destroy(theirs.id)
        other.close()
        dom = conn.lookupByUUIDString(foreign_id)
        dom.destroy()
        dom.undefine()


def test_a_stopped_domain_is_started_again(driver: LibvirtDriver, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, name="power-lost")
    driver.spawn(spec)
    dom = driver._connection().lookupByUUIDString(spec.id)
    dom.destroy()  # the host lost power
    assert not dom.isActive()
    driver.spawn(spec)
    assert dom.isActive()
    assert "starting power-lost again" in driver.console(spec.id)


def test_refuses_bad_input(driver: LibvirtDriver, tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    for bad, match in ((replace(spec, id="i-1"), "UUID"),
                       (replace(spec, image=None), "image"),
                       (replace(spec, network=replace(spec.network, mac="fa:16,x")), "MAC"),
                       (replace(spec, network=replace(spec.network, ip="192.0.2.1")),
                        "127.0.0.0/8")):
        with pytest.raises(DriverError, match=match):
            driver.spawn(bad)
    assert driver.list() == []
    with pytest.raises(DriverError, match="bridge name"):
        LibvirtDriver(tmp_path / "i", tmp_path / "c", uri=libvirt_env.TEST_URI, network="bridge")
    with pytest.raises(DriverError, match="network must be"):
        LibvirtDriver(tmp_path / "i", tmp_path / "c", uri=libvirt_env.TEST_URI, network="nat")
    kvm = LibvirtDriver(tmp_path / "i", tmp_path / "c", uri=libvirt_env.TEST_URI,
                        virt_type="kvm")
    with pytest.raises(DriverError, match="cannot run 'kvm' domains"):
        kvm.validate()


def test_make_driver_says_what_to_install(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DriverError) as daemon:
        make_driver("libvirt", tmp_path, libvirt_uri="qemu+unix:///system?socket="
                    + str(tmp_path / "no-such-socket"))
    assert "\n" not in str(daemon.value)
    assert "apt-get install libvirt-daemon-system" in str(daemon.value)
    monkeypatch.setitem(sys.modules, "libvirt", None)  # as if libvirt-python were missing
    with pytest.raises(DriverError) as module:
        make_driver("libvirt", tmp_path)
    assert "\n" not in str(module.value)
    assert "pip install 'infracloud[libvirt]'" in str(module.value)


def test_capacity_from_libvirt(tmp_path: Path) -> None:
    d = make_driver("libvirt", tmp_path, libvirt_uri=libvirt_env.TEST_URI)
    try:
        vcpus, ram_mb, disk_gb = driver_capacity(d, tmp_path)
        assert (vcpus, ram_mb) == (16, 3072)  # what libvirt's test host has
        assert disk_gb >= 0
    finally:
        d.close()


# -- the image cache ------------------------------------------------------------------------


def test_cache_shares_counts_and_cleans(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache", holder="agent-a")
    other = ImageCache(tmp_path / "cache", holder="agent-b")
    one, two = blank_image(tmp_path, 1 << 20), blank_image(tmp_path, 2 << 20)
    a = cache.acquire("s1", one)
    b = cache.acquire("s2", one)
    c = other.acquire("s3", one)
    assert a.path == b.path == c.path and a.format == "raw"
    assert a.path.stat().st_mode & 0o777 == 0o444
    d = cache.acquire("s4", two)
    assert cache.usage() == {a.sha512: 3, d.sha512: 1}
    assert cache.acquire("s4", one).path == a.path  # s4 changed image: `two` is unused
    assert not d.path.exists()
    cache.release("s4")
    assert cache.usage() == {a.sha512: 3}
    cache.prune(keep={"s1"})  # agent-a's s2 is gone; agent-b's s3 is not agent-a's to drop
    assert cache.refs() == ["s1"] and other.refs() == ["s3"]
    cache.release("s1")
    assert a.path.exists()
    other.release("s3")
    assert not a.path.exists()
    assert cache.usage() == {}


def test_cache_verifies_and_refuses(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    base = cache.acquire("s1", blank_image(tmp_path))
    cache.release("s1")
    image = blank_image(tmp_path)
    kept = cache.acquire("s1", image)
    kept.path.chmod(0o644)
    kept.path.write_bytes(b"corrupt" + bytes(100))
    fresh = ImageCache(tmp_path / "cache")  # a new agent process hashes bases again
    with pytest.raises(ImageCacheError, match="corrupt"):
        fresh.acquire("s2", image)
    fresh.release("s1")  # unused now: the corrupt copy goes, the next acquire copies again
    again = fresh.acquire("s2", image)
    assert again.path == base.path and again.path.read_bytes() == image.read_bytes()
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "raw",
                    str(backed)], check=True)
    with pytest.raises(ImageCacheError, match="backing"):
        fresh.acquire("s3", backed)
    vdi = tmp_path / "disk.vdi"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vdi", str(vdi), "1M"], check=True)
    with pytest.raises(ImageCacheError, match="not supported"):
        fresh.acquire("s3", vdi)
    assert fresh.usage() == {again.sha512: 1}
