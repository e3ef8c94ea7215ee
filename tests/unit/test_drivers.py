"""One contract for every hypervisor driver (fake, sandbox, and libvirt both on its test
driver and on QEMU), then what only the sandbox does: a real SSH server per instance on a
loopback address. Only 127.0.0.0/8 is ever used.

On QEMU the contract boots a blank disk: the domains, overlays, forwards and image cache are
real and nothing writes to the serial console (so it is stable), while the tests in
tests/integration/test_libvirt.py boot the real guest."""

from __future__ import annotations

import asyncio
import io
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import asyncssh
import paramiko
import pytest

from infracloud.agent import configdrive
from infracloud.agent.drivers.base import Driver, DriverError, InstanceSpec, NetworkInfo
from infracloud.agent.drivers.fake import FakeDriver
from infracloud.agent.drivers.sandbox import SandboxDriver
from tests import libvirt_env
from tests.servers import wait_for

DOOMED = "doomed"  # the fake driver fails to spawn instances with this name


def free_loopback_ip() -> str:
    """A random 127.100.X.Y whose port 22 nobody is listening on."""
    for _ in range(100):
        ip = f"127.100.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((ip, 22))
            except OSError:
                continue
        return ip
    raise RuntimeError("no free loopback address")


def make_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def public_line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def blank_image(folder: Path, size: int = 1024 * 1024) -> Path:
    """A raw image of zeros (boots nothing: the libvirt contract runs need no guest)."""
    path = folder / f"blank-{size}.raw"
    if not path.exists():
        with open(path, "wb") as f:
            f.truncate(size)
    return path


def make_spec(folder: Path, name: str = "node", keys: dict[str, str] | None = None,
              ip: str | None = None) -> InstanceSpec:
    instance_id = str(uuid.uuid4())
    ip = ip or free_loopback_ip()
    drive = folder / f"{instance_id}.config"
    configdrive.build(
        drive,
        meta_data=configdrive.meta_data(uuid=instance_id, name=name, project_id="p",
                                        public_keys=keys or {}),
        network_data=configdrive.network_data(ip, 8, None, "fa:16:3e:00:00:01"),
        user_data=None)
    return InstanceSpec(id=instance_id, name=name, vcpus=1, ram_mb=512, disk_gb=1,
                        network=NetworkInfo(ip=ip, prefix=8, gateway=None,
                                            mac="fa:16:3e:00:00:01"),
                        config_drive=drive, image=blank_image(folder))


def destroy_all(driver: Driver) -> None:
    for instance_id in driver.list():
        driver.destroy(instance_id)
    driver.close()


LIBVIRT_URIS = {"libvirt-test": libvirt_env.TEST_URI, "libvirt-qemu": libvirt_env.QEMU_URI}


@pytest.fixture(params=["fake", "sandbox", *LIBVIRT_URIS])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    d: Driver
    if request.param == "fake":
        d = FakeDriver(fail_names={DOOMED})
    elif request.param == "sandbox":
        d = SandboxDriver(tmp_path / "sandbox", ssh_port=22, boot_timeout=5)
    else:
        uri = LIBVIRT_URIS[request.param]
        libvirt_env.require(uri)
        from infracloud.agent.drivers.libvirt import LibvirtDriver

        d = LibvirtDriver(tmp_path / "instances", tmp_path / "images", uri=uri)
    yield d
    destroy_all(d)


@pytest.fixture
def failing_spec(driver: Driver, tmp_path: Path) -> Iterator[InstanceSpec]:
    """A spec the driver cannot boot: the fake driver fails it by name; libvirt gets an
    image bigger than the flavor's root disk; for the sandbox its address's port 22 is
    already taken by a listener of ours."""
    if isinstance(driver, FakeDriver):
        yield make_spec(tmp_path, name=DOOMED)
        return
    if driver.name == "libvirt":
        big = tmp_path / "big.qcow2"  # 2 GiB virtual, for a 1 GB root disk
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "2G"], check=True)
        yield replace(make_spec(tmp_path), image=big)
        return
    spec = make_spec(tmp_path)
    with socket.socket() as taken:
        taken.bind((spec.network.ip, 22))
        taken.listen()
        yield spec


# -- the contract ---------------------------------------------------------------------------


def test_validate(driver: Driver) -> None:
    driver.validate()


