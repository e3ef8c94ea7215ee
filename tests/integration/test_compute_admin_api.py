"""Compute's admin views against the demo site (4 compute hosts, sandbox driver), through
openstacksdk, the `openstack` CLI and raw HTTP: hypervisors, compute services, availability
zones, quota sets and the default quota class, simple tenant usage, extensions; the roles a
fresh site has. The answers are Nova 2.1's shapes (no microversion is asked for)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers import Running, openstack_cli, sdk

QUOTA_KEYS = {"instances", "cores", "ram", "key_pairs", "metadata_items", "injected_files",
              "injected_file_content_bytes", "injected_file_path_bytes", "server_groups",
              "server_group_members", "fixed_ips", "floating_ips", "security_groups",
              "security_group_rules"}
C = "/compute/v2.1"


def cli(demo: Running, cloud: str, *args: str) -> Any:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", cloud, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "-f" in args and "json" in args else r.stdout


def count(servers: Any) -> int:
    """The CLI's `Servers` column: a count, or in JSON the server rows themselves."""
    return len(servers) if isinstance(servers, list) else int(servers)


def admin_cli(demo: Running, *args: str) -> Any:
    return cli(demo, "infracloud-admin", *args)


@pytest.fixture(scope="module")
def admin(demo: Running) -> Any:
    return sdk(demo.clouds_yaml, "infracloud-admin")


@pytest.fixture(scope="module")
def zuul(demo: Running) -> Any:
    return sdk(demo.clouds_yaml, "infracloud")


@pytest.fixture(scope="module")
def server(demo: Running, zuul: Any) -> Iterator[Any]:
    """One ACTIVE server of the `infracloud` project for the views to find."""
    made = zuul.compute.create_server(name=f"adm-{uuid.uuid4().hex[:6]}",
                                      flavor_id="ci.small",
                                      image_id=zuul.image.find_image("demo").id)
    made = zuul.compute.wait_for_server(made, wait=120)
    yield made
    zuul.compute.delete_server(made)
    zuul.compute.wait_for_delete(made, wait=60)


def call(demo: Running, conn: Any, method: str, path: str, **kw: Any) -> Any:
    with demo.http() as c:
        return c.request(method, path, headers={"X-Auth-Token": conn.auth_token}, **kw)


def test_hypervisors(demo: Running, admin: Any, zuul: Any, server: Any) -> None:
    found = list(admin.compute.hypervisors(details=True))
    assert len(found) == 4
    by_name = {h.name: h for h in found}
    host = admin.compute.get_server(server.id).compute_host
    mine = by_name[host]
    assert isinstance(mine.id, int) and mine.state == "up" and mine.status == "enabled"
    assert mine.running_vms >= 1 and mine.vcpus > 0 and mine.memory_size > 0
    shown = admin.compute.get_hypervisor(mine.id)
    assert shown.name == host and shown.service_details["host"] == host
    # the CLI: list, show by name (it also asks for aggregates and the uptime), statistics
    listed = admin_cli(demo, "hypervisor", "list", "-f", "json")
    assert {h["Hypervisor Hostname"] for h in listed} == set(by_name)
    show = admin_cli(demo, "hypervisor", "show", host, "-f", "json")
    assert show["id"] == mine.id and show["service_host"] == host and show["aggregates"] == []
    stats = admin_cli(demo, "hypervisor", "stats", "show", "-f", "json")
    assert stats["count"] == 4
    # the hosts' sizes add up; their servers come and go (the demo's pool), ours stays
    assert stats["vcpus"] == sum(h.vcpus for h in found)
    assert stats["memory_mb"] == sum(h.memory_size for h in found)
    assert stats["running_vms"] >= 1
    # 2.1's servers by hostname pattern: [{uuid, name}] only on hosts that have some
    body = call(demo, admin, "GET", f"{C}/os-hypervisors/{host}/servers").json()
    (hyp,) = body["hypervisors"]
    assert {"uuid": server.id, "name": server.name} in hyp["servers"]
    assert set(hyp) == {"id", "hypervisor_hostname", "state", "status", "servers"}
    first = min(by_name)
    common = next(first[:n] for n in range(len(first), 0, -1)
                  if all(name.startswith(first[:n]) for name in by_name))
    every = call(demo, admin, "GET", f"{C}/os-hypervisors/{common}/search").json()
    assert {h["hypervisor_hostname"] for h in every["hypervisors"]} == set(by_name)
    assert "vcpus" not in every["hypervisors"][0]
    # not found as Nova says it: a uuid is no 2.1 id, a pattern matching nothing
    for path in (f"{C}/os-hypervisors/{uuid.uuid4()}", f"{C}/os-hypervisors/12/uptime",
                 f"{C}/os-hypervisors/no-such-host/servers"):
        r = call(demo, admin, "GET", path)
        assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404, path
    r = call(demo, admin, "GET", f"{C}/os-hypervisors/{mine.id}/uptime")
    assert r.status_code == 501 and "notImplemented" in r.json()
    # administrators only, as Nova's policy
    assert call(demo, zuul, "GET", f"{C}/os-hypervisors/statistics").status_code == 403


