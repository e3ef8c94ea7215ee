"""`GET /ops/v1/status` (the site on one screen, as JSON: what `infracloud status` prints) and
the read-only web dashboard at `/dashboard`: server-rendered pages (overview, instances, pool,
events, alerts) whose live part reloads itself every few seconds through `?fragment=1`, with
their CSS and script at `/dashboard/static/`. Nothing is fetched from elsewhere. Open when
`ops.public_read` is set (the default), else an admin or reader token (api.deps.ops_reader):
a browser signs in at `/dashboard/login`, which keeps the token in a cookie."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from infracloud.api.bodies import JSONRoute
from infracloud.api.deps import (
    DASHBOARD_COOKIE,
    OpsReader,
    ServicesDep,
    check_ops_reader,
    ops_reader,
)
from infracloud.core.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from infracloud.identity.auth import DEFAULT_DOMAIN, Ref, TokenInfo
from infracloud.pool.service import PoolService
from infracloud.site import dashboard as views
from infracloud.site.services import Services
from infracloud.site.status import pool_status, site_status, site_view

router = APIRouter(route_class=JSONRoute)

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


async def _viewer(request: Request, fragment: bool = False,
                  x_auth_token: Annotated[str | None, Header()] = None,
                  authorization: Annotated[str | None, Header()] = None) -> TokenInfo | None:
    """ops_reader for the pages: a browser without a valid sign-in is sent to the sign-in
    page (and back here after it); the pages' live refresh gets the 401 or 403."""
    try:
        return await ops_reader(request, x_auth_token, authorization)
    except (Unauthorized, Forbidden):
        if fragment:
            raise
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise StarletteHTTPException(303, "Sign in first.", headers={
            "Location": "/dashboard/login?" + urlencode({"next": here})}) from None


Viewer = Annotated[TokenInfo | None, Depends(_viewer)]


def _page(services: Services, viewer: TokenInfo | None, page: str, title: str, content: str,
          fragment: bool, alerts: list[dict[str, Any]] | None = None, **context: Any
          ) -> HTMLResponse:
    now = services.clock.now()
    config = services.config
    html = views.render(content, fragment=fragment, page=page, title=title, now=now,
                        site=site_view(config.site, config.region, services.base_url, now),
                        alerts=views.banner(services.db, now) if alerts is None else alerts,
                        signed_in=viewer.user.name if viewer and not config.ops.public_read
                        else None, **context)
    return HTMLResponse(html, headers=PAGE_HEADERS)


def _blank(value: str | None) -> str | None:
    """A form's empty field is no filter."""
    return value.strip() or None if value is not None else None


@router.get("/dashboard", include_in_schema=False)
def overview(request: Request, services: ServicesDep, viewer: Viewer,
             fragment: bool = False) -> HTMLResponse:
    status = site_status(services, _pool(request))
    views.named(services.db, status["events"])
    return _page(services, viewer, "overview", "Overview", "overview.html", fragment,
                 alerts=status["alerts"], **views.overview(status))


@router.get("/dashboard/instances", include_in_schema=False)
def instances(services: ServicesDep, viewer: Viewer, fragment: bool = False,
              state: str | None = None, project: str | None = None, host: str | None = None
              ) -> HTMLResponse:
    data = views.instances_page(services.db, services.clock.now(), views.InstanceFilter(
        _blank(state), _blank(project), _blank(host)))
    return _page(services, viewer, "instances", "Instances", "instances.html", fragment, data=data)


@router.get("/dashboard/pool", include_in_schema=False)
def pool(request: Request, services: ServicesDep, viewer: Viewer,
         fragment: bool = False) -> HTMLResponse:
    found = _pool(request)
    view = pool_status(found) if found is not None else None
    return _page(services, viewer, "pool", "Pool", "pool.html", fragment, pool=view,
                 charts=views.pool_charts(view) if view else None)