def test_spawn_lists_and_again_is_a_noop(driver: Driver, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, name="node-a")
    assert spec.id not in driver.list()
    driver.spawn(spec)
    assert spec.id in driver.list()
    before = driver.console(spec.id)
    driver.spawn(spec)
    assert driver.list().count(spec.id) == 1
    assert driver.console(spec.id) == before


def test_console(driver: Driver, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, name="node-console")
    driver.spawn(spec)
    full = driver.console(spec.id)
    assert "node-console" in full and spec.network.ip in full
    lines = full.splitlines()
    assert len(lines) >= 3
    assert driver.console(spec.id, length=2).splitlines() == lines[-2:]
    assert driver.console(spec.id, length=1).splitlines() == lines[-1:]
    assert driver.console(spec.id, length=10_000) == full
    assert driver.console(spec.id, length=0) == ""


def test_destroy_is_idempotent(driver: Driver, tmp_path: Path) -> None:
    spec, other = make_spec(tmp_path), make_spec(tmp_path)
    driver.spawn(spec)
    driver.spawn(other)
    driver.destroy(spec.id)
    assert spec.id not in driver.list()
    assert other.id in driver.list()
    driver.destroy(spec.id)
    driver.destroy(str(uuid.uuid4()))
    with pytest.raises(DriverError):
        driver.console(spec.id)


def test_console_of_unknown_instance(driver: Driver) -> None:
    with pytest.raises(DriverError):
        driver.console(str(uuid.uuid4()))
    with pytest.raises(DriverError):
        driver.console("../../etc")


def test_failing_spawn(driver: Driver, failing_spec: InstanceSpec) -> None:
    with pytest.raises(DriverError):
        driver.spawn(failing_spec)
    assert failing_spec.id not in driver.list()


def test_concurrent_spawns(driver: Driver, tmp_path: Path) -> None:
    specs = [make_spec(tmp_path, name=f"node-{i}") for i in range(6)]
    errors: list[BaseException] = []

    def spawn(spec: InstanceSpec) -> None:
        try:
            driver.spawn(spec)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=spawn, args=(s,)) for s in specs for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(driver.list()) == sorted(s.id for s in specs)


def test_fake_driver_boot_delay_and_scale(tmp_path: Path) -> None:
    slow = FakeDriver(boot_delay=0.05)
    spec = make_spec(tmp_path)
    started = time.monotonic()
    slow.spawn(spec)
    assert time.monotonic() - started >= 0.05
    assert slow.spec(spec.id) == spec
    fast = FakeDriver()
    base = make_spec(tmp_path)
    specs = [InstanceSpec(id=f"i-{n}", name=f"n{n}", vcpus=1, ram_mb=1, disk_gb=1,
                          network=base.network, config_drive=base.config_drive)
             for n in range(5000)]
    started = time.monotonic()
    for s in specs:
        fast.spawn(s)
    assert len(fast.list()) == 5000
    for s in specs:
        fast.destroy(s.id)
    assert fast.list() == []
    assert time.monotonic() - started < 5


# -- sandbox only: a real SSH server per instance -------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxDriver]:
    d = SandboxDriver(tmp_path / "sandbox", ssh_port=22, boot_timeout=5)
    yield d
    destroy_all(d)


@pytest.fixture
def booted(sandbox: SandboxDriver, tmp_path: Path) -> tuple[InstanceSpec, asyncssh.SSHKey]:
    key = make_key()
    spec = make_spec(tmp_path, name="sbx", keys={"ci": public_line(make_key()),
                                                 "mine": public_line(key)})
    sandbox.spawn(spec)
    return spec, key


def ssh(ip: str, key: asyncssh.SSHKey, command: str, username: str = "zuul",
        stdin: str | None = None) -> asyncssh.SSHCompletedProcess:
    async def run() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(ip, 22, username=username, client_keys=[key],
                                    known_hosts=None, agent_path=None, config=None) as conn:
            return await conn.run(command, input=stdin)
    return asyncio.run(asyncio.wait_for(run(), 20))


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_sandbox_ssh_exec(sandbox: SandboxDriver, booted: tuple[InstanceSpec,
                                                                  asyncssh.SSHKey]) -> None:
    spec, key = booted
    ip = spec.network.ip
    home = sandbox.root.resolve() / spec.id / "home"
    result = ssh(ip, key, "uname -a")
    assert result.exit_status == 0
    assert str(result.stdout).startswith("Linux ")
    for user in ("root", "ubuntu"):
        result = ssh(ip, key, "echo $HOME; pwd", username=user)
        assert str(result.stdout).splitlines() == [str(home), str(home)]
    result = ssh(ip, key, "echo out; echo err >&2; exit 7")
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    result = ssh(ip, key, "tr a-z A-Z", stdin="hello\n")
    assert (result.exit_status, result.stdout) == (0, "HELLO\n")
    console = sandbox.console(spec.id)
    assert "exec 'uname -a'" in console and "exit status 7" in console
    assert "accepted publickey for ubuntu" in console


