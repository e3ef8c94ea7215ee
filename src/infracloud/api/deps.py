"""Dependencies shared by the routers: the services and the caller's validated token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from infracloud.core.errors import Unauthorized
from infracloud.identity.auth import UNAUTHORIZED, TokenInfo
from infracloud.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_token(request: Request,
              x_auth_token: Annotated[str | None, Header()] = None) -> TokenInfo:
    if not x_auth_token:
        raise Unauthorized(UNAUTHORIZED)
    return get_services(request).identity.auth.validate(x_auth_token)


def parse_bool(value: str | None) -> bool | None:
    """OpenStack clients send True/False/true/1/None; the literal 'None' means no filter."""
    if value is None or value in ("", "None", "none"):
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


ServicesDep = Annotated[Services, Depends(get_services)]
TokenDep = Annotated[TokenInfo, Depends(get_token)]
