"""Servers' list filters, update and smaller reads against the demo site (sandbox servers that
really run), driven by openstacksdk, the `openstack` CLI and raw HTTP through the SDK's
session, as Nova 2.1 answers them."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from openstack.cloud import meta
from openstack.exceptions import BadRequestException

from infracloud.pool.openstack import _ip as pool_address
from tests.servers import Running, openstack_cli, sdk, wait_for


def cli(demo: Running, cloud: str, *args: str) -> Any:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", cloud, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "json" in args else r.stdout


def ids(servers: Any) -> set[str]:
    return {s.id if hasattr(s, "id") else s["ID"] for s in servers}


@pytest.fixture(scope="module")
def pair(demo: Running) -> Iterator[tuple[Any, Any, Any]]:
    """Two running servers of project zuul: `small` (ci.small, accessIPv4 given on create) and
    `big` (ci.8g), and the SDK connection that made them."""
    conn = sdk(demo.clouds_yaml, "infracloud")
    image = conn.image.find_image("demo").id
    tag = uuid.uuid4().hex[:6]
    small = conn.compute.create_server(name=f"f-small-{tag}", flavor_id="ci.small",
                                       image_id=image, access_ipv4="192.0.2.44",
                                       metadata={"role": "filter-test"})
    big = conn.compute.create_server(name=f"f-big-{tag}", flavor_id="ci.8g", image_id=image)
    small = conn.compute.wait_for_server(small, wait=90)
    big = conn.compute.wait_for_server(big, wait=90)
    try:
        yield conn, small, big
    finally:
        for s in (small, big):
            conn.compute.delete_server(s, ignore_missing=True)
        for s in (small, big):
            conn.compute.wait_for_delete(s, wait=90)


def fixed(server: Any) -> str:
    (entry,) = [a for addrs in server.addresses.values() for a in addrs]
    return str(entry["addr"])


def test_filters_with_the_sdk(demo: Running, pair: tuple[Any, Any, Any]) -> None:
    conn, small, big = pair
    mine = {small.id, big.id}
    small_ip = fixed(small)
    assert ids(conn.compute.servers(ipv4_address=re.escape(small_ip) + "$")) & mine == {
        small.id}
    prefix = ".".join(small_ip.split(".")[:2]) + "."  # both live in the demo's network
    assert ids(conn.compute.servers(ipv4_address=prefix)) >= mine
    assert ids(conn.compute.servers(image=small.image.id)) >= mine
    assert ids(conn.compute.servers(image=str(uuid.uuid4()))) == set()
    assert ids(conn.compute.servers(flavor="ci.8g")) & mine == {big.id}
    assert ids(conn.compute.servers(flavor="no-such-flavor")) == set()  # nova: none, no 400
    # a non-administrator's host filter is ignored, as nova drops it
    assert ids(conn.compute.servers(compute_host="no-such-host")) >= mine
    # changes-since: only what changed at or after the time given
    since = dt.datetime.now(dt.UTC)
    wait_for("the clock to pass the last update", lambda: dt.datetime.now(dt.UTC) > since)
    conn.compute.update_server(small, name=small.name + "-renamed")
    changed = ids(conn.compute.servers(changes_since=since.isoformat()))
    assert small.id in changed and big.id not in changed
    with pytest.raises(BadRequestException) as err:
        list(conn.compute.servers(changes_since="yesterday"))
    assert "changes-since" in str(err.value)
    r = conn.compute.get("/servers?ip=(1%2B)%2B")  # a nested repetition: refused unrun
    assert r.status_code == 400 and "Invalid filter field: ip" in r.json()["badRequest"][
        "message"]


def test_administrators_filters(demo: Running, pair: tuple[Any, Any, Any]) -> None:
    conn, small, big = pair
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    host = admin.compute.get_server(small.id).compute_host
    on_host = ids(admin.compute.servers(all_projects=True, compute_host=host))
    assert small.id in on_host
    other = admin.compute.get_server(big.id).compute_host
    assert (big.id in on_host) == (other == host)
    by_cli = cli(demo, "infracloud-admin", "server", "list", "--all-projects", "--host", host,
                 "-f", "json")
    assert ids(by_cli) & {small.id, big.id} == on_host & {small.id, big.id}
    r = admin.compute.get("/servers?all_tenants")  # given with no value: true
    assert {small.id, big.id} <= {s["id"] for s in r.json()["servers"]}
    # tenant_id without all_tenants is ignored: the admin's own project's servers
    r = admin.compute.get(f"/servers?tenant_id={conn.current_project_id}")
    assert r.status_code == 200 and not {small.id, big.id} & {s["id"] for s in
                                                              r.json()["servers"]}
    r = conn.compute.get("/servers?all_tenants=1")
    assert r.status_code == 403 and "get_all_tenants" in r.json()["forbidden"]["message"]


def test_filters_with_the_cli(demo: Running, pair: tuple[Any, Any, Any]) -> None:
    _conn, small, big = pair
    listed = cli(demo, "infracloud", "server", "list", "--ip", re.escape(fixed(big)) + "$",
                 "-f", "json")
    assert ids(listed) & {small.id, big.id} == {big.id}
    assert ids(cli(demo, "infracloud", "server", "list", "--flavor", "ci.small", "-f",
                   "json")) & {small.id, big.id} == {small.id}
    assert ids(cli(demo, "infracloud", "server", "list", "--image", "demo", "-f",
                   "json")) >= {small.id, big.id}
    since = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(cli(demo, "infracloud", "server", "list", "--changes-since", since, "-f",
                   "json")) & {small.id, big.id} == set()


def test_update_and_access_addresses(demo: Running, pair: tuple[Any, Any, Any]) -> None:
    conn, small, big = pair
    name = f"set-by-cli-{uuid.uuid4().hex[:4]}"
    cli(demo, "infracloud", "server", "set", "--name", name, big.id)
    shown = cli(demo, "infracloud", "server", "show", big.id, "-f", "json")
    assert shown["name"] == name
    # no access address given: the server's own address, which nodepool connects to
    got = conn.get_server(big.id)
    assert got.access_ipv4 == fixed(big) and got["interface_ip"] == fixed(big)
    # given on create: kept and shown, and the own address stays in `addresses`
    again = conn.compute.get_server(small.id)
    assert again.access_ipv4 == "192.0.2.44" and demo.owns(fixed(again))
    assert pool_address(again) == fixed(again)  # infracloud's own pool reads the address
    updated = conn.compute.update_server(small, access_ipv4="192.0.2.45",
                                         access_ipv6="2001:db8::45")
    assert updated.access_ipv4 == "192.0.2.45" and updated.access_ipv6 == "2001:db8::45"
    assert meta.get_server_external_ipv4(conn, conn.compute.get_server(small.id)) == (
        "192.0.2.45")
    cleared = conn.compute.update_server(small, access_ipv4="", access_ipv6="")
    assert cleared.access_ipv4 == fixed(small) and cleared.access_ipv6 == ""
    r = conn.compute.put(f"/servers/{small.id}", json={"server": {"accessIPv4": "1.2"}})
    assert r.status_code == 400 and "accessIPv4" in r.json()["badRequest"]["message"]


def test_smaller_reads(demo: Running, pair: tuple[Any, Any, Any]) -> None:
    conn, small, _big = pair
    (label,) = small.addresses
    ips = list(conn.compute.server_ips(small))
    assert [(i.network_label, i.address, i.version) for i in ips] == [(label, fixed(small),
                                                                       4)]
    r = conn.compute.get(f"/servers/{small.id}/ips/{label}")
    assert r.json() == {label: [{"version": 4, "addr": fixed(small)}]}
    r = conn.compute.get(f"/servers/{small.id}/ips/no-such-net")
    assert r.status_code == 404
    assert r.json()["itemNotFound"]["message"] == "Instance is not a member of specified network"
    assert conn.compute.get_server_metadata(small).metadata["role"] == "filter-test"
    r = conn.compute.get(f"/servers/{small.id}/metadata/role")
    assert r.json() == {"meta": {"role": "filter-test"}}
    assert r.headers["x-compute-request-id"] == r.headers["x-openstack-request-id"]
    assert conn.compute.get(f"/servers/{small.id}/metadata/nope").status_code == 404
    assert conn.compute.get_server_password(small) == ""
    r = conn.compute.delete(f"/servers/{small.id}/os-server-password")
    assert r.status_code == 204


def test_instance_actions(demo: Running, pair: tuple[Any, Any, Any]) -> None:
    conn, small, _big = pair
    actions = wait_for("the create's API event", lambda: list(
        conn.compute.server_actions(small)))
    (created,) = [a for a in actions if a.action == "create"]
    assert created.user_id == conn.current_user_id
    assert created.project_id == conn.current_project_id
    assert created.request_id.startswith("req-")
    one = conn.compute.get_server_action(created.request_id, small)
    assert one.action == "create" and one.server_id == small.id
    events = cli(demo, "infracloud", "server", "event", "list", small.id, "-f", "json")
    assert [e["Action"] for e in events if e["Request ID"] == created.request_id] == [
        "create"]


def test_image_proxy(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    demo_image = conn.image.find_image("demo")
    r = conn.compute.get("/images/detail")
    assert r.status_code == 200
    (shown,) = [i for i in r.json()["images"] if i["id"] == demo_image.id]
    assert shown["name"] == "demo" and shown["status"] == "ACTIVE"
    assert shown["progress"] == 100 and shown["OS-EXT-IMG-SIZE:size"] == demo_image.size
    assert conn.compute.get(f"/images/{demo_image.id}").json()["image"]["id"] == demo_image.id
    assert conn.compute.get("/images/no-such-image").status_code == 404


def test_v2_document(demo: Running) -> None:
    with demo.http() as c:
        listed = {v["id"]: v for v in c.get("/compute/").json()["versions"]}
        r = c.get(listed["v2.0"]["links"][0]["href"].replace(demo.base_url, ""))
        assert r.status_code == 200 and r.json()["version"]["id"] == "v2.0"
        assert r.headers["x-compute-request-id"] == r.headers["x-openstack-request-id"]


def test_image_proxy_metadata_with_the_sdk(demo: Running) -> None:
    """openstacksdk's compute image calls (as its own functional test_image makes them)."""
    conn = sdk(demo.clouds_yaml, "infracloud")
    made = conn.image.create_image(name=f"proxy-{uuid.uuid4().hex[:6]}", disk_format="raw",
                                   container_format="bare", data=b"bytes")
    try:
        assert conn.compute.find_image(made.name, ignore_missing=False).id == made.id
        image = next(i for i in conn.compute.images() if i.id == made.id)  # the detail list
        assert conn.compute.get_image(made.id).name == made.name
        conn.compute.delete_image_metadata(image, list(image.metadata.keys()))
        assert not conn.compute.fetch_image_metadata(image).metadata
        conn.compute.set_image_metadata(image, k0="")
        conn.compute.set_image_metadata(image, k1="v1")
        conn.compute.set_image_metadata(image, k1="v1.1")
        assert conn.compute.fetch_image_metadata(image).metadata == {"k0": "", "k1": "v1.1"}
        assert conn.image.get_image(made.id).properties["k1"] == "v1.1"  # the same record
        conn.compute.delete_image_metadata(image, ["k0", "k1"])
        assert not conn.compute.fetch_image_metadata(image).metadata
    finally:
        conn.image.delete_image(made)
