"""The sandbox driver: an "instance" is a directory plus an SSH server, not a virtual machine,
so the whole cloud (API, agent, nodepool, zuul) can run on a laptop or in CI without KVM.

THIS IS NOT ISOLATION. Every command run over SSH runs as the agent's own user (usually root)
directly on the host, with full access to its files, processes and network; the instance
directory is only where HOME and the working directory point. For trusted jobs only, never
for untrusted code.

Each instance has `root/<id>/` with `home/`, `console.log`, `instance.json` (so `list` finds
it after an agent restart), a copy of its config drive and its SSH host keys (ed25519,
ecdsa-sha2-nistp256, rsa). Its asyncssh server listens on the instance's loopback address
(on Linux all of 127.0.0.0/8 is routable on `lo`) and accepts any user name, but only
public-key logins with the keys from the config drive. Commands run with `/bin/sh -c` (a shell
request: `/bin/sh -i`, on a pty if the client asks) in a session of their own. SFTP and scp
accept paths inside the instance directory only, using the host paths the shell sees (so
`echo ~` then a put to that path works, as with ansible); relative paths start in `home/`.

All servers run on one asyncio loop on a thread owned by the driver. `destroy` kills every
process of the instance (its commands' sessions, and anything carrying its marker variable,
even from before an agent restart) and removes the directory."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import posixpath
import pwd
import shutil
import signal
import socket
import struct
import tempfile
import termios
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from infracloud.agent import configdrive
from infracloud.agent.drivers.base import DriverError, InstanceSpec, tail_lines

T = TypeVar("T")

MARKER = "INFRACLOUD_SANDBOX_INSTANCE"  # set in the environment of every command
HOST_KEYS = (("ssh-ed25519", "ed25519"), ("ecdsa-sha2-nistp256", "ecdsa"), ("ssh-rsa", "rsa"))
_CHUNK = 65536


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def _valid_id(instance_id: str) -> bool:
    return (bool(instance_id) and not instance_id.startswith(".") and len(instance_id) <= 128
            and all(c.isalnum() or c in "-_." for c in instance_id))


@dataclass(eq=False)
class _Instance:
    id: str
    dir: Path
    ip: str
    keys: set[bytes]  # public_data of the keys allowed to log in
    host_keys: list[asyncssh.SSHKey]
    acceptor: asyncssh.SSHAcceptor | None = None
    conns: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    sessions: set[int] = field(default_factory=set)  # session ids (= leader pids) started
    log_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def home(self) -> Path:
        return self.dir / "home"

    def log(self, line: str) -> None:
        with self.log_lock, open(self.dir / "console.log", "a", encoding="utf-8") as f:
            f.write(f"[{_now()}] {line}\n")


class _Server(asyncssh.SSHServer):
    def __init__(self, inst: _Instance) -> None:
        self.inst = inst
        self.conn: asyncssh.SSHServerConnection | None = None
        self.username = ""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.inst.conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.inst.conns.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        self.username = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data in self.inst.keys

    def auth_completed(self) -> None:
        peer = self.conn.get_extra_info("peername") if self.conn else None
        self.inst.log(f"sshd: accepted publickey for {self.username} from "
                      f"{peer[0] if peer else '?'}")


class _SFTP(asyncssh.SFTPServer):
    """Paths are host paths restricted to the instance directory; relative ones start in
    home/ (a plain chroot would break clients that learn paths from the shell)."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], inst: _Instance) -> None:
        super().__init__(chan, chroot=os.fsencode(inst.dir))
        assert self._chroot is not None
        self._root = self._chroot
        self._home = os.fsencode(os.path.realpath(inst.home))
        inst.log("sshd: sftp session")

    def _inside(self, path: bytes) -> bool:
        return path == self._root or path.startswith(self._root + b"/")

    def map_path(self, path: bytes) -> bytes:
        local = posixpath.normpath(posixpath.join(self._home, path))
        if not self._inside(local):
            raise asyncssh.SFTPPermissionDenied("outside the instance directory")
        return local

    def reverse_map_path(self, path: bytes) -> bytes:
        if not self._inside(path):
            raise asyncssh.SFTPNoSuchFile("File not found")
        return path

    def exit(self) -> None:
        # like sshd after sftp-server ends: exit status 0 (OpenSSH's scp checks it)
        with contextlib.suppress(Exception):
            self.channel.exit(0)


