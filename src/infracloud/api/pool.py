"""The node pool's HTTP API (`/pool/v1`, token in X-Auth-Token; the pool's rules of the policy
table, a caller sees its own project's requests, nodes and events unless it is an admin;
`Idempotency-Key` on a new request makes a retry of it safe; `/pool/v1/status` says which of
several pool processes is active) and
nodepool's read-only status lists (`/node-list`, `/request-list`, `/label-list`, `/image-list`,
JSON, as nodepool's web app serves them: the node and request lists with a token and scoped
alike, or open to anyone with the pool's `public-lists`). Served by `infracloud pool` and, in
the demo, by the controller."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from infracloud import __version__
from infracloud.api.bodies import JSONRoute
from infracloud.api.limits import Cursor, Seconds
from infracloud.core import lifecycle
from infracloud.core.errors import BadRequest, Forbidden
from infracloud.ops import context
from infracloud.ops import events as ev
from infracloud.ops.alerting import STATES, view
from infracloud.pool.auth import PoolCaller
from infracloud.pool.service import PoolService

router = APIRouter(route_class=JSONRoute)
WAIT_POLL = 0.1  # seconds between looks at a request someone waits on
MAX_WAIT = 60.0
MAX_KEY = 255  # characters of an Idempotency-Key


def get_pool(request: Request) -> PoolService:
    pool: PoolService = request.app.state.pool
    return pool


async def get_caller(request: Request,
                     x_auth_token: Annotated[str | None, Header()] = None) -> PoolCaller:
    check = request.app.state.pool_auth
    caller: PoolCaller = await run_in_threadpool(check.check, x_auth_token)
    context.identify(caller.requestor)  # events name who released, held or cancelled
    return caller


PoolDep = Annotated[PoolService, Depends(get_pool)]
CallerDep = Annotated[PoolCaller, Depends(get_caller)]


def policy(action: str) -> Any:
    """The route's rule of the policy table (identity.policy.RULES), as a dependency."""
    async def check(caller: CallerDep) -> PoolCaller:
        caller.enforce(action)
        return caller

    check.__name__ = f"policy[{action}]"
    return Depends(check)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewRequest(_Body):
    labels: list[str] = Field(min_length=1, max_length=100)
    requestor: str | None = Field(None, min_length=1, max_length=255)
    priority: int = Field(0, ge=-1000, le=1000)


class Hold(_Body):
    reason: str = Field(min_length=1, max_length=1000)


class Drain(_Body):
    reason: str | None = Field(None, max_length=1000)


@router.get("/pool/v1")
@router.get("/pool/v1/")
def version(pool: PoolDep) -> dict[str, Any]:
    return {"pool": pool.config.name, "version": __version__,
            "labels": [label.name for label in pool.config.labels]}


@router.post("/pool/v1/requests", status_code=201,
             dependencies=[policy("pool:request:create")])
def create_request(pool: PoolDep, caller: CallerDep, body: NewRequest,
                   idempotency_key: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """With `Idempotency-Key: KEY` (any text up to 255 characters, new for each request the
    client means), the same key again answers with the request the first call made."""
    requestor = caller.requestor
    if body.requestor and body.requestor != caller.requestor:
        if not caller.admin:
            raise Forbidden(f"Only an admin may request nodes for {body.requestor}; "
                            f"this token's requestor is {caller.requestor}.")
        requestor = body.requestor
    if idempotency_key is not None and not (
            0 < len(idempotency_key) <= MAX_KEY and idempotency_key.isprintable()):
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY} printable characters.")
    return {"request": pool.create_request(body.labels, requestor, body.priority,
                                           idempotency_key)}


@router.get("/pool/v1/requests", dependencies=[policy("pool:request:get")])
def list_requests(pool: PoolDep, caller: CallerDep, history: bool = False
                  ) -> dict[str, Any]:
    return {"requests": pool.list_requests(history, caller.owner())}


