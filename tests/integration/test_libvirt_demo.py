"""`infracloud demo --driver libvirt`: the demo's simulated compute hosts run real VMs of the
tiny test guest (its image `demo`, uploaded by the demo, fetched by each agent with its host's
credential). Three real boots: the `openstack` CLI flow with an SSH login into the guest,
nodepool 11's adapter flow with a key scan of a real guest, and infracloud's own pool (the
demo's, min-ready 0 here: it boots only the node asked for). Every wait is on a condition."""

from __future__ import annotations

import json
import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests import libvirt_env
from tests.integration.test_compute_api import _advance
from tests.nodepool_peer import adapter
from tests.servers import Running, env_file, infracloud, openstack_cli, sdk, start_demo, wait_for

BOOT = 180  # seconds a boot may take on a busy 2-CPU machine (about 10 alone)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    libvirt_env.require(libvirt_env.QEMU_URI)
    state = Path(tmp_path_factory.mktemp("libvirt-demo"))
    running = start_demo(state, "--driver", "libvirt", "--min-ready", "0", timeout=240)
    try:
        yield running
    finally:
        code = running.stop()
        leftover = _domains_under(state)
        _destroy_under(state)
        assert code == 0, "".join(running.lines)
        assert leftover == [], f"the demo left domains running: {leftover}"


def _drivers(state: Path) -> Iterator[Any]:
    from infracloud.agent.drivers.libvirt import LibvirtDriver

    for host in sorted((state / "hosts").glob("*/instances")):
        d = LibvirtDriver(host, state / "hosts" / "libvirt-images", uri=libvirt_env.QEMU_URI)
        try:
            yield d
        finally:
            d.close()


def _domains_under(state: Path) -> list[str]:
    return [i for d in _drivers(state) for i in d.list()]


def _destroy_under(state: Path) -> None:
    """Only what a failed test left."""
    for d in _drivers(state):
        for instance_id in d.list():
            d.destroy(instance_id)


