"""The site's alerts (`/ops/v1/alerts`): firing by default, or resolved, or all, newest
first. Read-only, open when `ops.public_read` is set (api.deps.ops_reader)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from infracloud.api.deps import OpsReader, ServicesDep
from infracloud.core.errors import BadRequest
from infracloud.ops import alerting as al

router = APIRouter(prefix="/ops/v1", tags=["operations"], dependencies=[OpsReader])


@router.get("/alerts")
async def list_alerts(services: ServicesDep, state: str = al.FIRING,
                      limit: int = Query(100, ge=1, le=al.MAX_LIST)) -> dict[str, Any]:
    """`state`: firing (critical first, then the newest), resolved (the latest resolved
    first) or all."""
    if state not in al.STATES:
        raise BadRequest(f"state must be firing, resolved or all, not {state!r}.")
    rows = await run_in_threadpool(services.alerts.list, state, limit)
    now = services.clock.now()
    return {"alerts": [al.view(a, now) for a in rows]}
