"""A server's smaller reads and writes, as Nova 2.1 serves them: the update of its name and
access addresses, one metadata item, its addresses by network, and the password its guest
posted (os-server-password). Each is checked against the caller as every server read is
(its project's, or an admin's; else 404)."""

from __future__ import annotations

from typing import Any

from infracloud.compute.server_checks import check_access_ip, check_name
from infracloud.compute.servers import ServerService, api_status
from infracloud.core.context import Caller
from infracloud.core.errors import NotFound
from infracloud.ops import context
from infracloud.store.models import Instance

UNSET: Any = object()


def update(servers: ServerService, caller: Caller, server_id: str, *, name: Any = UNSET,
           access_ipv4: Any = UNSET, access_ipv6: Any = UNSET) -> Instance:
    """`PUT /servers/{id}`: what the body names changes (an empty access address clears it:
    the view then shows the server's own fixed address again)."""
    if name is not UNSET:
        check_name(name)
    v4 = check_access_ip(access_ipv4, 4) if access_ipv4 is not UNSET else UNSET
    v6 = check_access_ip(access_ipv6, 6) if access_ipv6 is not UNSET else UNSET
    with servers.db.write() as s:
        inst = servers._owned(s, caller, server_id, lock=True)
        if name is not UNSET:
            inst.name = name
        if v4 is not UNSET:
            inst.access_ipv4 = v4
        if v6 is not UNSET:
            inst.access_ipv6 = v6
        inst.updated_at = servers.clock.now()
        # the API event names the server (no state changed to name it)
        context.note(context.Touched("server", inst.id, inst.name, inst.project_id, None))
    return inst


def metadata_item(servers: ServerService, caller: Caller, server_id: str, key: str
                  ) -> dict[str, str]:
    meta = servers.get(caller, server_id).metadata_ or {}
    if key not in meta:
        raise NotFound("Metadata item was not found")
    return {key: meta[key]}


def addresses(inst: Instance) -> dict[str, list[dict[str, Any]]]:
    """The server's addresses by network label (what `ips` shows: address and version only;
    none while it builds, as in the server's view)."""
    if api_status(inst) == "BUILD" or not inst.ip_address:
        return {}
    return {inst.network_name or "provider": [{"version": 4, "addr": inst.ip_address}]}


def ips(servers: ServerService, caller: Caller, server_id: str, network: str | None = None
        ) -> dict[str, list[dict[str, Any]]]:
    found = addresses(servers.get(caller, server_id))
    if network is None:
        return found
    if network not in found:
        raise NotFound("Instance is not a member of specified network")
    return {network: found[network]}


def password(servers: ServerService, caller: Caller, server_id: str) -> str:
    return servers.get(caller, server_id).server_password or ""


def set_password(servers: ServerService, caller: Caller, server_id: str,
                 value: str | None) -> None:
    """Clear it (`None`: DELETE os-server-password), or keep what a guest posted (the
    encrypted password Nova's metadata service would have received)."""
    with servers.db.write() as s:
        inst = servers._owned(s, caller, server_id, lock=True)
        inst.server_password = value
