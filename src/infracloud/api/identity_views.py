"""JSON views of identity resources, as keystone renders them."""

from __future__ import annotations

from typing import Any

from infracloud.core.clock import isoformat
from infracloud.identity.appcreds import AppCred
from infracloud.identity.auth import DEFAULT_DOMAIN_NAME, TokenInfo
from infracloud.store.models import DEFAULT_DOMAIN, Project, Role, User

V3 = "/identity/v3"


def collection_links(base: str, path: str) -> dict[str, Any]:
    return {"self": f"{base}{V3}/{path}", "previous": None, "next": None}


def domain_view(base: str) -> dict[str, Any]:
    return {"id": DEFAULT_DOMAIN, "name": DEFAULT_DOMAIN_NAME, "description": "The default domain",
            "enabled": True, "tags": [], "options": {},
            "links": {"self": f"{base}{V3}/domains/{DEFAULT_DOMAIN}"}}


def project_view(base: str, p: Project) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "domain_id": p.domain_id, "description": p.description,
            "enabled": p.enabled, "is_domain": False, "parent_id": p.domain_id,
            "tags": list(p.tags or []), "options": {},
            "links": {"self": f"{base}{V3}/projects/{p.id}"}}


def user_view(base: str, u: User) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
        "password_expires_at": None, "options": {},
        "links": {"self": f"{base}{V3}/users/{u.id}"}}
    if u.email:
        out["email"] = u.email
    if u.description:
        out["description"] = u.description
    if u.default_project_id:
        out["default_project_id"] = u.default_project_id
    return out


def role_view(base: str, r: Role) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "domain_id": None, "description": r.description,
            "options": {}, "links": {"self": f"{base}{V3}/roles/{r.id}"}}


def appcred_view(base: str, c: AppCred) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id, "name": c.name, "description": c.description, "user_id": c.user_id,
        "project_id": c.project_id, "expires_at": isoformat(c.expires_at, micro=True),
        "unrestricted": c.unrestricted, "access_rules": [],
        "roles": [{"id": r.id, "name": r.name, "domain_id": None} for r in c.roles],
        "links": {"self": f"{base}{V3}/users/{c.user_id}/application_credentials/{c.id}"}}
    if c.secret is not None:
        out["secret"] = c.secret
    return out


def token_view(info: TokenInfo, catalog: list[dict[str, Any]] | None) -> dict[str, Any]:
    p = info.payload
    body: dict[str, Any] = {
        "methods": list(p.methods), "audit_ids": list(p.audit_ids),
        "expires_at": isoformat(p.expires_at, micro=True),
        "issued_at": isoformat(p.issued_at, micro=True),
        "user": {"id": info.user.id, "name": info.user.name,
                 "domain": {"id": info.user.domain_id, "name": DEFAULT_DOMAIN_NAME},
                 "password_expires_at": None},
        "is_domain": False,
    }
    if info.project is not None:
        body["project"] = {"id": info.project.id, "name": info.project.name,
                           "domain": {"id": info.project.domain_id, "name": DEFAULT_DOMAIN_NAME}}
        body["roles"] = [{"id": r.id, "name": r.name} for r in info.roles]
        if catalog is not None:
            body["catalog"] = catalog
    if p.app_cred_id:
        body["application_credential"] = {"id": p.app_cred_id,
                                          "restricted": not info.app_cred_unrestricted}
    return {"token": body}