def _set_winsize(fd: int, size: tuple[int, int, int, int]) -> None:
    width, height, pixwidth, pixheight = size
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth,
                                                         pixheight))


# A login's processes start with these signals' default actions, as under sshd, even when the
# agent itself was started ignoring them (`nohup`, a script's background job): so a session's
# processes die of SIGHUP when their client goes away.
_LOGIN_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)


def _login_child() -> None:  # runs in the child after setsid()
    for sig in _LOGIN_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _login_tty_child() -> None:
    _login_child()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _ignore(*args: object) -> None:
    return None


async def _pump_out(src: asyncio.StreamReader, out: asyncssh.SSHWriter[bytes]) -> None:
    """Copy a child's output to the channel; once the channel is gone, keep reading (and
    dropping) so the child never blocks on a full pipe."""
    alive = True
    while True:
        try:
            data = await src.read(_CHUNK)
        except OSError:  # EIO from a pty master once the child side is closed
            return
        if not data:
            return
        if alive:
            try:
                out.write(data)
                await out.drain()
            except Exception:
                alive = False


async def _pump_in(inp: asyncssh.SSHReader[bytes], write: Callable[[bytes], Awaitable[None]],
                   eof: Callable[[], None], resize: Callable[[tuple[int, int, int, int]], None],
                   ) -> None:
    with contextlib.suppress(Exception):
        while True:
            try:
                data = await inp.read(_CHUNK)
            except asyncssh.TerminalSizeChanged as exc:
                resize((exc.width, exc.height, exc.pixwidth, exc.pixheight))
                continue
            if not data:
                break
            await write(data)
    with contextlib.suppress(Exception):
        eof()


