"""`infracloud demo`: an all-in-one site in one folder. The first run makes the database, the
accounts (admin; projects zuul and ci with a member each), a private CA and the client files;
later runs on the same folder keep all of it."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from infracloud.agent.hosts import AgentThreads, driver_capacity, host_info, make_driver
from infracloud.agent.runner import Agent
from infracloud.api.tls import ensure_certificates
from infracloud.clients.cloud import Client
from infracloud.compute.hosts import Registration
from infracloud.core.settings import DEFAULT_FLAVORS, ControllerConfig
from infracloud.hardware import inventory, workflow
from infracloud.hardware.workflow import Progress, Report
from infracloud.site.services import Services

REGION = "RegionOne"
# sandbox servers get loopback addresses, so SSH to them works on any Linux machine
DEMO_CIDR = "127.100.0.0/16"
DEMO_NETWORK = "demo-net"
DEMO_HOST = {"vcpus": 24, "ram_mb": 96 * 1024, "disk_gb": 1800}  # a "vanilla" machine (seed 001)
DEMO_IMAGE = "demo"
# with the libvirt driver servers are real VMs on this machine: ci.small fits the tiny guest
LIBVIRT_FLAVORS = [{"name": "ci.8g", "vcpus": 8, "ram_mb": 8192, "disk_gb": 80},
                   {"name": "ci.8g-30", "vcpus": 8, "ram_mb": 8192, "disk_gb": 30},
                   {"name": "ci.small", "vcpus": 1, "ram_mb": 256, "disk_gb": 1}]
# seed 003's Copr-style builders: no server of it lives past 24 h (compute/lifetimes.py); its
# owner's server first lives 8 h and is extended up to the 24 h
BUILDER_FLAVOR = {"name": "builder.8g", "vcpus": 8, "ram_mb": 8192, "disk_gb": 80,
                  "max_lifetime": "24h", "lifetime": "8h"}
GUEST_BUILD = Path(__file__).resolve().parents[3] / "tools" / "guest" / "build.sh"
# cloud name in clouds.yaml -> (user, project, role)
ACCOUNTS = {
    "infracloud-admin": ("admin", "admin", "admin"),
    "infracloud": ("zuul", "zuul", "member"),
    "infracloud-ci": ("ci", "ci", "member"),
}


@dataclass(frozen=True)
class DemoPaths:
    state_dir: Path

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "infracloud.env"

    @property
    def secrets(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def config(self) -> Path:
        return self.state_dir / "controller.yaml"

    @property
    def log(self) -> Path:
        return self.state_dir / "controller.log"

    def host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _passwords(paths: DemoPaths) -> dict[str, str]:
    known: dict[str, str] = {}
    if paths.secrets.exists():
        known = json.loads(paths.secrets.read_text())
    missing = [user for user, _, _ in ACCOUNTS.values() if user not in known]
    if missing:
        for user in missing:
            known[user] = secrets.token_urlsafe(18)
        _write_private(paths.secrets, json.dumps(known, indent=2) + "\n")
    return known


def prepare(state_dir: Path, host: str, port: int, tls: bool, log_format: str = "json", *,
            site: str = "none", driver: str = "sandbox", ssh_port: int = 22,
            cidr: str = DEMO_CIDR, network: str = DEMO_NETWORK
            ) -> tuple[ControllerConfig, DemoPaths]:
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    paths = DemoPaths(state_dir)
    data: dict = {
        "site": "demo" if site == "none" else site,
        "region": REGION,
        "listen": {"host": host, "port": port},
        "database": {"url": f"sqlite:///{state_dir / 'infracloud.db'}"},
        "images": {"store_path": str(state_dir / "images")},
        # no agent_token_file: every compute host gets its own credential
        "compute": {"network": {"name": network, "cidr": cidr}},
        # the site's simulated machines boot in-process agents with the demo's driver
        "hardware": {"simulation": {"agent_driver": driver, "root": str(state_dir / "hosts"),
                                    "ssh_port": ssh_port, "poll_wait": 10}},
        "logging": {"format": log_format},
        # the dashboard, /metrics and the read-only ops API need no login (seed 002)
        "ops": {"public_read": True, "events_retention_days": 90,
                "alerts": {"interval": 10, "webhook_url": None}},
    }
    data["compute"]["flavors"] = [*(LIBVIRT_FLAVORS if driver == "libvirt" else (
        f.model_dump(exclude_none=True) for f in DEFAULT_FLAVORS)), BUILDER_FLAVOR]
    if tls:
        hosts = [host] + (["localhost"] if host in ("127.0.0.1", "::1") else [])
        ca, cert, key = ensure_certificates(state_dir / "tls", hosts)
        data["tls"] = {"cert": str(cert), "key": str(key), "ca": str(ca)}
    _write_private(paths.config, "# written by `infracloud demo`; an example of a controller "
                   "config\n" + yaml.safe_dump(data, sort_keys=False))
    return ControllerConfig.model_validate(data), paths


def bootstrap(services: Services, paths: DemoPaths, guest: Path | None = None) -> None:
    """Accounts and client files. Idempotent. `guest`: the disk the image `demo` holds (the
    libvirt driver boots it), else a placeholder the sandbox does not boot."""
    passwords = _passwords(paths)
    for user, project, role in ACCOUNTS.values():
        services.identity.ensure_account(user, passwords[user], project, role)
    ensure_demo_image(services, guest)
    write_client_files(services.config, paths, passwords)


class GuestError(Exception):
    pass


def guest_dir() -> Path:
    """Where the tiny test guest is built and cached (as `make guest-image` does)."""
    return Path(os.environ.get("GUEST_DIR") or os.environ.get("INFRACLOUD_GUEST_DIR") or
                Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "infracloud" / "guest")


def build_guest() -> Path:
    """The tiny test guest's bootable disk, built by the project's own script
    (tools/guest/build.sh, from Debian packages; cached, so later calls take no time)."""
    if not GUEST_BUILD.is_file():
        raise GuestError(f"the guest's build script {GUEST_BUILD} is missing (run the demo "
                         f"from a source checkout)")
    out = guest_dir()
    done = subprocess.run([str(GUEST_BUILD), str(out)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise GuestError(f"cannot build the test guest: {lines[-1] if lines else 'failed'}")
    return out / "disk.raw"


def libvirt_guest(uri: str = "qemu:///system") -> Path:
    """The guest's disk, when this machine can run the demo's servers as real VMs:
    libvirt-python importable, the daemon at `uri` reachable, the guest built (cached).
    Raises DriverError or GuestError, one line saying why not."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="infracloud-demo-libvirt-") as tmp:
        make_driver("libvirt", Path(tmp), libvirt_uri=uri).close()
    return build_guest()