def test_sandbox_pty_shell(booted: tuple[InstanceSpec, asyncssh.SSHKey]) -> None:
    spec, key = booted

    async def run() -> tuple[str, str]:
        async with asyncssh.connect(spec.network.ip, 22, username="zuul", client_keys=[key],
                                    known_hosts=None, agent_path=None, config=None) as conn:
            tty = await conn.run("tty", term_type="xterm")
            shell = await conn.run(None, term_type="xterm", input="echo sh-$((6*7))\nexit 3\n")
            assert shell.exit_status == 3
            return str(tty.stdout), str(shell.stdout)

    tty, shell = asyncio.run(asyncio.wait_for(run(), 20))
    assert tty.startswith("/dev/pts/")
    assert "sh-42" in shell


def test_sandbox_refuses_unknown_key(booted: tuple[InstanceSpec, asyncssh.SSHKey]) -> None:
    spec, _ = booted
    with pytest.raises(asyncssh.PermissionDenied):
        ssh(spec.network.ip, make_key(), "true", username="root")


def test_sandbox_paramiko_host_keys(sandbox: SandboxDriver,
                                    booted: tuple[InstanceSpec, asyncssh.SSHKey]) -> None:
    """What nodepool's keyscan does: one connection per key type paramiko knows."""
    spec, key = booted
    on_disk = {line.split()[0]: line.split()[1]
               for p in (sandbox.root / spec.id).glob("ssh_host_*_key.pub")
               for line in [p.read_text()]}
    scanned: dict[str, str] = {}
    with socket.socket() as probe:
        key_types = paramiko.Transport(probe).get_security_options().key_types
    for key_type in key_types:
        with socket.create_connection((spec.network.ip, 22), timeout=5) as sock:
            transport = paramiko.Transport(sock)
            transport.get_security_options().key_types = [key_type]
            try:
                transport.start_client(timeout=5)
            except paramiko.SSHException:
                continue
            finally:
                if not transport.active:
                    transport.close()
            host_key = transport.get_remote_server_key()
            scanned[host_key.get_name()] = host_key.get_base64()
            transport.close()
    assert scanned == on_disk
    assert set(scanned) == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
    # and a paramiko client can log in with the config drive's key and run a command
    pkey = paramiko.Ed25519Key.from_private_key(
        io.StringIO(key.export_private_key().decode()))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(spec.network.ip, 22, username="root", pkey=pkey, look_for_keys=False,
                   allow_agent=False, timeout=5)
    try:
        _, stdout, _ = client.exec_command("echo from-paramiko; exit 4")
        assert stdout.read() == b"from-paramiko\n"
        assert stdout.channel.recv_exit_status() == 4
    finally:
        client.close()


def test_sandbox_sftp(sandbox: SandboxDriver, booted: tuple[InstanceSpec, asyncssh.SSHKey],
                      tmp_path: Path) -> None:
    spec, key = booted
    home = sandbox.root.resolve() / spec.id / "home"
    local = tmp_path / "local.bin"
    local.write_bytes(bytes(range(256)) * 1000)

    async def run() -> None:
        async with asyncssh.connect(spec.network.ip, 22, username="zuul", client_keys=[key],
                                    known_hosts=None, agent_path=None, config=None) as conn:
            async with conn.start_sftp_client() as sftp:
                assert await sftp.realpath(".") == str(home)
                await sftp.put(str(local), "up.bin")
                await sftp.mkdir(str(home / "sub"))  # absolute, as the shell reports it
                await sftp.put(str(local), str(home / "sub" / "up2.bin"))
                await sftp.get("up.bin", str(tmp_path / "down.bin"))
                with pytest.raises(asyncssh.SFTPError):
                    await sftp.get("/etc/hostname", str(tmp_path / "nope"))
                with pytest.raises(asyncssh.SFTPError):
                    await sftp.put(str(local), "../../../escaped.bin")
            await asyncssh.scp(str(local), (conn, "scp.bin"))  # the legacy scp protocol
            result = await conn.run("cmp up.bin sub/up2.bin && cmp up.bin scp.bin && echo same")
            assert result.stdout == "same\n"
            # the sftp subsystem ends with exit status 0, as OpenSSH's scp requires
            sftp_session = await conn.create_process(subsystem="sftp", encoding=None)
            sftp_session.stdin.write(b"\0\0\0\x05\x01\0\0\0\x03")  # SSH_FXP_INIT, v3
            assert (await sftp_session.stdout.readexactly(5))[4] == 2  # SSH_FXP_VERSION
            sftp_session.stdin.write_eof()
            assert (await sftp_session.wait()).exit_status == 0

    asyncio.run(asyncio.wait_for(run(), 20))
    assert (home / "up.bin").read_bytes() == local.read_bytes()
    assert (tmp_path / "down.bin").read_bytes() == local.read_bytes()
    assert not (tmp_path / "nope").exists()
    assert not (sandbox.root.parent / "escaped.bin").exists()