@router.get("/pool/v1/requests/{request_id}", dependencies=[policy("pool:request:get")])
async def show_request(request: Request, pool: PoolDep, caller: CallerDep, request_id: str,
                       wait: Seconds = 0) -> dict[str, Any]:
    """With `wait=SECONDS` (at most 60), answers as soon as the request changes (its state,
    or nodes allocated to it) or is final, or when the time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, MAX_WAIT)
    version = await run_in_threadpool(pool.version, request_id)
    view = await run_in_threadpool(pool.get_request, request_id, caller.owner())
    seen = (view["state"], view["node_ids"])
    while view["state"] not in ("fulfilled", "failed", "cancelled") and \
            loop.time() < deadline and not lifecycle.stopping.is_set():
        await asyncio.sleep(WAIT_POLL)
        pool = get_pool(request)  # this process may have changed role meanwhile
        # the active face counts in memory; a standby's count reads the database
        latest = pool.version(request_id) if pool.role == "active" else \
            await run_in_threadpool(pool.version, request_id)
        if latest == version:
            continue  # unchanged: no need to take the engine's lock
        version = latest
        view = await run_in_threadpool(pool.get_request, request_id, caller.owner())
        if (view["state"], view["node_ids"]) != seen:
            break
    return {"request": view}


@router.delete("/pool/v1/requests/{request_id}", dependencies=[policy("pool:request:delete")])
def cancel_request(pool: PoolDep, caller: CallerDep, request_id: str) -> dict[str, Any]:
    return {"request": pool.cancel_request(request_id, caller.owner())}


@router.get("/pool/v1/nodes", dependencies=[policy("pool:node:get")])
def list_nodes(pool: PoolDep, caller: CallerDep, label: str | None = None,
               state: str | None = None) -> dict[str, Any]:
    return {"nodes": pool.list_nodes(label, state, caller.owner())}


@router.get("/pool/v1/nodes/{node_id}", dependencies=[policy("pool:node:get")])
def show_node(pool: PoolDep, caller: CallerDep, node_id: str) -> dict[str, Any]:
    return {"node": pool.get_node(node_id, caller.owner())}


@router.post("/pool/v1/nodes/{node_id}/release", dependencies=[policy("pool:node:update")])
def release_node(pool: PoolDep, caller: CallerDep, node_id: str) -> dict[str, Any]:
    return {"node": pool.release(node_id, caller.owner())}


@router.post("/pool/v1/nodes/{node_id}/hold", dependencies=[policy("pool:node:update")])
def hold_node(pool: PoolDep, caller: CallerDep, node_id: str, body: Hold) -> dict[str, Any]:
    return {"node": pool.hold(node_id, body.reason, caller.owner())}


@router.get("/pool/v1/labels", dependencies=[policy("pool:label:get")])
def list_labels(pool: PoolDep, caller: CallerDep) -> dict[str, Any]:
    return {"labels": pool.list_labels()}


@router.get("/pool/v1/providers", dependencies=[policy("pool:provider:get")])
def list_providers(pool: PoolDep, caller: CallerDep) -> dict[str, Any]:
    return {"providers": pool.list_providers()}


@router.post("/pool/v1/providers/{name}/drain", dependencies=[policy("pool:provider:update")])
def drain_provider(pool: PoolDep, name: str, body: Drain | None = None) -> dict[str, Any]:
    return {"provider": pool.drain(name, body.reason if body else None)}


@router.post("/pool/v1/providers/{name}/undrain",
             dependencies=[policy("pool:provider:update")])
def undrain_provider(pool: PoolDep, name: str) -> dict[str, Any]:
    return {"provider": pool.drain(name, None, drained=False)}


@router.get("/pool/v1/status", dependencies=[policy("pool:status:get")])
def status(request: Request, pool: PoolDep) -> dict[str, Any]:
    """Which pool process is active and which stand by (several on one database), and this
    one's role; a pool run alone (the demo's) is active by itself."""
    seat = getattr(request.app.state, "pool_seat", None)
    if seat is not None:
        return {"status": seat.status()}
    return {"status": {"pool": pool.config.name,
                       "this": {"owner": None, "where": None, "role": pool.role,
                                "since": None},
                       "active": None, "processes": [], "commands_waiting": 0}}


@router.get("/pool/v1/alerts")
def list_alerts(pool: PoolDep, state: str = "firing") -> dict[str, Any]:
    """The pool's alerts (firing, resolved or all); open, like /metrics and nodepool's
    lists: they hold no secret."""
    if state not in STATES:
        raise BadRequest(f"state must be firing, resolved or all, not {state!r}.")
    now = pool.now()
    return {"alerts": [view(a, now) for a in pool.alerts.list(state)]}


@router.get("/pool/v1/events", dependencies=[policy("pool:event:get")])
def list_events(pool: PoolDep, caller: CallerDep, after: Cursor = None,
                resource: str | None = None, limit: int = Query(100, ge=1, le=ev.MAX_PAGE),
                order: str = "asc") -> dict[str, Any]:
    """The state changes of the pool's nodes and requests (who, when, which provider), in id
    order, or the newest first with `order=desc`; `after=ID` pages and follows. A caller
    that is not an admin sees its own project's."""
    if order not in ("asc", "desc"):
        raise BadRequest(f"order must be asc or desc, not {order!r}.")
    rows = pool.events.query(ev.Query(after=after, resource_id=resource, limit=limit,
                                      site=pool.config.name, requestor=caller.owner(),
                                      newest_first=order == "desc"))
    events = [ev.to_dict(e) for e in rows]
    return {"events": events, "next": max((e["id"] for e in events), default=after or 0)}


# ---- nodepool's web app lists ----------------------------------------------------------------

def _nodepool(rows: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(rows, headers={"Access-Control-Allow-Origin": "*",
                                       "Cache-Control": "public, max-age=1"})


async def list_owner(request: Request, pool: PoolDep,
                     x_auth_token: Annotated[str | None, Header()] = None) -> str | None:
    """Whose nodes and requests /node-list and /request-list show: everyone's to anyone with
    the pool's `public-lists` (nodepool's tools send no token), else a token's (reader) own
    project's, or everyone's to an admin."""
    if pool.config.public_lists:
        return None
    caller = await get_caller(request, x_auth_token)
    caller.enforce("pool:status_list")
    return caller.owner()


ListOwner = Annotated[str | None, Depends(list_owner)]


@router.get("/node-list")
def node_list(pool: PoolDep, owner: ListOwner, node_id: str | None = None) -> JSONResponse:
    rows = pool.nodepool_nodes(owner)
    return _nodepool([r for r in rows if node_id in (None, r["id"])])


@router.get("/request-list")
def request_list(pool: PoolDep, owner: ListOwner) -> JSONResponse:
    return _nodepool(pool.nodepool_requests(owner))


@router.get("/label-list")
def label_list(pool: PoolDep) -> JSONResponse:
    return _nodepool([{"label": label.name} for label in pool.config.labels])


@router.get("/image-list")
def image_list(pool: PoolDep) -> JSONResponse:
    return _nodepool(pool.nodepool_images())
