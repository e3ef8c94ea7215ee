"""Compute v2.1 (shared/specs/openstack-api.md §2): discovery, flavors, keypairs, servers,
limits (the admin views: api/compute_admin.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from infracloud.api import compute_actions
from infracloud.api.bodies import JSONRoute
from infracloud.api.compute_models import (
    FlavorBody,
    KeypairBody,
    MetadataBody,
    MetaItemBody,
    ServerAction,
    ServerBody,
)
from infracloud.api.compute_views import C, flavor_view, keypair_view, server_view
from infracloud.api.deps import ServicesDep, TokenDep, next_query, policy
from infracloud.api.limits import query_count
from infracloud.compute import instance_actions, server_filters
from infracloud.compute import server_checks as checks
from infracloud.compute.servers import CreateRequest
from infracloud.core.errors import BadRequest
from infracloud.site.services import Services
from infracloud.store.models import Instance

router = APIRouter(prefix="/compute", route_class=JSONRoute)
MAX_LIMIT = 1000
VERSION = {"id": "v2.1", "status": "CURRENT", "version": "2.1", "min_version": "2.1",
           "updated": "2013-07-23T11:33:21Z",
           "media-types": [{"base": "application/json",
                            "type": "application/vnd.openstack.compute+json;version=2.1"}]}
HEADERS = {"OpenStack-API-Version": "compute 2.1", "X-OpenStack-Nova-API-Version": "2.1",
           "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version"}


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**HEADERS, **(headers or {})})


@router.get("/")
@router.get("")
def versions(services: ServicesDep) -> JSONResponse:
    base = services.base_url
    return reply({"versions": [
        {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
         "updated": "2011-01-21T11:33:21Z",
         "links": [{"rel": "self", "href": f"{base}/compute/v2/"}]},
        {**VERSION, "links": [{"rel": "self", "href": f"{base}{C}/"}]}]})


@router.get("/v2.1")
@router.get("/v2.1/")
def version(services: ServicesDep) -> JSONResponse:
    return reply({"version": {**VERSION, "links": [
        {"rel": "self", "href": f"{services.base_url}{C}/"}]}})


def _limit(request: Request) -> int | None:
    raw = request.query_params.get("limit")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("limit must be an integer.") from None
    if value < 0:
        raise BadRequest("limit must be at least 0.")
    return min(value, MAX_LIMIT)


def _next_link(services: Services, request: Request, path: str, marker: str,
               limit: int) -> list[dict[str, str]]:
    query = next_query(request, marker, limit)
    return [{"rel": "next", "href": f"{services.base_url}{C}/{path}?{query}"}]


# ---- flavors ------------------------------------------------------------------------------

def _flavors(services: Services, caller: TokenDep, request: Request, detail: bool
             ) -> JSONResponse:
    q = request.query_params
    found = services.flavor_access.listing(caller.caller, q.get("is_public"))
    min_ram, min_disk = query_count(request, "minRam"), query_count(request, "minDisk")
    if min_ram is not None:
        found = [f for f in found if f.ram_mb >= min_ram]
    if min_disk is not None:
        found = [f for f in found if f.disk_gb >= min_disk]
    if q.get("marker"):
        ids = [f.id for f in found]
        if q["marker"] not in ids:
            raise BadRequest(f"marker [{q['marker']}] not found")
        found = found[ids.index(q["marker"]) + 1:]
    limit = _limit(request)
    body: dict[str, Any] = {}
    if limit is not None and len(found) > limit:
        found = found[:limit]
        body["flavors_links"] = _next_link(services, request, "flavors/detail" if detail
                                           else "flavors", found[-1].id, limit)
    body["flavors"] = [flavor_view(services.base_url, f, detail) for f in found]
    return reply(body)


@router.get("/v2.1/flavors", dependencies=[policy("compute:flavor:get")])
def list_flavors(services: ServicesDep, caller: TokenDep, request: Request) -> JSONResponse:
    return _flavors(services, caller, request, detail=False)


@router.get("/v2.1/flavors/detail", dependencies=[policy("compute:flavor:get")])
def list_flavors_detail(services: ServicesDep, caller: TokenDep, request: Request
                        ) -> JSONResponse:
    return _flavors(services, caller, request, detail=True)


@router.get("/v2.1/flavors/{flavor_id}", dependencies=[policy("compute:flavor:get")])
def show_flavor(services: ServicesDep, caller: TokenDep, flavor_id: str) -> JSONResponse:
    return reply({"flavor": flavor_view(services.base_url,
                                        services.flavors.get_visible(caller.caller, flavor_id))})


@router.post("/v2.1/flavors", dependencies=[policy("compute:flavor:create")])
async def create_flavor(services: ServicesDep, caller: TokenDep, body: FlavorBody
                        ) -> JSONResponse:
    f = body.flavor
    flavor = await run_in_threadpool(lambda: services.flavors.create(
        caller.caller, name=f.name, vcpus=f.vcpus, ram_mb=f.ram, disk_gb=f.disk,
        flavor_id=f.id, ephemeral_gb=f.ephemeral or 0, swap_mb=f.swap or 0,
        is_public=f.is_public, description=f.description))
    return reply({"flavor": flavor_view(services.base_url, flavor)})


@router.delete("/v2.1/flavors/{flavor_id}", status_code=202,
               dependencies=[policy("compute:flavor:delete")])
def delete_flavor(services: ServicesDep, caller: TokenDep, flavor_id: str) -> Response:
    services.flavors.delete(caller.caller, flavor_id)
    return Response(status_code=202, headers=HEADERS)


# ---- keypairs -----------------------------------------------------------------------------

@router.get("/v2.1/os-keypairs", dependencies=[policy("compute:keypair:get")])
def list_keypairs(services: ServicesDep, caller: TokenDep) -> JSONResponse:
    return reply({"keypairs": [{"keypair": keypair_view(k)}
                               for k in services.keypairs.list(caller.caller)]})


@router.post("/v2.1/os-keypairs", dependencies=[policy("compute:keypair:create")])
async def create_keypair(services: ServicesDep, caller: TokenDep, body: KeypairBody
                         ) -> JSONResponse:
    k = body.keypair
    pair, private = await run_in_threadpool(services.keypairs.create, caller.caller, k.name,
                                            k.public_key, k.type)
    out = {**keypair_view(pair), "user_id": pair.user_id}
    if private:
        out["private_key"] = private
    return reply({"keypair": out})


@router.get("/v2.1/os-keypairs/{name}", dependencies=[policy("compute:keypair:get")])
def show_keypair(services: ServicesDep, caller: TokenDep, name: str) -> JSONResponse:
    return reply({"keypair": keypair_view(services.keypairs.get(caller.caller, name), True)})


@router.delete("/v2.1/os-keypairs/{name}", status_code=202,
               dependencies=[policy("compute:keypair:delete")])
def delete_keypair(services: ServicesDep, caller: TokenDep, name: str) -> Response:
    services.keypairs.delete(caller.caller, name)
    return Response(status_code=202, headers=HEADERS)


# ---- servers ------------------------------------------------------------------------------

def _host_names(services: Services, rows: list[Instance]) -> dict[str, str]:
    return services.hosts.names({r.host_id for r in rows if r.host_id})


def _servers(services: Services, caller: TokenDep, request: Request, detail: bool
             ) -> JSONResponse:
    q = request.query_params
    limit = _limit(request)
    all_projects = server_filters.all_tenants(caller.caller, q, detail)
    rows, marker = services.servers.list_servers(
        caller.caller, name=q.get("name"), status=q.get("status"), limit=limit,
        marker=q.get("marker"), all_projects=all_projects, project_id=(q.get(
            "project_id") or q.get("tenant_id")) if all_projects else None,
        reservation_id=q.get("reservation_id"),
        filters=server_filters.from_query(q, admin=caller.caller.is_admin),
        locked=compute_actions.locked_filter(request, caller.caller.is_admin))
    base = services.base_url
    body: dict[str, Any] = {}
    if detail:
        names = _host_names(services, rows)
        admin = caller.caller.is_admin
        body["servers"] = [server_view(base, r, names.get(r.host_id or ""), admin)
                           for r in rows]
        if compute_actions.shows_locked(request):  # 2.9
            for view, r in zip(body["servers"], rows, strict=True):
                view["locked"] = bool(r.locked_by)
    else:
        body["servers"] = [{"id": r.id, "name": r.name,
                            "links": server_view(base, r, None, False)["links"]} for r in rows]
    if marker and limit is not None:
        body["servers_links"] = _next_link(services, request, "servers/detail" if detail
                                           else "servers", marker, limit)
    return reply(body)


@router.get("/v2.1/servers", dependencies=[policy("compute:server:get")])
def list_servers(services: ServicesDep, caller: TokenDep, request: Request) -> JSONResponse:
    return _servers(services, caller, request, detail=False)


@router.get("/v2.1/servers/detail", dependencies=[policy("compute:server:get")])
def list_servers_detail(services: ServicesDep, caller: TokenDep, request: Request
                        ) -> JSONResponse:
    return _servers(services, caller, request, detail=True)


@router.post("/v2.1/servers", dependencies=[policy("compute:server:create")])
async def create_server(services: ServicesDep, caller: TokenDep, body: ServerBody
                        ) -> JSONResponse:
    s = body.server
    if any(b.destination_type == "volume" for b in s.block_device_mapping_v2 or []):
        raise BadRequest("Booting from a volume is not supported.")
    access_ipv4, access_ipv6 = checks.check_access_ip(s.accessIPv4, 4), checks.check_access_ip(
        s.accessIPv6, 6)
    checks.check_counts(s.min_count, s.max_count if "max_count" in s.model_fields_set else None)
    checks.check_security_groups(s.security_groups)
    networks = s.networks if isinstance(s.networks, str) or s.networks is None else [
        n.model_dump(exclude_none=True) for n in s.networks]
    req = CreateRequest(
        name=s.name, flavor_ref=str(s.flavorRef), image_ref=s.image(), key_name=s.key_name,
        availability_zone=s.availability_zone, metadata=s.metadata or {},
        user_data=s.user_data, config_drive=True, networks=networks,
        count=s.max_count if "max_count" in s.model_fields_set else s.min_count,
        min_count=s.min_count, group=body.hints().get("group"),
        access_ipv4=access_ipv4, access_ipv6=access_ipv6)
    inst = (await run_in_threadpool(services.servers.create_many, caller.caller, req))[0]
    base = services.base_url
    if s.return_reservation_id:
        return reply({"reservation_id": inst.reservation_id}, 202)
    out = {"server": {"id": inst.id, "links": server_view(base, inst, None, False)["links"],
                      "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}]}}
    if s.adminPass is not None:  # only a password the caller set (none is made up)
        out["server"]["adminPass"] = s.adminPass
    return reply(out, 202, {"Location": f"{base}{C}/servers/{inst.id}"})


@router.get("/v2.1/servers/{server_id}", dependencies=[policy("compute:server:get")])
def show_server(services: ServicesDep, caller: TokenDep, server_id: str, request: Request
                ) -> JSONResponse:
    inst = services.servers.get(caller.caller, server_id)
    names = _host_names(services, [inst])
    view = server_view(services.base_url, inst, names.get(inst.host_id or ""),
                       caller.caller.is_admin)
    if compute_actions.shows_locked(request):  # 2.9
        view["locked"] = bool(inst.locked_by)
    return reply({"server": view})


@router.delete("/v2.1/servers/{server_id}", status_code=204,
               dependencies=[policy("compute:server:delete")])
def delete_server(services: ServicesDep, caller: TokenDep, server_id: str) -> Response:
    services.servers.delete(caller.caller, server_id)
    return Response(status_code=204, headers=HEADERS)


@router.post("/v2.1/servers/{server_id}/action", dependencies=[policy("compute:server:action")])
async def server_action(services: ServicesDep, caller: TokenDep, body: ServerAction,
                        server_id: str, request: Request) -> Response:
    actions = [*body.model_dump(by_alias=True, exclude_unset=True)]
    if len(actions) != 1:
        raise BadRequest("An action body holds exactly one action.")
    action = actions[0]
    instance_actions.note_action(server_id, action)
    if action == "os-getConsoleOutput":
        args = body.get_console_output
        length = args.length if args is not None and args.length != -1 else None
        out = await run_in_threadpool(services.servers.console, caller.caller, server_id,
                                      length)
        return reply({"output": out})
    return await compute_actions.perform(services, caller, request, server_id, action,
                                         (body.model_extra or {}).get(action), HEADERS)


@router.get("/v2.1/servers/{server_id}/metadata",
            dependencies=[policy("compute:server:metadata:get")])
def get_metadata(services: ServicesDep, caller: TokenDep, server_id: str) -> JSONResponse:
    return reply({"metadata": dict(services.servers.get(caller.caller, server_id).metadata_)})


@router.post("/v2.1/servers/{server_id}/metadata",
             dependencies=[policy("compute:server:metadata:set")])
@router.put("/v2.1/servers/{server_id}/metadata",
            dependencies=[policy("compute:server:metadata:set")])
async def set_metadata(services: ServicesDep, caller: TokenDep, request: Request,
                       server_id: str, body: MetadataBody) -> JSONResponse:
    meta = body.metadata
    merged = await run_in_threadpool(lambda: services.servers.set_metadata(
        caller.caller, server_id, meta, replace=request.method == "PUT"))
    return reply({"metadata": merged})


@router.put("/v2.1/servers/{server_id}/metadata/{key}",
            dependencies=[policy("compute:server:metadata:set")])
async def set_metadata_item(services: ServicesDep, caller: TokenDep, server_id: str,
                            key: str, body: MetaItemBody) -> JSONResponse:
    meta = body.meta
    if list(meta) != [key]:
        raise BadRequest("Request body and URI mismatch")
    await run_in_threadpool(lambda: services.servers.set_metadata(caller.caller, server_id,
                                                                  meta, replace=False))
    return reply({"meta": meta})


@router.delete("/v2.1/servers/{server_id}/metadata/{key}", status_code=204,
               dependencies=[policy("compute:server:metadata:set")])
def delete_metadata_item(services: ServicesDep, caller: TokenDep, server_id: str, key: str
                         ) -> Response:
    services.servers.delete_metadata(caller.caller, server_id, key)
    return Response(status_code=204, headers=HEADERS)


# ---- limits --------------------------------------------------------------------------------

@router.get("/v2.1/limits", dependencies=[policy("compute:limits")])
def limits(services: ServicesDep, caller: TokenDep, request: Request) -> JSONResponse:
    project = request.query_params.get("tenant_id") if caller.caller.is_admin else None
    project = project or caller.caller.project_id or ""
    lim, used = services.quotas.show(project)
    return reply({"limits": {"rate": [], "absolute": {
        "maxTotalInstances": lim["instances"], "maxTotalCores": lim["cores"],
        "maxTotalRAMSize": lim["ram"], "totalInstancesUsed": used.instances,
        "totalCoresUsed": used.cores, "totalRAMUsed": used.ram,
        "maxServerMeta": lim["metadata_items"], "maxImageMeta": 128,
        "maxPersonality": lim["injected_files"],
        "maxPersonalitySize": lim["injected_file_content_bytes"],
        "maxTotalKeypairs": lim["key_pairs"], "maxServerGroups": lim["server_groups"],
        "maxServerGroupMembers": lim["server_group_members"],
        "totalServerGroupsUsed": services.server_groups.count(project),
        "maxSecurityGroups": -1, "maxSecurityGroupRules": -1, "totalSecurityGroupsUsed": 0,
        "maxTotalFloatingIps": 0, "totalFloatingIpsUsed": 0}}})
