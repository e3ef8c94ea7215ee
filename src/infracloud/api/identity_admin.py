"""Identity v3: projects, users, roles, role assignments and application credentials."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from infracloud.api.bodies import JSONRoute
from infracloud.api.deps import ServicesDep, TokenDep, parse_bool
from infracloud.api.identity_views import (
    V3,
    appcred_view,
    collection_links,
    project_view,
    role_view,
    user_view,
)
from infracloud.core.errors import BadRequest, NotFound
from infracloud.identity.policy import enforce

router = APIRouter(prefix=V3, route_class=JSONRoute)


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ProjectIn(_In):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    enabled: bool = True
    domain_id: str | None = None
    tags: list[str] = []


class ProjectPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = None
    enabled: bool | None = None
    tags: list[str] | None = None


class UserIn(_In):
    name: str = Field(min_length=1, max_length=255)
    password: str | None = Field(None, min_length=1)
    enabled: bool = True
    email: str | None = None
    description: str = ""
    default_project_id: str | None = None
    domain_id: str | None = None


class UserPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=255)
    password: str | None = Field(None, min_length=1)
    enabled: bool | None = None
    email: str | None = None
    description: str | None = None
    default_project_id: str | None = None


class PasswordChange(_In):
    original_password: str
    password: str = Field(min_length=1)


class RoleIn(_In):
    name: str = Field(min_length=1, max_length=255)
    description: str = ""


class AppCredIn(_In):
    name: str = Field(min_length=1, max_length=255)
    secret: str | None = Field(None, min_length=1)
    description: str | None = None
    expires_at: dt.datetime | None = None
    roles: list[dict[str, str]] | None = None
    unrestricted: bool = False


# ---- projects -----------------------------------------------------------------------------

@router.get("/projects")
def list_projects(services: ServicesDep, caller: TokenDep, name: str | None = None,
                  enabled: str | None = None, domain_id: str | None = None) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_projects")
    base = services.base_url
    found = services.identity.directory.list_projects(
        name=name, enabled=parse_bool(enabled), domain_id=domain_id)
    return {"projects": [project_view(base, p) for p in found],
            "links": collection_links(base, "projects")}


@router.post("/projects", status_code=201)
def create_project(services: ServicesDep, caller: TokenDep,
                   project: Annotated[ProjectIn, Body(embed=True)]) -> dict[str, Any]:
    enforce(caller.caller, "identity:create_project")
    created = services.identity.directory.create_project(
        project.name, description=project.description, enabled=project.enabled,
        domain_id=project.domain_id, tags=project.tags)
    return {"project": project_view(services.base_url, created)}


@router.get("/projects/{project_id}")
def get_project(services: ServicesDep, caller: TokenDep, project_id: str) -> dict[str, Any]:
    enforce(caller.caller, "identity:get_project", project_id=project_id)
    return {"project": project_view(services.base_url,
                                    services.identity.directory.get_project(project_id))}


@router.patch("/projects/{project_id}")
def update_project(services: ServicesDep, caller: TokenDep, project_id: str,
                   project: Annotated[ProjectPatch, Body(embed=True)]) -> dict[str, Any]:
    enforce(caller.caller, "identity:update_project")
    updated = services.identity.directory.update_project(
        project_id, **project.model_dump(exclude_unset=True))
    return {"project": project_view(services.base_url, updated)}


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(services: ServicesDep, caller: TokenDep, project_id: str) -> Response:
    enforce(caller.caller, "identity:delete_project")
    services.identity.directory.delete_project(project_id)
    return Response(status_code=204)


# ---- users --------------------------------------------------------------------------------

@router.get("/users")
def list_users(services: ServicesDep, caller: TokenDep, name: str | None = None,
               enabled: str | None = None, domain_id: str | None = None) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_users")
    base = services.base_url
    found = services.identity.directory.list_users(
        name=name, enabled=parse_bool(enabled), domain_id=domain_id)
    return {"users": [user_view(base, u) for u in found], "links": collection_links(base, "users")}


@router.post("/users", status_code=201)
def create_user(services: ServicesDep, caller: TokenDep,
                user: Annotated[UserIn, Body(embed=True)]) -> dict[str, Any]:
    enforce(caller.caller, "identity:create_user")
    created = services.identity.directory.create_user(
        user.name, password=user.password, enabled=user.enabled, email=user.email,
        description=user.description, default_project_id=user.default_project_id,
        domain_id=user.domain_id)
    return {"user": user_view(services.base_url, created)}


@router.get("/users/{user_id}")
def get_user(services: ServicesDep, caller: TokenDep, user_id: str) -> dict[str, Any]:
    enforce(caller.caller, "identity:get_user", user_id=user_id)
    return {"user": user_view(services.base_url, services.identity.directory.get_user(user_id))}


@router.patch("/users/{user_id}")
def update_user(services: ServicesDep, caller: TokenDep, user_id: str,
                user: Annotated[UserPatch, Body(embed=True)]) -> dict[str, Any]:
    enforce(caller.caller, "identity:update_user")
    updated = services.identity.directory.update_user(user_id,
                                                      **user.model_dump(exclude_unset=True))
    return {"user": user_view(services.base_url, updated)}


@router.delete("/users/{user_id}", status_code=204)
def delete_user(services: ServicesDep, caller: TokenDep, user_id: str) -> Response:
    enforce(caller.caller, "identity:delete_user")
    services.identity.directory.delete_user(user_id)
    return Response(status_code=204)


@router.post("/users/{user_id}/password", status_code=204)
def change_password(services: ServicesDep, caller: TokenDep, user_id: str,
                    user: Annotated[PasswordChange, Body(embed=True)]) -> Response:
    enforce(caller.caller, "identity:get_user", user_id=user_id)
    services.identity.directory.change_password(user_id, user.original_password, user.password)
    return Response(status_code=204)


@router.get("/users/{user_id}/projects")
def user_projects(services: ServicesDep, caller: TokenDep, user_id: str) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_user_projects", user_id=user_id)
    base = services.base_url
    found = services.identity.directory.projects_of_user(user_id)
    return {"projects": [project_view(base, p) for p in found],
            "links": collection_links(base, f"users/{user_id}/projects")}


# ---- roles and grants ---------------------------------------------------------------------

@router.get("/roles")
def list_roles(services: ServicesDep, caller: TokenDep, name: str | None = None
               ) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_roles")
    base = services.base_url
    return {"roles": [role_view(base, r) for r in services.identity.directory.list_roles(
        name=name)], "links": collection_links(base, "roles")}


@router.post("/roles", status_code=201)
def create_role(services: ServicesDep, caller: TokenDep,
                role: Annotated[RoleIn, Body(embed=True)]) -> dict[str, Any]:
    enforce(caller.caller, "identity:create_role")
    created = services.identity.directory.create_role(role.name, role.description)
    return {"role": role_view(services.base_url, created)}


@router.get("/roles/{role_id}")
def get_role(services: ServicesDep, caller: TokenDep, role_id: str) -> dict[str, Any]:
    enforce(caller.caller, "identity:get_role")
    return {"role": role_view(services.base_url, services.identity.directory.get_role(role_id))}


@router.delete("/roles/{role_id}", status_code=204)
def delete_role(services: ServicesDep, caller: TokenDep, role_id: str) -> Response:
    enforce(caller.caller, "identity:delete_role")
    services.identity.directory.delete_role(role_id)
    return Response(status_code=204)


GRANT = "/projects/{project_id}/users/{user_id}/roles/{role_id}"


@router.put(GRANT, status_code=204)
def grant(services: ServicesDep, caller: TokenDep, project_id: str, user_id: str,
          role_id: str) -> Response:
    enforce(caller.caller, "identity:grant")
    services.identity.directory.grant(project_id, user_id, role_id)
    return Response(status_code=204)


@router.head(GRANT, status_code=204)
@router.get(GRANT, status_code=204)
def check_grant(services: ServicesDep, caller: TokenDep, project_id: str, user_id: str,
                role_id: str) -> Response:
    enforce(caller.caller, "identity:check_grant")
    if not services.identity.directory.has_grant(project_id, user_id, role_id):
        raise NotFound(f"Could not find role assignment with role: {role_id}, user or group: "
                       f"{user_id}, project, domain, or system: {project_id}.")
    return Response(status_code=204)


@router.delete(GRANT, status_code=204)
def revoke_grant(services: ServicesDep, caller: TokenDep, project_id: str, user_id: str,
                 role_id: str) -> Response:
    enforce(caller.caller, "identity:revoke_grant")
    services.identity.directory.revoke_grant(project_id, user_id, role_id)
    return Response(status_code=204)


@router.get("/projects/{project_id}/users/{user_id}/roles")
def list_grants_of(services: ServicesDep, caller: TokenDep, project_id: str,
                   user_id: str) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_role_assignments")
    d = services.identity.directory
    ids = {g.role_id for g in d.list_grants(user_id=user_id, project_id=project_id)}
    base = services.base_url
    return {"roles": [role_view(base, r) for r in d.list_roles() if r.id in ids],
            "links": collection_links(base, f"projects/{project_id}/users/{user_id}/roles")}


@router.get("/role_assignments")
def role_assignments(services: ServicesDep, caller: TokenDep, request: Request
                     ) -> dict[str, Any]:
    q = request.query_params
    user_id = q.get("user.id")
    project_id = q.get("scope.project.id")
    own = user_id == caller.user.id and caller.project and project_id == caller.project.id
    if not own:
        enforce(caller.caller, "identity:list_role_assignments")
    if q.get("group.id") or q.get("scope.domain.id") or q.get("scope.system"):
        return {"role_assignments": [], "links": collection_links(services.base_url,
                                                                  "role_assignments")}
    d = services.identity.directory
    grants = d.list_grants(user_id=user_id, project_id=project_id, role_id=q.get("role.id"),
                           effective="effective" in q)
    names = "include_names" in q and parse_bool(q.get("include_names") or "true")
    users, projects, roles = (d.names(users={g.user_id for g in grants},
                                      projects={g.project_id for g in grants},
                                      roles={g.role_id for g in grants})
                              if names else ({}, {}, {}))
    base = services.base_url
    out = []
    for g in grants:
        role: dict[str, Any] = {"id": g.role_id}
        user: dict[str, Any] = {"id": g.user_id}
        project: dict[str, Any] = {"id": g.project_id}
        if names:
            role["name"] = roles.get(g.role_id)
            user |= {"name": users.get(g.user_id), "domain": {"id": "default", "name": "Default"}}
            project |= {"name": projects.get(g.project_id),
                        "domain": {"id": "default", "name": "Default"}}
        item: dict[str, Any] = {
            "role": role, "user": user, "scope": {"project": project},
            "links": {"assignment": f"{base}{V3}/projects/{g.project_id}/users/{g.user_id}"
                                    f"/roles/{g.implied_by or g.role_id}"}}
        if g.implied_by:
            item["links"]["prior_role"] = f"{base}{V3}/roles/{g.implied_by}"
        out.append(item)
    return {"role_assignments": out, "links": collection_links(base, "role_assignments")}


# ---- application credentials --------------------------------------------------------------

APPCREDS = "/users/{user_id}/application_credentials"


@router.get(APPCREDS)
def list_appcreds(services: ServicesDep, caller: TokenDep, user_id: str,
                  name: str | None = None) -> dict[str, Any]:
    enforce(caller.caller, "identity:list_application_credentials", user_id=user_id)
    base = services.base_url
    return {"application_credentials": [appcred_view(base, c) for c in
                                        services.identity.appcreds.list_for(user_id, name)],
            "links": collection_links(base, f"users/{user_id}/application_credentials")}


@router.post(APPCREDS, status_code=201)
def create_appcred(services: ServicesDep, caller: TokenDep, user_id: str,
                   application_credential: Annotated[AppCredIn, Body(embed=True)]
                   ) -> dict[str, Any]:
    enforce(caller.caller, "identity:create_application_credential", user_id=user_id)
    if user_id != caller.user.id:  # an admin's token: still only its own user's
        raise BadRequest("Application credentials are created by their own user.")
    c = application_credential
    created = services.identity.appcreds.create(
        caller, c.name, secret=c.secret, description=c.description or "",
        expires_at=c.expires_at, roles=c.roles, unrestricted=c.unrestricted)
    return {"application_credential": appcred_view(services.base_url, created)}


@router.get(APPCREDS + "/{cred_id}")
def get_appcred(services: ServicesDep, caller: TokenDep, user_id: str, cred_id: str
                ) -> dict[str, Any]:
    enforce(caller.caller, "identity:get_application_credential", user_id=user_id)
    return {"application_credential": appcred_view(
        services.base_url, services.identity.appcreds.get(user_id, cred_id))}


@router.delete(APPCREDS + "/{cred_id}", status_code=204)
def delete_appcred(services: ServicesDep, caller: TokenDep, user_id: str, cred_id: str
                   ) -> Response:
    enforce(caller.caller, "identity:delete_application_credential", user_id=user_id)
    services.identity.appcreds.delete(user_id, cred_id)
    return Response(status_code=204)
