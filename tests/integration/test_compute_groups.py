"""Server groups, multi-create and private flavors through openstacksdk, the `openstack` CLI and
raw HTTP, against the demo site (4 compute hosts, sandbox servers on loopback addresses)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import openstack.exceptions
import pytest

from tests.servers import Running, openstack_cli, sdk


def cli(demo: Running, cloud: str, *args: str) -> Any:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", cloud, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "json" in args else r.stdout


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _delete_all(conn: Any, servers: list[Any]) -> None:
    for s in servers:
        conn.compute.delete_server(s, ignore_missing=True)
    for s in servers:
        conn.compute.wait_for_delete(s, wait=60)


def test_multinode_job_asks_for_distinct_hosts_with_openstacksdk(demo: Running) -> None:
    """What a multi-node CI job does: an anti-affinity group, its nodes created with the
    group hint: every node on a host of its own, ACTIVE; the group lists them, and loses each
    as it is deleted."""
    conn = sdk(demo.clouds_yaml, "infracloud")
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    group = conn.compute.create_server_group(name=_name("job"), policies=["anti-affinity"])
    assert group.policies == ["anti-affinity"] and group.member_ids == []
    image = conn.image.find_image("demo").id
    nodes = [conn.compute.create_server(name=_name("node"), flavor_id="ci.small",
                                        image_id=image, scheduler_hints={"group": group.id})
             for _ in range(3)]
    try:
        for n in nodes:
            conn.compute.wait_for_server(n, wait=120)
        hosts = [admin.compute.get_server(n.id).compute_host for n in nodes]
        assert None not in hosts and len(set(hosts)) == 3, hosts
        assert len({conn.compute.get_server(n.id).host_id for n in nodes}) == 3
        assert set(conn.compute.get_server_group(group.id).member_ids) == {n.id for n in nodes}
        listed = {g.id for g in conn.compute.server_groups()}
        assert group.id in listed
        # a fifth member would need a fifth host: the fourth takes the last one
        fourth = conn.compute.create_server(name=_name("node"), flavor_id="ci.small",
                                            image_id=image, scheduler_hints={"group": group.id})
        nodes.append(fourth)
        conn.compute.wait_for_server(fourth, wait=120)
        fifth = conn.compute.create_server(name=_name("node"), flavor_id="ci.small",
                                           image_id=image, scheduler_hints={"group": group.id})
        nodes.append(fifth)
        failed = conn.compute.wait_for_server(fifth, status="ERROR", failures=[], wait=60)
        assert "No valid host" in failed.fault["message"]
    finally:
        _delete_all(conn, nodes)
    assert conn.compute.get_server_group(group.id).member_ids == []
    conn.compute.delete_server_group(group)
    with pytest.raises(openstack.exceptions.NotFoundException):
        conn.compute.get_server_group(group.id)


def test_cli_group_hint_with_min_and_max(demo: Running) -> None:
    """`openstack server group create --policy anti-affinity` and `openstack server create
    --hint group=... --min 2 --max 3`: three servers named <name>-1..3 on three hosts; other
    projects do not see the group, admins list it with --all-projects."""
    group = cli(demo, "infracloud", "server", "group", "create", "--policy", "anti-affinity",
                _name("cli-group"), "-f", "json")
    assert group["policies"] == ["anti-affinity"] and group["members"] == []
    name = _name("mc")
    cli(demo, "infracloud", "server", "create", "--flavor", "ci.small", "--image", "demo",
        "--hint", f"group={group['id']}", "--min", "2", "--max", "3", "--wait", name)
    conn = sdk(demo.clouds_yaml, "infracloud")
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    made = sorted((s for s in conn.compute.servers() if s.name.startswith(name)),
                  key=lambda s: s.name)
    try:
        assert [s.name for s in made] == [f"{name}-1", f"{name}-2", f"{name}-3"]
        for s in made:
            conn.compute.wait_for_server(s, wait=120)
        hosts = {admin.compute.get_server(s.id).compute_host for s in made}
        assert len(hosts) == 3
        shown = cli(demo, "infracloud", "server", "group", "show", group["id"], "-f", "json")
        assert set(shown["members"]) == {s.id for s in made}
        r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud-ci", "server", "group",
                          "show", group["id"])
        assert r.returncode != 0
        everyone = cli(demo, "infracloud-admin", "server", "group", "list", "--all-projects",
                       "-f", "json")
        assert group["id"] in {g["ID"] for g in everyone}
    finally:
        _delete_all(conn, made)
    cli(demo, "infracloud", "server", "group", "delete", group["id"])


def test_return_reservation_id_and_quota_all_or_nothing(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    image = conn.image.find_image("demo").id
    name = _name("resv")
    body = {"server": {"name": name, "flavorRef": "ci.small", "imageRef": image,
                       "min_count": 2, "max_count": 2, "return_reservation_id": True}}
    with demo.http() as c:
        headers = {"X-Auth-Token": conn.auth_token}
        r = c.post("/compute/v2.1/servers", headers=headers, json=body)
        assert r.status_code == 202, r.text
        rid = r.json()["reservation_id"]
        assert list(r.json()) == ["reservation_id"] and rid.startswith("r-")
        listed = c.get(f"/compute/v2.1/servers?reservation_id={rid}", headers=headers).json()
        assert sorted(s["name"] for s in listed["servers"]) == [f"{name}-1", f"{name}-2"]
        # without return_reservation_id: the first server, as nova answers
        first = c.post("/compute/v2.1/servers", headers=headers, json={"server": {
            **body["server"], "return_reservation_id": False, "name": name + "x"}}).json()
        assert set(first["server"]) >= {"id", "links"}
        made = [s["id"] for s in c.get(f"/compute/v2.1/servers?name=^{name}",
                                       headers=headers).json()["servers"]]
        assert len(made) == 4 and first["server"]["id"] in made
        # more than the quota allows at least: 403, and nothing is made
        quota = c.get(f"/compute/v2.1/os-quota-sets/{conn.current_project_id}",
                      headers=headers).json()["quota_set"]
        assert quota["server_groups"] == 10 and quota["server_group_members"] == 10
        too_many = {"server": {**body["server"], "name": name + "y", "min_count": 100000,
                               "max_count": 100000, "return_reservation_id": False}}
        r = c.post("/compute/v2.1/servers", headers=headers, json=too_many)
        assert r.status_code == 403 and "Quota exceeded for" in r.json()["forbidden"]["message"]
        assert c.get(f"/compute/v2.1/servers?name=^{name}y",
                     headers=headers).json()["servers"] == []
        for counts in ({"min_count": 3, "max_count": 2}, {"min_count": 2, "max_count": 1}):
            r = c.post("/compute/v2.1/servers", headers=headers, json={"server": {
                **body["server"], **counts}})
            assert r.status_code == 400
            assert r.json()["badRequest"]["message"] == "min_count must be <= max_count"
        # min_count alone: max_count is the same (nova's default)
        r = c.post("/compute/v2.1/servers", headers=headers, json={"server": {
            "name": name + "m", "flavorRef": "ci.small", "imageRef": image, "min_count": 2}})
        assert r.status_code == 202
        made += [s["id"] for s in c.get(f"/compute/v2.1/servers?name=^{name}m",
                                        headers=headers).json()["servers"]]
        assert len(made) == 6
    _delete_all(conn, [conn.compute.get_server(i) for i in made])


def test_private_flavor_access_and_extra_specs(demo: Running) -> None:
    """`openstack flavor create --private --project`, `flavor set --property`, and the
    openstacksdk calls: a private flavor is its projects' only, to see and to boot."""
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    zuul = sdk(demo.clouds_yaml, "infracloud")
    ci = sdk(demo.clouds_yaml, "infracloud-ci")
    name = _name("private")
    made = cli(demo, "infracloud-admin", "flavor", "create", "--private", "--project", "zuul",
               "--ram", "256", "--vcpus", "1", "--disk", "1", "--property", "hw:x=1", name,
               "-f", "json")
    fid = made["id"]
    assert made["os-flavor-access:is_public"] is False
    try:
        assert name in {f.name for f in zuul.compute.flavors()}
        assert name not in {f.name for f in ci.compute.flavors()}
        # admins: public ones by default (the sdk asks for is_public=None: all)
        with demo.http() as c:
            h = {"X-Auth-Token": admin.auth_token}
            default = c.get("/compute/v2.1/flavors", headers=h).json()["flavors"]
        assert name not in {f["name"] for f in default}
        assert name not in {f.name for f in admin.compute.flavors(is_public=True)}
        assert name in {f.name for f in admin.compute.flavors()}
        assert {f.name for f in admin.compute.flavors(is_public=False)} >= {name}
        every = cli(demo, "infracloud-admin", "flavor", "list", "--all", "-f", "json")
        assert name in {f["Name"] for f in every} and "ci.small" in {f["Name"] for f in every}
        with pytest.raises(openstack.exceptions.NotFoundException):
            ci.compute.get_flavor(fid)
        image = ci.image.find_image("demo").id
        with pytest.raises(openstack.exceptions.BadRequestException):
            ci.compute.create_server(name=_name("nope"), flavor_id=fid, image_id=image)
        access = admin.compute.get_flavor_access(fid)
        assert [a["tenant_id"] for a in access] == [zuul.current_project_id]
        admin.compute.flavor_add_tenant_access(fid, ci.current_project_id)
        assert ci.compute.get_flavor(fid).name == name
        server = ci.compute.create_server(name=_name("yes"), flavor_id=fid, image_id=image)
        ci.compute.wait_for_server(server, wait=120)
        ci.compute.delete_server(server)
        ci.compute.wait_for_delete(server, wait=60)
        admin.compute.flavor_remove_tenant_access(fid, ci.current_project_id)
        with pytest.raises(openstack.exceptions.NotFoundException):
            ci.compute.get_flavor(fid)
        # extra specs: the CLI's --property, the sdk's calls, nova's validation
        cli(demo, "infracloud-admin", "flavor", "set", "--property", "hw:cpu_policy=dedicated",
            fid)
        assert admin.compute.fetch_flavor_extra_specs(fid).extra_specs == {
            "hw:x": "1", "hw:cpu_policy": "dedicated"}
        admin.compute.create_flavor_extra_specs(fid, {"quota:disk_read_iops_sec": "100"})
        assert admin.compute.get_flavor_extra_specs_property(
            fid, "quota:disk_read_iops_sec") == "100"
        admin.compute.update_flavor_extra_specs_property(fid, "hw:x", "2")
        admin.compute.delete_flavor_extra_specs_property(fid, "hw:cpu_policy")
        shown = cli(demo, "infracloud", "flavor", "show", fid, "-f", "json")
        assert shown["properties"] in ({"hw:x": "2", "quota:disk_read_iops_sec": "100"},
                                       "hw:x='2', quota:disk_read_iops_sec='100'")
        with demo.http() as c:
            h = {"X-Auth-Token": admin.auth_token}
            url = f"/compute/v2.1/flavors/{fid}/os-extra_specs"
            assert c.post(url, headers=h, json={"extra_specs": {"bad/key": "x"}}
                          ).status_code == 400
            assert c.put(f"{url}/a", headers=h, json={"b": "x"}).status_code == 400
            assert c.get(f"{url}/none", headers=h).status_code == 404
            member = {"X-Auth-Token": zuul.auth_token}
            assert c.post(url, headers=member, json={"extra_specs": {"k": "v"}}
                          ).status_code == 403
            assert c.post(f"/compute/v2.1/flavors/{fid}/action", headers=h, json={
                "addTenantAccess": {"tenant": "no-such-project"}}).status_code == 400
    finally:
        cli(demo, "infracloud-admin", "flavor", "delete", fid)