def cli(site: Running, *args: str) -> Any:
    r = openstack_cli(site.clouds_yaml, "--os-cloud", "infracloud", *args, timeout=BOOT + 60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "-f" in args and "json" in args else r.stdout


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[asyncssh.SSHKey, Path]:
    private = asyncssh.generate_private_key("ssh-ed25519")
    folder = tmp_path_factory.mktemp("keys")
    (folder / "id_ed25519").write_bytes(private.export_private_key())
    (folder / "id_ed25519").chmod(0o600)
    (folder / "id_ed25519.pub").write_bytes(private.export_public_key())
    return private, folder / "id_ed25519"


def ssh(ip: str, identity: Path, command: str) -> str | None:
    """`ssh root@ip command` as a user types it; None while the guest is not listening yet
    (slirp accepts the connection before the guest's SSH server runs)."""
    done = subprocess.run(
        ["ssh", "-q", "-i", str(identity), "-o", "BatchMode=yes", "-o",
         "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
         "ConnectTimeout=5", f"root@{ip}", command],
        capture_output=True, text=True, timeout=60, check=False)
    return done.stdout if done.returncode == 0 else None


def test_openstack_cli_boots_a_real_vm_and_ssh_lands_in_the_guest(
        site: Running, key: tuple[asyncssh.SSHKey, Path], tmp_path: Path) -> None:
    _, identity = key
    cli(site, "keypair", "create", "--public-key", f"{identity}.pub", "me")
    created = cli(site, "server", "create", "--flavor", "ci.small", "--image", "demo",
                  "--key-name", "me", "--wait", "n1", "-f", "json")
    assert created["status"] == "ACTIVE"
    server_id, ip = created["id"], created["accessIPv4"]
    assert site.owns(ip)
    marker = tmp_path / f"host-only-{uuid.uuid4().hex}"
    marker.write_text("made on the host\n")
    out = wait_for("an SSH login into n1", lambda: ssh(
        ip, identity, f"hostname; test -e {marker} && echo HOST || echo isolated; "
        "cat /proc/1/comm"), timeout=BOOT, every=0.5)
    assert out.split() == ["n1", "isolated", "init"]  # the guest, not this machine

    console = wait_for("the guest's console in the API", lambda: (
        c if "READY hostname=n1" in (c := cli(site, "console", "log", "show", "n1")) else ""),
        timeout=60)
    assert f"uuid={server_id}" in console and "-----BEGIN SSH HOST KEY KEYS-----" in console

    import libvirt

    lv = libvirt.open(libvirt_env.QEMU_URI)
    try:
        assert lv.lookupByUUIDString(server_id).isActive()  # domain UUID = server id
        instance_dirs = list((site.state_dir or Path()).glob(f"hosts/*/instances/{server_id}"))
        assert len(instance_dirs) == 1 and (instance_dirs[0] / "disk.qcow2").is_file()
        cli(site, "server", "delete", "--wait", "n1")
        assert server_id not in [d.UUIDString() for d in lv.listAllDomains()]
    finally:
        lv.close()
    assert not instance_dirs[0].exists()  # disks and console gone
    assert ssh(ip, identity, "true") is None  # and the forward


def test_nodepool_adapter_runs_on_libvirt_hosts(
        site: Running, key: tuple[asyncssh.SSHKey, Path], tmp_path: Path) -> None:
    from nodepool.nodeutils import nodescan

    _, identity = key
    zuul = sdk(site.clouds_yaml, "infracloud")
    if zuul.compute.find_keypair("nodepool") is None:
        zuul.compute.create_keypair(name="nodepool",
                                    public_key=Path(f"{identity}.pub").read_text())
    labels = [{"name": "tiny", "cloud-image": "noble", "flavor-name": "ci.small",
               "key-name": "nodepool", "console-log": True}]
    np = adapter(site.clouds_yaml, "infracloud", tmp_path, image="demo", labels=labels)
    log = logging.getLogger("test.nodepool")
    try:
        label = np.provider.pools["main"].labels["tiny"]
        meta = {"nodepool_node_id": "0000000007", "nodepool_provider_name": "infracloud",
                "nodepool_pool_name": "main"}
        sm = np.getCreateStateMachine("np0000000007", label, None, meta, None, "nova", log)
        instance = _advance(sm, timeout=BOOT)
        assert site.owns(instance.interface_ip)
        # ACTIVE means the domain runs; the guest's SSH answers a little later
        wait_for("the guest's READY line", lambda: "READY hostname=np0000000007" in
                 np.getConsoleLog(label, sm.external_id), timeout=BOOT, every=0.5)
        keys = nodescan(instance.interface_ip, port=22, timeout=60)
        assert any(k.startswith("ssh-ed25519 ") for k in keys)
        console = np.getConsoleLog(label, sm.external_id)
        assert keys[0].split()[1] in console  # the key the guest printed: the guest's own
        assert ssh(instance.interface_ip, identity, "hostname") == "np0000000007\n"
        _advance(np.getDeleteStateMachine(sm.external_id, log))
        assert zuul.compute.find_server(sm.external_id) is None
        assert _domains_under(site.state_dir or Path()) == []
    finally:
        np.stop()


def test_infracloud_pool_gets_a_node_on_a_libvirt_host(site: Running) -> None:
    """The demo's pool on libvirt hosts, as a user asks it (`infracloud pool request` in the
    shell `infracloud.env` sets up): a node whose recorded host key is the real guest's, an
    SSH login with the pool's key that trusts only that key, and a release that deletes the
    server and its domain."""
    from infracloud.pool.client import run_on_node
    from infracloud.processes.demo_pool import LABEL

    state = site.state_dir or Path()
    env = env_file(state / "infracloud.env")
    r = infracloud("pool", "request", LABEL, "--count", "1", "--wait", "--timeout", str(BOOT),
                   "--format", "json", env=env, timeout=BOOT + 60)
    assert r.returncode == 0, r.stderr
    (node,) = json.loads(r.stdout)
    try:
        assert node["label"] == LABEL and node["state"] == "in-use" and node["ready_at"]
        assert node["requestor"] == "zuul" and site.owns(node["interface_ip"])
        server_id = node["server_id"]
        assert server_id in _domains_under(state)  # a real VM on one of the demo's hosts
        zuul = sdk(site.clouds_yaml, "infracloud")
        name = zuul.compute.get_server(server_id).name
        # the pool scanned the key the guest printed on its serial console (its ed25519 one;
        # dropbear makes the others when a client first asks)
        console = wait_for("the guest's READY line on its console", lambda: (
            c if f"READY hostname={name}" in (c := zuul.compute.get_server_console_output(
                server_id)["output"]) else ""), timeout=60, every=0.5)
        printed = console.partition("-----BEGIN SSH HOST KEY KEYS-----")[2].partition(
            "-----END SSH HOST KEY KEYS-----")[0].split()
        assert printed[:1] == ["ssh-ed25519"], console
        scanned = [k.split()[:2] for k in node["host_keys"]]
        assert printed[:2] in scanned, (node["host_keys"], printed)
        # known_hosts holds only the recorded keys: the login proves they are the guest's
        out = run_on_node(node, state / "pool-key", "hostname; cat /proc/1/comm")
        assert out.split() == [name, "init"]
    finally:
        done = infracloud("pool", "release", node["id"], env=env)
    assert done.returncode == 0, done.stderr
    wait_for("the node's server deleted", lambda: zuul.compute.find_server(server_id) is None,
             timeout=120, every=0.5)
    wait_for("no domain left", lambda: _domains_under(state) == [], timeout=60, every=0.5)


def test_stop_and_snapshot_a_real_guest(site: Running) -> None:
    """os-stop shuts the guest's domain off (its disk kept); createImage copies that disk
    into a new image of the server's project, which boots as a new server."""
    import libvirt

    zuul = sdk(site.clouds_yaml, "infracloud")
    demo_image = zuul.image.find_image("demo")
    server = zuul.compute.create_server(name="snapped", flavor_id="ci.small",
                                        image_id=demo_image.id)
    zuul.compute.wait_for_server(server, wait=BOOT)
    wait_for("the guest's READY line", lambda: "READY hostname=snapped" in
             zuul.compute.get_server_console_output(server)["output"], timeout=BOOT, every=0.5)
    zuul.compute.stop_server(server)
    wait_for("SHUTOFF", lambda: zuul.compute.get_server(server).status == "SHUTOFF",
             timeout=BOOT)
    lv = libvirt.open(libvirt_env.QEMU_URI)
    try:
        dom = lv.lookupByUUIDString(server.id)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF  # really off, still defined
    finally:
        lv.close()
    snap = zuul.compute.create_server_image(server, "snapped-disk", metadata={"kept": "yes"},
                                            wait=True, timeout=BOOT)
    props = zuul.image.get(f"/images/{snap.id}").json()  # as Glance answers it
    assert props["status"] == "active" and props["disk_format"] == "qcow2"
    assert props["owner"] == zuul.current_project_id
    assert (props["image_type"], props["instance_uuid"], props["base_image_ref"],
            props["kept"]) == ("snapshot", server.id, demo_image.id, "yes")
    wait_for("SHUTOFF again", lambda: (s := zuul.compute.get_server(server)).status ==
             "SHUTOFF" and s.task_state is None, timeout=BOOT)
    # the CLI's way, which waits for the image
    made = cli(site, "server", "image", "create", "--name", "by-cli", "--wait", server.id,
               "-f", "json")
    assert made["status"] == "active" and made["name"] == "by-cli"
    cli(site, "image", "delete", made["id"])
    copy = zuul.compute.create_server(name="from-snap", flavor_id="ci.small", image_id=snap.id)
    zuul.compute.wait_for_server(copy, wait=BOOT)
    wait_for("the copy's READY line", lambda: "READY hostname=from-snap" in
             zuul.compute.get_server_console_output(copy)["output"], timeout=BOOT, every=0.5)
    for s in (copy, server):
        zuul.compute.delete_server(s)
        zuul.compute.wait_for_delete(s, wait=BOOT)
    zuul.image.delete_image(snap)