def test_sandbox_destroy_kills_processes(sandbox: SandboxDriver,
                                         booted: tuple[InstanceSpec, asyncssh.SSHKey]) -> None:
    spec, key = booted
    ip = spec.network.ip
    background = int(ssh(ip, key, "nohup sleep 300 >/dev/null 2>&1 & echo $!").stdout or "")
    escaped = int(ssh(ip, key, "setsid sleep 301 >/dev/null 2>&1 </dev/null & echo $!").stdout
                  or "")
    foreground: list[int] = []
    started = threading.Event()
    outcome: list[object] = []

    async def hold() -> None:
        async with asyncssh.connect(ip, 22, username="zuul", client_keys=[key],
                                    known_hosts=None, agent_path=None, config=None) as conn:
            proc = await conn.create_process("echo $$; exec sleep 302")
            foreground.append(int(await proc.stdout.readline()))
            started.set()
            outcome.append(await proc.wait(check=False))

    def run_hold() -> None:
        try:
            asyncio.run(asyncio.wait_for(hold(), 30))
        except BaseException as e:
            outcome.append(e)

    holder = threading.Thread(target=run_hold)
    holder.start()
    assert started.wait(10)
    pids = [background, escaped, *foreground]
    assert all(alive(p) for p in pids)
    sandbox.destroy(spec.id)
    holder.join(10)
    assert not holder.is_alive()  # the session ended
    assert outcome  # with a result or a lost connection, not a hang
    assert [p for p in pids if alive(p)] == []
    assert not (sandbox.root / spec.id).exists()
    assert spec.id not in sandbox.list()
    with socket.socket() as s:  # nothing listens there any more (TIME_WAIT aside)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, 22))
        s.listen()


def test_sandbox_restart_finds_instances(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    key = make_key()
    spec = make_spec(tmp_path, name="survivor", keys={"mine": public_line(key)})
    first = SandboxDriver(root, boot_timeout=5)
    first.spawn(spec)
    assert ssh(spec.network.ip, key, "echo one").stdout == "one\n"
    survivor = int(ssh(spec.network.ip, key, "nohup sleep 304 >/dev/null 2>&1 & echo $!").stdout
                   or "")
    host_keys = sorted(p.read_text() for p in (root / spec.id).glob("*.pub"))
    first.close()  # the agent stops: the SSH server goes away, the instance stays
    with pytest.raises(OSError), socket.create_connection((spec.network.ip, 22), timeout=2):
        pass
    assert alive(survivor)  # detached processes outlive the agent's SSH servers
    second = SandboxDriver(root, boot_timeout=5)
    try:
        assert second.list() == [spec.id]
        assert "survivor" in second.console(spec.id)
        second.spawn(spec)
        assert ssh(spec.network.ip, key, "echo two").stdout == "two\n"
        assert sorted(p.read_text() for p in (root / spec.id).glob("*.pub")) == host_keys
        assert "restarting survivor" in second.console(spec.id)
    finally:
        destroy_all(second)
    assert second.list() == []
    assert not alive(survivor)  # found by its marker although started before the restart


@pytest.mark.parametrize(("agent_ignores_sighup", "term"), [
    (False, None), (True, None), (True, "xterm")], ids=["plain", "nohup", "nohup-pty"])
def test_sandbox_client_disconnect_hangs_up(sandbox: SandboxDriver,
                                           booted: tuple[InstanceSpec, asyncssh.SSHKey],
                                           agent_ignores_sighup: bool, term: str | None) -> None:
    """Also when the agent runs under `nohup` (SIGHUP ignored, which its children would
    inherit): a login's processes start with the default actions, as under sshd."""
    spec, key = booted

    async def start_and_drop() -> int:
        async with asyncssh.connect(spec.network.ip, 22, username="zuul", client_keys=[key],
                                    known_hosts=None, agent_path=None, config=None) as conn:
            proc = await conn.create_process("echo $$; exec sleep 303", term_type=term)
            return int((await proc.stdout.readline()).strip())

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN if agent_ignores_sighup
                             else signal.SIG_DFL)
    try:
        pid = asyncio.run(asyncio.wait_for(start_and_drop(), 20))
    finally:
        signal.signal(signal.SIGHUP, previous)
    wait_for("the login's process to end", lambda: not alive(pid), 5, 0.02)
    wait_for("the console to say so", lambda: "killed by SIGHUP" in sandbox.console(spec.id),
             5, 0.02)


