"""`infracloud pool`: the pool service started from the command line (`--config pool.yaml`),
and every client command run as a user runs it, against a real demo site (one compute host,
fake agent driver) that the pool launches its nodes on. Tokens come from the site's Keystone
(`--os-cloud` / INFRACLOUD_POOL_CLOUD)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from infracloud.clients.cloud import login
from infracloud.pool.client import PoolClient
from tests.servers import (
    Running,
    free_port,
    infracloud,
    start_demo,
    start_pool,
    stop_process,
    wait_for,
)

PROVIDER = "infracloud"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_demo(Path(tmp_path_factory.mktemp("pool-cli-site")), "--site", "none",
                         "--hosts", "1", "--driver", "fake")
    yield running
    assert running.stop() == 0, "".join(running.lines)


def pool_config(site: Running, tmp: Path, port: int) -> dict[str, Any]:
    assert site.state_dir is not None
    return {
        "name": "cli-test",
        "listen": {"host": "127.0.0.1", "port": port},
        "database": f"sqlite:///{tmp / 'pool.db'}",
        "auth": {"identity-url": f"{site.base_url}/identity",
                 "cacert": str(site.state_dir / "tls" / "ca.pem")},
        "labels": [{"name": "small"}],
        "providers": [{
            "name": PROVIDER, "cloud": "infracloud-ci", "clouds-file": str(site.clouds_yaml),
            "max-servers": 4, "status-interval": 0.2,
            "pools": [{"name": "main", "host-key-checking": False,
                       "labels": [{"name": "small", "image": "demo",
                                   "flavor-name": "ci.small"}]}]}],
    }


@dataclass
class Pool:
    url: str
    env: dict[str, str]
    api: PoolClient  # for the test's own polling (the zuul project's token)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return infracloud("pool", *args, env={**self.env, **env})



@pytest.fixture(scope="module")
def pool(site: Running, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = Path(tmp_path_factory.mktemp("pool-cli"))
    config = tmp / "pool.yaml"
    config.write_text(yaml.safe_dump(pool_config(site, tmp, free_port()), sort_keys=False))
    proc, url = start_pool(config, tmp / "pool.log")
    env = {"INFRACLOUD_POOL_URL": url, "INFRACLOUD_POOL_CLOUD": "infracloud",
           "OS_CLIENT_CONFIG_FILE": str(site.clouds_yaml), "INFRACLOUD_POOL_TOKEN": "",
           "INFRACLOUD_POOL_CACERT": ""}
    token = login("infracloud", clouds_file=site.clouds_yaml).token
    with PoolClient(url, token) as api:
        yield Pool(url, env, api)
    assert stop_process(proc) == 0, (tmp / "pool.log").read_text()
    first = (tmp / "pool.log").read_text().splitlines()[0]
    assert json.loads(first)["level"]  # the service logs JSON lines on stderr


def test_request_wait_list_hold_release(pool: Pool) -> None:
    r = pool.run("request", "small", "--count", "2", "--wait", "--format", "json")
    assert r.returncode == 0, r.stderr
    nodes = json.loads(r.stdout)
    assert len(nodes) == 2
    for n in nodes:
        assert n["label"] == "small" and n["provider"] == PROVIDER
        assert n["state"] == "in-use" and n["requestor"] == "zuul"
        assert n["interface_ip"] and n["ssh_port"] == 22 and n["username"] == "root"
        assert n["host_keys"] == []  # host-key-checking is off: the fake driver has no SSH
    ids = sorted(n["id"] for n in nodes)

    r = pool.run("list", "--format", "json")
    assert r.returncode == 0, r.stderr
    listed = {n["id"]: n for n in json.loads(r.stdout)}
    assert all(listed[i]["state"] == "in-use" for i in ids)
    r = pool.run("list", "--label", "small", "--state", "in-use")
    assert r.returncode == 0 and all(i in r.stdout for i in ids), r.stdout + r.stderr
    r = pool.run("requests", "--history")
    assert r.returncode == 0 and "zuul" in r.stdout and "fulfilled" in r.stdout, r.stderr

    r = pool.run("labels")
    assert r.returncode == 0 and "small" in r.stdout and PROVIDER in r.stdout, r.stderr
    r = pool.run("providers")
    assert r.returncode == 0 and PROVIDER in r.stdout and "up" in r.stdout, r.stderr

    r = pool.run("hold", ids[0], "--reason", "look at the failed job")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"node {ids[0]}: held (look at the failed job)"
    r = pool.run("release", *ids)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2 and all(i in r.stdout for i in ids)
    # a released node is deleted; releasing it once it is gone is an error
    wait_for("the nodes to go", lambda: not {n["id"] for n in pool.api.list_nodes()}
                  & set(ids))
    r = pool.run("release", ids[0])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("infracloud: error: Node ") and "not be found" in r.stderr


def test_drain_then_undrain(pool: Pool) -> None:
    r = pool.run("drain", PROVIDER, "--reason", "maintenance")
    assert r.returncode == 2 and "pool:provider:update" in r.stderr, r.stderr  # zuul: member
    admin = {"INFRACLOUD_POOL_CLOUD": "infracloud-admin"}
    r = pool.run("drain", PROVIDER, "--reason", "maintenance", **admin)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"provider {PROVIDER}: draining (maintenance)"
    try:
        r = pool.run("request", "small", "--format", "json")
        assert r.returncode == 0, r.stderr
        waiting = json.loads(r.stdout)
        assert waiting["state"] == "requested" and waiting["requestor"] == "zuul"

        r = pool.run("request", "small", "--wait", "--timeout", "2")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "not fulfilled within 2 s" in r.stderr and "cancelled" in r.stderr
        gone = r.stderr.split("request ")[-1].split()[0]
        assert pool.api.get_request(gone)["state"] == "cancelled"
        assert pool.api.get_request(waiting["id"])["state"] == "requested"
    finally:
        r = pool.run("undrain", PROVIDER, **admin)
        assert r.returncode == 0 and r.stdout.strip() == f"provider {PROVIDER}: up", r.stderr
    done = pool.api.get_request(waiting["id"], wait=30)
    assert done["state"] == "fulfilled", done
    r = pool.run("release", *done["node_ids"])
    assert r.returncode == 0, r.stderr


def test_cancel(pool: Pool) -> None:
    r = pool.run("drain", PROVIDER, INFRACLOUD_POOL_CLOUD="infracloud-admin")
    assert r.returncode == 0, r.stderr
    try:
        req = pool.api.create_request(["small"])
        r = pool.run("cancel", req["id"])
        assert r.returncode == 0 and r.stdout.strip() == f"request {req['id']}: cancelled"
        r = pool.run("cancel", req["id"])
        assert r.returncode == 2 and "cannot be cancelled" in r.stderr, r.stderr
    finally:
        pool.run("undrain", PROVIDER, INFRACLOUD_POOL_CLOUD="infracloud-admin")


def test_errors(pool: Pool, tmp_path: Path) -> None:
    r = pool.run("request", "nope", "--wait")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "infracloud: error: Unknown label nope; this pool has small.\n"
    r = pool.run("list", "--token", "not-a-token")
    assert r.returncode == 2 and r.stderr == "infracloud: error: The token is not valid.\n"
    r = pool.run("labels", INFRACLOUD_POOL_URL="")
    assert r.returncode == 2 and "INFRACLOUD_POOL_URL" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    r = pool.run("request", "small", "--count", "0")
    assert r.returncode == 2 and "--count must be 1 or more" in r.stderr
    r = pool.run("list", "--format", "yaml")
    assert r.returncode == 2 and "--format must be table or json" in r.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("labels:\n  - name: small\nproviders:\n  - name: p\n    clod: x\n")
    r = infracloud("pool", "--config", str(broken))
    assert r.returncode == 2
    assert f"{broken}:5: providers.0.clod: unknown setting" in r.stderr.splitlines()
    assert all(line.startswith(f"{broken}:") for line in r.stderr.splitlines())
