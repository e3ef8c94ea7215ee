"""`GET /ops/v1/status` (the site on one screen, as JSON: what `infracloud status` prints) and
the read-only web dashboard at `/dashboard`: server-rendered pages (overview, instances, pool,
events, alerts) whose live part reloads itself every few seconds through `?fragment=1`, with
their CSS and script at `/dashboard/static/`. Nothing is fetched from elsewhere. Open when
`ops.public_read` is set (the default), else an admin or reader token (api.deps.ops_reader)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from infracloud.api.deps import OpsReader, ServicesDep
from infracloud.core.errors import NotFound
from infracloud.ops import dashboard as views
from infracloud.ops.status import pool_status, site_status, site_view
from infracloud.pool.service import PoolService
from infracloud.services import Services

router = APIRouter()

STATIC_TYPES = {"dashboard.css": "text/css; charset=utf-8",
                "dashboard.js": "text/javascript; charset=utf-8"}
# the pages load only their own CSS and script; the charts are inline SVG
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin"}


def _pool(request: Request) -> PoolService | None:
    pool: PoolService | None = getattr(request.app.state, "pool", None)
    return pool


@router.get("/ops/v1/status", dependencies=[OpsReader], tags=["operations"])
def status(request: Request, services: ServicesDep) -> dict[str, Any]:
    """The site on one screen: hosts by state, capacity used and free, free slots per flavor,
    servers and machines by state, the pool's waiting requests, firing alerts, the latest
    events."""
    return site_status(services, _pool(request))


def _page(services: Services, page: str, title: str, content: str, fragment: bool,
          alerts: list[dict[str, Any]] | None = None, **context: Any) -> HTMLResponse:
    now = services.clock.now()
    config = services.config
    html = views.render(content, fragment=fragment, page=page, title=title, now=now,
                        site=site_view(config.site, config.region, services.base_url, now),
                        alerts=views.banner(services.db, now) if alerts is None else alerts,
                        **context)
    return HTMLResponse(html, headers=PAGE_HEADERS)


def _blank(value: str | None) -> str | None:
    """A form's empty field is no filter."""
    return value.strip() or None if value is not None else None


@router.get("/dashboard", dependencies=[OpsReader], include_in_schema=False)
def overview(request: Request, services: ServicesDep, fragment: bool = False) -> HTMLResponse:
    status = site_status(services, _pool(request))
    views.named(services.db, status["events"])
    return _page(services, "overview", "Overview", "overview.html", fragment,
                 alerts=status["alerts"], **views.overview(status))


@router.get("/dashboard/instances", dependencies=[OpsReader], include_in_schema=False)
def instances(services: ServicesDep, fragment: bool = False, state: str | None = None,
              project: str | None = None, host: str | None = None) -> HTMLResponse:
    data = views.instances_page(services.db, services.clock.now(), views.InstanceFilter(
        _blank(state), _blank(project), _blank(host)))
    return _page(services, "instances", "Instances", "instances.html", fragment, data=data)


@router.get("/dashboard/pool", dependencies=[OpsReader], include_in_schema=False)
def pool(request: Request, services: ServicesDep, fragment: bool = False) -> HTMLResponse:
    found = _pool(request)
    view = pool_status(found) if found is not None else None
    return _page(services, "pool", "Pool", "pool.html", fragment, pool=view,
                 charts=views.pool_charts(view) if view else None)


@router.get("/dashboard/events", dependencies=[OpsReader], include_in_schema=False)
def events(services: ServicesDep, fragment: bool = False, project: str | None = None,
           host: str | None = None, kind: str | None = None) -> HTMLResponse:
    data = views.events_page(services.db, services.events, services.clock.now(),
                             views.EventFilter(_blank(project), _blank(host), _blank(kind)))
    return _page(services, "events", "Events", "events.html", fragment, data=data)


@router.get("/dashboard/alerts", dependencies=[OpsReader], include_in_schema=False)
def alerts(services: ServicesDep, fragment: bool = False) -> HTMLResponse:
    data = views.alerts_page(services.db, services.clock.now())
    return _page(services, "alerts", "Alerts", "alerts.html", fragment, data=data)


@functools.cache
def _static(name: str) -> bytes:
    return (resources.files("infracloud.ops") / "static" / name).read_bytes()


@router.get("/dashboard/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        raise NotFound(f"No dashboard file {name}.")
    return Response(_static(name), media_type=media_type,
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
