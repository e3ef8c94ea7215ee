"""Servers' lifetimes (compute/lifetimes.py), infracloud's own routes beside Compute v2.1's:

    GET  /compute/v2.1/servers/{id}/os-lifetime          its expiry, latest expiry and why
    POST /compute/v2.1/servers/{id}/os-lifetime          {"extend": {"seconds": N}} (owner)
    POST /compute/v2.1/servers/{id}/os-lifetime/exempt   no expiry (admins); optional body
                                                          {"exempt": {"reason": "..."}}
    GET  /compute/v2.1/os-lifetime-limits/{project_id}   {"lifetime_limit": {"max_lifetime": s}}
    PUT  /compute/v2.1/os-lifetime-limits/{project_id}   {"lifetime_limit": {"max_lifetime":
                                                          "24h" | 86400 | null}} (admins)"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import reply
from infracloud.api.deps import ServicesDep, TokenDep, policy

router = APIRouter(prefix="/compute/v2.1", route_class=JSONRoute)
S = "/servers/{server_id}/os-lifetime"


class ExtendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: Any


class ExtendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extend: ExtendIn


class ExemptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=200)


class ExemptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exempt: ExemptIn


class LimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_lifetime: Any


class LimitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lifetime_limit: LimitIn


@router.get(S, dependencies=[policy("compute:server:lifetime:get")])
def show_lifetime(services: ServicesDep, caller: TokenDep, server_id: str) -> JSONResponse:
    return reply({"lifetime": services.lifetimes.show(caller.caller, server_id)})


@router.post(S, dependencies=[policy("compute:server:lifetime:extend")])
async def extend_lifetime(services: ServicesDep, caller: TokenDep, server_id: str,
                          body: ExtendBody) -> JSONResponse:
    out = await run_in_threadpool(services.lifetimes.extend, caller.caller, server_id,
                                  body.extend.seconds)
    return reply({"lifetime": out})


@router.post(S + "/exempt", dependencies=[policy("compute:server:lifetime:exempt")])
async def exempt_lifetime(services: ServicesDep, caller: TokenDep, server_id: str,
                          body: ExemptBody | None = None) -> JSONResponse:
    """The body is optional: `{"exempt": {"reason": "..."}}` says why, in the event."""
    why = body.exempt.reason if body is not None else None
    out = await run_in_threadpool(services.lifetimes.exempt, caller.caller, server_id,
                                  caller.user.name, why)
    return reply({"lifetime": out})


@router.get("/os-lifetime-limits/{project_id}",
            dependencies=[policy("compute:lifetime_limits:get")])
def show_limit(services: ServicesDep, project_id: str) -> JSONResponse:
    return reply({"lifetime_limit": {"max_lifetime":
                                     services.lifetimes.project_limit(project_id)}})


@router.put("/os-lifetime-limits/{project_id}",
            dependencies=[policy("compute:lifetime_limits:set")])
async def set_limit(services: ServicesDep, project_id: str, body: LimitBody) -> JSONResponse:
    seconds = await run_in_threadpool(services.lifetimes.set_project_limit, project_id,
                                      body.lifetime_limit.max_lifetime)
    return reply({"lifetime_limit": {"max_lifetime": seconds}})
