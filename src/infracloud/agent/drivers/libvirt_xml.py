"""The libvirt domain XML of an infracloud server, and the metadata that marks a domain as
ours. Pure functions (no libvirt import), so they are tested without a hypervisor.

A server's domain: UUID = the server's id (as nova does), name `infracloud-<id>`, title the
server's name; vCPUs and RAM from the flavor; a qcow2 overlay as `vda` (virtio); the config
drive as an IDE cdrom; the serial console logged to a file (what the console API reads) and
kept as a pty for `virsh console`; a virtio RNG. The NIC is either

- `user`: QEMU user-mode networking (slirp) with the guest's SSH port forwarded from the
  server's own loopback address (`hostfwd`), passed on `qemu:commandline` because Debian 12's
  libvirt cannot forward ports for `<interface type='user'>` (passt is too new for it).
  `restrict=on` unless `outbound`: the guest cannot open connections at all, so not to the
  host's own loopback services either (slirp shows them to the guest as 10.0.2.2); or
- `bridge`: a tap on the host's bridge (a real site's provider network), with the port's MAC.

`<metadata>` holds an `infracloud:instance` element naming the owner (the agent's instance
directory, so two agents on one libvirtd never touch each other's domains) and what the
server was made from; a domain without it is not ours."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

NS = "http://infracloud.dev/xmlns/libvirt/instance/1"
PREFIX = "infracloud"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NETWORK_MODES = ("user", "bridge")
VIRT_TYPES = ("kvm", "qemu", "test")  # test: libvirt's test:///default, for the fast suite
USER_NIC_SLOT = "0x10"  # a PCI slot libvirt's own devices never take


@dataclass(frozen=True)
class Marker:
    """What `<metadata>` records about one of our domains."""

    owner: str
    name: str
    address: str
    network: str
    image: str  # sha512 of the base image


@dataclass(frozen=True)
class DomainSpec:
    id: str
    name: str
    virt_type: str
    arch: str
    vcpus: int
    ram_mb: int
    disk: Path  # the qcow2 overlay
    config_drive: Path
    console_log: Path
    network: str  # one of NETWORK_MODES
    mac: str
    marker: Marker
    forward: tuple[str, int] | None = None  # user mode: (host address, host port) -> guest :22
    outbound: bool = False  # user mode: the guest may open connections (host loopback too)
    bridge: str | None = None  # bridge mode: the bridge's name


def domain_name(instance_id: str) -> str:
    return f"infracloud-{instance_id}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def metadata_xml(marker: Marker) -> str:
    """The `infracloud:instance` element (as libvirt's metadata API takes it)."""
    root = ET.Element(f"{{{NS}}}instance")
    for key in ("owner", "name", "address", "network", "image"):
        _sub(root, f"{{{NS}}}{key}", getattr(marker, key))
    ET.register_namespace(PREFIX, NS)
    return ET.tostring(root, encoding="unicode")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_metadata(text: str) -> Marker | None:
    """The marker from the element libvirt hands back for our namespace (libvirt drops the
    namespace from it), None when it is broken."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    if _local(root.tag) != "instance":
        return None
    values = dict.fromkeys(("owner", "name", "address", "network", "image"), "")
    for child in root:
        if _local(child.tag) in values:
            values[_local(child.tag)] = child.text or ""
    return Marker(**values) if values["owner"] else None


def domain_xml(spec: DomainSpec) -> str:
    if spec.virt_type not in VIRT_TYPES:
        raise ValueError(f"virt_type must be one of {', '.join(VIRT_TYPES)}, "
                         f"not {spec.virt_type!r}")
    if spec.network not in NETWORK_MODES:
        raise ValueError(f"network must be one of {', '.join(NETWORK_MODES)}, "
                         f"not {spec.network!r}")
    ET.register_namespace(PREFIX, NS)
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", type=spec.virt_type)
    _sub(dom, "name", domain_name(spec.id))
    _sub(dom, "uuid", spec.id)
    _sub(dom, "title", spec.name)
    meta = _sub(dom, "metadata")
    meta.append(ET.fromstring(metadata_xml(spec.marker)))
    _sub(dom, "memory", str(spec.ram_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_el = _sub(dom, "os")
    if spec.virt_type == "test":
        _sub(os_el, "type", "hvm", arch=spec.arch)
    else:
        _sub(os_el, "type", "hvm", arch=spec.arch, machine="pc")
    _sub(os_el, "boot", dev="hd")
    _sub(_sub(dom, "features"), "acpi")
    if spec.virt_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    dev = _sub(dom, "devices")
    disk = _sub(dev, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=str(spec.disk))
    _sub(disk, "target", dev="vda", bus="virtio")
    cd = _sub(dev, "disk", type="file", device="cdrom")
    _sub(cd, "driver", name="qemu", type="raw")
    _sub(cd, "source", file=str(spec.config_drive))
    _sub(cd, "target", dev="hdd", bus="ide")
    _sub(cd, "readonly")
    if spec.network == "bridge":
        if not spec.bridge:
            raise ValueError("bridge networking needs the bridge's name")
        nic = _sub(dev, "interface", type="bridge")
        _sub(nic, "source", bridge=spec.bridge)
        _sub(nic, "mac", address=spec.mac)
        _sub(nic, "model", type="virtio")
    serial = _sub(dev, "serial", type="pty")
    _sub(serial, "log", file=str(spec.console_log), append="off")
    _sub(serial, "target", port="0")
    console = _sub(dev, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if spec.virt_type != "test":
        rng = _sub(dev, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
    if spec.network == "user":
        if spec.forward is None:
            raise ValueError("user networking needs the address to forward SSH from")
        host, port = spec.forward
        restrict = "off" if spec.outbound else "on"
        args = ["-netdev", f"user,id=ic0,ipv6=off,restrict={restrict},"
                f"hostfwd=tcp:{host}:{port}-:22",
                "-device", f"virtio-net-pci,netdev=ic0,mac={spec.mac},addr={USER_NIC_SLOT}"]
        cmdline = _sub(dom, f"{{{QEMU_NS}}}commandline")
        for arg in args:
            _sub(cmdline, f"{{{QEMU_NS}}}arg", value=arg)
    return ET.tostring(dom, encoding="unicode")

