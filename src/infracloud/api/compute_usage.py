"""Compute v2.1's simple tenant usage (os-simple-tenant-usage), from the usage records the
operations part keeps (site.tenant_usage): every project's for administrators, a project's own
for its readers. 2.1 has no paging: the totals cover the whole period, the per-server rows are
bounded (site.tenant_usage.MAX_SERVERS)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import reply
from infracloud.api.deps import ServicesDep, parse_bool, policy, query_time
from infracloud.core.errors import BadRequest
from infracloud.site.services import Services
from infracloud.site.tenant_usage import Period, TenantUsage

router = APIRouter(prefix="/compute", route_class=JSONRoute)


def _period(usage: TenantUsage, request: Request) -> Period:
    q = request.query_params
    try:
        start, end = query_time("start", q.get("start")), query_time("end", q.get("end"))
    except BadRequest as exc:  # Nova's wording, then which parameter
        raise BadRequest(f"Invalid input received: Datetime is in invalid format. {exc}"
                         ) from None
    return usage.period(start, end)


def _usage(services: Services) -> TenantUsage:
    return TenantUsage(services.db, services.clock)


@router.get("/v2.1/os-simple-tenant-usage", dependencies=[policy("compute:usage:list")])
async def list_usage(services: ServicesDep, request: Request) -> JSONResponse:
    usage = _usage(services)
    period = _period(usage, request)
    # Nova reads "1"; openstacksdk sends "True" (and `openstack usage list` counts the rows)
    detailed = bool(parse_bool(request.query_params.get("detailed")))
    found = await run_in_threadpool(lambda: usage.usages(period, detailed=detailed))
    return reply({"tenant_usages": found})


@router.get("/v2.1/os-simple-tenant-usage/{project_id}",
            dependencies=[policy("compute:usage:show")])
async def show_usage(services: ServicesDep, request: Request, project_id: str
                     ) -> JSONResponse:
    usage = _usage(services)
    period = _period(usage, request)
    found = await run_in_threadpool(lambda: usage.usages(period, project_id, detailed=True))
    return reply({"tenant_usage": found[0] if found else {}})
