"""Compute v2.1 flavor access lists (os-flavor-access, addTenantAccess/removeTenantAccess) and
flavor extra specs (os-extra_specs), in nova's shapes; the rules are compute/flavor_access.py's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import HEADERS, reply
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.core.errors import BadRequest, NotFound
from infracloud.site.services import Services

router = APIRouter(prefix="/compute/v2.1/flavors", route_class=JSONRoute)
Tenant = Annotated[str, Field(min_length=1, max_length=255)]


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Tenant


class FlavorAction(BaseModel):
    """One action: addTenantAccess or removeTenantAccess."""
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    add: TenantIn | None = Field(None, alias="addTenantAccess")
    remove: TenantIn | None = Field(None, alias="removeTenantAccess")


class ExtraSpecsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extra_specs: dict[str, Any]


def _access(flavor_id: str, projects: list[str]) -> dict[str, Any]:
    return {"flavor_access": [{"flavor_id": flavor_id, "tenant_id": p} for p in projects]}


@router.get("/{flavor_id}/os-flavor-access", dependencies=[policy("compute:flavor:access")])
def list_access(services: ServicesDep, caller: TokenDep, flavor_id: str) -> JSONResponse:
    return reply(_access(flavor_id, services.flavor_access.access(caller.caller, flavor_id)))


def _verify_project(services: Services, project_id: str) -> None:
    try:
        services.identity.directory.get_project(project_id)
    except NotFound:
        raise BadRequest(f"Project ID {project_id} is not a valid project.") from None


@router.post("/{flavor_id}/action", dependencies=[policy("compute:flavor:action")])
async def flavor_action(services: ServicesDep, caller: TokenDep, flavor_id: str,
                        body: FlavorAction) -> JSONResponse:
    actions = [*body.model_dump(by_alias=True, exclude_unset=True)]
    if len(actions) != 1:
        raise BadRequest("An action body holds exactly one action.")
    fa = services.flavor_access
    if body.add is not None:
        tenant = body.add.tenant
        await run_in_threadpool(_verify_project, services, tenant)
        projects = await run_in_threadpool(fa.add, caller.caller, flavor_id, tenant)
    elif body.remove is not None:
        projects = await run_in_threadpool(fa.remove, caller.caller, flavor_id,
                                           body.remove.tenant)
    else:
        raise BadRequest(f"There is no such action: {actions[0]}")
    return reply(_access(flavor_id, projects))


@router.get("/{flavor_id}/os-extra_specs", dependencies=[policy("compute:flavor:get")])
def list_specs(services: ServicesDep, caller: TokenDep, flavor_id: str) -> JSONResponse:
    return reply({"extra_specs": services.flavor_access.specs(caller.caller, flavor_id)})


@router.post("/{flavor_id}/os-extra_specs",
             dependencies=[policy("compute:flavor:extra_specs:set")])
async def create_specs(services: ServicesDep, caller: TokenDep, flavor_id: str,
                       body: ExtraSpecsBody) -> JSONResponse:
    specs = await run_in_threadpool(services.flavor_access.set_specs, caller.caller, flavor_id,
                                    body.extra_specs)
    return reply({"extra_specs": specs})


@router.get("/{flavor_id}/os-extra_specs/{key}", dependencies=[policy("compute:flavor:get")])
def show_spec(services: ServicesDep, caller: TokenDep, flavor_id: str, key: str
              ) -> JSONResponse:
    return reply({key: services.flavor_access.spec(caller.caller, flavor_id, key)})


@router.put("/{flavor_id}/os-extra_specs/{key}",
            dependencies=[policy("compute:flavor:extra_specs:set")])
async def update_spec(services: ServicesDep, caller: TokenDep, flavor_id: str, key: str,
                      body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    if len(body) != 1:
        raise BadRequest("Invalid input for field/attribute extra_specs: exactly one "
                         "property is required.")
    if key not in body:
        raise BadRequest("Request body and URI mismatch")
    specs = await run_in_threadpool(services.flavor_access.set_specs, caller.caller, flavor_id,
                                    body)
    return reply(specs)


@router.delete("/{flavor_id}/os-extra_specs/{key}",
               dependencies=[policy("compute:flavor:extra_specs:delete")])
async def delete_spec(services: ServicesDep, caller: TokenDep, flavor_id: str, key: str
                      ) -> Response:
    await run_in_threadpool(services.flavor_access.delete_spec, caller.caller, flavor_id, key)
    return Response(status_code=200, headers=HEADERS)
