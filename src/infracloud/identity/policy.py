"""Who may do what: one table of rules, checked by the API and the CLI alike."""

from __future__ import annotations

from infracloud.core.context import ADMIN_ROLE, Caller
from infracloud.core.errors import Forbidden

__all__ = ["ADMIN_ROLE", "BUILTIN_ROLES", "Caller", "allowed", "enforce"]
MEMBER_ROLE = "member"
READER_ROLE = "reader"
BUILTIN_ROLES = (ADMIN_ROLE, MEMBER_ROLE, READER_ROLE)
# prior role -> implied role (keystone's bootstrap makes the same chain)
IMPLIED_ROLES = {ADMIN_ROLE: MEMBER_ROLE, MEMBER_ROLE: READER_ROLE}


# rule meanings:
#   admin    - the caller holds the admin role
#   self     - admin, or the target user is the caller
#   project  - admin, or the target project is the caller's project
#   reader   - admin, or any role on the target project
RULES: dict[str, str] = {
    "identity:list_projects": "admin",
    "identity:get_project": "project",
    "identity:create_project": "admin",
    "identity:update_project": "admin",
    "identity:delete_project": "admin",
    "identity:list_user_projects": "self",
    "identity:list_users": "admin",
    "identity:get_user": "self",
    "identity:create_user": "admin",
    "identity:update_user": "admin",
    "identity:delete_user": "admin",
    "identity:list_roles": "admin",
    "identity:get_role": "admin",
    "identity:create_role": "admin",
    "identity:delete_role": "admin",
    "identity:list_role_assignments": "admin",
    "identity:grant": "admin",
    "identity:check_grant": "admin",
    "identity:revoke_grant": "admin",
    "identity:list_application_credentials": "self",
    "identity:get_application_credential": "self",
    "identity:create_application_credential": "self",
    "identity:delete_application_credential": "self",
    "identity:revoke_token": "self",
    "identity:list_domains": "admin",
    "identity:get_domain": "any",
    "identity:list_catalog": "any",
    "identity:list_services": "admin",
}


def allowed(caller: Caller, action: str, *, user_id: str | None = None,
            project_id: str | None = None) -> bool:
    rule = RULES[action]
    if rule == "any" or caller.is_admin:
        return True
    if rule == "self":
        return user_id is not None and user_id == caller.user_id
    if rule == "project":
        return project_id is not None and project_id == caller.project_id
    return False


def enforce(caller: Caller, action: str, *, user_id: str | None = None,
            project_id: str | None = None) -> None:
    if not allowed(caller, action, user_id=user_id, project_id=project_id):
        raise Forbidden(f"You are not authorized to perform the requested action: {action}.")
