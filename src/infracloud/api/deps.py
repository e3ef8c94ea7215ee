"""Dependencies shared by the routers: the services and the caller's validated token."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from infracloud.core.clock import parse_time
from infracloud.core.errors import BadRequest, Forbidden, InfracloudError, Unauthorized
from infracloud.identity.auth import UNAUTHORIZED, TokenInfo
from infracloud.identity.policy import READER_ROLE, enforce
from infracloud.ops import context
from infracloud.site.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_token(request: Request,
                    x_auth_token: Annotated[str | None, Header()] = None) -> TokenInfo:
    """The caller's token: from this controller's validation cache without leaving the event
    loop, else validated in a worker thread (it reads the database)."""
    if not x_auth_token:
        raise Unauthorized(UNAUTHORIZED)
    auth = get_services(request).identity.auth
    info = auth.cached(x_auth_token)
    if info is None:
        info = await run_in_threadpool(auth.validate, x_auth_token)
    # the request's actor: events name the caller
    context.identify(info.user.name, info.user.id, info.project.id if info.project else None)
    return info


def next_query(request: Request, marker: str, limit: int) -> str:
    """The query string of the next page: the same filters, with limit and marker."""
    keep = [(k, v) for k, v in request.query_params.multi_items() if k not in ("marker",
                                                                               "limit")]
    return urlencode([*keep, ("limit", str(limit)), ("marker", marker)])


def query_time(name: str, value: str | None) -> dt.datetime | None:
    """An ISO 8601 time of the query string (naive: UTC), or a 400 naming the parameter."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time, not {value!r}.") from None


def parse_bool(value: str | None) -> bool | None:
    """OpenStack clients send True/False/true/1/None; the literal 'None' means no filter."""
    if value is None or value in ("", "None", "none"):
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


ServicesDep = Annotated[Services, Depends(get_services)]
TokenDep = Annotated[TokenInfo, Depends(get_token)]


def policy(action: str) -> Any:
    """A route's rule from the policy table (identity.policy.RULES), as a dependency: 401
    without a valid token, 403 without the role or for another project's URL (a path's
    `project_id`), as Nova, Cinder and Neutron answer. `dependencies=[policy("...")]`."""
    async def check(request: Request, info: TokenDep) -> TokenInfo:
        enforce(info.caller, action, project_id=request.path_params.get("project_id"))
        return info

    check.__name__ = f"policy[{action}]"
    return Depends(check)


DASHBOARD_COOKIE = "infracloud_dashboard"  # the token of a dashboard sign-in


async def ops_reader(request: Request,
                     x_auth_token: Annotated[str | None, Header()] = None,
                     authorization: Annotated[str | None, Header()] = None
                     ) -> TokenInfo | None:
    """Read-only operations views (dashboard, /metrics, status, events, alerts, usage): open
    to anyone when `ops.public_read` is set (the default: seed 002's fully open operations),
    else an admin or reader token, as X-Auth-Token, `Authorization: Bearer` (what
    Prometheus' `authorization: credentials_file` sends) or the dashboard's sign-in cookie.
    The caller's token, when there is a valid one."""
    if not x_auth_token and authorization and authorization.lower().startswith("bearer "):
        x_auth_token = authorization[7:].strip()
    x_auth_token = x_auth_token or request.cookies.get(DASHBOARD_COOKIE)
    services = get_services(request)
    if services.config.ops.public_read:
        if x_auth_token:  # still name the caller in the log when there is one
            with contextlib.suppress(InfracloudError):
                return await get_token(request, x_auth_token)
        return None
    info = await get_token(request, x_auth_token)
    check_ops_reader(info)
    return info


def check_ops_reader(info: TokenInfo) -> None:
    if not (info.caller.is_admin or READER_ROLE in info.caller.roles):
        raise Forbidden("Operations views need the admin or reader role "
                        "(ops.public_read is false).")


OpsReader = Depends(ops_reader)
