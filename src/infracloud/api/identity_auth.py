"""Identity v3: version discovery and the token API (shared/specs/openstack-api.md section 1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from infracloud.api.bodies import JSONRoute
from infracloud.api.deps import ServicesDep, TokenDep
from infracloud.api.identity_views import (
    V3,
    collection_links,
    domain_view,
    project_view,
    token_view,
)
from infracloud.core.errors import BadRequest, NotFound, Unauthorized
from infracloud.identity.auth import UNAUTHORIZED, Ref, TokenInfo
from infracloud.identity.policy import enforce
from infracloud.site.services import Services

router = APIRouter(route_class=JSONRoute)


def _version(base: str) -> dict[str, Any]:
    return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{base}{V3}/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.identity-v3+json"}]}


@router.get("/identity")
@router.get("/identity/")
def versions(services: ServicesDep) -> JSONResponse:
    return JSONResponse({"versions": {"values": [_version(services.base_url)]}}, status_code=300)


@router.get("/identity/v3")
@router.get("/identity/v3/")
def version(services: ServicesDep) -> dict[str, Any]:
    return {"version": _version(services.base_url)}


# ---- the auth request body ----------------------------------------------------------------

class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Domain(_Loose):
    id: str | None = None
    name: str | None = None


class _User(_Loose):
    id: str | None = None
    name: str | None = None
    domain: _Domain | None = None
    password: str | None = None

    def ref(self) -> Ref:
        d = self.domain or _Domain()
        return Ref(self.id, self.name, d.id, d.name)


class _Password(_Loose):
    user: _User


class _Token(_Loose):
    id: str


class _AppCred(_Loose):
    id: str | None = None
    name: str | None = None
    secret: str
    user: _User | None = None


class _Identity(_Loose):
    methods: list[str]
    password: _Password | None = None
    token: _Token | None = None
    application_credential: _AppCred | None = None


class _Project(_Loose):
    id: str | None = None
    name: str | None = None
    domain: _Domain | None = None


class _Scope(_Loose):
    project: _Project | None = None
    domain: dict[str, Any] | None = None
    system: dict[str, Any] | None = None


class _Auth(_Loose):
    identity: _Identity
    scope: _Scope | Literal["unscoped"] | None = None


def _authenticate(services: Services, auth: _Auth, subject: str | None) -> TokenInfo:
    a = services.identity.auth
    scope: Ref | None = None
    unscoped = auth.scope == "unscoped"
    if isinstance(auth.scope, _Scope):
        if auth.scope.domain is not None or auth.scope.system is not None:
            raise BadRequest("Only project scope is supported.")
        if auth.scope.project is not None:
            p = auth.scope.project
            if not p.id and not p.name:
                raise BadRequest("The project scope needs an id or a name.")
            d = p.domain or _Domain()
            scope = Ref(p.id, p.name, d.id, d.name)
    methods = auth.identity.methods
    if not methods:
        raise BadRequest("Expecting at least one authentication method.")
    method = methods[0]
    if method == "password":
        if auth.identity.password is None or auth.identity.password.user.password is None:
            raise BadRequest("Expecting to find password in identity.password.user.")
        user = auth.identity.password.user
        if not user.id and not user.name:
            raise BadRequest("Expecting to find the user's id or name.")
        return a.password(user.ref(), user.password or "", scope, unscoped)
    if method == "token":
        token_id = auth.identity.token.id if auth.identity.token else subject
        if not token_id:
            raise BadRequest("Expecting to find a token in identity.token.id.")
        return a.rescope(token_id, scope, unscoped)
    if method == "application_credential":
        c = auth.identity.application_credential
        if c is None:
            raise BadRequest("Expecting to find application_credential in identity.")
        return a.application_credential(c.id, c.name, c.secret, c.user.ref() if c.user else None)
    raise Unauthorized(f"Attempted to authenticate with an unsupported method: {method}.")


def _token_response(services: Services, request: Request, info: TokenInfo,
                    status: int) -> JSONResponse:
    nocatalog = "nocatalog" in request.query_params
    catalog = None if nocatalog else request.app.state.catalog.for_token(
        info.project.id if info.project else None)
    return JSONResponse(token_view(info, catalog), status_code=status,
                        headers={"X-Subject-Token": info.token})


@router.post("/identity/v3/auth/tokens")
def issue_token(services: ServicesDep, request: Request, auth: Annotated[_Auth, Body(embed=True)],
                x_auth_token: Annotated[str | None, Header()] = None) -> JSONResponse:
    return _token_response(services, request, _authenticate(services, auth, x_auth_token), 201)


def _subject(services: Services, x_subject_token: str | None) -> TokenInfo:
    if not x_subject_token:
        raise NotFound("Could not find token: no X-Subject-Token header.")
    try:
        return services.identity.auth.validate(x_subject_token)
    except Unauthorized:
        raise NotFound(f"Could not find token: {x_subject_token[:16]}...") from None


@router.get("/identity/v3/auth/tokens")
def validate_token(services: ServicesDep, caller: TokenDep, request: Request,
                   x_subject_token: Annotated[str | None, Header()] = None) -> JSONResponse:
    subject = _subject(services, x_subject_token)
    if subject.user.id != caller.user.id:
        enforce(caller.caller, "identity:revoke_token", user_id=subject.user.id)
    return _token_response(services, request, subject, 200)


@router.head("/identity/v3/auth/tokens")
def check_token(services: ServicesDep, caller: TokenDep,
                x_subject_token: Annotated[str | None, Header()] = None) -> Response:
    subject = _subject(services, x_subject_token)
    if subject.user.id != caller.user.id:
        enforce(caller.caller, "identity:revoke_token", user_id=subject.user.id)
    return Response(status_code=200)


@router.delete("/identity/v3/auth/tokens", status_code=204)
def revoke_token(services: ServicesDep, caller: TokenDep,
                 x_subject_token: Annotated[str | None, Header()] = None) -> Response:
    subject = _subject(services, x_subject_token)
    enforce(caller.caller, "identity:revoke_token", user_id=subject.user.id)
    services.identity.auth.revoke(subject)
    return Response(status_code=204)


@router.get("/identity/v3/auth/catalog")
def auth_catalog(services: ServicesDep, caller: TokenDep, request: Request) -> dict[str, Any]:
    if caller.project is None:
        raise Unauthorized(UNAUTHORIZED)
    return {"catalog": request.app.state.catalog.for_token(caller.project.id),
            "links": collection_links(services.base_url, "auth/catalog")}


@router.get("/identity/v3/auth/projects")
def auth_projects(services: ServicesDep, caller: TokenDep) -> dict[str, Any]:
    base = services.base_url
    projects = services.identity.directory.projects_of_user(caller.user.id)
    return {"projects": [project_view(base, p) for p in projects if p.enabled],
            "links": collection_links(base, "auth/projects")}


@router.get("/identity/v3/auth/domains")
def auth_domains(services: ServicesDep, caller: TokenDep) -> dict[str, Any]:
    return {"domains": [], "links": collection_links(services.base_url, "auth/domains")}


@router.get("/identity/v3/auth/system")
def auth_system(services: ServicesDep, caller: TokenDep) -> dict[str, Any]:
    return {"system": [], "links": collection_links(services.base_url, "auth/system")}


@router.get("/identity/v3/domains")
def list_domains(services: ServicesDep, caller: TokenDep, name: str | None = None,
                 enabled: str | None = None) -> dict[str, Any]:
    base = services.base_url
    enforce(caller.caller, "identity:list_domains")
    domains = [domain_view(base)] if name in (None, "Default") else []
    return {"domains": domains, "links": collection_links(base, "domains")}


@router.get("/identity/v3/domains/{domain_id}")
def get_domain(services: ServicesDep, caller: TokenDep, domain_id: str) -> dict[str, Any]:
    enforce(caller.caller, "identity:get_domain")
    if domain_id != "default":
        raise NotFound(f"Could not find domain: {domain_id}.")
    return {"domain": domain_view(services.base_url)}


@router.get("/identity/v3/services")
def list_services(services: ServicesDep, caller: TokenDep, request: Request,
                  type: str | None = None) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_services")
    found = [s for s in request.app.state.catalog.services() if type in (None, s["type"])]
    return {"services": found, "links": collection_links(services.base_url, "services")}


def _pick(items: list[dict[str, Any]], ident: str, label: str) -> dict[str, Any]:
    for item in items:
        if item["id"] == ident:
            return item
    raise NotFound(f"Could not find {label}: {ident}.")


@router.get("/identity/v3/services/{service_id}")
def get_service(caller: TokenDep, request: Request, service_id: str) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_services")
    return {"service": _pick(request.app.state.catalog.services(), service_id, "service")}


@router.get("/identity/v3/endpoints/{endpoint_id}")
def get_endpoint(caller: TokenDep, request: Request, endpoint_id: str) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_services")
    return {"endpoint": _pick(request.app.state.catalog.endpoints(), endpoint_id, "endpoint")}


@router.get("/identity/v3/endpoints")
def list_endpoints(services: ServicesDep, caller: TokenDep, request: Request,
                   interface: str | None = None, service_id: str | None = None
                   ) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_services")
    found = [e for e in request.app.state.catalog.endpoints()
             if interface in (None, e["interface"]) and service_id in (None, e["service_id"])]
    return {"endpoints": found, "links": collection_links(services.base_url, "endpoints")}


@router.get("/identity/v3/regions")
def list_regions(services: ServicesDep, caller: TokenDep) -> dict[str, Any]:
    region = services.config.region
    return {"regions": [{"id": region, "description": "", "parent_region_id": None}],
            "links": collection_links(services.base_url, "regions")}