@router.get("/dashboard/events", include_in_schema=False)
def events(services: ServicesDep, viewer: Viewer, fragment: bool = False,
           project: str | None = None, host: str | None = None, kind: str | None = None
           ) -> HTMLResponse:
    data = views.events_page(services.db, services.events, services.clock.now(),
                             views.EventFilter(_blank(project), _blank(host), _blank(kind)))
    return _page(services, viewer, "events", "Events", "events.html", fragment, data=data)


@router.get("/dashboard/alerts", include_in_schema=False)
def alerts(services: ServicesDep, viewer: Viewer, fragment: bool = False) -> HTMLResponse:
    data = views.alerts_page(services.db, services.clock.now())
    return _page(services, viewer, "alerts", "Alerts", "alerts.html", fragment, data=data)


# ---- signing in (ops.public_read false) ---------------------------------------------------

def _next(value: str | None) -> str:
    """Where to go after signing in: a dashboard page of this site, nowhere else."""
    if value and value.startswith("/dashboard") and not value.startswith("/dashboard/login"):
        return value
    return "/dashboard"


def _login_page(services: Services, status: int = 200, error: str | None = None,
                next_page: str = "/dashboard", username: str = "", project: str = ""
                ) -> HTMLResponse:
    config = services.config
    site = site_view(config.site, config.region, services.base_url, services.clock.now())
    html = views.template("login.html").render(site=site, error=error, next=next_page,
                                               username=username, project=project)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


@router.get("/dashboard/login", include_in_schema=False)
def login_form(services: ServicesDep, next: str | None = None) -> HTMLResponse:
    return _login_page(services, next_page=_next(next))


@router.post("/dashboard/login", include_in_schema=False)
async def login(request: Request, services: ServicesDep) -> Response:
    """A user name and password (and a project, else the user's default): a token kept in
    an HttpOnly, SameSite=Strict cookie until it expires."""
    body = await request.body()
    if len(body) > 8192:
        return _login_page(services, 413, "The form is too large.")
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                         max_num_fields=8).items()}
    username, project = form.get("username", "").strip(), form.get("project", "").strip()
    next_page = _next(form.get("next"))
    again = functools.partial(_login_page, services, next_page=next_page, username=username,
                              project=project)
    if not username or not form.get("password"):
        return again(400, "Give a user name and a password.")
    auth = services.identity.auth
    try:
        info = await run_in_threadpool(
            auth.password, Ref(name=username, domain_id=DEFAULT_DOMAIN), form["password"],
            Ref(name=project, domain_id=DEFAULT_DOMAIN) if project else None)
    except Unauthorized:
        return again(401, "Wrong user name or password, or no role on that project.")
    except TooManyRequests as exc:
        page = again(429, exc.message)
        page.headers.update(exc.headers)
        return page
    try:
        check_ops_reader(info)
    except Forbidden:
        await run_in_threadpool(auth.revoke, info)
        return again(403, f"{username} has neither the admin nor the reader role"
                          f"{' on ' + project if project else ''}.")
    response = RedirectResponse(next_page, status_code=303)
    lifetime = info.payload.expires_at - services.clock.now()
    response.set_cookie(DASHBOARD_COOKIE, info.token, max_age=int(lifetime.total_seconds()),
                        path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/dashboard/logout", include_in_schema=False)
async def logout(request: Request, services: ServicesDep) -> Response:
    token = request.cookies.get(DASHBOARD_COOKIE)
    if token:
        try:
            auth = services.identity.auth
            await run_in_threadpool(auth.revoke, await run_in_threadpool(auth.validate, token))
        except (Unauthorized, Forbidden):
            pass  # expired or revoked already
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(DASHBOARD_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


@functools.cache
def _static(name: str) -> bytes:
    return (resources.files("infracloud.site") / "static" / name).read_bytes()


@router.get("/dashboard/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        raise NotFound(f"No dashboard file {name}.")
    return Response(_static(name), media_type=media_type,
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
