"""The demo's node pool: one provider (the demo site itself, as the `zuul` project), a label
`ubuntu-noble` kept `min-ready`, served by the demo's controller at /pool/v1 with the site's
identity tokens. It writes `pool.yaml` (an example of a pool config) and `pool-key`, the
private key of the `pool` keypair its servers boot with."""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from infracloud.core.context import Caller
from infracloud.core.errors import Conflict
from infracloud.pool.config import PoolConfig
from infracloud.pool.service import PoolService
from infracloud.site.services import Services

LABEL = "ubuntu-noble"
KEYPAIR = "pool"
POOL_CLOUD = "infracloud"  # the demo's zuul project
SSH_DRIVERS = ("sandbox", "libvirt")  # servers answer SSH (the pool scans their keys)


def ensure_pool_key(services: Services, state_dir: Path) -> Path:
    """`pool-key` (0600) and its public half as keypair `pool` of user zuul."""
    import asyncssh

    path = state_dir / "pool-key"
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="infracloud-demo-pool")
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        os.replace(tmp, path)
    public = asyncssh.read_private_key(str(path)).export_public_key().decode().strip()
    user = services.identity.directory.find_user("zuul")
    project = services.identity.directory.find_project("zuul")
    caller = Caller(user.id, project.id, frozenset({"member", "reader"}))
    with contextlib.suppress(Conflict):
        services.keypairs.create(caller, KEYPAIR, public)
    return path


def pool_config(services: Services, state_dir: Path, *, driver: str, ssh_port: int,
                min_ready: int, max_servers: int) -> tuple[PoolConfig, Path]:
    config = services.config
    # real VMs on this machine (libvirt): the tiny guest's flavor, not a CI job's 8 vCPUs
    flavor = "ci.small" if driver == "libvirt" else "ci.8g"
    data: dict[str, Any] = {
        "name": "demo",
        "auth": {"identity-url": f"{config.base_url()}/identity"},
        "cleanup-interval": 60,
        "labels": [{"name": LABEL, "min-ready": min_ready}],
        "providers": [{
            "name": config.site, "cloud": POOL_CLOUD, "region-name": config.region,
            "clouds-file": str(state_dir / "clouds.yaml"), "max-servers": max_servers,
            "boot-timeout": 60, "launch-timeout": 300, "status-interval": 0.5,
            "pools": [{"name": "main", "host-key-checking": driver in SSH_DRIVERS,
                       "labels": [{"name": LABEL, "image": "demo", "flavor-name": flavor,
                                   "key-name": KEYPAIR, "username": "root",
                                   "connection-port": ssh_port}]}]}],
        "requestors": [{"name": "zuul", "share": 2}, {"name": "ci", "share": 1}],
    }
    if config.tls and config.tls.ca:
        data["auth"]["cacert"] = str(config.tls.ca)
    path = state_dir / "pool.yaml"
    path.write_text("# written by `infracloud demo`: the demo's pool (an example of a pool "
                    "config;\n# `infracloud pool --config FILE` runs one on its own)\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return PoolConfig.model_validate(data), path


def build(services: Services, state_dir: Path, *, driver: str, ssh_port: int,
          min_ready: int, max_servers: int) -> tuple[PoolService, Any]:
    """The pool service on the demo's database, and its token check."""
    from infracloud.processes.pool_server import build_pool, token_check

    ensure_pool_key(services, state_dir)
    config, path = pool_config(services, state_dir, driver=driver, ssh_port=ssh_port,
                               min_ready=min_ready, max_servers=max_servers)
    return build_pool(config, path, db=services.db), token_check(config)


def start_ci_load(services: Services, state_dir: Path, jobs_per_min: float, driver: str,
                  stop: threading.Event) -> None:
    """The synthetic CI workload, as the zuul project, with its live status line."""
    from infracloud.clients.cloud import Client
    from infracloud.sim.ciload import CiLoad, show

    clouds = state_dir / "clouds.yaml"

    def token() -> str:
        with Client(POOL_CLOUD, clouds_file=clouds) as client:
            return str(client.http.headers["X-Auth-Token"])

    ca = services.config.tls.ca if services.config.tls else None
    load = CiLoad(services.base_url, token, LABEL, jobs_per_min,
                  verify=ssl.create_default_context(cafile=str(ca)) if ca else True,
                  key=state_dir / "pool-key" if driver in SSH_DRIVERS else None)
    load.start()
    stop_all = threading.Event()

    def watch() -> None:
        stop.wait()
        load.stop()
        stop_all.set()

    threading.Thread(target=watch, name="ci-load-stop", daemon=True).start()
    threading.Thread(target=show, args=(load, stop_all, sys.stdout.isatty(), _echo),
                     name="ci-load-show", daemon=True).start()


def _echo(line: str) -> None:
    print(line, flush=True)