def test_sandbox_refuses_non_loopback_address(sandbox: SandboxDriver, tmp_path: Path) -> None:
    # refused before anything is bound or sent
    spec = make_spec(tmp_path, ip="192.0.2.1")
    with pytest.raises(DriverError, match=r"127\.0\.0\.0/8"):
        sandbox.spawn(spec)
    assert sandbox.list() == []


def test_sandbox_validate_unwritable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DriverError):
        SandboxDriver(blocker / "root").validate()


# -- the contract: server actions (stop, start, reboot, rebuild, snapshot) -------------------


def running(driver: Driver, spec: InstanceSpec) -> bool:
    """Whether the instance is powered on, as each driver shows it: the fake's record,
    the sandbox's SSH port answering, libvirt's domain running."""
    if isinstance(driver, FakeDriver):
        power = driver.power(spec.id)
        return bool(power and power[0])
    if isinstance(driver, SandboxDriver):
        with socket.socket() as s:
            s.settimeout(2)
            return s.connect_ex((spec.network.ip, 22)) == 0
    return bool(driver.power(spec.id))  # type: ignore[attr-defined]


def test_stop_start_reboot_rebuild(driver: Driver, tmp_path: Path) -> None:
    """One instance through every power action: each leaves it listed, on its address."""
    if driver.name == "libvirt":  # the blank disk ignores ACPI: cut off at once
        driver.shutdown_timeout = 0.5  # type: ignore[attr-defined]
    spec = make_spec(tmp_path, name="node-p")
    driver.spawn(spec)
    assert running(driver, spec)
    driver.stop(spec.id)
    assert not running(driver, spec) and spec.id in driver.list()
    driver.stop(spec.id)  # stopped already: nothing to do
    with pytest.raises(DriverError):  # a soft reboot does not start a stopped instance
        driver.reboot(spec, hard=False)
    driver.start(spec)
    assert running(driver, spec)
    driver.start(spec)  # running already
    driver.reboot(spec, hard=False)
    assert running(driver, spec)
    driver.reboot(spec, hard=True)
    assert running(driver, spec)
    driver.stop(spec.id)
    driver.reboot(spec, hard=True)  # a hard reboot starts a stopped instance
    assert running(driver, spec)
    rebuilt = replace(spec, image=blank_image(tmp_path, 2 * 1024 * 1024))
    driver.rebuild(rebuilt)
    assert running(driver, spec) and spec.id in driver.list()
    driver.console(spec.id)


def test_actions_on_an_unknown_instance(driver: Driver, tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    with pytest.raises(DriverError):
        driver.stop(spec.id)
    with pytest.raises(DriverError):
        driver.start(spec)
    with pytest.raises(DriverError):
        driver.reboot(spec, hard=True)


def test_snapshot(driver: Driver, tmp_path: Path) -> None:
    """libvirt: the disk (overlay and base) as one qcow2 without a backing file; the
    drivers without disks refuse, saying so."""
    spec = make_spec(tmp_path, name="node-s")
    driver.spawn(spec)
    dest = tmp_path / "snap.qcow2"
    if driver.name != "libvirt":
        with pytest.raises(DriverError, match=f"not supported by the {driver.name} driver"):
            driver.snapshot(spec.id, dest)
        return
    driver.snapshot(spec.id, dest)
    info = subprocess.run(["qemu-img", "info", "--output=json", str(dest)],
                          capture_output=True, text=True, check=True).stdout
    assert '"format": "qcow2"' in info and "backing-filename" not in info
    assert running(driver, spec)  # paused for the copy, then resumed
