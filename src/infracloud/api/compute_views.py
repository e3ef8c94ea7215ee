"""Compute v2.1 JSON views. Only 2.1 shapes are served: the controller advertises 2.1 as its
maximum microversion, so clients ask for nothing newer (shared/specs/openstack-api.md §2.1)."""

from __future__ import annotations

import hashlib
from typing import Any

from infracloud.compute.servers import api_status, power_state, task_state, vm_state
from infracloud.core.clock import isoformat
from infracloud.store.models import Flavor, Instance, Keypair

C = "/compute/v2.1"


def links(base: str, kind: str, ident: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{base}{C}/{kind}/{ident}"},
            {"rel": "bookmark", "href": f"{base}/compute/{kind}/{ident}"}]


def flavor_view(base: str, f: Flavor, detail: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f.id, "name": f.name, "links": links(base, "flavors", f.id)}
    if detail:
        out.update({"ram": f.ram_mb, "vcpus": f.vcpus, "disk": f.disk_gb,
                    "OS-FLV-EXT-DATA:ephemeral": f.ephemeral_gb,
                    "swap": f.swap_mb or "", "rxtx_factor": 1.0,
                    "os-flavor-access:is_public": f.is_public,
                    "OS-FLV-DISABLED:disabled": False})
    return out


def host_id(project_id: str, host_name: str | None) -> str:
    """nova's hostId: sha224 of project and host, so projects cannot map the site."""
    if not host_name:
        return ""
    return hashlib.sha224((project_id + host_name).encode()).hexdigest()


def server_view(base: str, i: Instance, host_name: str | None, admin: bool,
                image_links: bool = True) -> dict[str, Any]:
    status = api_status(i)
    addresses: dict[str, Any] = {}
    if status != "BUILD" and i.ip_address:
        addresses[i.network_name or "provider"] = [{
            "version": 4, "addr": i.ip_address, "OS-EXT-IPS:type": "fixed",
            "OS-EXT-IPS-MAC:mac_addr": i.mac_address}]
    out: dict[str, Any] = {
        "id": i.id, "name": i.name, "status": status, "tenant_id": i.project_id,
        "user_id": i.user_id, "metadata": dict(i.metadata_ or {}),
        "hostId": host_id(i.project_id, host_name),
        "image": {"id": i.image_id, "links": [{"rel": "bookmark", "href":
                                               f"{base}/compute/images/{i.image_id}"}]}
        if i.image_id else "",
        "flavor": {"id": i.flavor_id, "links": [{"rel": "bookmark", "href":
                                                 f"{base}/compute/flavors/{i.flavor_id}"}]},
        "created": isoformat(i.created_at), "updated": isoformat(i.updated_at),
        "addresses": addresses,
        # as given on create or update; else the server's own address once it is ACTIVE
        "accessIPv4": i.access_ipv4 or (i.ip_address if status == "ACTIVE" and i.ip_address
                                        else ""),
        "accessIPv6": i.access_ipv6 or "", "links": links(base, "servers", i.id),
        "key_name": i.key_name,
        "OS-EXT-AZ:availability_zone": i.availability_zone or "",
        "config_drive": "True" if i.config_drive else "",
        "OS-EXT-STS:vm_state": vm_state(i), "OS-EXT-STS:task_state": task_state(i),
        "OS-EXT-STS:power_state": power_state(i),
        "OS-SRV-USG:launched_at": isoformat(i.launched_at, micro=True),
        "OS-SRV-USG:terminated_at": None, "progress": 100 if status == "ACTIVE" else 0,
        "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}],
        "os-extended-volumes:volumes_attached": [],
    }
    if i.fault and status == "ERROR":
        out["fault"] = dict(i.fault)
    if admin:
        out["OS-EXT-SRV-ATTR:host"] = host_name
        out["OS-EXT-SRV-ATTR:hypervisor_hostname"] = host_name
        out["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{i.id[:8]}"
    return out


def keypair_view(k: Keypair, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": k.name, "public_key": k.public_key,
                           "fingerprint": k.fingerprint}
    if detail:
        out.update({"user_id": k.user_id, "created_at": isoformat(k.created_at, micro=True),
                    "updated_at": None, "deleted_at": None, "deleted": False,
                    "id": int(hashlib.md5(k.name.encode()).hexdigest()[:7], 16)})
    return out
