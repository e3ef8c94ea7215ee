"""Server actions (`POST /servers/{id}/action`) through openstacksdk, the `openstack` CLI and
raw HTTP against the demo site (sandbox driver: a server's "power" is its SSH server on its
loopback address, so a stopped server really stops answering)."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import openstack.exceptions
import pytest

from tests.servers import Running, openstack_cli, sdk, wait_for

WAIT = 120  # seconds an action may take on a busy 2-CPU machine (about 1 alone)


def _cli(demo: Running, cloud: str, *args: str) -> Any:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", cloud, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "json" in args else r.stdout


def _ssh_answers(ip: str) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((ip, 22)) == 0


def _server(conn: Any, name: str) -> Any:
    server = conn.compute.create_server(name=f"{name}-{uuid.uuid4().hex[:6]}",
                                        flavor_id="ci.small",
                                        image_id=conn.image.find_image("demo").id)
    return conn.compute.wait_for_server(server, wait=WAIT)


def _status(conn: Any, server: Any, status: str) -> Any:
    """The server once it has `status` and no task (openstacksdk's wait_for_server returns
    at once when the object it is given has the status already, as before a reboot)."""
    def settled() -> Any:
        found = conn.compute.get_server(server)
        return found if found.status == status and found.task_state is None else None

    return wait_for(f"server {status}", settled, timeout=WAIT)


def test_sdk_stop_start_reboot_rebuild(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    server = _server(conn, "acts")
    ip = server.access_ipv4
    assert _ssh_answers(ip)
    conn.compute.stop_server(server)
    stopped = _status(conn, server, "SHUTOFF")
    assert (stopped.vm_state, stopped.task_state, stopped.power_state) == ("stopped", None, 4)
    assert not _ssh_answers(ip)  # really off on its host
    with pytest.raises(openstack.exceptions.ConflictException,
                       match=f"Cannot 'stop' instance {server.id} while it is in vm_state "
                             f"stopped"):
        conn.compute.stop_server(server)
    conn.compute.start_server(server)
    _status(conn, server, "ACTIVE")
    assert _ssh_answers(ip)
    conn.compute.reboot_server(server, "SOFT")
    _status(conn, server, "ACTIVE")
    conn.compute.reboot_server(server, "HARD")
    _status(conn, server, "ACTIVE")
    assert _ssh_answers(ip)
    image = conn.image.find_image("demo")
    rebuilt = conn.compute.rebuild_server(server, image, name="rebuilt",
                                          metadata={"job": "7"})
    assert rebuilt.name == "rebuilt" and rebuilt.admin_password
    done = _status(conn, server, "ACTIVE")
    assert (done.name, done.metadata, done.access_ipv4) == ("rebuilt", {"job": "7"}, ip)
    assert _ssh_answers(ip)
    conn.compute.stop_server(server)  # a stopped server is rebuilt stopped, as in nova
    _status(conn, server, "SHUTOFF")
    conn.compute.rebuild_server(server, image)
    _status(conn, server, "SHUTOFF")
    assert not _ssh_answers(ip)
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=WAIT)


def test_lock_and_reset_state(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    server = _server(conn, "locked")
    conn.compute.lock_server(server)
    with pytest.raises(openstack.exceptions.ConflictException, match="is locked"):
        conn.compute.stop_server(server)
    with pytest.raises(openstack.exceptions.ConflictException, match="is locked"):
        conn.compute.delete_server(server)
    with demo.http() as c:
        token = {"X-Auth-Token": conn.auth_token}
        admin_token = {"X-Auth-Token": admin.auth_token}
        at29 = {**token, "OpenStack-API-Version": "compute 2.9"}
        # the API serves 2.1: `locked` is a 2.9 field, so not shown
        assert "locked" not in c.get(f"/compute/v2.1/servers/{server.id}",
                                     headers=at29).json()["server"]
        # the `locked` filter is 2.73's: a member's is ignored at 2.1, an admin's applies
        mine = c.get("/compute/v2.1/servers?locked=false", headers=token).json()["servers"]
        assert server.id in {s["id"] for s in mine}
        admins = c.get("/compute/v2.1/servers?locked=true&all_tenants=1",
                       headers=admin_token).json()["servers"]
        assert server.id in {s["id"] for s in admins}
        bad = c.get("/compute/v2.1/servers?locked=maybe", headers=admin_token)
        assert bad.status_code == 400 and "Unrecognized value 'maybe'" in bad.text
        # os-resetState is an administrator's
        r = c.post(f"/compute/v2.1/servers/{server.id}/action", headers=token,
                   json={"os-resetState": {"state": "error"}})
        assert r.status_code == 403, r.text
        r = c.post(f"/compute/v2.1/servers/{server.id}/action", headers=token,
                   json={"reboot": {"type": "sideways"}})
        assert r.status_code == 400 and "Invalid input for field/attribute type" in r.text
        r = c.post(f"/compute/v2.1/servers/{server.id}/action", headers=token,
                   json={"shelve": None})
        assert r.status_code == 400 and "not supported" in r.text
        r = c.post(f"/compute/v2.1/servers/{uuid.uuid4()}/action", headers=token,
                   json={"os-stop": None})
        assert r.status_code == 404, r.text
    # resetState changes the record only, as in nova: a stopped server said to be ACTIVE
    admin.compute.stop_server(server)  # an administrator passes the lock
    _status(conn, server, "SHUTOFF")
    admin.compute.reset_server_state(server, "active")
    assert conn.compute.get_server(server).status == "ACTIVE"
    admin.compute.reset_server_state(server, "error")
    failed = conn.compute.get_server(server)
    assert failed.status == "ERROR" and "reset" in failed.fault["message"]
    conn.compute.unlock_server(server)
    # the way out of ERROR: a hard reboot (its host removed it: it boots anew)
    conn.compute.reboot_server(server, "HARD")
    assert _ssh_answers(_status(conn, server, "ACTIVE").access_ipv4)
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=WAIT)


def test_sandbox_refuses_create_image(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    server = _server(conn, "snap")
    images = {i.id for i in conn.image.images()}
    with pytest.raises(openstack.exceptions.ConflictException,
                       match="createImage is not supported by the sandbox driver"):
        conn.compute.create_server_image(server, "snap")
    assert {i.id for i in conn.image.images()} == images  # no image was left behind
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=WAIT)


def test_cli_actions(demo: Running) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    created = _cli(demo, "infracloud", "server", "create", "--flavor", "ci.small", "--image",
                   "demo", "--wait", name, "-f", "json")
    ip = created["accessIPv4"]
    _cli(demo, "infracloud", "server", "stop", name)
    conn = sdk(demo.clouds_yaml, "infracloud")
    _status(conn, conn.compute.find_server(name), "SHUTOFF")
    assert not _ssh_answers(ip)
    _cli(demo, "infracloud", "server", "start", name)
    _status(conn, conn.compute.find_server(name), "ACTIVE")
    _cli(demo, "infracloud", "server", "reboot", "--hard", "--wait", name)
    assert _ssh_answers(ip)
    _cli(demo, "infracloud", "server", "rebuild", "--image", "demo", "--wait", name)
    assert _cli(demo, "infracloud", "server", "show", name, "-f", "json")["status"] == "ACTIVE"
    _cli(demo, "infracloud", "server", "lock", name)
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "server", "delete", name)
    assert r.returncode != 0 and "is locked" in r.stderr
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "server", "image",
                      "create", "--wait", name)
    assert r.returncode != 0 and "not supported by the sandbox driver" in r.stderr
    _cli(demo, "infracloud", "server", "unlock", name)
    _cli(demo, "infracloud", "server", "delete", "--wait", name)
    wait_for("the server gone", lambda: conn.compute.find_server(name) is None, timeout=WAIT)