def ensure_demo_image(services: Services, guest: Path | None = None) -> None:
    """A public image called `demo`: the bootable `guest` disk when given (what other `demo`
    images held goes), else a small placeholder (the sandbox boots nothing)."""
    import asyncio

    from infracloud.core.context import Caller
    from infracloud.images.filters import Filters
    from infracloud.images.service import ListQuery

    admin = services.identity.directory.find_user("admin")
    project = services.identity.directory.find_project("admin")
    caller = Caller(admin.id, project.id, frozenset({"admin", "member", "reader"}))
    found, _ = services.images.list_images(caller, ListQuery(Filters(
        lists={"name": [DEMO_IMAGE]}, visibility="public")))
    if guest is None:
        data = b"infracloud demo image\n".ljust(1024 * 1024, b"\0")
        if any(i.status == "active" for i in found):
            return
    else:
        data = guest.read_bytes()
        digest = hashlib.sha512(data).hexdigest()
        if any(i.status == "active" and i.os_hash_value == digest for i in found):
            return
        for old in found:  # one image answers to `--image demo`
            services.images.delete(caller, old.id)
    image = services.images.create(caller, {"name": DEMO_IMAGE, "visibility": "public",
                                            "disk_format": "raw", "container_format": "bare",
                                            "min_disk": 1})

    async def upload() -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield data

        ticket = services.image_data.begin(caller, image.id, len(data))
        await services.image_data.receive(ticket, chunks())

    asyncio.run(upload())


