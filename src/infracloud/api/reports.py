"""Usage reports (`/ops/v1/usage`): instance-, vCPU-, RAM- and disk-hours by project, user,
flavor or host over a period, as JSON (with the capacity left per flavor), CSV or a PNG chart
of the use over time. Read-only, open when `ops.public_read` is set (api.deps.ops_reader)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from infracloud.api.deps import OpsReader, ServicesDep, query_time
from infracloud.core.errors import BadRequest
from infracloud.site import usage as us

router = APIRouter(prefix="/ops/v1", tags=["operations"], dependencies=[OpsReader])


@router.get("/usage", response_model=None)
async def usage_report(services: ServicesDep, since: str | None = None,
                       until: str | None = None, by: str = "project", format: str = "json",
                       step: int | None = Query(None, ge=1)) -> Any:
    """Usage in [since, until) (ISO 8601; by default this month until now) by project, user,
    flavor or host. `format`: json, csv or png (vCPUs in use over time, one point per
    `step` seconds, chosen to fit the period when not given)."""
    if format not in us.FORMATS:
        raise BadRequest(f"format must be one of {', '.join(us.FORMATS)}, not {format!r}.")
    start, end = query_time("since", since), query_time("until", until)
    reports = services.usage
    if format == "png":
        png = await run_in_threadpool(reports.png, start, end, by,
                                      dt.timedelta(seconds=step) if step else None)
        return Response(png, media_type="image/png", headers=_disposition(
            services.config.site, by, "png"))
    report = await run_in_threadpool(reports.report, start, end, by,
                                     with_capacity=format == "json")
    if format == "csv":
        return Response(report.csv(), media_type="text/csv; charset=utf-8",
                        headers=_disposition(report.site, by, "csv"))
    return {"usage": report.as_dict()}


def _disposition(site: str, by: str, ext: str) -> dict[str, str]:
    return {"Content-Disposition": f'inline; filename="usage-{site}-by-{by}.{ext}"'}
