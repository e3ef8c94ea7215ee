"""IPMI BMC driver over pyghmi (IPMI 2.0 / RMCP+ on UDP).

pyghmi quirks this driver works around:

* A second `Command()` for the same BMC and credentials in one process hangs forever when the
  credentials are passed as `str` (pyghmi registers the login under the `str` key but removes
  it under the encoded `bytes` key). Credentials are therefore passed as bytes, and the driver
  keeps ONE `Command` per BMC and credentials per process (`_SESSIONS`), dropped after a
  failure so the next call logs in again.
* pyghmi's own timeouts are long (about 5 s for a silent BMC) and a BMC that ignores an
  unknown user name makes the login wait forever. Every call therefore runs on the session's
  worker thread; the caller stops waiting after `BmcAccess.timeout` and raises BmcTransient.
  A call is only handed to the worker once it holds the session's lock (released when pyghmi
  finally returns), so nothing queues behind a stuck call: later callers time out instead.

IPMI has no virtual media (insert_media raises BmcUnsupported) and tells little about the
hardware: inspect() reports MACs only where the BMC's FRU data lists them."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

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
log = logging.getLogger(__name__)

DEFAULT_PORT = 623
WORKER_IDLE = 120.0  # seconds an idle session worker thread lingers
# pyghmi boot device names; what they read back as
_TO_PYGHMI = {"pxe": "network", "cd": "cd", "disk": "hd"}
_FROM_PYGHMI = {"network": "pxe", "pxe": "pxe", "optical": "cd", "cd": "cd", "dvd": "cd"}
_AUTH_WORDS = ("password", "unauthorized", "privilege", "rakp", "user", "authenticat")
_TRANSIENT_WORDS = ("timeout", "timed out", "no longer connected", "failed to initialize",
                    "transmit", "unreachable", "busy", "out of space")
_MAC = re.compile(r"^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$", re.IGNORECASE)


class _Session:
    """The process-wide Command for one BMC and credentials; the lock a call holds from start
    to end; and the one worker thread that makes every pyghmi call of this session (pyghmi
    stalls for a retransmit, about 1 s, far more often when each call is on a new thread)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.command: Any = None
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._serving = False
        self.worker: int | None = None  # the worker thread's ident while it serves

    def submit(self, job: Callable[[], None]) -> None:
        with self._state:
            self._jobs.put(job)
            if not self._serving:
                threading.Thread(target=self._serve, name=self.name, daemon=True).start()
                self._serving = True

    def _serve(self) -> None:
        self.worker = threading.get_ident()
        while True:
            try:
                job = self._jobs.get(timeout=WORKER_IDLE)
            except queue.Empty:
                with self._state:
                    if self._jobs.empty():
                        self._serving = False
                        self.worker = None
                        return
                continue
            job()


def _report_stuck(sess: _Session, what: str) -> None:
    """One log line on a call that did not answer in time: where the worker waits, and
    whether pyghmi's I/O thread (every pyghmi wait ends through it) is still alive."""
    from pyghmi.ipmi.private import session as pyghmi_session

    io = getattr(pyghmi_session, "iothread", None)
    frame = sys._current_frames().get(sess.worker or -1)
    where = "".join(traceback.format_stack(frame, limit=6)) if frame is not None else "idle"
    log.warning("IPMI call not answered in time", extra={
        "bmc": sess.name, "call": what, "worker_stack": where,
        "pyghmi_io_thread": "none" if io is None else ("alive" if io.is_alive() else "dead")})


