"""`infracloud demo`: the files it writes, the ready line, and a restart on the same folder."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import yaml

from infracloud.pool.client import run_on_node
from tests.servers import openstack_cli, sdk, start_demo, wait_for


def test_demo_restarts_with_its_data_intact(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    first = start_demo(state, "--driver", "fake")
    try:
        ready = next(line for line in first.lines if "ready" in line)
        assert first.base_url.startswith("https://127.0.0.1:")
        assert first.base_url in ready and str(state / "clouds.yaml") in ready
        for name in ("clouds.yaml", "infracloud.env", "secrets.json"):
            assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
        clouds = yaml.safe_load((state / "clouds.yaml").read_text())["clouds"]
        assert set(clouds) == {"infracloud", "infracloud-ci", "infracloud-admin"}
        assert {c["auth"]["project_name"] for c in clouds.values()} == {"zuul", "ci", "admin"}
        assert all(c["cacert"] == str(state / "tls" / "ca.pem") for c in clouds.values())
        admin = sdk(state / "clouds.yaml", "infracloud-admin")
        kept = admin.identity.create_project(name="kept-across-restarts")
        ci = sdk(state / "clouds.yaml", "infracloud-ci")
        assert ci.current_project_id == admin.identity.find_project("ci").id
        # the small site's machines were enrolled through their BMCs and became the hosts
        assert any("site small: 4/4 finished (4 active)" in line for line in first.lines)
        nodes = {n.name: n for n in admin.baremetal.nodes(details=True)}
        assert sorted(nodes) == ["small-001", "small-002", "small-003", "small-004"]
        assert {n.provision_state for n in nodes.values()} == {"active"}
        hosts = {h.name for h in admin.compute.hypervisors()}
        assert hosts == set(nodes)
    finally:
        assert first.stop() == 0
    assert "stopped" in first.lines[-1]
    passwords = (state / "secrets.json").read_text()

    second = start_demo(state, "--driver", "fake")
    try:
        assert (state / "secrets.json").read_text() == passwords
        # the simulated machines start powered off: the demo powers them on, they boot from
        # "disk" and their agents join again, so servers boot
        zuul = sdk(state / "clouds.yaml", "infracloud")
        server = zuul.compute.create_server(
            name="after-restart", flavor_id=zuul.compute.find_flavor("ci.small").id,
            image_id=zuul.image.find_image("demo").id, networks="auto")
        assert zuul.compute.wait_for_server(server, wait=60).status == "ACTIVE"
        admin = sdk(state / "clouds.yaml", "infracloud-admin")
        assert admin.identity.find_project("kept-across-restarts").id == kept.id
        r = openstack_cli(state / "clouds.yaml", "--os-cloud", "infracloud", "token", "issue")
        assert r.returncode == 0, r.stderr
    finally:
        assert second.stop() == 0


def test_env_file_sets_up_a_shell(tmp_path: Path) -> None:
    """...for the openstack CLI and the demo's pool; and the synthetic CI load runs jobs
    that get a node, log in over SSH and release it."""
    state = tmp_path / "demo"
    running = start_demo(state, "--no-tls", "--ci-load", "30")
    try:
        assert running.base_url.startswith("http://")
        bindir = Path(os.sys.executable).parent  # type: ignore[attr-defined]
        script = (f"source {state / 'infracloud.env'} && "
                  f"{bindir / 'openstack'} token issue -f value -c project_id && "
                  "echo $OS_CLOUD")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        project_id, cloud = r.stdout.split()
        assert cloud == "infracloud" and len(project_id) == 32
        # the pool: a node for the zuul project, reachable with the demo's pool key
        script = (f"source {state / 'infracloud.env'} && {bindir / 'infracloud'} pool request "
                  "ubuntu-noble --count 1 --wait --timeout 120 --format json")
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                           timeout=180)
        assert r.returncode == 0, r.stderr
        (node,) = json.loads(r.stdout)
        assert node["label"] == "ubuntu-noble" and node["state"] == "in-use"
        assert node["requestor"] == "zuul" and node["host_keys"]
        out = run_on_node(node, state / "pool-key", "echo hello from $HOME")
        assert out.startswith("hello from")
        yaml_config = yaml.safe_load((state / "pool.yaml").read_text())
        assert yaml_config["labels"] == [{"name": "ubuntu-noble", "min-ready": 2}]
        # the CI load: its status line shows jobs done and none failed
        wait_for("a CI load status line with jobs done, none failed",
                 lambda: any(re.search(r"done [1-9]\d*, failed 0", line)
                             for line in running.lines), timeout=60, every=0.5)
    finally:
        assert running.stop() == 0
