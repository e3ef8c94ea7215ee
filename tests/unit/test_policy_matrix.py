"""Every route of the controller (and the pool's, attached as in the demo) by every kind of caller:
admin, a member and a reader of project alpha, a member of project beta, and no token. The
routes are walked from the app's router, so a route added without a row here fails; each row
says the least role its rule needs (identity.policy.RULES), or why the route is open."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from infracloud.api.app import create_app
from infracloud.pool.auth import IdentityTokens
from infracloud.processes.pool_server import attach
from infracloud.site.services import Services, build_services
from tests.unit.api_env import quick_config
from tests.unit.pool_env import Harness, pool_config

OPS = "ops.public_read (on by default) governs the operations views"
DISCOVERY = "version discovery, as every OpenStack service serves it"
OWN = "its own credential (agent token, join token, media id): no user token opens it"

# (method, path) -> the least role the rule asks for: "admin", "member", "reader", "self"
# (the caller's own user: here member's), "project" (the caller's project), "any" (any token),
# "own" (a credential that is not a user token), or "open: why"
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "open: the API's description",
    ("GET", "/docs"): "open: the API's description",
    ("GET", "/docs/oauth2-redirect"): "open: part of /docs",
    ("GET", "/healthz"): "open: load balancers' health check",
    ("GET", "/readyz"): "open: load balancers' readiness check (reaches the database?)",
    ("GET", "/"): "open: names the site and its services' URLs",
    # identity
    ("GET", "/identity"): "open: " + DISCOVERY,
    ("GET", "/identity/v3"): "open: " + DISCOVERY,
    ("POST", "/identity/v3/auth/tokens"): "open: the login (a password or credential in it)",
    ("GET", "/identity/v3/auth/tokens"): "self",
    ("HEAD", "/identity/v3/auth/tokens"): "self",
    ("DELETE", "/identity/v3/auth/tokens"): "self",
    ("GET", "/identity/v3/auth/catalog"): "any",
    ("GET", "/identity/v3/auth/projects"): "any",
    ("GET", "/identity/v3/auth/domains"): "any",
    ("GET", "/identity/v3/auth/system"): "any",
    ("GET", "/identity/v3/domains"): "admin",
    ("GET", "/identity/v3/domains/{domain_id}"): "any",
    ("GET", "/identity/v3/services"): "admin",
    ("GET", "/identity/v3/services/{service_id}"): "admin",
    ("GET", "/identity/v3/endpoints/{endpoint_id}"): "admin",
    ("GET", "/identity/v3/endpoints"): "admin",
    ("GET", "/identity/v3/regions"): "any",
    ("GET", "/identity/v3/projects"): "admin",
    ("POST", "/identity/v3/projects"): "admin",
    ("GET", "/identity/v3/projects/{project_id}"): "project",
    ("PATCH", "/identity/v3/projects/{project_id}"): "admin",
    ("DELETE", "/identity/v3/projects/{project_id}"): "admin",
    ("GET", "/identity/v3/users"): "admin",
    ("POST", "/identity/v3/users"): "admin",
    ("GET", "/identity/v3/users/{user_id}"): "self",
    ("PATCH", "/identity/v3/users/{user_id}"): "admin",
    ("DELETE", "/identity/v3/users/{user_id}"): "admin",
    ("POST", "/identity/v3/users/{user_id}/password"): "self",
    ("GET", "/identity/v3/users/{user_id}/projects"): "self",
    ("GET", "/identity/v3/roles"): "admin",
    ("POST", "/identity/v3/roles"): "admin",
    ("GET", "/identity/v3/roles/{role_id}"): "admin",
    ("DELETE", "/identity/v3/roles/{role_id}"): "admin",
    ("PUT", "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"): "admin",
    ("GET", "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"): "admin",
    ("HEAD", "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"): "admin",
    ("DELETE", "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"): "admin",
    ("GET", "/identity/v3/projects/{project_id}/users/{user_id}/roles"): "admin",
    ("GET", "/identity/v3/role_assignments"): "admin",
    ("GET", "/identity/v3/users/{user_id}/application_credentials"): "self",
    ("POST", "/identity/v3/users/{user_id}/application_credentials"): "self",
    ("GET", "/identity/v3/users/{user_id}/application_credentials/{cred_id}"): "self",
    ("DELETE", "/identity/v3/users/{user_id}/application_credentials/{cred_id}"): "self",
    # image
    ("GET", "/image"): "open: " + DISCOVERY,
    ("GET", "/image/v2"): "open: " + DISCOVERY,
    ("GET", "/image/v2/schemas/image"): "open: the schema, no data",
    ("GET", "/image/v2/schemas/images"): "open: the schema, no data",
    ("POST", "/image/v2/images"): "member",
    ("GET", "/image/v2/images"): "reader",
    ("GET", "/image/v2/images/{image_id}"): "reader",
    ("PATCH", "/image/v2/images/{image_id}"): "member",
    ("DELETE", "/image/v2/images/{image_id}"): "member",
    ("POST", "/image/v2/images/{image_id}/actions/{action}"): "member",  # the owner's
    ("PUT", "/image/v2/images/{image_id}/file"): "member",
    ("GET", "/image/v2/images/{image_id}/file"): "reader",
    ("PUT", "/image/v2/images/{image_id}/tags/{tag}"): "member",
    ("DELETE", "/image/v2/images/{image_id}/tags/{tag}"): "member",
    ("GET", "/image/v2/images/{image_id}/members"): "reader",
    ("POST", "/image/v2/images/{image_id}/members"): "member",
    ("GET", "/image/v2/images/{image_id}/members/{member_id}"): "reader",
    ("PUT", "/image/v2/images/{image_id}/members/{member_id}"): "member",
    ("DELETE", "/image/v2/images/{image_id}/members/{member_id}"): "member",
    ("GET", "/image/v2/schemas/member"): "open: the schema, no data",
    ("GET", "/image/v2/schemas/members"): "open: the schema, no data",
    ("DELETE", "/image/v2/images"): "member",  # served as /v2/images/ (no id): 404
    ("GET", "/image/v2/info/import"): "any",
    ("PUT", "/image/v2/images/{image_id}/stage"): "member",
    ("POST", "/image/v2/images/{image_id}/import"): "member",
    # compute
    ("GET", "/compute"): "open: " + DISCOVERY,
    ("GET", "/compute/v2.1"): "open: " + DISCOVERY,
    ("GET", "/compute/v2.1/flavors"): "reader",
    ("GET", "/compute/v2.1/flavors/detail"): "reader",
    ("GET", "/compute/v2.1/flavors/{flavor_id}"): "reader",
    ("GET", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs"): "reader",
    ("POST", "/compute/v2.1/flavors"): "admin",
    ("DELETE", "/compute/v2.1/flavors/{flavor_id}"): "admin",
    ("GET", "/compute/v2.1/os-keypairs"): "reader",
    ("POST", "/compute/v2.1/os-keypairs"): "member",
    ("GET", "/compute/v2.1/os-keypairs/{name}"): "reader",
    ("DELETE", "/compute/v2.1/os-keypairs/{name}"): "member",
    ("GET", "/compute/v2.1/servers"): "reader",
    ("GET", "/compute/v2.1/servers/detail"): "reader",
    ("POST", "/compute/v2.1/servers"): "member",
    ("GET", "/compute/v2.1/servers/{server_id}"): "reader",
    ("DELETE", "/compute/v2.1/servers/{server_id}"): "member",
    ("POST", "/compute/v2.1/servers/{server_id}/action"): "member",
    ("GET", "/compute/v2.1/servers/{server_id}/metadata"): "reader",
    ("PUT", "/compute/v2.1/servers/{server_id}/metadata"): "member",
    ("POST", "/compute/v2.1/servers/{server_id}/metadata"): "member",
    ("PUT", "/compute/v2.1/servers/{server_id}/metadata/{key}"): "member",
    ("DELETE", "/compute/v2.1/servers/{server_id}/metadata/{key}"): "member",
    ("GET", "/compute/v2.1/limits"): "reader",
    ("GET", "/compute/v2.1/os-availability-zone"): "reader",
    ("GET", "/compute/v2.1/os-quota-sets/{project_id}"): "reader",
    ("GET", "/compute/v2.1/os-quota-sets/{project_id}/detail"): "reader",
    ("GET", "/compute/v2.1/os-quota-sets/{project_id}/defaults"): "reader",
    ("PUT", "/compute/v2.1/os-quota-sets/{project_id}"): "admin",
    ("GET", "/compute/v2.1/os-hypervisors"): "admin",
    ("GET", "/compute/v2.1/os-hypervisors/detail"): "admin",
    ("GET", "/compute/v2.1/os-services"): "admin",
    ("PUT", "/compute/v2.1/os-services/{action}"): "admin",
    # compute admin views (issue 17)
    ("GET", "/compute/v2.1/os-hypervisors/statistics"): "admin",
    ("GET", "/compute/v2.1/os-hypervisors/{hypervisor_id}"): "admin",
    ("GET", "/compute/v2.1/os-hypervisors/{hypervisor_id}/uptime"): "admin",
    ("GET", "/compute/v2.1/os-hypervisors/{hostname_pattern}/search"): "admin",
    ("GET", "/compute/v2.1/os-hypervisors/{hostname_pattern}/servers"): "admin",
    ("GET", "/compute/v2.1/os-availability-zone/detail"): "admin",
    ("GET", "/compute/v2.1/os-aggregates"): "admin",
    ("DELETE", "/compute/v2.1/os-quota-sets/{project_id}"): "admin",
    ("GET", "/compute/v2.1/os-quota-class-sets/{class_name}"): "admin",
    ("PUT", "/compute/v2.1/os-quota-class-sets/{class_name}"): "admin",
    ("GET", "/compute/v2.1/os-simple-tenant-usage"): "admin",
    ("GET", "/compute/v2.1/os-simple-tenant-usage/{project_id}"): "reader",
    ("GET", "/compute/v2.1/extensions"): "any",
    ("GET", "/compute/v2.1/extensions/{alias}"): "any",
    # compute: server groups, flavor access lists, flavor extra specs
    ("GET", "/compute/v2.1/os-server-groups"): "reader",
    ("POST", "/compute/v2.1/os-server-groups"): "member",
    ("GET", "/compute/v2.1/os-server-groups/{group_id}"): "reader",
    ("DELETE", "/compute/v2.1/os-server-groups/{group_id}"): "member",
    ("GET", "/compute/v2.1/flavors/{flavor_id}/os-flavor-access"): "admin",
    ("POST", "/compute/v2.1/flavors/{flavor_id}/action"): "admin",
    ("POST", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs"): "admin",
    ("GET", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs/{key}"): "reader",
    ("PUT", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs/{key}"): "admin",
    ("DELETE", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs/{key}"): "admin",
    # servers' update and smaller reads, nova's image proxy, the v2.0 version document
    ("GET", "/compute/v2"): "open: " + DISCOVERY,
    ("PUT", "/compute/v2.1/servers/{server_id}"): "member",
    ("GET", "/compute/v2.1/servers/{server_id}/ips"): "reader",
    ("GET", "/compute/v2.1/servers/{server_id}/ips/{network_label}"): "reader",
    ("GET", "/compute/v2.1/servers/{server_id}/metadata/{key}"): "reader",
    ("GET", "/compute/v2.1/servers/{server_id}/os-server-password"): "reader",
    ("DELETE", "/compute/v2.1/servers/{server_id}/os-server-password"): "member",
    ("GET", "/compute/v2.1/servers/{server_id}/os-lifetime"): "reader",
    ("POST", "/compute/v2.1/servers/{server_id}/os-lifetime"): "member",
    ("POST", "/compute/v2.1/servers/{server_id}/os-lifetime/exempt"): "admin",
    ("GET", "/compute/v2.1/os-lifetime-limits/{project_id}"): "reader",
    ("PUT", "/compute/v2.1/os-lifetime-limits/{project_id}"): "admin",
    ("GET", "/compute/v2.1/servers/{server_id}/os-instance-actions"): "reader",
    ("GET", "/compute/v2.1/servers/{server_id}/os-instance-actions/{request_id}"): "reader",
    ("GET", "/compute/v2.1/images"): "reader",
    ("GET", "/compute/v2.1/images/detail"): "reader",
    ("GET", "/compute/v2.1/images/{image_id}"): "reader",
    ("DELETE", "/compute/v2.1/images/{image_id}"): "member",
    ("GET", "/compute/v2.1/images/{image_id}/metadata"): "reader",
    ("POST", "/compute/v2.1/images/{image_id}/metadata"): "member",
    ("PUT", "/compute/v2.1/images/{image_id}/metadata"): "member",
    ("GET", "/compute/v2.1/images/{image_id}/metadata/{key}"): "reader",
    ("PUT", "/compute/v2.1/images/{image_id}/metadata/{key}"): "member",
    ("DELETE", "/compute/v2.1/images/{image_id}/metadata/{key}"): "member",
    # network
    ("GET", "/network"): "open: " + DISCOVERY,
    ("GET", "/network/v2.0"): "open: " + DISCOVERY,
    ("GET", "/network/v2.0/networks"): "reader",
    ("GET", "/network/v2.0/networks/{network_id}"): "reader",
    ("GET", "/network/v2.0/subnets"): "reader",
    ("GET", "/network/v2.0/subnets/{subnet_id}"): "reader",
    ("GET", "/network/v2.0/ports"): "reader",
    ("POST", "/network/v2.0/ports"): "member",
    ("GET", "/network/v2.0/ports/{port_id}"): "reader",
    ("DELETE", "/network/v2.0/ports/{port_id}"): "member",
    ("GET", "/network/v2.0/floatingips"): "reader",
    ("GET", "/network/v2.0/floatingips/{fip_id}"): "reader",
    ("GET", "/network/v2.0/routers"): "reader",
    ("GET", "/network/v2.0/security-groups"): "reader",
    ("GET", "/network/v2.0/quotas/{project_id}"): "reader",
    ("GET", "/network/v2.0/quotas/{project_id}/details"): "reader",
    ("PUT", "/network/v2.0/quotas/{project_id}"): "admin",
    # block storage
    ("GET", "/volume"): "open: " + DISCOVERY,
    ("GET", "/volume/v3"): "open: " + DISCOVERY,
    ("GET", "/volume/v3/{project_id}/limits"): "reader",
    ("GET", "/volume/v3/{project_id}/volumes"): "reader",
    ("GET", "/volume/v3/{project_id}/volumes/detail"): "reader",
    ("GET", "/volume/v3/{project_id}/volumes/{volume_id}"): "reader",
    ("GET", "/volume/v3/{project_id}/os-quota-sets/{target}"): "reader",
    # compute hosts' agents
    ("POST", "/agent/v1/hosts"): "own",
    ("POST", "/agent/v1/join"): "own",
    ("GET", "/agent/v1/hosts/{host_id}/desired"): "own",
    ("POST", "/agent/v1/hosts/{host_id}/report"): "own",
    ("GET", "/agent/v1/hosts/{host_id}/images/{image_id}"): "own",
    ("GET", "/agent/v1/hosts/{host_id}/images/{image_id}/file"): "own",
    ("PUT", "/agent/v1/hosts/{host_id}/snapshots/{image_id}"): "own",
    # bare metal and hardware
    ("GET", "/baremetal"): "open: " + DISCOVERY,
    ("GET", "/baremetal/v1"): "open: " + DISCOVERY,
    ("GET", "/baremetal/v1/drivers"): "admin",
    ("GET", "/baremetal/v1/nodes"): "admin",
    ("GET", "/baremetal/v1/nodes/detail"): "admin",
    ("POST", "/baremetal/v1/nodes"): "admin",
    ("GET", "/baremetal/v1/nodes/{ident}"): "admin",
    ("PATCH", "/baremetal/v1/nodes/{ident}"): "admin",
    ("DELETE", "/baremetal/v1/nodes/{ident}"): "admin",
    ("GET", "/baremetal/v1/nodes/{ident}/states"): "admin",
    ("PUT", "/baremetal/v1/nodes/{ident}/states/power"): "admin",
    ("PUT", "/baremetal/v1/nodes/{ident}/states/provision"): "admin",
    ("PUT", "/baremetal/v1/nodes/{ident}/maintenance"): "admin",
    ("DELETE", "/baremetal/v1/nodes/{ident}/maintenance"): "admin",
    ("GET", "/baremetal/v1/nodes/{ident}/validate"): "admin",
    ("GET", "/hardware/v1/media/{media_file}"): "own",
    ("GET", "/hardware/v1/capacity"): "admin",
    # operations views
    ("GET", "/ops/v1/events"): "open: " + OPS,
    ("GET", "/ops/v1/usage"): "open: " + OPS,
    ("GET", "/ops/v1/alerts"): "open: " + OPS,
    ("GET", "/ops/v1/status"): "open: " + OPS,
    ("GET", "/metrics"): "open: " + OPS,
    ("GET", "/dashboard"): "open: " + OPS,
    ("GET", "/dashboard/instances"): "open: " + OPS,
    ("GET", "/dashboard/pool"): "open: " + OPS,
    ("GET", "/dashboard/events"): "open: " + OPS,
    ("GET", "/dashboard/alerts"): "open: " + OPS,
    ("GET", "/dashboard/login"): "open: the dashboard's sign-in form",
    ("POST", "/dashboard/login"): "open: the dashboard's sign-in",
    ("POST", "/dashboard/logout"): "open: signs out the browser that asks",
    ("GET", "/dashboard/static/{name}"): "open: the dashboard's style sheet and script",
    # the node pool
    ("GET", "/pool/v1"): "open: the pool's name and labels, as discovery",
    ("POST", "/pool/v1/requests"): "member",
    ("GET", "/pool/v1/requests"): "reader",
    ("GET", "/pool/v1/requests/{request_id}"): "reader",
    ("DELETE", "/pool/v1/requests/{request_id}"): "member",
    ("GET", "/pool/v1/nodes"): "reader",
    ("GET", "/pool/v1/nodes/{node_id}"): "reader",
    ("POST", "/pool/v1/nodes/{node_id}/release"): "member",
    ("POST", "/pool/v1/nodes/{node_id}/hold"): "member",
    ("GET", "/pool/v1/labels"): "reader",
    ("GET", "/pool/v1/providers"): "reader",
    ("POST", "/pool/v1/providers/{name}/drain"): "admin",
    ("POST", "/pool/v1/providers/{name}/undrain"): "admin",
    ("GET", "/pool/v1/status"): "reader",
    ("GET", "/pool/v1/alerts"): "open: the pool's alerts, like /metrics: counts, no project data",
    ("GET", "/pool/v1/events"): "reader",
    ("GET", "/node-list"): "reader",  # open only with the pool's public-lists
    ("GET", "/request-list"): "reader",
    ("GET", "/label-list"): "open: the label names, as nodepool's web app serves them",
    ("GET", "/image-list"): "open: the pool's image uploads, as nodepool's web app serves them",
}

# request bodies good enough that an allowed caller passes validation and a caller of another
# project meets the ownership check, not a 400
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/identity/v3/projects"): lambda: {"project": {"name": _name()}},
    ("PATCH", "/identity/v3/projects/{project_id}"): {"project": {"description": "x"}},
    ("POST", "/identity/v3/users"): lambda: {"user": {"name": _name()}},
    ("PATCH", "/identity/v3/users/{user_id}"): {"user": {"description": "x"}},
    ("POST", "/identity/v3/users/{user_id}/password"): {
        "user": {"original_password": "pw", "password": "pw"}},
    ("POST", "/identity/v3/roles"): lambda: {"role": {"name": _name()}},
    ("POST", "/identity/v3/users/{user_id}/application_credentials"): lambda: {
        "application_credential": {"name": _name()}},
    ("POST", "/image/v2/images"): {"name": "i", "disk_format": "raw",
                                   "container_format": "bare"},
    ("PATCH", "/image/v2/images/{image_id}"): [],
    ("POST", "/image/v2/images/{image_id}/members"): "MEMBER",
    ("PUT", "/image/v2/images/{image_id}/members/{member_id}"): {"status": "accepted"},
    ("POST", "/image/v2/images/{image_id}/import"): {"method": {"name": "glance-direct"}},
    ("POST", "/compute/v2.1/flavors"): lambda: {"flavor": {"name": _name(), "vcpus": 1,
                                                           "ram": 64, "disk": 1}},
    ("POST", "/compute/v2.1/os-keypairs"): lambda: {"keypair": {"name": _name()}},
    ("POST", "/compute/v2.1/servers"): "SERVER",
    ("POST", "/compute/v2.1/servers/{server_id}/action"): {"os-getConsoleOutput": {}},
    ("PUT", "/compute/v2.1/servers/{server_id}/metadata"): {"metadata": {"a": "b"}},
    ("POST", "/compute/v2.1/servers/{server_id}/metadata"): {"metadata": {"a": "b"}},
    ("PUT", "/compute/v2.1/servers/{server_id}/metadata/{key}"): {"meta": {"k": "v"}},
    ("PUT", "/compute/v2.1/os-quota-sets/{project_id}"): {"quota_set": {"instances": 500}},
    ("PUT", "/network/v2.0/quotas/{project_id}"): {"quota": {"port": 60}},
    ("PUT", "/compute/v2.1/os-services/{action}"): {"host": "nowhere", "binary": "nova-compute"},
    ("PUT", "/compute/v2.1/os-quota-class-sets/{class_name}"): {
        "quota_class_set": {"metadata_items": 128}},
    ("POST", "/compute/v2.1/os-server-groups"): lambda: {"server_group": {
        "name": _name(), "policies": ["anti-affinity"]}},
    ("POST", "/compute/v2.1/flavors/{flavor_id}/action"): "TENANT",
    ("POST", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs"): {"extra_specs": {"k": "v"}},
    ("PUT", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs/{key}"): {"k": "v"},
    ("PUT", "/compute/v2.1/servers/{server_id}"): {"server": {"name": "renamed"}},
    ("POST", "/compute/v2.1/servers/{server_id}/os-lifetime"): {"extend": {"seconds": 60}},
    ("PUT", "/compute/v2.1/os-lifetime-limits/{project_id}"): {
        "lifetime_limit": {"max_lifetime": None}},
    ("POST", "/compute/v2.1/images/{image_id}/metadata"): {"metadata": {"a": "b"}},
    ("PUT", "/compute/v2.1/images/{image_id}/metadata"): {"metadata": {"a": "b"}},
    ("PUT", "/compute/v2.1/images/{image_id}/metadata/{key}"): {"meta": {"k": "v"}},
    ("POST", "/network/v2.0/ports"): "PORT",
    ("POST", "/pool/v1/requests"): {"labels": ["small"]},
    ("POST", "/pool/v1/nodes/{node_id}/hold"): {"reason": "look at it"},
    ("POST", "/pool/v1/providers/{name}/drain"): {"reason": "test"},
}
HEADERS = {("PATCH", "/image/v2/images/{image_id}"): {
    "Content-Type": "application/openstack-images-v2.1-json-patch"},
    ("PUT", "/image/v2/images/{image_id}/file"): {"Content-Type": "application/octet-stream"},
    ("PUT", "/image/v2/images/{image_id}/stage"): {"Content-Type": "application/octet-stream"}}
STARLETTE_GETS = ("/openapi.json", "/docs", "/docs/oauth2-redirect")
# routes served only with their trailing slash (an empty id)
SLASHED = {("DELETE", "/image/v2/images")}
# where the rule's target is not alpha's: accepting an image shared with beta is beta's call
EXCEPT = {("PUT", "/image/v2/images/{image_id}/members/{member_id}"): {
    "member": "403", "reader": "403", "other": "allow"},
    ("GET", "/image/v2/images/{image_id}/members/{member_id}"): {"other": "allow"}}
CALLERS = ("none", "other", "reader", "member", "admin")  # the denied ones ask first


def _name() -> str:
    return f"n{uuid.uuid4().hex[:10]}"


@dataclass
class Site:
    services: Services
    client: TestClient
    pool: Harness
    ids: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def login(self, user: str, project: str) -> str:
        r = self.client.post("/identity/v3/auth/tokens", json={"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": "pw"}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
        assert r.status_code == 201, r.text
        return str(r.headers["X-Subject-Token"])

    def call(self, who: str, method: str, path: str, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if who != "none":
            headers["X-Auth-Token"] = self.tokens[who]
        return self.client.request(method, path, headers=headers, **kw)

    def made(self, who: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self.call(who, method, path, **kw)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return dict(r.json())


def all_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, from its router (as the OpenAPI document
    is made); a path's trailing-slash twin counts as the route itself, and so does the HEAD
    that Starlette adds to its own GET routes (the documentation's)."""
    out = set()
    for route in iter_route_contexts(app.routes):
        path = str(route.path).rstrip("/") or "/"
        for method in route.methods or ():
            if not (method == "HEAD" and path in STARLETTE_GETS):
                out.add((method, path))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp: Path = tmp_path_factory.mktemp("matrix")
    # this test logs in hundreds of times from one client: no login limit
    config = quick_config(tmp, login_limit={"per_address": {"per_minute": 0, "burst": 1}})
    services = build_services(config)
    identity = services.identity
    ids = {"admin": identity.ensure_account("boss", "pw", "admin", "admin").user_id}
    for user, project, role in (("member", "alpha", "member"), ("reader", "alpha", "reader"),
                                ("other", "beta", "member")):
        account = identity.ensure_account(user, "pw", project, role)
        ids[user], ids[project] = account.user_id, account.project_id
    app = create_app(services)
    client = TestClient(app)
    auth = IdentityTokens("http://testserver/identity")
    auth.http = client  # the pool validates tokens at this controller, as in the demo
    harness = Harness(services.db, pool_config())
    attach(app, harness.pool, auth)
    s = Site(services, client, harness, ids)
    s.tokens = {"admin": s.login("boss", "admin"), "member": s.login("member", "alpha"),
                "reader": s.login("reader", "alpha"), "other": s.login("other", "beta")}
    ids["network"] = s.made("admin", "GET", "/network/v2.0/networks")["networks"][0]["id"]
    ids["subnet"] = s.made("admin", "GET", "/network/v2.0/subnets")["subnets"][0]["id"]
    image = s.made("admin", "POST", "/image/v2/images", json={
        "name": "demo", "disk_format": "raw", "container_format": "bare",
        "visibility": "public"})
    ids["public_image"] = image["id"]
    r = s.call("admin", "PUT", f"/image/v2/images/{image['id']}/file", content=b"disk",
               headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    try:
        yield s
    finally:
        client.close()
        services.close()


def _target(site: Site, param: str, method: str, path: str) -> str:
    """A value for a path parameter: alpha's (the member's) things, fresh where a call could
    use them up."""
    ids = site.ids
    directory = site.services.identity.directory
    if method == "DELETE" and path == "/identity/v3/users/{user_id}":
        return directory.create_user(_name()).id
    if method == "DELETE" and path == "/identity/v3/projects/{project_id}":
        return directory.create_project(_name()).id
    fixed = {"project_id": ids["alpha"], "target": ids["alpha"], "domain_id": "default",
             "service_id": "x", "endpoint_id": "x", "tag": "t", "key": "k",
             "network_id": ids["network"], "subnet_id": ids["subnet"], "fip_id": "x",
             "volume_id": "x", "ident": "x", "media_file": "x.iso", "host_id": "x",
             "member_id": ids["beta"], "hypervisor_id": "1", "hostname_pattern": "x",
             "class_name": "default", "alias": "os-hypervisors"}
    fixed.update(network_label="provider")
    if param in fixed:
        return fixed[param]
    if param == "name":
        if path.startswith("/pool/"):
            return "a"
        if path.startswith("/dashboard/"):
            return "x"
        return str(site.made("member", "POST", "/compute/v2.1/os-keypairs",
                             json={"keypair": {"name": _name()}})["keypair"]["name"])
    if param == "action":
        return "deactivate" if path.startswith("/image/") else "disable"
    if param == "user_id":
        return ids["member"]
    maker: dict[str, Callable[[], str]] = {
        "role_id": lambda: directory.create_role(_name()).id,
        "cred_id": lambda: str(site.made(
            "member", "POST", f"/identity/v3/users/{ids['member']}/application_credentials",
            json={"application_credential": {"name": _name()}})["application_credential"]
            ["id"]),
        "image_id": lambda: _image(site, shared="{member_id}" in path,
                                   active="/actions/" in path),
        "flavor_id": lambda: str(site.made("admin", "POST", "/compute/v2.1/flavors", json={
            "flavor": {"name": _name(), "vcpus": 1, "ram": 64, "disk": 1}})["flavor"]["id"]),
        "server_id": lambda: _server(site),
        "group_id": lambda: str(site.made("member", "POST", "/compute/v2.1/os-server-groups",
                                          json={"server_group": {
                                              "name": _name(), "policies": ["affinity"]}})
                                ["server_group"]["id"]),
        "port_id": lambda: str(site.made("member", "POST", "/network/v2.0/ports", json={
            "port": {"network_id": ids["network"]}})["port"]["id"]),
        "request_id": lambda: str(site.made("member", "POST", "/pool/v1/requests", json={
            "labels": ["small"]})["request"]["id"]),
        "node_id": lambda: _node(site),
    }
    return maker[param]()


def _image(site: Site, shared: bool, active: bool = False) -> str:
    image = str(site.made("member", "POST", "/image/v2/images", json={
        "name": "i", "disk_format": "raw", "container_format": "bare"})["id"])
    if active:  # deactivating a queued image is refused whoever asks (as Glance does)
        r = site.call("member", "PUT", f"/image/v2/images/{image}/file", content=b"disk",
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
    if shared:
        site.made("member", "POST", f"/image/v2/images/{image}/members",
                  json={"member": site.ids["beta"]})
    return image


def _server(site: Site) -> str:
    body = {"server": {"name": "s", "flavorRef": "ci.small",
                       "imageRef": site.ids["public_image"]}}
    return str(site.made("member", "POST", "/compute/v2.1/servers", json=body)["server"]["id"])


def _node(site: Site) -> str:
    request_id = site.made("member", "POST", "/pool/v1/requests",
                           json={"labels": ["small"]})["request"]["id"]
    site.pool.until(lambda: site.pool.state(request_id) == "fulfilled", what="a node")
    return str(site.pool.pool.get_request(request_id)["node_ids"][0])


def _body(site: Site, key: tuple[str, str]) -> Any:
    body = BODIES.get(key)
    if callable(body):
        return body()
    if body == "MEMBER":
        return {"member": site.ids["beta"]}
    if body == "SERVER":
        return {"server": {"name": "s", "flavorRef": "ci.small",
                           "imageRef": site.ids["public_image"]}}
    if body == "TENANT":
        return {"addTenantAccess": {"tenant": site.ids["beta"]}}
    if body == "PORT":
        return {"port": {"network_id": site.ids["network"]}}
    return body


def expected(rule: str, who: str, path: str) -> str:
    """"allow", "401", "403", or "hidden" (403 or 404: another project's thing)."""
    if rule.startswith("open"):
        return "allow"
    if rule == "own":
        return "refused"
    if who == "none":
        return "401"
    if who == "admin" or rule == "any":
        return "allow"
    if rule == "admin":
        return "403"
    if rule == "self":
        return "allow" if who == "member" else "403"
    if rule == "project":
        return "403" if who == "other" else "allow"
    if who == "reader" and rule == "member":
        return "403"
    if who == "other" and "{project_id}" in path:
        return "403"  # another project's URL, as Nova, Cinder and Neutron answer
    if who == "other" and "{" in path and not _shared(path):
        return "hidden"
    return "allow"


def _shared(path: str) -> bool:
    """Paths whose parameters name no project's thing (flavors, the network, labels...)."""
    return any(p in path for p in ("{flavor_id}", "{network_id}", "{subnet_id}", "{fip_id}",
                                   "{name}")) and "os-keypairs" not in path


def test_every_route_has_a_row(site: Site) -> None:
    served = all_routes(site.client.app)  # type: ignore[arg-type]
    assert served - set(ROUTES) == set(), "routes without a row (and a policy rule)"
    assert set(ROUTES) - served == set(), "rows of routes that are gone"


@pytest.mark.parametrize("key", sorted(ROUTES), ids=lambda k: f"{k[0]} {k[1]}")
def test_route_by_role(site: Site, key: tuple[str, str]) -> None:
    method, template = key
    rule = ROUTES[key]
    site.tokens.update(member=site.login("member", "alpha"))  # a route may revoke it
    path = template
    for param in [p.split("}")[0] for p in template.split("{")[1:]]:
        path = path.replace("{" + param + "}", _target(site, param, method, template))
    if key in SLASHED:
        path += "/"
    subject = site.login("member", "alpha") if "/auth/tokens" in template else None
    for who in CALLERS:
        headers = dict(HEADERS.get(key, {}))
        if subject:
            headers["X-Subject-Token"] = subject
        body = _body(site, key)
        kw: dict[str, Any] = {"headers": headers}
        if isinstance(body, (dict, list)):
            kw["json"] = body
        elif method in ("PUT", "POST", "PATCH"):
            kw["content"] = b""
        r = site.call(who, method, path, **kw)
        want = EXCEPT.get(key, {}).get(who) or expected(rule, who, template)
        got = r.status_code
        why = f"{who} {method} {path}: {got} {r.text[:300]}"
        if want == "allow":
            assert got not in (401, 403) and got < 500, why
        elif want == "hidden":
            assert got in (403, 404), why
        elif want == "refused":  # whatever the body, a user's token opens nothing here
            assert 400 <= got < 500, why
        else:
            assert got == int(want), why


def test_pool_data_stays_in_its_project(site: Site) -> None:
    """beta's member sees none of alpha's pool requests, nodes and events; admin sees all."""
    node = _node(site)
    request = site.pool.pool.get_node(node)["request_id"]
    site.pool.pool.store.flush()  # the events are written
    for who, sees in (("other", False), ("reader", True), ("admin", True)):
        requests = site.made(who, "GET", "/pool/v1/requests")["requests"]
        nodes = site.made(who, "GET", "/pool/v1/nodes")["nodes"]
        events = site.made(who, "GET", "/pool/v1/events", params={"limit": 1000})["events"]
        listed = [r["id"] for r in site.call(who, "GET", "/request-list").json()]
        node_list = [n["id"] for n in site.call(who, "GET", "/node-list").json()]
        assert (request in [r["id"] for r in requests]) is sees, who
        assert (node in [n["id"] for n in nodes]) is sees, who
        assert (node in {e["resource_id"] for e in events}) is sees, who
        assert (request in listed) is sees and (node in node_list) is sees, who
        if not sees:
            assert {r["requestor"] for r in requests} <= {"beta"}
            assert {e["detail"]["requestor"] for e in events} <= {"beta"}
    assert site.call("other", "GET", f"/pool/v1/nodes/{node}").status_code == 404
    assert site.call("other", "GET", f"/pool/v1/requests/{request}").status_code == 404
    assert site.call("none", "GET", "/node-list").status_code == 401


def test_a_pool_may_open_its_status_lists(site: Site) -> None:
    node = _node(site)
    site.pool.pool.config = site.pool.pool.config.model_copy(update={"public_lists": True})
    try:
        assert node in [n["id"] for n in site.call("none", "GET", "/node-list").json()]
    finally:
        site.pool.pool.config = site.pool.pool.config.model_copy(update={"public_lists": False})


def test_a_port_names_only_its_own_projects_server(site: Site) -> None:
    server = _server(site)
    port = {"port": {"network_id": site.ids["network"], "device_id": server}}
    r = site.call("other", "POST", "/network/v2.0/ports", json=port)
    assert r.status_code == 403, r.text
    assert site.call("member", "POST", "/network/v2.0/ports", json=port).status_code == 201
    assert site.call("admin", "POST", "/network/v2.0/ports", json=port).status_code == 201
    # a device id that is no server stays the caller's business, as in Neutron
    loose = {"port": {"network_id": site.ids["network"], "device_id": "not-a-server"}}
    assert site.call("other", "POST", "/network/v2.0/ports", json=loose).status_code == 201


# ---- server actions: one route, a rule each (api/compute_actions.py) -------------------------

# action -> (the least role its rule asks for, its body's value)
ACTIONS: dict[str, tuple[str, Any]] = {
    "os-stop": ("member", None),
    "os-start": ("member", None),
    "reboot": ("member", {"type": "HARD"}),
    "rebuild": ("member", "IMAGE"),
    "lock": ("member", None),
    "unlock": ("member", None),
    "createImage": ("member", {"name": "snap"}),
    "os-resetState": ("admin", {"state": "active"}),
}


def test_every_server_action_has_a_rule() -> None:
    from infracloud.api.compute_actions import RULE
    from infracloud.identity.policy import RULES
    assert set(ACTIONS) == set(RULE)
    for action, (least, _) in ACTIONS.items():
        assert RULES[f"compute:server:action:{RULE[action]}"] == least, action


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_server_action_by_role(site: Site, action: str) -> None:
    rule, value = ACTIONS[action]
    path = "/compute/v2.1/servers/{server_id}/action"
    server = _server(site)
    if value == "IMAGE":
        value = {"imageRef": site.ids["public_image"]}
    try:
        for who in CALLERS:
            r = site.call(who, "POST", path.replace("{server_id}", server),
                          json={action: value})
            # another project's server is a 404 before any rule, as in Nova
            want = "hidden" if who == "other" else expected(rule, who, path)
            why = f"{who} {action}: {r.status_code} {r.text[:300]}"
            if want == "allow":
                assert r.status_code not in (401, 403) and r.status_code < 500, why
            elif want == "hidden":
                assert r.status_code in (403, 404), why
            else:
                assert r.status_code == int(want), why
    finally:  # the project's quota is small (and an administrator passes a lock)
        site.call("admin", "DELETE", f"/compute/v2.1/servers/{server}")
