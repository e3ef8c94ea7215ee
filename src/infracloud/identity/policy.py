"""Who may do what: one table of rules for every service, checked by the API and the CLI alike.

Roles are Keystone's defaults: `reader` reads, `member` writes (and implies reader), `admin`
administers (and implies member); `manager` implies member, `service` is for services. A
token carries its implied roles, so a rule names the least role it needs."""

from __future__ import annotations

from infracloud.core.context import ADMIN_ROLE, Caller
from infracloud.core.errors import Forbidden

__all__ = ["ADMIN_ROLE", "BUILTIN_ROLES", "Caller", "allowed", "enforce"]
MEMBER_ROLE = "member"
READER_ROLE = "reader"
MANAGER_ROLE = "manager"
SERVICE_ROLE = "service"
BUILTIN_ROLES = (ADMIN_ROLE, MEMBER_ROLE, READER_ROLE, MANAGER_ROLE, SERVICE_ROLE)
# (prior role, implied role): keystone's bootstrap makes the same ones
IMPLIED_ROLES = ((ADMIN_ROLE, MEMBER_ROLE), (MEMBER_ROLE, READER_ROLE),
                 (MANAGER_ROLE, MEMBER_ROLE))


# rule meanings (admin passes every rule):
#   any      - any valid token
#   admin    - the caller holds the admin role
#   self     - the target user is the caller
#   project  - the target project is the caller's project
#   reader   - the reader role (member and admin imply it) on the caller's project; when the
#              request names a project, it must be the caller's
#   member   - as reader, with the member role
# Compute, image, network, volume and bare metal follow Nova's, Glance's, Neutron's,
# Cinder's and Ironic's default policies; the pool's reads are reader, its writes member.
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
    # compute (nova): keypairs belong to their user (the service looks only at the caller's)
    "compute:flavor:get": "reader",
    "compute:flavor:create": "admin",
    "compute:flavor:delete": "admin",
    "compute:keypair:get": "reader",
    "compute:keypair:create": "member",
    "compute:keypair:delete": "member",
    "compute:server:get": "reader",
    "compute:server:create": "member",
    "compute:server:delete": "member",
    "compute:server:action": "member",  # os-getConsoleOutput is a member's (nova)
    # server actions (api/compute_actions.py), each on top of compute:server:action
    "compute:server:action:stop": "member",
    "compute:server:action:start": "member",
    "compute:server:action:reboot": "member",
    "compute:server:action:rebuild": "member",
    "compute:server:action:lock": "member",
    "compute:server:action:unlock": "member",  # one an administrator locked: admin only
    "compute:server:action:createImage": "member",
    "compute:server:action:resetState": "admin",
    "compute:server:metadata:get": "reader",
    "compute:server:metadata:set": "member",
    "compute:limits": "reader",
    "compute:availability_zone:list": "reader",
    "compute:quota:show": "reader",  # the project in the URL must be the caller's
    "compute:quota:defaults": "reader",
    "compute:quota:update": "admin",
    "compute:hypervisor:list": "admin",
    "compute:service:list": "admin",
    "compute:service:update": "admin",
    # compute admin views (issue 17): Nova's defaults
    "compute:hypervisor:show": "admin",
    "compute:hypervisor:statistics": "admin",
    "compute:hypervisor:servers": "admin",
    "compute:availability_zone:detail": "admin",
    "compute:aggregate:list": "admin",
    "compute:quota:delete": "admin",
    "compute:quota_class:show": "admin",
    "compute:quota_class:update": "admin",
    "compute:usage:list": "admin",
    "compute:usage:show": "reader",  # the project in the URL must be the caller's
    "compute:extension:list": "any",
    # compute: server groups, private flavors' access lists, flavor extra specs (nova's)
    "compute:server_group:get": "reader",  # all_projects: admins (checked by the route)
    "compute:server_group:create": "member",
    "compute:server_group:delete": "member",
    "compute:flavor:access": "admin",
    "compute:flavor:action": "admin",  # addTenantAccess, removeTenantAccess
    "compute:flavor:extra_specs:set": "admin",
    "compute:flavor:extra_specs:delete": "admin",
    # servers' update and smaller reads (nova: update and ips are the project's; an action's
    # events are shown to administrators only, at 2.1), nova's image proxy
    "compute:server:update": "member",
    "compute:server:ips": "reader",
    "compute:server:password:get": "reader",
    "compute:server:password:clear": "member",
    # servers' lifetimes (api/lifetimes.py): infracloud's, not Nova's
    "compute:server:lifetime:get": "reader",
    "compute:server:lifetime:extend": "member",
    "compute:server:lifetime:exempt": "admin",
    "compute:lifetime_limits:get": "reader",
    "compute:lifetime_limits:set": "admin",
    "compute:server:actions:get": "reader",
    "compute:image:get": "reader",
    "compute:image:delete": "member",
    "compute:image:metadata:set": "member",
    # image (glance)
    "image:get": "reader",
    "image:create": "member",
    "image:modify": "member",
    "image:delete": "member",
    "image:upload": "member",
    "image:download": "reader",
    "image:action": "member",  # deactivate and reactivate: the owner's (or admin's)
    "image:member:get": "reader",
    "image:member:modify": "member",
    "image:info": "any",  # GET /v2/info/import
    "image:stage": "member",
    "image:import": "member",
    # network (neutron)
    "network:get": "reader",
    "network:port:get": "reader",
    "network:port:create": "member",
    "network:port:delete": "member",
    "network:quota:show": "reader",  # the project in the URL must be the caller's
    "network:quota:update": "admin",
    # block storage (cinder): every route names the project
    "volume:limits": "reader",
    "volume:get": "reader",
    "volume:quota:show": "reader",
    # bare metal (ironic) and the site's hardware: administrators
    "baremetal:node": "admin",
    "baremetal:driver:get": "admin",
    "hardware:capacity": "admin",
    # the node pool: a caller sees and touches its own project's requests and nodes
    "pool:request:get": "reader",
    "pool:request:create": "member",
    "pool:request:delete": "member",
    "pool:node:get": "reader",
    "pool:node:update": "member",  # release, hold
    "pool:label:get": "reader",
    "pool:provider:get": "reader",
    "pool:provider:update": "admin",  # drain, undrain
    "pool:event:get": "reader",
    "pool:status_list": "reader",  # /node-list, /request-list unless pool `public-lists`
    "pool:status:get": "reader",  # which pool process is active, which stand by
}
ROLE_RULES = {"reader": READER_ROLE, "member": MEMBER_ROLE}


def allowed(caller: Caller, action: str, *, user_id: str | None = None,
            project_id: str | None = None) -> bool:
    rule = RULES[action]
    if rule == "any" or caller.is_admin:
        return True
    if rule == "self":
        return user_id is not None and user_id == caller.user_id
    if rule == "project":
        return project_id is not None and project_id == caller.project_id
    if rule in ROLE_RULES:
        return (ROLE_RULES[rule] in caller.roles and caller.project_id is not None
                and project_id in (None, caller.project_id))
    return False


def enforce(caller: Caller, action: str, *, user_id: str | None = None,
            project_id: str | None = None) -> None:
    if not allowed(caller, action, user_id=user_id, project_id=project_id):
        raise Forbidden(f"You are not authorized to perform the requested action: {action}.")