def test_services_and_zones(demo: Running, admin: Any) -> None:
    services = list(admin.compute.services())
    assert len(services) == 4 and {s.binary for s in services} == {"nova-compute"}
    raw = call(demo, admin, "GET", f"{C}/os-services").json()["services"]
    assert set(raw[0]) == {"id", "binary", "host", "zone", "status", "state", "updated_at",
                           "disabled_reason"}  # 2.1: no forced_down
    assert all(isinstance(s["id"], int) for s in raw)
    assert call(demo, admin, "GET", f"{C}/os-services?binary=nova-scheduler").json() == {
        "services": []}
    host = raw[0]["host"]
    body = {"host": host, "binary": "nova-compute", "disabled_reason": "fan noise"}
    r = call(demo, admin, "PUT", f"{C}/os-services/disable-log-reason", json=body)
    try:
        assert r.status_code == 200 and r.json()["service"] == {
            "host": host, "binary": "nova-compute", "status": "disabled",
            "disabled_reason": "fan noise"}
        listed = admin_cli(demo, "compute", "service", "list", "--long", "-f", "json")
        (row,) = [s for s in listed if s["Host"] == host]
        assert row["Status"] == "disabled" and row["Disabled Reason"] == "fan noise"
        zones = admin_cli(demo, "availability", "zone", "list", "--long",
                          "-f", "json")
        rows = {z["Host Name"]: z for z in zones}
        assert rows[host]["Service Status"].startswith("disabled")
        assert {z["Zone Name"] for z in zones} == {"nova"} and len(rows) == 4
    finally:
        r = call(demo, admin, "PUT", f"{C}/os-services/enable",
                 json={"host": host, "binary": "nova-compute"})
        assert r.status_code == 200 and r.json()["service"]["status"] == "enabled"
    (zone,) = list(admin.compute.availability_zones(details=True))
    assert zone.name == "nova" and zone.state == {"available": True}
    assert set(zone.hosts) == {s.host for s in services}
    assert all(h["nova-compute"]["active"] for h in zone.hosts.values())
    # bad input: Nova's answers
    for action, payload, status in (
            ("disable-log-reason", {"host": host, "binary": "nova-compute"}, 400),
            ("force-down", {"host": host, "binary": "nova-compute"}, 404),
            ("disable", {"host": host}, 400),
            ("disable", {"host": "no-such-host", "binary": "nova-compute"}, 404)):
        r = call(demo, admin, "PUT", f"{C}/os-services/{action}", json=payload)
        assert r.status_code == status, (action, r.text)


