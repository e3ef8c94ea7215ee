"""Bare metal end to end against a real controller on 127.0.0.1 with simulated machines
(fake BMCs in the controller's process that boot in-process agents): the real `openstack
baremetal` CLI and openstacksdk, `infracloud hardware` and `capacity`, flaky and dead BMCs,
fencing, and a server booting on a machine that was enrolled and deployed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infracloud.agent import configdrive
from tests.servers import (
    BIN,
    Running,
    free_port,
    loopback_cidr,
    openstack_cli,
    sdk,
    start_controller,
    wait_for,
)

ADMIN_PASSWORD = "admin-secret-for-tests"
BMC_PASSWORD = "Bmc-Secret-4f9c2e"  # must never show up in output or logs
CLOUD = "hw-admin"


def write_site(folder: Path) -> tuple[Path, Path]:
    port = free_port()
    (folder / "admin-password").write_text(ADMIN_PASSWORD)
    (folder / "agent-token").write_text("agent-token-for-tests-0123456789")
    config = {
        "site": "lab",
        "listen": {"host": "127.0.0.1", "port": port},
        "database": {"url": f"sqlite:///{folder / 'infracloud.db'}"},
        "images": {"store_path": str(folder / "images")},
        "bootstrap": {"admin_password_file": "admin-password"},
        "compute": {"agent_token_file": "agent-token",
                    "network": {"name": "lab-net", "cidr": loopback_cidr()}},
        "hardware": {"bmc_timeout": 0.2, "retries": 8, "backoff": 0.02, "backoff_max": 0.1,
                     "fence_after": 8, "power_sync_interval": 3,
                     "fault_recovery_interval": 1, "power_wait": 10,
                     "timeouts": {"wait call-back": 60},
                     "simulation": {"agent_driver": "fake", "poll_wait": 2,
                                    "root": str(folder / "sim")}},
    }
    path = folder / "controller.yaml"
    path.write_text(yaml.safe_dump(config))
    clouds = folder / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {CLOUD: {
        "auth": {"auth_url": f"http://127.0.0.1:{port}/identity", "username": "admin",
                 "password": ADMIN_PASSWORD, "project_name": "admin",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionOne", "identity_api_version": 3}}}))
    return path, clouds


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("hw")
    config, _ = write_site(folder)
    port = yaml.safe_load(config.read_text())["listen"]["port"]
    running = start_controller(config, f"http://127.0.0.1:{port}")
    running.state_dir = folder
    yield running
    running.stop()


def env(site: Running) -> dict[str, str]:
    assert site.state_dir is not None
    return {**os.environ, "OS_CLIENT_CONFIG_FILE": str(site.state_dir / "clouds.yaml"),
            "INFRACLOUD_ADMIN_CLOUD": CLOUD}


def hw(site: Running, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "infracloud"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env(site))


def osc(site: Running, *args: str) -> subprocess.CompletedProcess[str]:
    assert site.state_dir is not None
    return openstack_cli(site.state_dir / "clouds.yaml", "--os-cloud", CLOUD, *args)


def inventory(folder: Path, name: str, machines: list[dict[str, Any]]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "lab",
        "defaults": {"bmc": {"driver": "fake", "username": "admin", "password": BMC_PASSWORD,
                             "options": {"cpus": 16, "memory_mb": 32768, "disk_gb": 400,
                                         "power_delay": 0.05, "boot_delay": 0.2}},
                     "expected": {"cpus": 16, "memory_mb": 32768, "disk_gb": 400}},
        "machines": machines}))
    return path


def nodes(site: Running) -> dict[str, dict[str, Any]]:
    out = hw(site, "hardware", "list", "--format", "json")
    assert out.returncode == 0, out.stderr
    return {n["name"]: n for n in json.loads(out.stdout)}


def test_flaky_bmcs_still_enrol_and_the_machines_become_compute_hosts_that_boot_servers(
        site: Running, tmp_path: Path) -> None:
    # 30 % of every BMC's calls time out or answer 500
    machines = [{"name": f"flaky-{i}", "bmc": {"address": f"flaky-bmc-{i}", "options": {
        "failure_rate": 0.3, "seed": i}}, "macs": [f"52:54:00:aa:00:0{i}"]}
        for i in range(1, 5)]
    out = hw(site, "hardware", "enroll", str(inventory(tmp_path, "flaky", machines)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all 4 succeeded" in out.stdout
    listed = nodes(site)
    for i in range(1, 5):
        assert listed[f"flaky-{i}"]["state"] == "available"
    # inspection put what the BMC reports into the node
    show = json.loads(osc(site, "baremetal", "node", "show", "flaky-1", "-f", "json").stdout)
    assert show["properties"]["cpus"] == 16 and show["properties"]["memory_mb"] == 32768
    assert show["properties"]["macs"] == ["52:54:00:aa:00:01"]

    out = hw(site, "hardware", "deploy", "flaky-1", "flaky-2")
    assert out.returncode == 0, out.stdout + out.stderr
    hyper = json.loads(osc(site, "hypervisor", "list", "--long", "-f", "json").stdout)
    joined = {h["Hypervisor Hostname"]: h for h in hyper}
    assert {"flaky-1", "flaky-2"} <= set(joined)
    assert joined["flaky-1"]["vCPUs"] == 16  # the inspected capacity, from the agent

    image = tmp_path / "tiny.img"
    image.write_bytes(b"\0" * 4096)
    assert osc(site, "image", "create", "--file", str(image), "--disk-format", "raw",
               "--public", "tiny").returncode == 0
    made = osc(site, "server", "create", "--flavor", "ci.small", "--image", "tiny",
               "--wait", "-f", "json", "hw-server")
    assert made.returncode == 0, made.stderr
    server = json.loads(made.stdout)
    assert server["status"] == "ACTIVE"
    assert server["OS-EXT-SRV-ATTR:hypervisor_hostname"] in ("flaky-1", "flaky-2")

    cap = json.loads(hw(site, "capacity", "--flavor", "ci.small", "--format", "json").stdout)
    assert cap["hosts"] >= 2 and cap["in_use"] == 1
    assert cap["binding"] == "vcpus"  # 16 vCPUs, 32 GB, 400 GB: 16 / 32 / 40 servers
    assert cap["undeployed_machines"] >= 2 and cap["undeployed_would_add"] >= 32

    # undeploy waits for the server's owner ... unless told to evict
    host = server["OS-EXT-SRV-ATTR:hypervisor_hostname"]
    out = hw(site, "hardware", "undeploy", host, "--evict")
    assert out.returncode == 0, out.stdout + out.stderr
    assert osc(site, "server", "show", "hw-server").returncode != 0  # evicted
    hyper = json.loads(osc(site, "hypervisor", "list", "-f", "json").stdout)
    assert host not in {h["Hypervisor Hostname"] for h in hyper}
    assert nodes(site)[host]["state"] == "available"


def test_a_dead_bmc_is_fenced_and_the_rest_of_the_site_goes_on(site: Running,
                                                               tmp_path: Path) -> None:
    machines = [{"name": "dead-1", "bmc": {"address": "dead-bmc-1", "options": {"hang": True}}},
                {"name": "alive-1", "bmc": {"address": "alive-bmc-1"}},
                {"name": "alive-2", "bmc": {"address": "alive-bmc-2"}}]
    started = time.monotonic()
    out = hw(site, "hardware", "enroll", str(inventory(tmp_path, "dead", machines)))
    assert time.monotonic() - started < 90  # nothing hangs on the dead BMC
    assert out.returncode == 1, out.stdout + out.stderr
    assert "dead-1" in out.stderr and "2 of 3 succeeded" in out.stderr
    listed = nodes(site)
    assert listed["alive-1"]["state"] == listed["alive-2"]["state"] == "available"
    dead = listed["dead-1"]
    assert dead["maintenance"] and dead["fault"] == "power failure"
    assert "BMC unreachable" in dead["last_error"]
    # operators find it with the real CLI
    faulty = osc(site, "baremetal", "node", "list", "--fault", "power failure", "-f", "value",
                 "-c", "name")
    assert faulty.stdout.split() == ["dead-1"]


def test_a_bmc_dying_under_a_compute_host_loses_its_servers_then_heals(
        site: Running, tmp_path: Path) -> None:
    machines = [{"name": "doomed-1", "bmc": {"address": "doomed-bmc-1"}}]
    assert hw(site, "hardware", "enroll", str(inventory(tmp_path, "doomed",
                                                         machines))).returncode == 0
    assert hw(site, "hardware", "deploy", "doomed-1").returncode == 0
    conn = sdk(env_clouds(site), CLOUD)
    image = conn.image.find_image("tiny") or conn.image.create_image(
        "tiny", data=b"\0" * 4096, disk_format="raw", container_format="bare",
        visibility="public")
    server = conn.compute.create_server(name="on-doomed", flavor_id=conn.compute.find_flavor(
        "ci.small").id, image_id=image.id, networks="auto",
        availability_zone="nova:doomed-1")
    server = conn.compute.wait_for_server(server, wait=60)
    # the BMC stops answering (the simulation's knob, set through driver_info)
    assert osc(site, "baremetal", "node", "set", "doomed-1", "--driver-info",
               'bmc_options={"hang": true}').returncode == 0
    node = wait_for("doomed-1 to show a fault",
                    lambda: (n := nodes(site)["doomed-1"])["fault"] and n, 60, 0.5)
    assert node["maintenance"] and node["fault"] == "power failure"
    lost = wait_for("the server to be ERROR", lambda: (s := conn.compute.get_server(
        server.id)).status == "ERROR" and s, 60, 0.5)
    assert "fenced" in lost.fault["message"]
    hosts = {h.host: h for h in conn.compute.services()}
    assert hosts["doomed-1"].status == "disabled"
    conn.compute.delete_server(server.id)
    # the BMC comes back: the fault clears by itself and the host takes servers again
    assert osc(site, "baremetal", "node", "set", "doomed-1", "--driver-info",
               'bmc_options={"hang": false}').returncode == 0
    wait_for("doomed-1 out of maintenance",
             lambda: not nodes(site)["doomed-1"]["maintenance"], 60, 0.5)
    hosts = {h.host: h for h in conn.compute.services()}
    assert hosts["doomed-1"].status == "enabled"


def env_clouds(site: Running) -> Path:
    assert site.state_dir is not None
    return site.state_dir / "clouds.yaml"


def test_openstack_baremetal_cli_drives_a_node_through_its_life(site: Running) -> None:
    def ok(*args: str) -> str:
        out = osc(site, "baremetal", "node", *args)
        assert out.returncode == 0, out.stderr
        return out.stdout

    conn = sdk(env_clouds(site), CLOUD)  # to watch the node between CLI commands (quicker)

    def node() -> Any:
        return conn.baremetal.get_node("cli-1")

    created = json.loads(ok("create", "--driver", "fake-hardware", "--name", "cli-1",
                            "--driver-info", f"bmc_password={BMC_PASSWORD}",
                            "--driver-info", "bmc_address=cli-bmc-1", "-f", "json"))
    assert created["provision_state"] == "enroll"
    assert created["driver_info"]["bmc_password"] == "******"
    ok("manage", "cli-1", "--wait", "60")
    ok("provide", "cli-1")  # --wait polls every 10 s for provide and undeploy: watch instead
    wait_for("available", lambda: node().provision_state == "available", 60, 0.5)
    listed = {r["name"]: r for r in json.loads(ok("list", "-f", "json"))}
    assert listed["cli-1"] == {"uuid": created["uuid"], "name": "cli-1",
                               "instance_uuid": None, "power_state": "power off",
                               "provision_state": "available", "maintenance": False}

    ok("power", "on", "cli-1")
    wait_for("power on", lambda: node().power_state == "power on", 60, 0.5)
    ok("power", "off", "cli-1")
    wait_for("power off", lambda: node().power_state == "power off", 60, 0.5)

    ok("maintenance", "set", "cli-1", "--reason", "fan noise")
    assert node().is_maintenance and node().maintenance_reason == "fan noise"
    refused = osc(site, "baremetal", "node", "deploy", "cli-1")
    assert refused.returncode != 0 and "maintenance" in refused.stderr
    ok("maintenance", "unset", "cli-1")
    assert not node().is_maintenance

    ok("deploy", "cli-1", "--wait", "60")
    shown = json.loads(ok("show", "cli-1", "-f", "json"))
    assert shown["provision_state"] == "active" and shown["power_state"] == "power on"
    assert shown["instance_info"]["compute_host"] == "cli-1"
    ok("undeploy", "cli-1")
    wait_for("available", lambda: node().provision_state == "available", 60, 0.5)
    # a verb the state machine refuses is a clear 400, not a 500
    bad = osc(site, "baremetal", "node", "inspect", "cli-1")
    assert bad.returncode != 0 and "can not be performed" in bad.stderr
    assert "HTTP 400" in bad.stderr
    ok("delete", "cli-1")


def test_openstacksdk_baremetal_proxy(site: Running) -> None:
    conn = sdk(env_clouds(site), CLOUD)
    node = conn.baremetal.create_node(name="sdk-1", driver="fake", driver_info={
        "bmc_address": "sdk-bmc-1", "bmc_password": BMC_PASSWORD})
    assert node.provision_state == "enroll"
    node = conn.baremetal.set_node_provision_state(node, "manage", wait=True, timeout=60)
    assert node.provision_state == "manageable"
    names = [n.name for n in conn.baremetal.nodes(details=True)]
    assert "sdk-1" in names
    conn.baremetal.set_node_power_state(node, "power on", wait=True, timeout=30)
    assert conn.baremetal.get_node("sdk-1").power_state == "power on"
    conn.baremetal.delete_node(node)


def test_passwords_never_appear_in_api_output_cli_output_or_logs(site: Running) -> None:
    assert site.state_dir is not None
    outputs = [osc(site, "baremetal", "node", "list", "--long", "-f", "json").stdout,
               hw(site, "hardware", "list", "--format", "json").stdout,
               hw(site, "hardware", "inventory", "--format", "json").stdout,
               hw(site, "hardware", "inventory").stdout]
    with site.http() as http:
        token = http.post("/identity/v3/auth/tokens", json={"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "password": ADMIN_PASSWORD, "domain": {"id": "default"}}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
                          ).headers["X-Subject-Token"]
        detail = http.get("/baremetal/v1/nodes/detail", headers={"X-Auth-Token": token})
    assert detail.status_code == 200 and detail.json()["nodes"]
    outputs.append(detail.text)
    for text in outputs:
        assert BMC_PASSWORD not in text
    assert BMC_PASSWORD not in "".join(site.lines)
    db = (site.state_dir / "infracloud.db").read_bytes()
    assert BMC_PASSWORD.encode() not in db  # encrypted at rest
    key = site.state_dir / "bmc-secret.key"
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"


def test_the_deploy_media_boots_the_real_agent_command_which_joins_once(
        site: Running, tmp_path: Path) -> None:
    """What a real machine does: read the config-2 ISO from its virtual CD, let cloud-init
    write the join config, and run `infracloud agent --join`."""
    machines = [{"name": "real-1", "bmc": {"address": "real-bmc-1", "options": {
        "boot_delay": 3600}}}]  # the simulation never boots it: the test does
    assert hw(site, "hardware", "enroll", str(inventory(tmp_path, "real", machines))
              ).returncode == 0
    assert osc(site, "baremetal", "node", "deploy", "real-1").returncode == 0
    assert site.state_dir is not None
    db = site.state_dir / "infracloud.db"

    def media_id() -> str | None:
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT media_id FROM nodes WHERE name='real-1' AND "
                               "provision_state='wait call-back'").fetchone()
        return row[0] if row else None

    media = wait_for("the deploy media", media_id, 60, 0.5)
    with site.http() as http:
        iso = http.get(f"/hardware/v1/media/{media}.iso")
    assert iso.status_code == 200
    (tmp_path / "media.iso").write_bytes(iso.content)
    drive = configdrive.read(tmp_path / "media.iso")
    assert configdrive.label(tmp_path / "media.iso") == "config-2"
    assert drive.meta_data["name"] == "real-1"
    user_data = (drive.user_data or b"").decode()
    assert user_data.startswith("#cloud-config\n")
    cloud = json.loads(user_data.split("\n", 1)[1])
    assert cloud["runcmd"] == [["infracloud", "agent", "--join", "/etc/infracloud/join.json"]]
    join_file = tmp_path / "join.json"
    join_file.write_text(cloud["write_files"][0]["content"])
    config = json.loads(join_file.read_text())
    assert config["name"] == "real-1" and config["controller"] == site.base_url

    agent = subprocess.Popen([str(BIN / "infracloud"), "agent", "--join", str(join_file),
                              "--driver", "fake", "--state-dir", str(tmp_path / "agent"),
                              "--vcpus", "4", "--ram-mb", "4096", "--disk-gb", "40"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for("real-1 active", lambda: nodes(site)["real-1"]["state"] == "active",
                 60, 0.5)
        hyper = json.loads(osc(site, "hypervisor", "list", "--long", "-f", "json").stdout)
        mine = next(h for h in hyper if h["Hypervisor Hostname"] == "real-1")
        assert mine["vCPUs"] == 4 and mine["State"] == "up"
        with site.http() as http:  # joined: the media is gone
            assert http.get(f"/hardware/v1/media/{media}.json").status_code == 404
            bad = http.post("/agent/v1/join", json={"join_token": "x" * 40})
            assert bad.status_code == 401
            again = http.post("/agent/v1/join", json={  # the join token worked once
                "join_token": config["join_token"], "host": {"name": "real-1", "driver":
                "fake", "vcpus": 4, "ram_mb": 4096, "disk_gb": 40}})
            assert again.status_code == 401, again.text
        kept = json.loads((tmp_path / "agent" / "host-credential.json").read_text())
        assert kept["name"] == "real-1"
        assert oct((tmp_path / "agent" / "host-credential.json").stat().st_mode & 0o777) \
            == "0o600"
        with sqlite3.connect(db) as conn:
            own, = conn.execute("SELECT id FROM hosts WHERE name='real-1'").fetchone()
            other = conn.execute("SELECT id FROM hosts WHERE name!='real-1'").fetchone()
        other_id = other[0] if other else "0" * 32
        with site.http(headers={"X-Agent-Token": kept["credential"]}) as http:
            assert http.get(f"/agent/v1/hosts/{own}/desired").status_code == 200
            for r in (http.get(f"/agent/v1/hosts/{other_id}/desired"),
                      http.post(f"/agent/v1/hosts/{other_id}/report", json={"instances": []}),
                      http.post("/agent/v1/hosts", json={
                          "name": "someone-else", "driver": "fake", "vcpus": 4,
                          "ram_mb": 4096, "disk_gb": 40})):
                assert r.status_code == 403, r.text
                assert "another compute host" in r.text or "belongs to" in r.text
    finally:
        agent.terminate()
        agent.wait(30)
    # undeployed: its host's credential is revoked
    assert osc(site, "baremetal", "node", "undeploy", "real-1").returncode == 0
    wait_for("real-1 available after its undeploy",
             lambda: nodes(site)["real-1"]["state"] == "available")
    with site.http(headers={"X-Agent-Token": kept["credential"]}) as http:
        assert http.get(f"/agent/v1/hosts/{own}/desired").status_code == 401


@pytest.mark.parametrize(("args", "message"), [
    (("hardware", "enroll", "/nonexistent/site.yaml"), "cannot read"),
    (("hardware", "list", "--format", "xml"), "--format"),
    (("hardware", "deploy"), "--all"),
    (("hardware", "enroll", "sites/small.yaml", "--stop-at", "active"), "--stop-at"),
    (("capacity", "--os-cloud", "no-such-cloud"), "no-such-cloud"),
])
def test_hardware_command_errors_are_one_line_with_exit_2(site: Running, args: tuple[str, ...],
                                                          message: str) -> None:
    out = subprocess.run([str(BIN / "infracloud"), *args], capture_output=True, text=True,
                         timeout=60, env=env(site), cwd=Path(__file__).parents[2])
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr
    assert "Traceback" not in out.stderr
