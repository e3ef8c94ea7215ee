"""Network v2.0 subset (shared/specs/openstack-api.md §4): the provider network, its subnet,
ports, and empty floating IPs and routers (there are none: seed 001)."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.api.network_models import PortBody, QuotaBody
from infracloud.core.clock import isoformat
from infracloud.core.errors import NotFound
from infracloud.site.services import Services
from infracloud.store.models import Network, Port, Subnet

router = APIRouter(prefix="/network", route_class=JSONRoute)


def network_view(n: Network, subnet_ids: list[str]) -> dict[str, Any]:
    return {"id": n.id, "name": n.name, "status": "ACTIVE", "subnets": subnet_ids,
            "admin_state_up": True, "shared": True, "router:external": False,
            "provider:network_type": "flat", "provider:physical_network": n.physical_network,
            "provider:segmentation_id": None, "mtu": n.mtu, "port_security_enabled": False,
            "tenant_id": n.project_id or "", "project_id": n.project_id or "", "tags": [],
            "availability_zones": ["nova"], "ipv4_address_scope": None,
            "created_at": isoformat(n.created_at), "updated_at": isoformat(n.created_at),
            "description": "", "is_default": True, "revision_number": 1}


def subnet_view(s: Subnet) -> dict[str, Any]:
    ip = ipaddress.ip_address
    return {"id": s.id, "name": s.name, "network_id": s.network_id, "cidr": s.cidr,
            "gateway_ip": s.gateway_ip, "ip_version": 4, "enable_dhcp": False,
            "allocation_pools": [{"start": str(ip(s.pool_start)), "end": str(ip(s.pool_end))}],
            "dns_nameservers": list(s.dns or []), "host_routes": [], "tenant_id": "",
            "project_id": "", "tags": [], "ipv6_address_mode": None, "ipv6_ra_mode": None,
            "subnetpool_id": None, "description": "", "created_at": isoformat(s.created_at),
            "updated_at": isoformat(s.created_at), "revision_number": 1}


def port_view(p: Port) -> dict[str, Any]:
    return {"id": p.id, "name": "", "network_id": p.network_id, "device_id": p.device_id,
            "device_owner": p.device_owner, "status": p.status, "mac_address": p.mac_address,
            "fixed_ips": [{"subnet_id": p.subnet_id, "ip_address": p.ip_address}],
            "admin_state_up": True, "tenant_id": p.project_id or "",
            "project_id": p.project_id or "", "security_groups": [], "tags": [],
            "binding:vnic_type": "normal", "allowed_address_pairs": [], "description": "",
            "created_at": isoformat(p.created_at), "updated_at": isoformat(p.created_at),
            "revision_number": 1}


def _networks(services: Services, request: Request) -> list[dict[str, Any]]:
    q = request.query_params
    subnets = services.network.subnets()
    out = []
    for n in services.network.networks():
        view = network_view(n, [s.id for s in subnets if s.network_id == n.id])
        if q.get("name") not in (None, n.name) or q.get("id") not in (None, n.id):
            continue
        if q.get("router:external") in ("True", "true", "1"):
            continue
        out.append(view)
    return out


@router.get("/")
@router.get("")
def versions(services: ServicesDep) -> dict[str, Any]:
    return {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
        {"rel": "self", "href": f"{services.base_url}/network/v2.0/"}]}]}


@router.get("/v2.0")
@router.get("/v2.0/")
def resources(services: ServicesDep) -> dict[str, Any]:
    base = f"{services.base_url}/network/v2.0"
    return {"resources": [{"name": n, "collection": f"{n}s", "links": [
        {"rel": "self", "href": f"{base}/{n}s"}]} for n in ("network", "subnet", "port")]}


@router.get("/v2.0/networks", dependencies=[policy("network:get")])
def list_networks(services: ServicesDep, caller: TokenDep, request: Request) -> dict[str, Any]:
    return {"networks": _networks(services, request)}


@router.get("/v2.0/networks/{network_id}", dependencies=[policy("network:get")])
def show_network(services: ServicesDep, caller: TokenDep, request: Request, network_id: str
                 ) -> dict[str, Any]:
    for n in _networks(services, request):
        if n["id"] == network_id:
            return {"network": n}
    raise NotFound(f"Network {network_id} could not be found.")


@router.get("/v2.0/subnets", dependencies=[policy("network:get")])
def list_subnets(services: ServicesDep, caller: TokenDep, request: Request) -> dict[str, Any]:
    q = request.query_params
    return {"subnets": [subnet_view(s) for s in services.network.subnets()
                        if q.get("network_id") in (None, s.network_id)
                        and q.get("name") in (None, s.name) and q.get("id") in (None, s.id)]}


@router.get("/v2.0/subnets/{subnet_id}", dependencies=[policy("network:get")])
def show_subnet(services: ServicesDep, caller: TokenDep, subnet_id: str) -> dict[str, Any]:
    for s in services.network.subnets():
        if s.id == subnet_id:
            return {"subnet": subnet_view(s)}
    raise NotFound(f"Subnet {subnet_id} could not be found.")


@router.get("/v2.0/ports", dependencies=[policy("network:port:get")])
def list_ports(services: ServicesDep, caller: TokenDep, request: Request) -> dict[str, Any]:
    q = request.query_params
    filters = {k: q.get(k) for k in ("device_id", "network_id", "status", "device_owner",
                                     "mac_address", "id")}
    return {"ports": [port_view(p) for p in services.network.ports(caller.caller, filters)]}


@router.post("/v2.0/ports", status_code=201, dependencies=[policy("network:port:create")])
async def create_port(services: ServicesDep, caller: TokenDep, body: PortBody
                      ) -> JSONResponse:
    args = body.port.taken()
    port = await run_in_threadpool(lambda: services.network.create_port(caller.caller, **args))
    return JSONResponse({"port": port_view(port)}, status_code=201)


@router.get("/v2.0/ports/{port_id}", dependencies=[policy("network:port:get")])
def show_port(services: ServicesDep, caller: TokenDep, port_id: str) -> dict[str, Any]:
    return {"port": port_view(services.network.port(caller.caller, port_id))}


@router.delete("/v2.0/ports/{port_id}", status_code=204,
               dependencies=[policy("network:port:delete")])
def delete_port(services: ServicesDep, caller: TokenDep, port_id: str) -> Response:
    services.network.delete_port(caller.caller, port_id)
    return Response(status_code=204)


@router.get("/v2.0/floatingips", dependencies=[policy("network:get")])
def list_floatingips(caller: TokenDep) -> dict[str, Any]:
    return {"floatingips": []}


@router.get("/v2.0/floatingips/{fip_id}", dependencies=[policy("network:get")])
def show_floatingip(caller: TokenDep, fip_id: str) -> dict[str, Any]:
    raise NotFound(f"Floating IP {fip_id} could not be found: this cloud has none.")


@router.get("/v2.0/routers", dependencies=[policy("network:get")])
def list_routers(caller: TokenDep) -> dict[str, Any]:
    return {"routers": []}


@router.get("/v2.0/security-groups", dependencies=[policy("network:get")])
def list_security_groups(caller: TokenDep) -> dict[str, Any]:
    return {"security_groups": []}


def _quota(services: Services, project_id: str) -> tuple[dict[str, int], dict[str, int]]:
    port_limit = services.quotas.show(project_id)[0]["port"]
    limits = {"network": 0, "subnet": 0, "port": port_limit, "router": 0, "floatingip": 0,
              "security_group": 0, "security_group_rule": 0, "rbac_policy": 0,
              "subnetpool": 0}
    used = {k: 0 for k in limits}
    used["port"] = services.network.usage(project_id)
    return limits, used


@router.get("/v2.0/quotas/{project_id}", dependencies=[policy("network:quota:show")])
def show_quota(services: ServicesDep, caller: TokenDep, project_id: str) -> dict[str, Any]:
    limits, _ = _quota(services, project_id)
    return {"quota": limits}


@router.put("/v2.0/quotas/{project_id}", dependencies=[policy("network:quota:update")])
async def update_quota(services: ServicesDep, caller: TokenDep, body: QuotaBody,
                       project_id: str) -> dict[str, Any]:
    """`openstack quota set --ports N`: only `port` is kept (the other resources are fixed)."""
    values = {} if body.quota.port is None else {"port": body.quota.port}
    await run_in_threadpool(services.quotas.set, caller.caller, project_id, values)
    limits, _ = await run_in_threadpool(_quota, services, project_id)
    return {"quota": limits}


@router.get("/v2.0/quotas/{project_id}/details", dependencies=[policy("network:quota:show")])
def show_quota_details(services: ServicesDep, caller: TokenDep, project_id: str
                       ) -> dict[str, Any]:
    limits, used = _quota(services, project_id)
    return {"quota": {k: {"limit": v, "used": used[k], "reserved": 0}
                      for k, v in limits.items()}}
