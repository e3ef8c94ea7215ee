"""Compute v2.1's quota sets and the default quota class, in Nova 2.1's shapes: every key 2.1
shows (instances, cores and ram are enforced, key_pairs per user; the others are kept and shown:
compute.quotas.SHOWN_ONLY), numbers given as strings accepted, -1 unlimited, `force`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import HEADERS, reply
from infracloud.api.compute_admin_models import QuotaClassSetBody, QuotaSetBody
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.core.errors import BadRequest, NotFound
from infracloud.site.services import Services

router = APIRouter(prefix="/compute", route_class=JSONRoute)
# the keys of a 2.1 quota set, and of a 2.1 quota class set (2.50 added the server groups')
KEYS = ("instances", "cores", "ram", "key_pairs", "metadata_items", "injected_files",
        "injected_file_content_bytes", "injected_file_path_bytes", "server_groups",
        "server_group_members", "fixed_ips", "floating_ips", "security_groups",
        "security_group_rules")
CLASS_KEYS = tuple(k for k in KEYS if not k.startswith("server_group"))


def _known(services: Services, project_id: str) -> None:
    """Nova asks Keystone: a project it does not know is a 400."""
    try:
        services.identity.directory.get_project(project_id)
    except NotFound:
        raise BadRequest(f"Project ID {project_id} is not a valid project.") from None


def _view(limits: dict[str, int], project_id: str | None, used: Any = None,
          keys: tuple[str, ...] = KEYS) -> dict[str, Any]:
    out: dict[str, Any] = {} if project_id is None else {"id": project_id}
    if used is None:
        return {**out, **{k: limits[k] for k in keys}}
    in_use = {"instances": used.instances, "cores": used.cores, "ram": used.ram}
    return {**out, **{k: {"limit": limits[k], "in_use": in_use.get(k, 0), "reserved": 0}
                      for k in keys}}


@router.get("/v2.1/os-quota-sets/{project_id}", dependencies=[policy("compute:quota:show")])
def show_quota(services: ServicesDep, project_id: str) -> JSONResponse:
    _known(services, project_id)
    lim, _ = services.quotas.show(project_id)
    return reply({"quota_set": _view(lim, project_id)})


@router.get("/v2.1/os-quota-sets/{project_id}/detail", dependencies=[policy("compute:quota:show")])
def show_quota_detail(services: ServicesDep, project_id: str) -> JSONResponse:
    _known(services, project_id)
    lim, used = services.quotas.show(project_id)
    body = _view(lim, project_id, used)
    body["server_groups"]["in_use"] = services.server_groups.count(project_id)
    return reply({"quota_set": body})


@router.get("/v2.1/os-quota-sets/{project_id}/defaults",
            dependencies=[policy("compute:quota:defaults")])
def show_quota_defaults(services: ServicesDep, project_id: str) -> JSONResponse:
    _known(services, project_id)
    return reply({"quota_set": _view(services.quotas.class_limits("default"), project_id)})


@router.put("/v2.1/os-quota-sets/{project_id}", dependencies=[policy("compute:quota:update")])
async def update_quota(services: ServicesDep, caller: TokenDep, body: QuotaSetBody,
                       project_id: str) -> JSONResponse:
    _known(services, project_id)
    q = body.quota_set
    await run_in_threadpool(lambda: services.quotas.set(caller.caller, project_id, q.limits(),
                                                        force=bool(q.force)))
    lim, _ = services.quotas.show(project_id)
    return reply({"quota_set": _view(lim, None)})


@router.delete("/v2.1/os-quota-sets/{project_id}", status_code=202,
               dependencies=[policy("compute:quota:delete")])
def delete_quota(services: ServicesDep, caller: TokenDep, project_id: str) -> Response:
    """The project's own limits go; it has the defaults again."""
    services.quotas.reset(caller.caller, project_id)
    return Response(status_code=202, headers=HEADERS)


@router.get("/v2.1/os-quota-class-sets/{class_name}",
            dependencies=[policy("compute:quota_class:show")])
def show_quota_class(services: ServicesDep, class_name: str) -> JSONResponse:
    """Every class name answers the default class's limits (Nova's classes other than
    `default` are unused)."""
    return reply({"quota_class_set": _view(services.quotas.class_limits("default"),
                                           class_name, keys=CLASS_KEYS)})


@router.put("/v2.1/os-quota-class-sets/{class_name}",
            dependencies=[policy("compute:quota_class:update")])
async def update_quota_class(services: ServicesDep, caller: TokenDep, body: QuotaClassSetBody,
                             class_name: str) -> JSONResponse:
    values = body.quota_class_set.limits()
    await run_in_threadpool(services.quotas.set_class, caller.caller, class_name, values)
    return reply({"quota_class_set": _view(services.quotas.class_limits("default"), None,
                                           keys=CLASS_KEYS)})