def test_quota_sets(demo: Running, admin: Any, zuul: Any, server: Any) -> None:
    project = zuul.current_project_id
    quota = admin.compute.get_quota_set(project)
    raw = call(demo, admin, "GET", f"{C}/os-quota-sets/{project}").json()["quota_set"]
    assert set(raw) == QUOTA_KEYS | {"id"} and raw["id"] == project
    assert quota.instances == raw["instances"] == 100
    # what the project uses now (the demo's pool keeps servers ready in it too)
    detail = call(demo, zuul, "GET", f"{C}/os-quota-sets/{project}/detail").json()["quota_set"]
    assert set(detail) == QUOTA_KEYS | {"id"} and detail["instances"]["in_use"] >= 1
    assert detail["cores"] == {"limit": quota.cores, "in_use": detail["cores"]["in_use"],
                               "reserved": 0}
    cores = detail["cores"]["in_use"] + 10
    try:
        # numbers as strings, -1, and the CLI's quota set
        r = call(demo, admin, "PUT", f"{C}/os-quota-sets/{project}",
                 json={"quota_set": {"cores": str(cores), "ram": -1, "metadata_items": "64"}})
        assert r.status_code == 200, r.text
        out = r.json()["quota_set"]
        assert "id" not in out and set(out) == QUOTA_KEYS
        assert (out["cores"], out["ram"], out["metadata_items"]) == (cores, -1, 64)
        absolute = zuul.compute.get_limits().absolute  # /limits says the same
        assert (absolute.total_cores, absolute.server_meta) == (cores, 64)
        admin_cli(demo, "quota", "set", "--cores", str(cores + 2), "--instances", "70",
                  project)
        shown = admin_cli(demo, "quota", "show", project, "-f", "json")
        got = {row["Resource"]: row["Limit"] for row in shown} if isinstance(
            shown, list) else shown
        assert got["cores"] == cores + 2 and got["instances"] == 70
        assert admin.compute.get_quota_set(project).cores == cores + 2
        admin.compute.update_quota_set(project, server_groups=5)  # openstacksdk's PUT
        assert admin.compute.get_quota_set(project).server_groups == 5
        # a limit below what is used needs force
        r = call(demo, admin, "PUT", f"{C}/os-quota-sets/{project}",
                 json={"quota_set": {"instances": 0}})
        assert r.status_code == 400 and "already used" in r.json()["badRequest"]["message"]
        r = call(demo, admin, "PUT", f"{C}/os-quota-sets/{project}",
                 json={"quota_set": {"instances": 0, "force": "True"}})
        assert r.status_code == 200 and r.json()["quota_set"]["instances"] == 0
        for bad in ({"cores": "ten"}, {"cores": -2}, {"cores": 1.5}, {"widgets": 1},
                    {"cores": 2**31}):
            r = call(demo, admin, "PUT", f"{C}/os-quota-sets/{project}",
                     json={"quota_set": bad})
            assert r.status_code == 400, (bad, r.text)
        assert call(demo, zuul, "PUT", f"{C}/os-quota-sets/{project}",
                    json={"quota_set": {"cores": 1}}).status_code == 403
        r = call(demo, admin, "GET", f"{C}/os-quota-sets/{uuid.uuid4().hex}")
        assert r.status_code == 400 and "not a valid project" in r.text
    finally:
        r = call(demo, admin, "DELETE", f"{C}/os-quota-sets/{project}")
        assert r.status_code == 202
    assert admin.compute.get_quota_set(project).cores == quota.cores  # the defaults again


def test_default_quota_class(demo: Running, admin: Any, zuul: Any) -> None:
    project = zuul.current_project_id
    got = call(demo, admin, "GET", f"{C}/os-quota-class-sets/default").json()
    cls = got["quota_class_set"]
    assert cls["id"] == "default" and set(cls) == QUOTA_KEYS - {
        "server_groups", "server_group_members"} | {"id"}  # 2.1: 2.50 added those two
    before = cls["key_pairs"]
    r = call(demo, admin, "PUT", f"{C}/os-quota-class-sets/default",
             json={"quota_class_set": {"key_pairs": "55"}})
    try:
        assert r.status_code == 200 and r.json()["quota_class_set"]["key_pairs"] == 55
        admin_cli(demo, "quota", "set", "--class", "--cores", "900", "default")
        shown = admin_cli(demo, "quota", "show", "--default", "--compute", project, "-f",
                          "json")
        got = {row["Resource"]: row["Limit"] for row in shown} if isinstance(
            shown, list) else shown
        assert got["cores"] == 900 and got["key-pairs" if "key-pairs" in got else
                                           "key_pairs"] == 55
        # the new default for every project without its own value
        defaults = call(demo, zuul, "GET", f"{C}/os-quota-sets/{project}/defaults").json()
        assert defaults["quota_set"]["key_pairs"] == 55
        assert admin.compute.get_quota_set(project).key_pairs == 55
        assert call(demo, zuul, "PUT", f"{C}/os-quota-class-sets/default",
                    json={"quota_class_set": {"key_pairs": 1}}).status_code == 403
    finally:
        call(demo, admin, "PUT", f"{C}/os-quota-class-sets/default",
             json={"quota_class_set": {"key_pairs": before, "cores": cls["cores"]}})