_SESSIONS: dict[tuple[str, int, str, str], _Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _session_for(key: tuple[str, int, str, str]) -> _Session:
    with _SESSIONS_LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            sess = _SESSIONS[key] = _Session(f"ipmi {key[0]}:{key[1]}")
        return sess


def parse_address(address: str, options: dict[str, Any] | None = None) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to options['port'] or 623."""
    default = int((options or {}).get("port", DEFAULT_PORT))
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, int(port)
    return address, default


class IpmiBmc:
    name = "ipmi"
    virtual_media = False

    def __init__(self, access: BmcAccess) -> None:
        self.access = access
        self.host, self.port = parse_address(access.address, dict(access.options))
        digest = hashlib.sha256(access.password.encode()).hexdigest()
        self._key = (self.host, self.port, access.username, digest)

    def __repr__(self) -> str:
        return f"IpmiBmc(host={self.host!r}, port={self.port}, username={self.access.username!r})"

    # ---- plumbing --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"IPMI BMC {self.host}:{self.port}"

    def _scrub(self, text: str) -> str:
        pw = self.access.password
        return text.replace(pw, "***") if pw else text

    def _connect(self) -> Any:
        from pyghmi.ipmi import command

        return command.Command(bmc=self.host, userid=self.access.username.encode(),
                               password=self.access.password.encode(), port=self.port)

    def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run fn(command) on the session's worker; wait at most access.timeout in all."""
        timeout = self.access.timeout
        deadline = time.monotonic() + timeout
        sess = _session_for(self._key)
        if not sess.lock.acquire(timeout=timeout):
            raise BmcTransient(f"{self._where()}: an earlier call has not answered within "
                               f"{timeout:g} s; not sending {what}")
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                if sess.command is None:
                    sess.command = self._connect()
                box["value"] = fn(sess.command)
            except BaseException as exc:
                sess.command = None  # the next call logs in again
                box["error"] = exc
            finally:
                sess.lock.release()
                done.set()

        try:
            sess.submit(work)
        except BaseException:
            sess.lock.release()
            raise
        if not done.wait(max(0.0, deadline - time.monotonic())):
            _report_stuck(sess, what)
            raise BmcTransient(f"{self._where()}: no answer to {what} within {timeout:g} s")
        error = box.get("error")
        if isinstance(error, BmcError):
            raise error
        if error is not None:
            raise self._translate(error, what) from error
        return box["value"]

    def _translate(self, exc: BaseException, what: str) -> BmcError:
        from pyghmi import exceptions as pyghmi_exc

        first = exc.args[0] if exc.args else None
        # pyghmi raises IpmiException(None) when a silent BMC makes the login give up
        detail = "no answer" if first is None else self._scrub(str(first))
        text = f"{self._where()}: {what} failed: {detail}"
        low = detail.lower()
        if isinstance(exc, pyghmi_exc.IpmiException):
            if any(word in low for word in _AUTH_WORDS):
                return BmcAuthError(f"{self._where()}: authentication failed ({detail})")
            if first is None or any(word in low for word in _TRANSIENT_WORDS):
                return BmcTransient(text)
            if "invalid command" in low or "not supported" in low:
                return BmcUnsupported(text)
            return BmcError(text)
        if isinstance(exc, OSError):
            return BmcTransient(text)
        return BmcError(f"{self._where()}: {what} failed: {type(exc).__name__}: {detail}")

    # ---- power ----------------------------------------------------------------------------

    def validate(self) -> None:
        self._run("power status", lambda c: c.get_power())

    def get_power(self) -> str:
        state = self._run("power status", lambda c: c.get_power()["powerstate"])
        if state not in ("on", "off"):
            raise BmcError(f"{self._where()}: unexpected power state {state!r}")
        return str(state)

    def set_power(self, state: str) -> None:
        check_power_state(state)
        self._run(f"power {state}", lambda c: c.set_power(state, wait=False))

    def reboot(self) -> None:
        # pyghmi's 'boot': 'reset' when on, 'on' when off
        self._run("power reset", lambda c: c.set_power("boot", wait=False))

    # ---- management -----------------------------------------------------------------------

    def get_boot_device(self) -> str:
        dev = self._run("get boot device", lambda c: c.get_bootdev().get("bootdev"))
        # 'hd', 'default' (no override: the machine's own order), 'safe', 'setup', ... all
        # boot the installed system as far as we are concerned
        return _FROM_PYGHMI.get(str(dev), "disk")

    def set_boot_device(self, device: str, persistent: bool = False) -> None:
        check_boot_device(device)

        def go(c: Any) -> None:
            rsp = c.set_bootdev(_TO_PYGHMI[device], persist=persistent)
            if isinstance(rsp, dict) and "error" in rsp:
                from pyghmi import exceptions as pyghmi_exc

                raise pyghmi_exc.IpmiException(rsp["error"])

        self._run(f"set boot device {device}", go)

    def insert_media(self, url: str) -> None:
        raise BmcUnsupported(f"{self._where()}: IPMI has no virtual media")

    def eject_media(self) -> None:
        """Nothing can be attached over IPMI, so there is nothing to detach."""

    # ---- inspection -----------------------------------------------------------------------

    def inspect(self) -> Inspection:
        def go(c: Any) -> Inspection:
            c.get_power()  # reachability and credentials: these errors are real
            from pyghmi import exceptions as pyghmi_exc

            try:
                fru = c.get_inventory_of_component("System") or {}
            except (pyghmi_exc.IpmiException, KeyError, ValueError, TypeError):
                fru = {}  # many BMCs (and pyghmi's server) do not serve FRU data
            macs = []
            for key, value in fru.items():
                if "mac" in str(key).lower() and _MAC.match(str(value).strip()):
                    mac = str(value).strip().lower().replace("-", ":")
                    if mac not in macs:
                        macs.append(mac)
            return Inspection(macs=tuple(macs))

        return self._run("inspection", go)

    def close(self) -> None:
        """The Command is shared by every driver object for this BMC: it stays open."""


def close_all() -> None:
    """Log out of every cached IPMI session (process shutdown, tests)."""
    with _SESSIONS_LOCK:
        sessions = list(_SESSIONS.values())
        _SESSIONS.clear()
    for sess in sessions:
        if sess.lock.acquire(timeout=0.1):
            try:
                cmd, sess.command = sess.command, None
                if cmd is not None:
                    with contextlib.suppress(Exception):  # best effort at shutdown
                        cmd.ipmi_session.logout()
            finally:
                sess.lock.release()
