"""Redfish BMC driver over sushy.

`BmcAccess.address` is the BMC's base URL (`https://10.0.0.5`, with or without `/redfish/v1`;
https is assumed without a scheme). Options:

    system_id   `/redfish/v1/Systems/<id>` or `<id>`; optional when the BMC has one system
    verify_ca   True (default), False, or the path of a CA bundle
    auth_type   'basic' (default: stateless, one request fewer), 'session' or 'auto'

sushy does HTTP in its constructor, so the connection is made on the first call and reused.
Each call runs in a worker thread and the caller waits at most `BmcAccess.timeout` (+0.5 s);
every HTTP request is also bounded by that timeout, connection errors are not retried and a
5xx answer to a GET is retried once (sushy's defaults: 3 tries 2 s apart, 10 retries 3 s
apart)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import sushy
from sushy import auth as sushy_auth
from sushy import exceptions as sushy_exc

from infracloud.hardware.bmc.base import (
    BmcAccess,
    BmcAuthError,
    BmcError,
    BmcTransient,
    BmcUnsupported,
    Inspection,
    check_boot_device,
    check_power_state,
)

T = TypeVar("T")

ROOT = "/redfish/v1"
_POWER = {
    sushy.POWER_STATE_ON: "on",
    sushy.POWER_STATE_POWERING_ON: "on",
    sushy.POWER_STATE_OFF: "off",
    sushy.POWER_STATE_POWERING_OFF: "off",
    sushy.PowerState.PAUSED: "on",
}
_TO_TARGET = {"pxe": sushy.BOOT_SOURCE_TARGET_PXE, "cd": sushy.BOOT_SOURCE_TARGET_CD,
              "disk": sushy.BOOT_SOURCE_TARGET_HDD}
# anything else (no override, BIOS setup, UEFI target, ...) boots the installed system
_FROM_TARGET = {sushy.BOOT_SOURCE_TARGET_PXE: "pxe", sushy.BOOT_SOURCE_TARGET_UEFI_HTTP: "pxe",
                sushy.BOOT_SOURCE_TARGET_CD: "cd", sushy.BootSource.USB_CD: "cd"}
_ARCH = {"x86": "x86_64", "ARM": "aarch64", "Power": "ppc64le", "IA-64": "ia64",
         "MIPS": "mips64"}
_CD_TYPES = {sushy.VIRTUAL_MEDIA_CD, sushy.VIRTUAL_MEDIA_DVD}


def split_address(address: str) -> str:
    """The BMC's base URL without a trailing `/redfish/v1`."""
    url = address.strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    if url.endswith(ROOT):
        url = url[: -len(ROOT)]
    return url


def _forget(root: sushy.Sushy) -> None:
    """Let go of a connection. A Redfish session is deleted on a thread of its own, never by
    sushy's __del__ on whatever thread the garbage collector happens to run."""
    auth, root._auth = root._auth, None
    if isinstance(auth, sushy_auth.SessionAuth):
        threading.Thread(target=_close_quietly, args=(auth,), daemon=True).start()


def _close_quietly(auth: Any) -> None:
    with contextlib.suppress(Exception):
        auth.close()


def _verify_option(value: Any) -> bool | str:
    """verify_ca: a bool (also as text, from an inventory file) or a CA bundle path."""
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    return value if isinstance(value, str) else bool(value)


