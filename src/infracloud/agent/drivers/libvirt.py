"""The libvirt driver: a server is a real virtual machine (KVM where it works, QEMU's TCG
where it does not), so nothing of the host is visible inside it.

Per server, under `instance_dir/<id>/`: `disk.qcow2` (an overlay of the image's cached base,
sized to the flavor's root disk; see agent/imagecache.py), `config.iso` (the config drive,
attached as a cdrom), `console.log` (the serial console, written by virtlogd), `boot.log`
(what the driver did, shown above the serial console by `console`) and `instance.json`. The
domain's UUID is the server's id; its `<metadata>` marks it as this agent's (libvirt_xml.py).

Networking is a setting per host:
- `user`: user-mode networking; the guest's SSH is forwarded from the server's own loopback
  address (port `ssh_port`, 22 by default), so the address in the API answers, exactly as
  with the sandbox. The guest's own address is slirp's (DHCP), so its config drive says
  `ipv4_dhcp`. Binding port 22 needs QEMU to run as root (a test host's setting). The guest
  opens no connections (slirp's restrict=on: the host's loopback services stay out of its
  reach) unless `user_outbound`.
- `bridge`: a tap on `bridge` (the provider network); the MAC and address come from the
  port, the guest configures itself from network_data.json.

A server is ACTIVE once its domain runs: readiness of the guest's SSH is the pool's check
(user-mode networking accepts TCP before the guest listens). The agent's restart leaves the
domains running: `list` finds them by their marker and `spawn` of a running one adopts it.
Domains without our marker (or with another agent's) are never touched."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from infracloud.agent import configdrive
from infracloud.agent.drivers import libvirt_xml as lx
from infracloud.agent.drivers.base import DriverError, InstanceSpec, tail_lines
from infracloud.agent.imagecache import ImageCache, ImageCacheError, make_overlay, qemu_img

INSTALL_MODULE = ("the libvirt driver needs libvirt-python: pip install 'infracloud[libvirt]' "
                  "(it builds from source: apt-get install libvirt-dev pkg-config gcc "
                  "python3-dev)")
INSTALL_DAEMON = ("apt-get install libvirt-daemon-system qemu-system-x86 qemu-utils, then "
                  "start libvirtd")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_BRIDGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
# 64 KiB of firmware whose reset vector writes 0x2a to port 0xf4 (QEMU's isa-debug-exit,
# which then exits with status 0x2a * 2 + 1): proof that a vCPU really runs
_PROBE_CODE = bytes([0xB0, 0x2A, 0xE6, 0xF4, 0xF4])  # mov al,0x2a; out 0xf4,al; hlt
_PROBE_EXIT = 0x2A * 2 + 1


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_libvirt() -> ModuleType:
    """The libvirt module, quiet (libvirt prints every error to stderr by default)."""
    try:
        import libvirt
    except ImportError as e:
        raise DriverError(INSTALL_MODULE) from e
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def kvm_works(emulator: str, timeout: float = 20) -> bool:
    """Whether a KVM vCPU with the host's CPU model really runs: /dev/kvm opening is not
    enough (nested or paravirtual hosts refuse MSRs when the first vCPU starts)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="infracloud-kvm-probe-") as tmp:
        firmware = bytearray(65536)
        firmware[-16:-16 + len(_PROBE_CODE)] = _PROBE_CODE
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(bytes(firmware))
        try:
            done = subprocess.run(
                [emulator, "-accel", "kvm", "-cpu", "host", "-nodefaults", "-display", "none",
                 "-m", "16", "-no-reboot", "-bios", str(bios),
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
                capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == _PROBE_EXIT


def _valid_id(instance_id: str) -> str | None:
    """The id if it is a canonical UUID (a domain's UUID is the server's id), else None."""
    try:
        return instance_id if str(uuid.UUID(instance_id)) == instance_id else None
    except (ValueError, AttributeError, TypeError):
        return None


class LibvirtDriver:
    name = "libvirt"
    needs_image = True

    def __init__(self, instance_dir: Path, cache_dir: Path, *,
                 uri: str = "qemu:///system", virt_type: str | None = None,
                 network: str = "user", bridge: str | None = None, ssh_port: int = 22,
                 user_outbound: bool = False, owner: str | None = None,
                 shutdown_timeout: float = 30) -> None:
        """Servers' files in `instance_dir`, image bases in `cache_dir` (agents may share
        one). `uri`: libvirt's. `virt_type` kvm or qemu; None: kvm where a KVM vCPU runs,
        else qemu (TCG). `network` user (SSH forwarded from the server's loopback address,
        port `ssh_port`; `user_outbound`: the guest may open connections, to the host's
        loopback services too) or bridge (a tap on `bridge`). `owner` marks this agent's
        domains (default: the instance directory's absolute path). `shutdown_timeout`: how
        long a stop waits for the guest to power off before cutting it off."""
        if network not in lx.NETWORK_MODES:
            raise DriverError(f"network must be one of {', '.join(lx.NETWORK_MODES)}, "
                              f"not {network!r}")
        if network == "bridge" and not (bridge and _BRIDGE.match(bridge)):
            raise DriverError(f"bridge networking needs a bridge name, not {bridge!r}")
        if virt_type is not None and virt_type not in lx.VIRT_TYPES:
            raise DriverError(f"virt_type must be one of kvm, qemu (or unset: detected), "
                              f"not {virt_type!r}")
        if not 0 < ssh_port < 65536:
            raise DriverError(f"invalid ssh port {ssh_port}")
        self.instance_dir = Path(instance_dir).resolve()
        self.cache_dir = Path(cache_dir).resolve()
        self.uri = uri
        self.network = network
        self.bridge = bridge
        self.ssh_port = ssh_port
        self.user_outbound = user_outbound
        self.shutdown_timeout = shutdown_timeout
        self.owner = owner or str(self.instance_dir)
        self.cache = ImageCache(self.cache_dir, holder=self.owner)
        self._wanted_virt_type = virt_type
        self._virt: tuple[str, str] | None = None  # (domain type, arch)
        self._libvirt = load_libvirt()
        self._lock = threading.Lock()
        self._id_locks: dict[str, threading.Lock] = {}
        self._conn: Any = None

    # -- connection and host -----------------------------------------------------------------

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except self._libvirt.libvirtError:
                    pass
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
            try:
                self._conn = self._libvirt.open(self.uri)
            except self._libvirt.libvirtError as e:
                raise DriverError(f"cannot connect to libvirt at {self.uri} ({_one_line(e)}): "
                                  f"{INSTALL_DAEMON}") from e
            return self._conn

    @property
    def virt_type(self) -> str:
        return self._host()[0]

    def _host(self) -> tuple[str, str]:
        """The domain type and guest architecture this host runs servers with."""
        if self._virt is None:
            conn = self._connection()
            caps = ET.fromstring(conn.getCapabilities())
            machine = platform.machine()
            guests: dict[str, dict[str, str]] = {}  # arch -> domain type -> emulator
            for guest in caps.iter("guest"):
                arch_el = guest.find("arch")
                if guest.findtext("os_type") != "hvm" or arch_el is None:
                    continue
                emulator = arch_el.findtext("emulator") or ""
                for dom in arch_el.iter("domain"):
                    guests.setdefault(arch_el.get("name", ""), {}).setdefault(
                        dom.get("type", ""), dom.findtext("emulator") or emulator)
            arch = machine if machine in guests else next(iter(guests), "")
            types = guests.get(arch, {})
            wanted = self._wanted_virt_type
            if wanted is None:
                if conn.getType().lower() == "test":
                    wanted = "test"
                elif "kvm" in types and (urlparse(self.uri).netloc or
                                         kvm_works(types["kvm"])):
                    wanted = "kvm"
                else:
                    wanted = "qemu"
            if wanted not in types:
                raise DriverError(f"libvirt at {self.uri} cannot run {wanted!r} domains for "
                                  f"{arch or 'any architecture'} (it offers: "
                                  f"{', '.join(types) or 'none'}): {INSTALL_DAEMON}")
            self._virt = (wanted, arch)
        return self._virt

    def capacity(self) -> tuple[int, int, int]:
        """vCPUs, RAM (MiB) and the instance directory's free disk (GiB) of this host, as
        libvirt sees them (before the host's reservations)."""
        info = self._call(lambda c: c.getInfo())
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        return int(info[2]), int(info[1]), shutil.disk_usage(self.instance_dir).free // 1024**3

    def _call(self, fn: Any) -> Any:
        try:
            return fn(self._connection())
        except self._libvirt.libvirtError as e:
            raise DriverError(f"libvirt: {_one_line(e)}") from e

    # -- the Driver interface ----------------------------------------------------------------

    def validate(self) -> None:
        """libvirt reachable, the virt type runnable, qemu-img there, the directories
        writable; then drop image references of servers that are gone (an agent crash)."""
        self._host()
        if shutil.which("qemu-img") is None:
            raise DriverError("qemu-img is missing: apt-get install qemu-utils")
        for folder in (self.instance_dir, self.cache_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".validate-"):
                    pass
            except OSError as e:
                raise DriverError(f"{folder} is not writable: {e}") from e
        # a spawn under way holds a reference before its instance.json exists: keep those
        keep = set(self.list()) | {p.name for p in self.instance_dir.iterdir()}
        try:
            self.cache.prune(keep)
        except (ImageCacheError, OSError) as e:
            raise DriverError(f"image cache {self.cache_dir}: {e}") from e

    def list(self) -> list[str]:
        found = {dom.UUIDString() for dom in self._call(lambda c: c.listAllDomains())
                 if self._ours(dom)}
        with contextlib.suppress(FileNotFoundError):
            found |= {p.name for p in self.instance_dir.iterdir()
                      if _valid_id(p.name) and (p / "instance.json").is_file()}
        return sorted(found)

    def console(self, instance_id: str, length: int | None = None) -> str:
        iid = _valid_id(instance_id)
        folder = self.instance_dir / (iid or "-")
        if iid is None or not (folder / "instance.json").is_file():
            raise DriverError(f"no instance {instance_id} on this host")
        text = ""
        for name in ("boot.log", "console.log"):
            with contextlib.suppress(FileNotFoundError):
                text += (folder / name).read_bytes().decode("utf-8", errors="replace")
        return tail_lines(text, length)

    def spawn(self, spec: InstanceSpec) -> None:
        iid = _valid_id(spec.id)
        if iid is None:
            raise DriverError(f"invalid instance id {spec.id!r}: a server's id is a UUID")
        self._check_network(spec)
        with self._id_lock(iid):
            dom = self._lookup(iid)
            if dom is None:
                self._create(spec, self.instance_dir / iid)
                return
            if not self._ours(dom):
                raise DriverError(f"a domain that is not this agent's ({dom.name()}) has "
                                  f"the uuid {iid}")
            if not dom.isActive():  # the host rebooted, or the guest powered off
                self._log(self.instance_dir / iid, f"starting {spec.name} again")
                self._call(lambda _c: dom.create())

    def destroy(self, instance_id: str) -> None:
        iid = _valid_id(instance_id)
        if iid is None:
            return
        with self._id_lock(iid):
            dom = self._lookup(iid)
            if dom is not None and self._ours(dom):
                self._remove_domain(dom)
            folder = self.instance_dir / iid
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                raise DriverError(f"could not remove {folder}")
            try:
                self.cache.release(iid)
            except (ImageCacheError, OSError) as e:
                raise DriverError(f"image cache: {e}") from e

    # -- server actions -----------------------------------------------------------------------

    def _domain(self, instance_id: str) -> Any:
        iid = _valid_id(instance_id)
        dom = self._lookup(iid) if iid else None
        if dom is None or not self._ours(dom):
            raise DriverError(f"no instance {instance_id} on this host")
        return dom

    def stop(self, instance_id: str) -> None:
        """ACPI shutdown, then cut off after `shutdown_timeout` seconds (nova's clean
        shutdown). The domain stays defined, its disk kept."""
        with self._id_lock(instance_id):
            dom = self._domain(instance_id)
            if not dom.isActive():
                return
            folder = self.instance_dir / instance_id
            self._log(folder, "shutting down")
            with contextlib.suppress(self._libvirt.libvirtError):
                dom.shutdown()
            deadline = time.monotonic() + self.shutdown_timeout
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if dom.isActive():
                self._log(folder, f"no shutdown within {self.shutdown_timeout:.0f} s: cut off")
                try:
                    dom.destroy()
                except self._libvirt.libvirtError as e:
                    if dom.isActive():
                        raise DriverError(f"cannot stop {dom.name()}: {_one_line(e)}") from e
            self._log(folder, "shut off")

    def start(self, spec: InstanceSpec) -> None:
        with self._id_lock(spec.id):
            dom = self._domain(spec.id)
            if not dom.isActive():
                self._log(self.instance_dir / spec.id, f"starting {spec.name}")
                self._call(lambda _c: dom.create())

    def reboot(self, spec: InstanceSpec, hard: bool) -> None:
        """Soft: the guest is asked (ACPI); hard: a reset (a stopped domain is started)."""
        with self._id_lock(spec.id):
            dom = self._domain(spec.id)
            folder = self.instance_dir / spec.id
            if not dom.isActive():
                if not hard:
                    raise DriverError(f"{spec.name} is shut off: only a hard reboot starts it")
                self._log(folder, f"hard reboot: starting {spec.name}")
                self._call(lambda _c: dom.create())
                return
            self._log(folder, f"{'hard' if hard else 'soft'} reboot")
            self._call(lambda _c: dom.reset(0) if hard else dom.reboot(0))

    def rebuild(self, spec: InstanceSpec) -> None:
        """The domain and its disk go, and are made again from the new image."""
        self.destroy(spec.id)
        self.spawn(spec)

    def snapshot(self, instance_id: str, dest: Path) -> None:
        """`qemu-img convert` of the overlay and its base into one standalone qcow2; a
        running guest is paused meanwhile (a consistent disk, as a crash would leave it)."""
        with self._id_lock(instance_id):
            dom = self._domain(instance_id)
            disk = self.instance_dir / instance_id / "disk.qcow2"
            paused = False
            try:
                if dom.isActive():
                    dom.suspend()
                    paused = True
                qemu_img("convert", "-U", "-q", "-O", "qcow2", str(disk), str(dest),
                         timeout=1800)
            except (ImageCacheError, self._libvirt.libvirtError) as e:
                raise DriverError(f"snapshot of {instance_id}: {_one_line(e)}") from e
            finally:
                if paused:
                    with contextlib.suppress(self._libvirt.libvirtError):
                        dom.resume()

    def power(self, instance_id: str) -> bool:
        """Whether the instance's domain runs (for tests and operators)."""
        return bool(self._domain(instance_id).isActive())

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- helpers -----------------------------------------------------------------------------

    def _id_lock(self, instance_id: str) -> threading.Lock:
        with self._lock:
            return self._id_locks.setdefault(instance_id, threading.Lock())

    def _lookup(self, iid: str) -> Any:
        try:
            return self._connection().lookupByUUIDString(iid)
        except self._libvirt.libvirtError as e:
            if e.get_error_code() == self._libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise DriverError(f"libvirt: {_one_line(e)}") from e

    def marker(self, dom: Any) -> lx.Marker | None:
        """What our metadata says about a domain, None if it has none."""
        try:
            text = dom.metadata(self._libvirt.VIR_DOMAIN_METADATA_ELEMENT, lx.NS)
        except self._libvirt.libvirtError:
            return None
        return lx.parse_metadata(text)

    def _ours(self, dom: Any) -> bool:
        marker = self.marker(dom)
        return marker is not None and marker.owner == self.owner

    def _check_network(self, spec: InstanceSpec) -> None:
        net = spec.network
        if not _MAC.match(net.mac or ""):
            raise DriverError(f"invalid MAC address {net.mac!r}")
        try:
            addr = ipaddress.ip_address(net.ip)
        except ValueError as e:
            raise DriverError(f"invalid address {net.ip!r}") from e
        if addr.version != 4:
            raise DriverError(f"an IPv4 address is needed, not {addr}")
        if self.network == "user" and not addr.is_loopback:
            raise DriverError(f"user-mode networking forwards SSH from the server's own "
                              f"127.0.0.0/8 address, not {addr}")

    def _create(self, spec: InstanceSpec, folder: Path) -> None:
        if spec.image is None:
            raise DriverError(f"server {spec.name}: the libvirt driver needs the server's "
                              f"image, and none was fetched")
        virt_type, arch = self._host()
        shutil.rmtree(folder, ignore_errors=True)  # what a crash in an earlier spawn left
        dom = None
        try:
            folder.mkdir(parents=True, mode=0o711)
            base = self.cache.acquire(spec.id, spec.image)
            size = make_overlay(base, folder / "disk.qcow2", spec.disk_gb)
            self._config_drive(spec, folder / "config.iso")
            _write_json(folder / "instance.json", {
                "id": spec.id, "name": spec.name, "ip": spec.network.ip,
                "mac": spec.network.mac, "network": self.network, "image": base.sha512,
                "created": _now()})
            net = spec.network
            self._log(folder, f"domain {lx.domain_name(spec.id)} for {spec.name} ({spec.id}): "
                      f"{virt_type}, {spec.vcpus} vCPU, {spec.ram_mb} MiB, root disk "
                      f"{size // 1024**3} GiB on image {base.sha512[:12]} ({base.format})")
            self._log(folder, f"network {self.network}: " + (
                f"ssh to {net.ip} port {self.ssh_port} goes to the guest's port 22"
                if self.network == "user" else
                f"bridge {self.bridge}, {net.mac} {net.ip}/{net.prefix} gateway "
                f"{net.gateway or '-'}"))
            xml = lx.domain_xml(lx.DomainSpec(
                id=spec.id, name=spec.name, virt_type=virt_type, arch=arch, vcpus=spec.vcpus,
                ram_mb=spec.ram_mb, disk=folder / "disk.qcow2",
                config_drive=folder / "config.iso", console_log=folder / "console.log",
                network=self.network, mac=net.mac, bridge=self.bridge,
                forward=(net.ip, self.ssh_port) if self.network == "user" else None,
                outbound=self.user_outbound,
                marker=lx.Marker(owner=self.owner, name=spec.name, address=net.ip,
                                 network=self.network, image=base.sha512)))
            conn = self._connection()
            dom = conn.defineXML(xml)
            dom.create()
            self._log(folder, f"started {spec.name}")
        except Exception as e:
            if dom is not None:
                with contextlib.suppress(Exception):
                    self._remove_domain(dom)
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(Exception):
                self.cache.release(spec.id)
            if isinstance(e, DriverError):
                raise
            raise DriverError(f"server {spec.name} failed to start: {_one_line(e)}") from e

    def _config_drive(self, spec: InstanceSpec, dest: Path) -> None:
        """The server's config drive; with user-mode networking its address is slirp's, so
        network_data.json says DHCP on the port's MAC (the API's address is the forward)."""
        if self.network != "user":
            shutil.copyfile(spec.config_drive, dest)
            return
        try:
            drive = configdrive.read(spec.config_drive)
        except configdrive.ConfigDriveError as e:
            raise DriverError(f"bad config drive for {spec.name}: {e}") from e
        net = dict(drive.network_data)
        links = net.get("links") or [{"id": "tap0", "type": "phy",
                                      "ethernet_mac_address": spec.network.mac}]
        net["links"] = links
        net["networks"] = [{"id": "network0", "type": "ipv4_dhcp", "link": links[0]["id"],
                            "network_id": n.get("network_id", "")}
                           for n in (net.get("networks") or [{}])[:1]]
        configdrive.build(dest, meta_data=drive.meta_data, network_data=net,
                          user_data=drive.user_data)

    def _remove_domain(self, dom: Any) -> None:
        """Stop (hard) and undefine: undefining a running domain would only make it
        transient, so it goes first."""
        lv = self._libvirt
        try:
            if dom.isActive():
                dom.destroy()
        except lv.libvirtError as e:
            if dom.isActive():  # not a race with the guest powering off
                raise DriverError(f"cannot stop {dom.name()}: {_one_line(e)}") from e
        try:
            dom.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                              lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        except lv.libvirtError as e:
            if e.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                raise DriverError(f"cannot undefine {dom.name()}: {_one_line(e)}") from e

    @staticmethod
    def _log(folder: Path, line: str) -> None:
        with open(folder / "boot.log", "a", encoding="utf-8") as f:
            f.write(f"[{_now()}] infracloud: {line}\n")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
