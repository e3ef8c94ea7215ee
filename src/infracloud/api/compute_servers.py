"""Compute v2.1: a server's update and smaller reads (its addresses, one metadata item, the
password its guest posted, its action log), and the v2.0 version document the version list
advertises. The list, create, show and delete are in api/compute.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import HEADERS, reply
from infracloud.api.compute_views import server_view
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.compute import instance_actions, server_details
from infracloud.compute.server_details import UNSET
from infracloud.core.errors import BadRequest

router = APIRouter(prefix="/compute", route_class=JSONRoute)
S = "/v2.1/servers/{server_id}"
V2 = {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
      "updated": "2011-01-21T11:33:21Z",
      "media-types": [{"base": "application/json",
                       "type": "application/vnd.openstack.compute+json;version=2"}]}


@router.get("/v2")
@router.get("/v2/")
def version_v2(services: ServicesDep) -> JSONResponse:
    return reply({"version": {**V2, "links": [
        {"rel": "self", "href": f"{services.base_url}/compute/v2/"},
        {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}]}})


class ServerUpdateIn(BaseModel):
    """Nova's update schema at 2.1 (`additionalProperties: false`); the values are checked as
    Nova's formats check them (compute/server_checks.py)."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: Any = None
    accessIPv4: Any = None
    accessIPv6: Any = None
    disk_config: Any = Field(None, alias="OS-DCF:diskConfig")


class ServerUpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server: ServerUpdateIn


# what nova's update answers at 2.1 leaves out of the server's view (all of it from 2.75 on)
_NOT_IN_UPDATE = ("OS-EXT-", "OS-SRV-USG:", "os-extended-volumes:", "security_groups",
                  "key_name", "config_drive")


def _updated(services: ServicesDep, caller: TokenDep, server_id: str) -> JSONResponse:
    inst = services.servers.get(caller.caller, server_id)
    names = services.hosts.names({inst.host_id} if inst.host_id else set())
    full = server_view(services.base_url, inst, names.get(inst.host_id or ""),
                       caller.caller.is_admin)
    out = {k: v for k, v in full.items() if not k.startswith(_NOT_IN_UPDATE)}
    out["addresses"] = {label: [{"addr": a["addr"], "version": a["version"]} for a in addrs]
                        for label, addrs in full["addresses"].items()}
    return reply({"server": out})


@router.put(S, dependencies=[policy("compute:server:update")])
async def update_server(services: ServicesDep, caller: TokenDep, body: ServerUpdateBody,
                        server_id: str) -> JSONResponse:
    given = body.server.model_dump(exclude_unset=True)
    disk = given.get("disk_config")
    if disk not in (None, "AUTO", "MANUAL"):
        raise BadRequest(f"Invalid input for field/attribute OS-DCF:diskConfig. Value: "
                         f"{str(disk)[:80]}. {disk!r} is not one of ['AUTO', 'MANUAL']")
    await run_in_threadpool(lambda: server_details.update(
        services.servers, caller.caller, server_id, name=given.get("name", UNSET),
        access_ipv4=given.get("accessIPv4", UNSET), access_ipv6=given.get("accessIPv6", UNSET)))
    return _updated(services, caller, server_id)


@router.get(S + "/ips", dependencies=[policy("compute:server:ips")])
def list_ips(services: ServicesDep, caller: TokenDep, server_id: str) -> JSONResponse:
    return reply({"addresses": server_details.ips(services.servers, caller.caller, server_id)})


@router.get(S + "/ips/{network_label}", dependencies=[policy("compute:server:ips")])
def show_ips(services: ServicesDep, caller: TokenDep, server_id: str, network_label: str
             ) -> JSONResponse:
    return reply(server_details.ips(services.servers, caller.caller, server_id, network_label))


@router.get(S + "/metadata/{key}", dependencies=[policy("compute:server:metadata:get")])
def show_metadata_item(services: ServicesDep, caller: TokenDep, server_id: str, key: str
                       ) -> JSONResponse:
    return reply({"meta": server_details.metadata_item(services.servers, caller.caller,
                                                       server_id, key)})


@router.get(S + "/os-server-password", dependencies=[policy("compute:server:password:get")])
def show_password(services: ServicesDep, caller: TokenDep, server_id: str) -> JSONResponse:
    return reply({"password": server_details.password(services.servers, caller.caller,
                                                      server_id)})


@router.delete(S + "/os-server-password", status_code=204,
               dependencies=[policy("compute:server:password:clear")])
def clear_password(services: ServicesDep, caller: TokenDep, server_id: str) -> Response:
    server_details.set_password(services.servers, caller.caller, server_id, None)
    return Response(status_code=204, headers=HEADERS)


@router.get(S + "/os-instance-actions", dependencies=[policy("compute:server:actions:get")])
def list_actions(services: ServicesDep, caller: TokenDep, server_id: str) -> JSONResponse:
    found = instance_actions.actions(services.servers, caller.caller, server_id)
    return reply({"instanceActions": [a.view(with_events=False) for a in found]})


@router.get(S + "/os-instance-actions/{request_id}",
            dependencies=[policy("compute:server:actions:get")])
def show_action(services: ServicesDep, caller: TokenDep, server_id: str, request_id: str
                ) -> JSONResponse:
    found = instance_actions.actions(services.servers, caller.caller, server_id, request_id)
    # at 2.1 an action's events are shown to administrators only (nova's :events rule)
    return reply({"instanceAction": found[0].view(with_events=caller.caller.is_admin)})