def test_simple_tenant_usage(demo: Running, admin: Any, zuul: Any, server: Any) -> None:
    project = zuul.current_project_id
    start = "2020-01-01T00:00:00"
    # the CLI's usage list and show (it names the projects through the identity API)
    listed = admin_cli(demo, "usage", "list", "--start", "2020-01-01", "-f", "json")
    mine = [row for row in listed if row["Project"] in ("zuul", project)]
    assert mine and float(mine[0]["CPU Hours"]) > 0 and count(mine[0]["Servers"]) >= 1
    shown = cli(demo, "infracloud", "usage", "show", "--start", "2020-01-01", "-f", "json")
    assert count(shown["Servers"]) >= 1 and float(shown["CPU Hours"]) > 0
    # raw: detailed, with the server's row
    body = call(demo, admin, "GET", f"{C}/os-simple-tenant-usage",
                params={"start": start, "detailed": "1"}).json()
    usage = next(u for u in body["tenant_usages"] if u["tenant_id"] == project)
    row = next(s for s in usage["server_usages"] if s["instance_id"] == server.id)
    assert row["state"] == "active" and row["ended_at"] is None and row["vcpus"] >= 1
    assert row["flavor"] and row["hours"] > 0 and row["uptime"] >= 0
    assert usage["total_vcpus_usage"] >= row["hours"] * row["vcpus"] * 0.99
    assert usage["start"].startswith("2020-01-01T00:00:00")
    plain = call(demo, admin, "GET", f"{C}/os-simple-tenant-usage",
                 params={"start": start}).json()["tenant_usages"]
    assert plain and all("server_usages" not in u for u in plain)
    own = call(demo, zuul, "GET", f"{C}/os-simple-tenant-usage/{project}",
               params={"start": start}).json()["tenant_usage"]
    assert own["tenant_id"] == project and own["server_usages"]
    # a period before anything ran: an empty usage, not a 404
    empty = call(demo, zuul, "GET", f"{C}/os-simple-tenant-usage/{project}",
                 params={"start": "2001-01-01T00:00:00", "end": "2001-01-02T00:00:00"})
    assert empty.json() == {"tenant_usage": {}}
    # Nova's 400s and its policy: the list is the administrators', a project its own
    for params in ({"start": "2030-01-01T00:00:00", "end": "2020-01-01T00:00:00"},
                   {"start": "yesterday"}):
        r = call(demo, admin, "GET", f"{C}/os-simple-tenant-usage", params=params)
        assert r.status_code == 400, params
    assert call(demo, zuul, "GET", f"{C}/os-simple-tenant-usage").status_code == 403
    other = sdk(demo.clouds_yaml, "infracloud-ci")
    assert call(demo, other, "GET",
                f"{C}/os-simple-tenant-usage/{project}").status_code == 403


def test_extensions_and_absent_security_groups(demo: Running, zuul: Any) -> None:
    listed = cli(demo, "infracloud", "extension", "list", "--compute", "-f", "json")
    aliases = {e["Alias"] for e in listed}
    assert {"os-hypervisors", "os-simple-tenant-usage", "os-quota-sets", "OS-EXT-AZ"} <= aliases
    one = call(demo, zuul, "GET", f"{C}/extensions/os-keypairs").json()["extension"]
    assert one["name"] == "Keypairs" and one["links"] == []
    assert call(demo, zuul, "GET", f"{C}/extensions/os-cells").status_code == 404
    # no security-group API here: Nova's 404 of a cloud without them
    for path in ("os-security-groups", "os-security-group-rules"):
        r = call(demo, zuul, "GET", f"{C}/{path}")
        assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404


def test_fresh_site_has_keystones_roles(demo: Running, admin: Any) -> None:
    """Keystone's bootstrap roles, and its implications: a manager is a member and a reader."""
    roles = {r["Name"] for r in admin_cli(demo, "role", "list", "-f", "json")}
    assert {"admin", "manager", "member", "reader", "service"} <= roles
    project = admin.identity.find_project("zuul")
    name = f"mgr-{uuid.uuid4().hex[:6]}"
    user = admin.identity.create_user(name=name, password="pw-manager-1",
                                      default_project_id=project.id)
    admin.identity.assign_project_role_to_user(project, user,
                                               admin.identity.find_role("manager"))
    manager = sdk(demo.clouds_yaml, "infracloud", auth={
        "username": name, "password": "pw-manager-1", "project_name": "zuul"})
    access = manager.session.auth.get_access(manager.session)
    assert {"manager", "member", "reader"} <= set(access.role_names)
    assert "admin" not in access.role_names
    # a member's rule lets a manager through: it may create a key pair in its project
    assert manager.compute.create_keypair(name=name).name == name