class RedfishBmc:
    name = "redfish"
    virtual_media = True

    def __init__(self, access: BmcAccess) -> None:
        self.access = access
        self.base_url = split_address(access.address)
        system_id = access.options.get("system_id")
        self._system_path: str | None = None
        if system_id:
            sid = str(system_id).rstrip("/")
            self._system_path = sid if sid.startswith("/") else f"{ROOT}/Systems/{sid}"
        self._verify = _verify_option(access.options.get("verify_ca", True))
        self._auth_type = str(access.options.get("auth_type", "basic"))
        if self._auth_type not in ("basic", "session", "auto"):
            raise ValueError(f"auth_type must be basic, session or auto, not {self._auth_type!r}")
        self._root: sushy.Sushy | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"RedfishBmc(address={self.base_url!r}, system={self._system_path!r}, "
                f"username={self.access.username!r})")

    # ---- plumbing --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"Redfish BMC {self.base_url}"

    def _scrub(self, text: str) -> str:
        pw = self.access.password
        return text.replace(pw, "***") if pw else text

    def _connect(self) -> sushy.Sushy:
        root = self._root
        if root is not None:
            return root
        # sushy does HTTP here: build it without holding the lock, so that a caller giving
        # up on a slow BMC is never stuck behind this (two racing builds are harmless)
        user, pw = self.access.username, self.access.password
        auth: sushy_auth.AuthBase
        if self._auth_type == "basic":
            auth = sushy_auth.BasicAuth(username=user, password=pw)
        elif self._auth_type == "session":
            auth = sushy_auth.SessionAuth(username=user, password=pw)
        else:
            auth = sushy_auth.SessionOrBasicAuth(username=user, password=pw)
        t = self.access.timeout
        root = sushy.Sushy(self.base_url + ROOT, auth=auth, verify=self._verify,
                           read_timeout=t, connect_timeout=t,
                           server_side_retries=1, server_side_retries_delay=0)
        with self._lock:
            if self._root is None:
                self._root = root
                return root
            winner = self._root
        _forget(root)
        return winner

    def _drop(self) -> None:
        """Forget the connection (the next call connects again)."""
        with self._lock:
            root, self._root = self._root, None
        if root is not None:
            _forget(root)

    def _system(self) -> Any:
        root = self._connect()
        if self._system_path is None:
            members = root.get_system_collection().members_identities
            if len(members) != 1:
                raise BmcError(f"{self._where()} manages {len(members)} systems "
                               f"({', '.join(sorted(members))}); set the system_id option")
            self._system_path = next(iter(members))
        return root.get_system(self._system_path)

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        """Run fn in a worker thread and wait at most access.timeout for it."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name=f"redfish {self.base_url}", daemon=True).start()
        timeout = self.access.timeout
        if not done.wait(timeout + 0.5):
            self._drop()
            raise BmcTransient(f"{self._where()}: no answer to {what} within {timeout:g} s")
        error = box.get("error")
        if isinstance(error, BmcError):
            raise error
        if error is not None:
            translated = self._translate(error, what)
            if isinstance(translated, BmcTransient | BmcAuthError):
                self._drop()
            raise translated from error
        return box["value"]

    def _translate(self, exc: BaseException, what: str) -> BmcError:
        detail = self._scrub(str(exc))
        text = f"{self._where()}: {what} failed: {detail}"
        if isinstance(exc, sushy_exc.AccessError):
            return BmcAuthError(f"{self._where()}: credentials refused "
                                f"(HTTP {exc.status_code}) during {what}")
        if isinstance(exc, sushy_exc.ConnectionError) and isinstance(
                exc.__context__, requests.exceptions.SSLError):
            # a certificate or TLS configuration problem: retrying will not help
            return BmcError(f"{text} (check the verify_ca option)")
        if isinstance(exc, sushy_exc.ServerSideError | sushy_exc.ConnectionError):
            return BmcTransient(text)
        if isinstance(exc, sushy_exc.ResourceNotFoundError):
            return BmcError(f"{self._where()}: {what} failed: not found: {detail}")
        if isinstance(exc, sushy_exc.MissingAttributeError | sushy_exc.MissingActionError
                      | sushy_exc.InvalidParameterValueError):
            return BmcUnsupported(text)
        if isinstance(exc, sushy_exc.HTTPError) and exc.status_code in (405, 501):
            return BmcUnsupported(text)
        if isinstance(exc, sushy_exc.SushyError):
            return BmcError(text)
        return BmcError(f"{self._where()}: {what} failed: {type(exc).__name__}: {detail}")

    # ---- power ----------------------------------------------------------------------------

    def validate(self) -> None:
        self._run("validation", lambda: self._power_of(self._system()))

    def _power_of(self, system: Any) -> str:
        state = _POWER.get(system.power_state)
        if state is None:
            raise BmcError(f"{self._where()}: unknown power state {system.power_state!r}")
        return state

    def get_power(self) -> str:
        return self._run("power status", lambda: self._power_of(self._system()))

    def set_power(self, state: str) -> None:
        check_power_state(state)

        def go() -> None:
            system = self._system()
            if system.power_state == (sushy.POWER_STATE_ON if state == "on"
                                      else sushy.POWER_STATE_OFF):
                return  # some BMCs refuse On when on
            system.reset_system(sushy.RESET_ON if state == "on" else sushy.RESET_FORCE_OFF)

        self._run(f"power {state}", go)

    def reboot(self) -> None:
        def go() -> None:
            system = self._system()
            on = self._power_of(system) == "on"
            system.reset_system(sushy.RESET_FORCE_RESTART if on else sushy.RESET_ON)

        self._run("reboot", go)

    # ---- management -----------------------------------------------------------------------

    def get_boot_device(self) -> str:
        def go() -> str:
            boot = self._system().boot
            if boot is None or boot.enabled == sushy.BOOT_SOURCE_ENABLED_DISABLED:
                return "disk"
            return _FROM_TARGET.get(boot.target, "disk")

        return self._run("get boot device", go)

    def set_boot_device(self, device: str, persistent: bool = False) -> None:
        check_boot_device(device)
        enabled = (sushy.BOOT_SOURCE_ENABLED_CONTINUOUS if persistent
                   else sushy.BOOT_SOURCE_ENABLED_ONCE)
        self._run(f"set boot device {device}", lambda: self._system().set_system_boot_options(
            target=_TO_TARGET[device], enabled=enabled))

    def _cd_drives(self, system: Any) -> list[Any]:
        """The virtual media devices that take a CD/DVD: the system's, else its managers'."""
        sources: list[Callable[[], list[Any]]] = [
            lambda: [system.virtual_media],
            lambda: [m.virtual_media for m in system.managers],
        ]
        for source in sources:
            try:
                collections = source()
            except sushy_exc.MissingAttributeError:
                continue
            drives = [d for c in collections for d in c.get_members()
                      if _CD_TYPES.intersection(d.media_types or ())]
            if drives:
                return drives
        raise BmcUnsupported(f"{self._where()}: no virtual CD/DVD drive")

    def insert_media(self, url: str) -> None:
        def go() -> None:
            drive = self._cd_drives(self._system())[0]
            if drive.inserted:
                if drive.image == url:
                    return
                drive.eject_media()
            drive.insert_media(url, inserted=True, write_protected=True)

        self._run("insert virtual media", go)

    def eject_media(self) -> None:
        def go() -> None:
            for drive in self._cd_drives(self._system()):
                if drive.inserted or drive.image:
                    drive.eject_media()

        self._run("eject virtual media", go)

    # ---- inspection -----------------------------------------------------------------------

    def inspect(self) -> Inspection:
        return self._run("inspection", lambda: self._inspect(self._system()))

    def _inspect(self, system: Any) -> Inspection:
        summary = system.json.get("ProcessorSummary") or {}
        cpus = summary.get("LogicalProcessorCount")
        arch = None
        if "Processors" in system.json:
            procs = system.processors.summary
            cpus = cpus or procs.count or None
            if procs.architecture is not None:
                arch = _ARCH.get(procs.architecture.value)
        cpus = cpus or summary.get("Count")
        memory = system.memory_summary.size_gib if system.memory_summary else None
        disk_bytes = None
        for name, attr in (("Storage", "storage"), ("SimpleStorage", "simple_storage")):
            if disk_bytes or name not in system.json:
                continue
            try:
                col = getattr(system, attr)
                if attr == "storage":
                    disk_bytes = col.max_drive_size_bytes or col.max_volume_size_bytes
                else:
                    disk_bytes = col.max_size_bytes
            except (sushy_exc.SushyError, KeyError, TypeError):
                disk_bytes = None  # the BMC does not describe its disks usably
        macs: list[str] = []
        if "EthernetInterfaces" in system.json:
            for mac in system.ethernet_interfaces.summary:
                if mac and mac.lower() not in macs:
                    macs.append(mac.lower())
        return Inspection(cpus=int(cpus) if cpus else None,
                          memory_mb=int(memory * 1024) if memory else None,
                          disk_gb=int(disk_bytes // 2**30) if disk_bytes else None,
                          macs=tuple(macs), cpu_arch=arch)

    def close(self) -> None:
        self._drop()