def start_hosts(services: Services, paths: DemoPaths, count: int, driver: str,
                ssh_port: int) -> AgentThreads:
    """`count` compute hosts in this process, each an agent with its own driver and its own
    credential (issued here, as a join would)."""
    threads = AgentThreads()
    cacert = str(services.config.tls.ca) if services.config.tls and services.config.tls.ca \
        else True
    for n in range(1, count + 1):
        name = f"{services.config.site}-compute-{n:02d}"
        root = paths.host_dir(name)
        hypervisor = make_driver(driver, root, ssh_port=ssh_port,
                                 libvirt_uri=services.config.hardware.simulation.libvirt_uri,
                                 cache_dir=paths.state_dir / "hosts" / "libvirt-images")
        size = host_info(name, *(driver_capacity(hypervisor, root) if driver == "libvirt"
                                 else (DEMO_HOST["vcpus"], DEMO_HOST["ram_mb"],
                                       DEMO_HOST["disk_gb"])))
        _, credential = services.credentials.enrol(services.hosts, Registration(
            name=name, driver=driver, vcpus=size.vcpus, ram_mb=size.ram_mb,
            disk_gb=size.disk_gb))
        agent = Agent(services.base_url, credential, hypervisor, size, root, cacert=cacert,
                      poll_wait=10)
        threads.start(agent)
    return threads


def site_file(name: str) -> Path:
    """A shipped site inventory (sites/<name>.yaml)."""
    return Path(__file__).parent.parent / "sites" / f"{name}.yaml"


def bring_up_site(services: Services, paths: DemoPaths, site: str, report: Report
                  ) -> tuple[Progress, Progress]:
    """Enrol the site's simulated machines through their (simulated) BMCs and deploy its
    compute machines, through the API like an operator would; machines deployed by an
    earlier run are powered on again (the simulated world starts powered off)."""
    with Client("infracloud-admin", clouds_file=paths.clouds_yaml) as client:
        enrolled = workflow.enroll(client.call, inventory.load(site_file(site)), report)
        nodes = workflow.list_nodes(client.call, workflow.FIELDS + ",extra")
        workflow.set_state(client.call, "power", [
            (name, {"target": "power on"}) for name, node in nodes.items()
            if node["provision_state"] == "active" and not node["maintenance"]])
        ready = sorted(n for n, node in nodes.items() if node["provision_state"] ==
                       "available" and node["extra"].get("role") == "compute")
        deployed = workflow.deploy(client.call, ready, report) if ready else Progress(0)
    return enrolled, deployed


def write_client_files(config: ControllerConfig, paths: DemoPaths,
                       passwords: dict[str, str]) -> None:
    clouds = {}
    for cloud, (user, project, _role) in ACCOUNTS.items():
        entry: dict = {
            "auth": {"auth_url": f"{config.base_url()}/identity", "username": user,
                     "password": passwords[user], "project_name": project,
                     "user_domain_name": "Default", "project_domain_name": "Default"},
            "region_name": config.region,
            "identity_api_version": 3,
            "interface": "public",
        }
        if config.tls and config.tls.ca:
            entry["cacert"] = str(config.tls.ca)
        clouds[cloud] = entry
    _write_private(paths.clouds_yaml, yaml.safe_dump({"clouds": clouds}, sort_keys=False))
    env = {"OS_CLIENT_CONFIG_FILE": str(paths.clouds_yaml), "OS_CLOUD": "infracloud",
           "INFRACLOUD_ADMIN_CLOUD": "infracloud-admin", "INFRACLOUD_URL": config.base_url(),
           # the demo's pool is served by its controller; its requestor is the token's project
           "INFRACLOUD_POOL_URL": config.base_url(), "INFRACLOUD_POOL_CLOUD": "infracloud"}
    if config.tls and config.tls.ca:
        env["INFRACLOUD_POOL_CACERT"] = str(config.tls.ca)
    write_env(paths, env)


def write_env(paths: DemoPaths, env: dict[str, str]) -> None:
    """KEY=value lines a shell can `source` (the last line exports them all)."""
    lines = ["# source this file: it points the openstack CLI and SDK at the demo site"]
    lines += [f"{key}={shlex.quote(value)}" for key, value in env.items()]
    lines.append("export " + " ".join(env))
    _write_private(paths.env_file, "\n".join(lines) + "\n")