class SandboxDriver:
    name = "sandbox"
    needs_image = False

    def __init__(self, root: Path, ssh_port: int = 22, boot_timeout: float = 30) -> None:
        self.root = Path(root)
        self.ssh_port = ssh_port
        self.boot_timeout = boot_timeout
        self._lock = threading.Lock()
        self._id_locks: dict[str, threading.Lock] = {}
        self._running: dict[str, _Instance] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._user = pwd.getpwuid(os.getuid()).pw_name

    # -- the event loop thread -------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="sandbox-ssh",
                                          daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        finally:
            future.cancel()  # no-op once done; stops it on a timeout

    def close(self) -> None:
        """Stop every SSH server and the loop thread. The instances' directories and detached
        processes stay; a later `spawn` of the same id starts its server again."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
            running, self._running = list(self._running.values()), {}
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            for inst in running:
                await self._stop_server(inst)
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()

    # -- the Driver interface ----------------------------------------------------------------

    def validate(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".validate-"):
                pass
        except OSError as e:
            raise DriverError(f"sandbox root {self.root} is not writable: {e}") from e
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
        except OSError as e:
            raise DriverError(f"cannot bind to 127.0.0.1: {e}") from e
        if not os.access("/bin/sh", os.X_OK):
            raise DriverError("/bin/sh is missing")

    def list(self) -> list[str]:
        try:
            entries = list(self.root.iterdir())
        except FileNotFoundError:
            return []
        return sorted(p.name for p in entries
                      if _valid_id(p.name) and (p / "instance.json").is_file())

    def console(self, instance_id: str, length: int | None = None) -> str:
        path = self.root / instance_id / "console.log"
        if not _valid_id(instance_id) or not path.is_file():
            raise DriverError(f"no instance {instance_id} on this host")
        return tail_lines(path.read_text(encoding="utf-8", errors="replace"), length)

    def spawn(self, spec: InstanceSpec) -> None:
        if not _valid_id(spec.id):
            raise DriverError(f"invalid instance id {spec.id!r}")
        try:
            addr = ipaddress.ip_address(spec.network.ip)
        except ValueError as e:
            raise DriverError(f"invalid address {spec.network.ip!r}") from e
        if addr.version != 4 or not addr.is_loopback:
            raise DriverError(f"sandbox instances need a 127.0.0.0/8 address, not {addr}")
        with self._id_lock(spec.id):
            with self._lock:
                if spec.id in self._running:
                    return
            folder = self.root / spec.id
            fresh = not (folder / "instance.json").is_file()
            inst: _Instance | None = None
            try:
                inst = self._prepare(spec, folder, fresh)
                self._call(self._start_server(inst), self.boot_timeout)
                self._wait_port(inst.ip)
            except Exception as e:
                if inst is not None and inst.acceptor is not None:
                    with contextlib.suppress(Exception):
                        self._call(self._stop_server(inst), 10)
                if fresh:
                    shutil.rmtree(folder, ignore_errors=True)
                if isinstance(e, DriverError):
                    raise
                raise DriverError(f"sandbox instance {spec.name} failed to boot: "
                                  f"{type(e).__name__}: {e}") from e
            inst.log(f"sshd: listening on {inst.ip} port {self.ssh_port}")
            inst.log(f"{spec.name} login: ")
            with self._lock:
                self._running[spec.id] = inst

    def destroy(self, instance_id: str) -> None:
        if not _valid_id(instance_id):
            return
        with self._id_lock(instance_id):
            with self._lock:
                inst = self._running.pop(instance_id, None)
            sessions: set[int] = set()
            if inst is not None:
                sessions = set(inst.sessions)
                with contextlib.suppress(Exception):
                    self._call(self._stop_server(inst), 10)
            _kill_all(instance_id, sessions)
            folder = self.root / instance_id
            for _ in range(3):
                shutil.rmtree(folder, ignore_errors=True)
                if not folder.exists():
                    return
                _kill_all(instance_id, sessions)
            if folder.exists():
                raise DriverError(f"could not remove {folder}")

    # -- server actions: "power" is the SSH server and the instance's processes ------------

    def stop(self, instance_id: str) -> None:
        """The SSH server stops and every process of the instance is killed; its folder (home,
        console, host keys) stays."""
        if not _valid_id(instance_id) or not (self.root / instance_id / "instance.json"
                                              ).is_file():
            raise DriverError(f"no instance {instance_id} on this host")
        with self._id_lock(instance_id):
            with self._lock:
                inst = self._running.pop(instance_id, None)
            if inst is None:
                return
            with contextlib.suppress(Exception):
                self._call(self._stop_server(inst), 10)
            _kill_all(instance_id, set(inst.sessions))
            inst.log("infracloud sandbox: shut down (its processes were killed)")

    def start(self, spec: InstanceSpec) -> None:
        if not (self.root / spec.id / "instance.json").is_file():
            raise DriverError(f"no instance {spec.id} on this host")
        self.spawn(spec)  # a kept folder: its SSH server starts again

    def reboot(self, spec: InstanceSpec, hard: bool) -> None:
        """There is no guest to ask: soft and hard both kill the instance's processes and
        start its SSH server again; only a hard one starts a stopped instance."""
        with self._lock:
            stopped = spec.id not in self._running
        if stopped and not hard and (self.root / spec.id / "instance.json").is_file():
            raise DriverError(f"{spec.name} is stopped: only a hard reboot starts it")
        self.stop(spec.id)
        self.start(spec)

    def rebuild(self, spec: InstanceSpec) -> None:
        """A fresh folder (the sandbox has no image: home starts empty again)."""
        self.destroy(spec.id)
        self.spawn(spec)

    def snapshot(self, instance_id: str, dest: Path) -> None:
        raise DriverError("createImage is not supported by the sandbox driver: its servers "
                          "have no disk to copy")

    # -- helpers -----------------------------------------------------------------------------

    def _id_lock(self, instance_id: str) -> threading.Lock:
        with self._lock:
            return self._id_locks.setdefault(instance_id, threading.Lock())

    def _prepare(self, spec: InstanceSpec, folder: Path, fresh: bool) -> _Instance:
        """Directory, config drive copy, host keys, authorized keys; boot lines on console."""
        (folder / "home").mkdir(parents=True, exist_ok=True)
        drive = folder / "config-2.iso"
        if spec.config_drive.is_file() and spec.config_drive.resolve() != drive.resolve():
            shutil.copyfile(spec.config_drive, drive)
        try:
            cd = configdrive.read(drive)
        except configdrive.ConfigDriveError as e:
            raise DriverError(f"bad config drive for {spec.name}: {e}") from e
        keys: set[bytes] = set()
        names: list[str] = []
        for key_name, line in dict(cd.meta_data.get("public_keys") or {}).items():
            try:
                key = asyncssh.import_public_key(str(line))
            except (asyncssh.KeyImportError, ValueError):
                continue
            keys.add(key.public_data)
            names.append(f"{key_name} ({key.get_algorithm()} {key.get_fingerprint()})")
        host_keys = _host_keys(folder)
        net = spec.network
        if fresh:
            info = {"id": spec.id, "name": spec.name, "ip": net.ip, "prefix": net.prefix,
                    "mac": net.mac, "ssh_port": self.ssh_port, "created": _now()}
            tmp = folder / ".instance.json.tmp"
            tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
            os.replace(tmp, folder / "instance.json")
        inst = _Instance(id=spec.id, dir=folder.resolve(), ip=net.ip, keys=keys,
                         host_keys=host_keys)
        hostname = str(cd.meta_data.get("hostname") or spec.name)
        inst.log(f"infracloud sandbox: {'booting' if fresh else 'restarting'} {spec.name} "
                 f"({spec.id}) - NOT a virtual machine, commands run on the host")
        inst.log(f"cloud-init: datasource ConfigDrive [{configdrive.LABEL}]")
        inst.log(f"cloud-init: set hostname to {hostname}")
        inst.log(f"cloud-init: eth0 {net.mac} {net.ip}/{net.prefix} "
                 f"gateway {net.gateway or '-'}")
        inst.log(f"cloud-init: authorized {len(keys)} ssh key(s): {', '.join(names) or '-'}")
        inst.log("-----BEGIN SSH HOST KEY KEYS-----")
        for key in host_keys:
            inst.log(key.export_public_key().decode().strip())
        inst.log("-----END SSH HOST KEY KEYS-----")
        return inst

    def _wait_port(self, ip: str) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while True:
            try:
                with socket.create_connection((ip, self.ssh_port), timeout=1):
                    return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise DriverError(f"ssh on {ip}:{self.ssh_port} not reachable: {e}") from e
                time.sleep(0.05)

    async def _start_server(self, inst: _Instance) -> None:
        inst.acceptor = await asyncssh.listen(
            host=inst.ip, port=self.ssh_port, reuse_address=True,
            server_factory=functools.partial(_Server, inst),
            server_host_keys=inst.host_keys,
            process_factory=functools.partial(self._session, inst),
            sftp_factory=functools.partial(_SFTP, inst=inst),
            allow_scp=True, encoding=None, line_editor=False, agent_forwarding=False,
            x11_forwarding=False, login_timeout=60, keepalive_interval=30)

    async def _stop_server(self, inst: _Instance) -> None:
        if inst.acceptor is not None:
            inst.acceptor.close()
            await inst.acceptor.wait_closed()
        conns = list(inst.conns)
        for conn in conns:
            conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True), 5)

    async def _session(self, inst: _Instance, process: asyncssh.SSHServerProcess[bytes],
                       ) -> None:
        command = process.command
        if process.subsystem:
            process.stderr.write(f"subsystem {process.subsystem} not supported\n".encode())
            process.exit(1)
            return
        user = process.get_extra_info("username") or "?"
        peer = process.get_extra_info("peername") or ("?", 0)
        argv = ["/bin/sh", "-c", command] if command is not None else ["/bin/sh", "-i"]
        inst.log(f"sshd: {user}@{peer[0]}: " + (f"exec {command!r}" if command is not None
                                                 else "shell"))
        home = str(inst.home)
        env = {"HOME": home, "PWD": home, "USER": self._user, "LOGNAME": self._user,
               "SHELL": "/bin/sh", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               MARKER: inst.id, "SSH_CLIENT": f"{peer[0]} {peer[1]} {self.ssh_port}",
               "SSH_CONNECTION": f"{peer[0]} {peer[1]} {inst.ip} {self.ssh_port}"}
        env.update({k: v for k, v in process.env.items()
                    if isinstance(k, str) and isinstance(v, str)
                    and (k == "LANG" or k.startswith("LC_"))})
        try:
            if process.term_type:
                env["TERM"] = process.term_type
            rc = await self._run(inst, process, argv, env)
        except OSError as e:
            inst.log(f"sshd: cannot start {argv[0]}: {e}")
            with contextlib.suppress(Exception):
                process.stderr.write(f"sandbox: cannot run command: {e}\n".encode())
            rc = 127
        if rc < 0 and -rc not in {int(s) for s in signal.Signals}:
            rc = 128 - rc  # a real-time signal: no name to send, report it as sh does
        signame = signal.Signals(-rc).name if rc < 0 else ""
        inst.log(f"sshd: {user}@{peer[0]}: " + (f"killed by {signame}" if signame
                                                 else f"exit status {rc}"))
        with contextlib.suppress(Exception):
            if signame:
                process.exit_with_signal(signame.removeprefix("SIG"))
            else:
                process.exit(rc)

    async def _run(self, inst: _Instance, process: asyncssh.SSHServerProcess[bytes],
                   argv: Sequence[str], env: dict[str, str]) -> int:
        """Run argv in its own session, on a pty if the client asked for one, streaming
        stdin/stdout/stderr; the exit status once it ended and its output reached EOF (a
        background child holding stdout keeps the session open, as with OpenSSH)."""
        loop = asyncio.get_running_loop()
        cleanup: list[Callable[[], object]] = []
        resize: Callable[[tuple[int, int, int, int]], None] = _ignore
        if process.term_type:
            master, slave = os.openpty()
            try:
                _set_winsize(slave, process.term_size)
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, cwd=inst.home, env=env,
                    start_new_session=True, preexec_fn=_login_tty_child)
                wfd = os.dup(master)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", 0))
            cleanup += [transport.close, functools.partial(os.close, wfd)]

            async def write(data: bytes) -> None:
                await loop.run_in_executor(None, os.write, wfd, data)

            outputs = [(reader, process.stdout)]
            eof: Callable[[], None] = _ignore  # on a pty, EOF is ^D
            resize = functools.partial(_set_winsize, wfd)
        else:
            pipe = asyncio.subprocess.PIPE
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=pipe, stdout=pipe, stderr=pipe, cwd=inst.home, env=env,
                start_new_session=True, preexec_fn=_login_child)
            assert proc.stdin and proc.stdout and proc.stderr
            stdin = proc.stdin

            async def write(data: bytes) -> None:
                stdin.write(data)
                await stdin.drain()

            outputs = [(proc.stdout, process.stdout), (proc.stderr, process.stderr)]
            eof = stdin.close
        inst.sessions.add(proc.pid)
        tasks = [asyncio.create_task(_pump_in(process.stdin, write, eof, resize)),
                 asyncio.create_task(_hang_up_when_closed(process, proc))]
        output = asyncio.gather(*(_pump_out(r, w) for r, w in outputs))
        try:
            rc = await proc.wait()
            await output
            return rc
        finally:
            output.cancel()
            for task in tasks:
                task.cancel()
            for close in cleanup:
                close()


async def _hang_up_when_closed(process: asyncssh.SSHServerProcess[bytes],
                               proc: asyncio.subprocess.Process) -> None:
    """The client went away while the command runs: hang up on it, as sshd would."""
    await process.channel.wait_closed()
    if proc.returncode is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGHUP)


def _host_keys(folder: Path) -> list[asyncssh.SSHKey]:
    keys = []
    for alg, short in HOST_KEYS:
        path = folder / f"ssh_host_{short}_key"
        try:
            key = asyncssh.read_private_key(path)
        except (OSError, asyncssh.KeyImportError):
            key = (asyncssh.generate_private_key(alg, key_size=2048) if short == "rsa"
                   else asyncssh.generate_private_key(alg))
            tmp = path.with_name(path.name + ".tmp")
            key.write_private_key(tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            key.write_public_key(path.with_name(path.name + ".pub"))
        keys.append(key)
    return keys


def _victims(instance_id: str, sessions: set[int]) -> list[int]:
    """Live processes in one of `sessions` or with the instance's marker in their environment."""
    marker = f"{MARKER}={instance_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone already, or not ours to read
            continue
        state, _, _, sid = stat[stat.rfind(b")") + 2:].split()[:4]
        if state != b"Z" and (int(sid) in sessions or marker in environ.split(b"\0")):
            found.append(int(entry))
    return found


def _kill_all(instance_id: str, sessions: set[int], timeout: float = 10) -> None:
    """SIGKILL every process of the instance, until none is left (zombies aside): those in
    the sessions its commands were started in, and any carrying its marker variable."""
    deadline = time.monotonic() + timeout
    while victims := _victims(instance_id, sessions):
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise DriverError(f"processes {victims} of {instance_id} do not die")
        time.sleep(0.01)
