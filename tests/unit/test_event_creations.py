"""Every create through the API names the new resource in its API event (issue 18,
Reporting): each POST and PUT route of the app (walked from its router, as the policy matrix
walks them) is either driven here and its event checked for the new resource's type, id and
name, or listed with why it creates nothing. A new creating route without a row fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from infracloud.ops import context
from infracloud.ops.creations import main_resource
from infracloud.ops.events import Query
from infracloud.store.models import Event
from tests.unit import test_policy_matrix as matrix
from tests.unit.test_policy_matrix import ROUTES, Site, _body, _name, _target, all_routes

site = matrix.site  # the matrix's site: its callers, tokens and the pool attached

# what the new resource's (id, name) are, read from the request and its answer
Expect = Callable[[dict[str, Any], Any, dict[str, str]], tuple[str, "str | None"]]


def _of(key: str, id_key: str = "id", name_key: str = "name") -> Expect:
    return lambda body, answer, params: (answer[key][id_key], answer[key][name_key])


# (method, route) -> (the event's resource type, its (id, name), a body if not the matrix's)
CREATES: dict[tuple[str, str], tuple[str, Expect, Any]] = {
    ("POST", "/identity/v3/projects"): ("project", _of("project"), None),
    ("POST", "/identity/v3/users"): ("user", _of("user"), None),
    ("POST", "/identity/v3/roles"): ("role", _of("role"), None),
    ("PUT", "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"): (
        "role-assignment", lambda body, answer, params: (params["user_id"], None), None),
    ("POST", "/identity/v3/users/{user_id}/application_credentials"): (
        "application-credential", _of("application_credential"), None),
    ("POST", "/image/v2/images"): (
        "image", lambda body, answer, params: (answer["id"], answer["name"]), None),
    ("POST", "/image/v2/images/{image_id}/members"): (
        "image-member", lambda body, answer, params: (answer["member_id"], None), None),
    ("POST", "/compute/v2.1/flavors"): ("flavor", _of("flavor"), None),
    ("POST", "/compute/v2.1/flavors/{flavor_id}/action"): (
        "flavor-access", lambda body, answer, params: (
            body["addTenantAccess"]["tenant"], None), None),
    ("POST", "/compute/v2.1/os-keypairs"): ("keypair", _of("keypair", "name"), None),
    ("POST", "/compute/v2.1/servers"): (
        "server", lambda body, answer, params: (answer["server"]["id"],
                                                body["server"]["name"]), None),
    ("POST", "/compute/v2.1/os-server-groups"): ("server-group", _of("server_group"), None),
    ("POST", "/network/v2.0/ports"): (
        "port", lambda body, answer, params: (
            answer["port"]["id"], answer["port"]["fixed_ips"][0]["ip_address"]), None),
    ("POST", "/baremetal/v1/nodes"): (
        "node", lambda body, answer, params: (answer["uuid"], answer["name"]),
        lambda: {"driver": "fake", "name": _name()}),
}
# the pool's routes: named by the pool's own events (/pool/v1/events)
POOL_CREATES = {("POST", "/pool/v1/requests")}

QUIET = "not an API event: logins, the agents' channel and the dashboard's session are " \
        "recorded by what they change"
# (method, route) -> why it creates no resource of its own
NOT_CREATING: dict[tuple[str, str], str] = {
    ("POST", "/identity/v3/auth/tokens"): QUIET,
    ("POST", "/agent/v1/hosts"): QUIET,
    ("POST", "/agent/v1/join"): QUIET,
    ("POST", "/agent/v1/hosts/{host_id}/report"): QUIET,
    ("PUT", "/agent/v1/hosts/{host_id}/snapshots/{image_id}"): QUIET,
    ("POST", "/dashboard/login"): QUIET,
    ("POST", "/dashboard/logout"): QUIET,
    ("POST", "/identity/v3/users/{user_id}/password"): "changes a user's password",
    ("POST", "/image/v2/images/{image_id}/actions/{action}"): "(de)activates an image",
    ("PUT", "/image/v2/images/{image_id}/file"): "uploads an image's data",
    ("PUT", "/image/v2/images/{image_id}/stage"): "stages an image's data",
    ("POST", "/image/v2/images/{image_id}/import"): "imports the staged data",
    ("PUT", "/image/v2/images/{image_id}/tags/{tag}"): "a label on the image",
    ("PUT", "/image/v2/images/{image_id}/members/{member_id}"): "accepts or rejects a share",
    ("POST", "/compute/v2.1/servers/{server_id}/action"):
        "an action on a server (createImage's image row is seen as every image's is; the "
        "fake driver here has no disk to snapshot)",
    ("PUT", "/compute/v2.1/servers/{server_id}"): "updates a server",
    ("PUT", "/compute/v2.1/servers/{server_id}/metadata"): "a server's metadata",
    ("POST", "/compute/v2.1/servers/{server_id}/metadata"): "a server's metadata",
    ("PUT", "/compute/v2.1/servers/{server_id}/metadata/{key}"): "a server's metadata",
    ("POST", "/compute/v2.1/servers/{server_id}/os-lifetime"): "extends a server's lifetime",
    ("POST", "/compute/v2.1/servers/{server_id}/os-lifetime/exempt"): "exempts a server",
    ("PUT", "/compute/v2.1/os-lifetime-limits/{project_id}"): "a project's limit",
    ("PUT", "/compute/v2.1/os-quota-sets/{project_id}"): "a project's quotas",
    ("PUT", "/compute/v2.1/os-quota-class-sets/{class_name}"): "the default quotas",
    ("PUT", "/network/v2.0/quotas/{project_id}"): "a project's quotas",
    ("PUT", "/compute/v2.1/os-services/{action}"): "enables or disables a host",
    ("POST", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs"): "a flavor's properties",
    ("PUT", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs/{key}"): "a flavor's property",
    ("POST", "/compute/v2.1/images/{image_id}/metadata"): "an image's properties",
    ("PUT", "/compute/v2.1/images/{image_id}/metadata"): "an image's properties",
    ("PUT", "/compute/v2.1/images/{image_id}/metadata/{key}"): "an image's property",
    ("PUT", "/baremetal/v1/nodes/{ident}/states/power"): "powers a machine",
    ("PUT", "/baremetal/v1/nodes/{ident}/states/provision"): "moves a machine's state",
    ("PUT", "/baremetal/v1/nodes/{ident}/maintenance"): "a machine's maintenance flag",
    ("POST", "/pool/v1/nodes/{node_id}/release"): "releases a node",
    ("POST", "/pool/v1/nodes/{node_id}/hold"): "holds a node",
    ("POST", "/pool/v1/providers/{name}/drain"): "drains a provider",
    ("POST", "/pool/v1/providers/{name}/undrain"): "undrains a provider",
}


def _event(site: Site, request_id: str) -> Event:
    site.services.events.drain()
    rows = [e for e in site.services.events.query(Query(kind="api", limit=200,
                                                        newest_first=True))
            if e.request_id == request_id]
    assert len(rows) == 1, request_id
    return rows[0]


def test_every_route_that_may_create_has_a_row(site: Site) -> None:
    writes = {k for k in all_routes(site.client.app)  # type: ignore[arg-type]
              if k[0] in ("POST", "PUT")}
    rows = set(CREATES) | set(NOT_CREATING) | POOL_CREATES
    assert writes - rows == set(), "POST/PUT routes without a row here: do they create something?"
    assert rows - writes == set(), "rows of routes that are gone"
    assert set(CREATES) & set(NOT_CREATING) == set()


@pytest.mark.parametrize("key", sorted(CREATES), ids=lambda k: f"{k[0]} {k[1]}")
def test_a_create_names_the_new_resource(site: Site, key: tuple[str, str]) -> None:
    method, template = key
    resource_type, expect, body = CREATES[key]
    site.tokens.update(member=site.login("member", "alpha"))
    who = "admin" if ROUTES[key] == "admin" else "member"
    params = {p.split("}")[0]: "" for p in template.split("{")[1:]}
    path = template
    for param in params:
        params[param] = _target(site, param, method, template)
        path = path.replace("{" + param + "}", params[param])
    sent = body() if callable(body) else _body(site, key)
    r = site.call(who, method, path, json=sent) if sent is not None else \
        site.call(who, method, path)
    assert r.status_code < 300, (path, r.status_code, r.text)
    answer = r.json() if r.content else None
    rid, name = expect(sent, answer, params)
    event = _event(site, r.headers["x-openstack-request-id"])
    assert (event.resource_type, event.resource_id, event.resource_name) == (
        resource_type, rid, name), (path, event.detail)
    assert event.actor_id == site.ids["admin" if who == "admin" else "member"]
    assert event.detail is not None
    assert {"type": resource_type, "id": rid, "name": name} in event.detail["created"]


def test_a_multi_create_lists_each_server(site: Site) -> None:
    site.tokens.update(member=site.login("member", "alpha"))
    name = _name()
    r = site.call("member", "POST", "/compute/v2.1/servers", json={"server": {
        "name": name, "flavorRef": "ci.small", "imageRef": site.ids["public_image"],
        "min_count": 2, "max_count": 2}})
    assert r.status_code == 202, r.text
    event = _event(site, r.headers["x-openstack-request-id"])
    servers = [c for c in event.detail["created"] if c["type"] == "server"]  # type: ignore
    listed = site.made("member", "GET", "/compute/v2.1/servers",
                       params={"name": name})["servers"]
    try:
        assert len(servers) == 2 and {s["id"] for s in servers} == {s["id"] for s in listed}
        assert event.resource_type == "server" and event.resource_id in {
            s["id"] for s in servers}
        assert {s["name"] for s in servers} == {s["name"] for s in listed}
    finally:
        for s in listed:
            site.call("admin", "DELETE", f"/compute/v2.1/servers/{s['id']}")


def test_a_pool_request_is_named_by_the_pools_event(site: Site) -> None:
    site.tokens.update(member=site.login("member", "alpha"))
    r = site.call("member", "POST", "/pool/v1/requests", json={"labels": ["small"]})
    assert r.status_code == 201, r.text
    request = r.json()["request"]["id"]
    site.pool.pool.store.flush()
    events = site.made("member", "GET", "/pool/v1/events",
                       params={"limit": 1000})["events"]
    made = [e for e in events if e["request_id"] == r.headers["x-openstack-request-id"]]
    assert [(e["resource_type"], e["resource_id"], e["resource_name"], e["action"])
            for e in made] == [("pool-request", request, "small", "create")]


def test_a_refused_create_names_nothing_it_did_not_make(site: Site) -> None:
    site.tokens.update(member=site.login("member", "alpha"))
    r = site.call("member", "POST", "/compute/v2.1/os-keypairs",
                  json={"keypair": {"name": "bad name/with slash"}})
    assert r.status_code == 400, r.text
    event = _event(site, r.headers["x-openstack-request-id"])
    assert event.resource_id is None and "created" not in (event.detail or {})
    # a flavor whose name is taken: a 409, and the event names no new flavor
    body = {"flavor": {"name": _name(), "vcpus": 1, "ram": 64, "disk": 1}}
    site.made("admin", "POST", "/compute/v2.1/flavors", json=body)
    r = site.call("admin", "POST", "/compute/v2.1/flavors", json=body)
    assert r.status_code == 409, r.text
    event = _event(site, r.headers["x-openstack-request-id"])
    assert event.resource_id is None and "created" not in (event.detail or {})


def test_the_main_resource_is_the_routes_kind() -> None:
    port = context.Touched("port", "p1", "10.0.0.5", "alpha", None, created=True)
    server = context.Touched("server", "s1", "web", "alpha", "h1", created=True)
    acted = context.Touched("server", "s2", None, None, None)
    image = context.Touched("image", "i1", "snap", "alpha", None, created=True)
    assert main_resource([port, server], "/compute/v2.1/servers", 202) is server
    assert main_resource([port, server], "/network/v2.0/ports", 201) is port
    assert main_resource([acted, image], "/compute/v2.1/servers/{server_id}/action",
                         202) is acted
    # a refused request: never a resource it did not make (its transaction rolled back)
    assert main_resource([port, server], "/compute/v2.1/servers", 409) is None
    assert main_resource([acted, image], "/compute/v2.1/servers/{server_id}/action",
                         409) is acted
    assert main_resource([], "/identity/v3/projects", 201) is None
    group = context.Touched("server-group", "g", "g", None, None, created=True)
    assert main_resource([group], "/compute/v2.1/os-server-groups", 200) is group


def test_the_events_api_filters_by_user(site: Site) -> None:
    """`user` is a name or an id; empty is a 400 in the ops API's shape."""
    site.tokens.update(member=site.login("member", "alpha"))
    site.made("member", "POST", "/compute/v2.1/os-keypairs",
              json={"keypair": {"name": _name()}})
    site.services.events.drain()
    for user in ("member", site.ids["member"]):
        rows = site.made("admin", "GET", "/ops/v1/events",
                         params={"user": user, "kind": "api", "limit": 1000})["events"]
        assert rows and {e["actor_id"] for e in rows} == {site.ids["member"]}, user
    r = site.call("admin", "GET", "/ops/v1/events", params={"user": " "})
    assert r.status_code == 400 and "user" in r.text, r.text
