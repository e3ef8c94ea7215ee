"""The operations API (/ops/v1): events (query, JSON lines export, follow). Read-only views
are open when `ops.public_read` is set (api.deps.ops_reader)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from infracloud.api.deps import OpsReader, ServicesDep, query_time
from infracloud.api.limits import Cursor, LongPolls, Seconds, client_address
from infracloud.core import lifecycle
from infracloud.core.errors import BadRequest, NotFound
from infracloud.identity.auth import TokenInfo
from infracloud.ops import events as ev

router = APIRouter(prefix="/ops/v1", tags=["operations"], dependencies=[OpsReader])

MAX_WAIT = 60.0


def _query(since: str | None, until: str | None, after: int | None, project: str | None,
           host: str | None, resource: str | None, resource_type: str | None,
           kind: str | None, actor: str | None, limit: int,
           user_id: str | None = None) -> ev.Query:
    if kind is not None and kind not in ("state", "api", "alert"):
        raise BadRequest(f"kind must be state, api or alert, not {kind!r}.")
    if limit < 1:
        raise BadRequest("limit must be at least 1.")
    return ev.Query(since=query_time("since", since), until=query_time("until", until), after=after,
                    project_id=project, host=host, resource_id=resource,
                    resource_type=resource_type, kind=kind, actor=actor, user_id=user_id,
                    limit=limit)


@router.get("/events", response_model=None)
async def list_events(services: ServicesDep, request: Request,
                      viewer: Annotated[TokenInfo | None, OpsReader],
                      since: str | None = None,
                      until: str | None = None, after: Cursor = None,
                      project: str | None = None, host: str | None = None,
                      resource: str | None = None, resource_type: str | None = None,
                      kind: str | None = None, actor: str | None = None,
                      user: str | None = None,
                      limit: int = Query(100, ge=1, le=ev.MAX_PAGE), wait: Seconds = 0,
                      format: str = "json", order: str = "asc") -> Any:
    """Events in id order (`order=desc`: the newest `limit` first). `after=ID&wait=S` is a
    long-poll: it answers as soon as a newer matching event exists, or after S seconds with
    none. `format=jsonl` exports every match as JSON lines (streamed, a page at a time).
    `user` (a name or an id): what that user did. The client addresses of API events are
    shown to admins only."""
    client = viewer is not None and viewer.caller.is_admin
    if order not in ("asc", "desc"):
        raise BadRequest(f"order must be asc or desc, not {order!r}.")
    if project is not None:  # a name or an id; a project deleted since may only have its id
        try:
            found = await run_in_threadpool(services.identity.directory.find_project, project)
            project = found.id
        except NotFound:
            pass
    if user is not None:  # a name or an id; a user deleted since may only have its id
        if not user.strip() or len(user) > 255:
            raise BadRequest("user must be a user's name or id.")
        with contextlib.suppress(NotFound):
            user = (await run_in_threadpool(services.identity.directory.find_user, user)).id
    q = _query(since, until, after, project, host, resource, resource_type, kind, actor, limit,
               user_id=user)
    if order == "desc":
        q = ev.Query(**{**q.__dict__, "newest_first": True})
    log = services.events
    if format == "jsonl":
        return StreamingResponse(_iterate(log.export(q, client=client)),
                                 media_type="application/x-ndjson")
    if format != "json":
        raise BadRequest(f"format must be json or jsonl, not {format!r}.")
    page = await run_in_threadpool(log.query, q)
    if not page and wait > 0:
        polls: LongPolls = request.app.state.long_polls
        with polls.hold(client_address(request)):  # 429 beyond the client's share
            page = await _wait(log, q, time.monotonic() + min(wait, MAX_WAIT))
    events = [ev.to_dict(e, client=client) for e in page]
    newest = max((e["id"] for e in events), default=after or 0)
    return {"events": events, "next": newest}


async def _wait(log: ev.EventLog, q: ev.Query, deadline: float) -> list[Any]:
    """The first page with an event, or none at the deadline or as the controller stops."""
    while True:
        await asyncio.sleep(0.5)
        page = await run_in_threadpool(log.query, q)
        if page or time.monotonic() >= deadline or lifecycle.stopping.is_set():
            return page


async def _iterate(lines: Any) -> Any:
    """A sync generator of chunks, each read in a worker thread."""
    done = object()
    while True:
        line = await run_in_threadpool(next, lines, done)
        if line is done:
            return
        yield line
