"""Compute v2.1 server groups (os-server-groups, 2.1 shapes: `policies` as a one-item list,
`members`, an empty `metadata`); the placement they ask for is compute/groups.py's."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import HEADERS, reply
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.api.limits import query_count
from infracloud.core.errors import Forbidden
from infracloud.store.models import ServerGroup

router = APIRouter(prefix="/compute/v2.1", route_class=JSONRoute)


class ServerGroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=255)]
    policies: Annotated[list[Literal["anti-affinity", "affinity"]],
                        Field(min_length=1, max_length=1)]

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        """Nova's `name` format."""
        if name != name.strip() or not name.isprintable():
            raise ValueError("An invalid 'name' value was provided. The name must be: "
                             "printable characters. Can not start or end with whitespace.")
        return name


class ServerGroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server_group: ServerGroupIn


def group_view(group: ServerGroup, members: list[str]) -> dict[str, Any]:
    return {"id": group.id, "name": group.name, "policies": [group.policy],
            "members": members, "metadata": {}}


@router.get("/os-server-groups", dependencies=[policy("compute:server_group:get")])
def list_groups(services: ServicesDep, caller: TokenDep, request: Request) -> JSONResponse:
    q = request.query_params
    every = "all_projects" in q  # any value, as nova reads it
    if every and not caller.caller.is_admin:
        raise Forbidden("Policy doesn't allow os_compute_api:os-server-groups:index:"
                        "all_projects to be performed.")
    found = services.server_groups.listing(caller.caller, all_projects=every)
    offset = query_count(request, "offset") or 0
    limit = query_count(request, "limit")
    found = found[offset:] if limit is None else found[offset:offset + limit]
    return reply({"server_groups": [group_view(g, m) for g, m in found]})


@router.post("/os-server-groups", dependencies=[policy("compute:server_group:create")])
async def create_group(services: ServicesDep, caller: TokenDep, body: ServerGroupBody
                       ) -> JSONResponse:
    g = body.server_group
    group = await run_in_threadpool(services.server_groups.create, caller.caller, g.name,
                                    g.policies[0])
    return reply({"server_group": group_view(group, [])})


@router.get("/os-server-groups/{group_id}", dependencies=[policy("compute:server_group:get")])
def show_group(services: ServicesDep, caller: TokenDep, group_id: str) -> JSONResponse:
    group, members = services.server_groups.get(caller.caller, group_id)
    return reply({"server_group": group_view(group, members)})


@router.delete("/os-server-groups/{group_id}", status_code=204,
               dependencies=[policy("compute:server_group:delete")])
def delete_group(services: ServicesDep, caller: TokenDep, group_id: str) -> Response:
    services.server_groups.delete(caller.caller, group_id)
    return Response(status_code=204, headers=HEADERS)
