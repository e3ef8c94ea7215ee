"""Servers' lifetimes against the demo site, through the `openstack` CLI and openstacksdk: a
flavor's limit set with `openstack flavor set --property` (a bad value refused), the expiry
in `openstack server show`'s properties (the owner cannot change it), the owner's extension
up to the limit and not past it, an admin's exemption, and a server deleted at its expiry by
the controller's duty with an event that says why."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from infracloud.core.clock import parse_time
from tests.servers import Running, openstack_cli, sdk, wait_for

KEY = "infracloud:expires_at"


def cli(demo: Running, cloud: str, *args: str) -> Any:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", cloud, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "json" in args else r.stdout


def _flavor(demo: Running, name: str, *props: str) -> None:
    cli(demo, "infracloud-admin", "flavor", "create", "--vcpus", "1", "--ram", "1024",
        "--disk", "10", name)
    if props:
        cli(demo, "infracloud-admin", "flavor", "set", *(
            x for p in props for x in ("--property", p)), name)


@pytest.fixture(scope="module")
def flavors(demo: Running) -> Iterator[tuple[str, str]]:
    """`lt-long-*`: servers live 30 min, extensible to 1 h; `lt-short-*`: 5 s."""
    tag = uuid.uuid4().hex[:6]
    long, short = f"lt-long-{tag}", f"lt-short-{tag}"
    _flavor(demo, long, "infracloud:max_lifetime=1h", "infracloud:lifetime=30m")
    _flavor(demo, short, "infracloud:max_lifetime=5")
    yield long, short
    for name in (long, short):
        openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud-admin", "flavor", "delete",
                      name)


def _properties(demo: Running, server_id: str) -> dict[str, str]:
    shown = cli(demo, "infracloud", "server", "show", "-f", "json", server_id)
    props = shown["properties"]
    return props if isinstance(props, dict) else dict(
        (k, v.strip("'")) for k, v in (p.split("=", 1) for p in props.split(", ") if p))


def test_the_demo_ships_a_builder_flavor(demo: Running) -> None:
    shown = cli(demo, "infracloud", "flavor", "show", "-f", "json", "builder.8g")
    assert shown["properties"]["infracloud:max_lifetime"] == "24h"
    assert (shown["vcpus"], shown["ram"], shown["disk"]) == (8, 8192, 80)


def test_a_bad_limit_is_refused(demo: Running, flavors: tuple[str, str]) -> None:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud-admin", "flavor", "set",
                      "--property", "infracloud:max_lifetime=a-day", flavors[0])
    assert r.returncode != 0 and "Invalid infracloud:max_lifetime" in r.stderr, r.stderr


def test_a_bad_image_limit_is_refused(demo: Running) -> None:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "image", "create",
                      "--property", "infracloud_max_lifetime=soon", f"lt-{uuid.uuid4().hex[:6]}")
    assert r.returncode != 0 and "Invalid infracloud_max_lifetime" in r.stderr, r.stderr


def test_expiry_shown_extended_and_exempted(demo: Running, flavors: tuple[str, str]) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    image = conn.image.find_image("demo").id
    server = conn.compute.create_server(name=f"lt-{uuid.uuid4().hex[:6]}",
                                        flavor_id=conn.compute.find_flavor(flavors[0]).id,
                                        image_id=image)
    try:
        created = parse_time(conn.compute.get_server(server.id).created_at)
        expires = parse_time(_properties(demo, server.id)[KEY])
        assert expires - created == dt.timedelta(minutes=30)
        # the owner cannot write it
        r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "server", "set",
                          "--property", f"{KEY}=2099-01-01T00:00:00Z", server.id)
        assert r.returncode != 0 and "403" in r.stderr, r.stderr
        path = f"/servers/{server.id}/os-lifetime"
        r = conn.compute.post(path, json={"extend": {"seconds": 1200}})
        assert r.status_code == 200, r.text
        life = r.json()["lifetime"]
        assert parse_time(life["expires_at"]) - created == dt.timedelta(minutes=50)
        assert parse_time(life["latest_expiry"]) - created == dt.timedelta(hours=1)
        assert parse_time(_properties(demo, server.id)[KEY]) == parse_time(life["expires_at"])
        r = conn.compute.post(path, json={"extend": {"seconds": 601}})
        assert r.status_code == 409 and "at the latest" in r.text, r.text
        r = conn.compute.post(path, json={"extend": {"seconds": "ten"}})
        assert r.status_code == 400, r.text
        r = conn.compute.post(path + "/exempt")
        assert r.status_code == 403, r.text
        r = admin.compute.post(path + "/exempt", json={"exempt": {"bogus": 1}})
        assert r.status_code == 400, r.text
        r = admin.compute.post(path + "/exempt", json={"exempt": {"reason": "a long bisect"}})
        assert r.status_code == 200 and r.json()["lifetime"]["expires_at"] is None, r.text
        assert r.json()["lifetime"]["exempted_by"] == "admin"
        assert KEY not in _properties(demo, server.id)

        def exempted() -> list[dict[str, Any]]:
            with demo.http() as http:
                r = http.get("/ops/v1/events", params={"resource": server.id, "limit": 100})
                return [e for e in r.json()["events"] if e["action"] == "exempt"]

        (event,) = wait_for("the exemption's event", exempted, timeout=15)
        assert event["reason"] == "exempted from its lifetime by admin: a long bisect"
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, wait=90)


def test_a_server_is_deleted_at_its_expiry_saying_why(demo: Running,
                                                      flavors: tuple[str, str]) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    image = conn.image.find_image("demo").id
    server = conn.compute.create_server(name=f"lt-{uuid.uuid4().hex[:6]}",
                                        flavor_id=conn.compute.find_flavor(flavors[1]).id,
                                        image_id=image)
    # the lifetimes duty runs every 10 s (compute.lifetimes.interval): 5 s + a round + the
    # host's agent destroying it
    conn.compute.wait_for_delete(server, wait=90)

    def expired() -> list[dict[str, Any]]:
        with demo.http() as http:
            r = http.get("/ops/v1/events", params={"resource": server.id, "limit": 100})
            assert r.status_code == 200, r.text
            return [e for e in r.json()["events"] if e["action"] == "expire"]

    (event,) = wait_for("the expiry's event", expired, timeout=30)
    assert event["reason"] == f"expired: flavor {flavors[1]} limits servers to 5 s"
    assert event["actor"] == "system:lifetimes"


def test_a_project_limit(demo: Running, flavors: tuple[str, str]) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    project = conn.current_project_id
    path = f"/os-lifetime-limits/{project}"
    r = conn.compute.put(path, json={"lifetime_limit": {"max_lifetime": "10m"}})
    assert r.status_code == 403, r.text
    r = admin.compute.put(path, json={"lifetime_limit": {"max_lifetime": "for ages"}})
    assert r.status_code == 400, r.text
    r = admin.compute.put(path, json={"lifetime_limit": {"max_lifetime": "10m"}})
    assert r.status_code == 200 and r.json()["lifetime_limit"]["max_lifetime"] == 600
    try:
        assert conn.compute.get(path).json() == {"lifetime_limit": {"max_lifetime": 600}}
        image = conn.image.find_image("demo").id
        server = conn.compute.create_server(name=f"lt-{uuid.uuid4().hex[:6]}",
                                            flavor_id=conn.compute.find_flavor(flavors[0]).id,
                                        image_id=image)
        try:
            life = conn.compute.get(f"/servers/{server.id}/os-lifetime").json()["lifetime"]
            assert life["max_lifetime"] == 600
            assert life["reason"] == "project zuul limits servers to 10 min"
        finally:
            conn.compute.delete_server(server, ignore_missing=True)
            conn.compute.wait_for_delete(server, wait=90)
    finally:
        admin.compute.put(path, json={"lifetime_limit": {"max_lifetime": None}})
