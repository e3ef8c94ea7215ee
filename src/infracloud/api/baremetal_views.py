"""Bare Metal v1 documents (Ironic's shapes): the version documents and nodes."""

from __future__ import annotations

from typing import Any

from infracloud.core.clock import isoformat
from infracloud.hardware.nodes import HEADING
from infracloud.store.models import Node

MIN_VERSION = "1.1"
MAX_VERSION = "1.95"
PASSWORD_FIELD = {"redfish": "redfish_password", "ipmi": "ipmi_password",
                  "fake": "bmc_password"}
LIST_FIELDS = ("uuid", "name", "instance_uuid", "power_state", "provision_state",
               "maintenance")
INTERFACES = {"redfish": ("redfish", "redfish-virtual-media"),
              "ipmi": ("ipmitool", "pxe"), "fake": ("fake", "fake")}


def version_doc(base: str) -> dict[str, Any]:
    return {"id": "v1", "links": [{"href": f"{base}/baremetal/v1/", "rel": "self"}],
            "status": "CURRENT", "min_version": MIN_VERSION, "version": MAX_VERSION}


def root_doc(base: str) -> dict[str, Any]:
    v1 = version_doc(base)
    return {"name": "infracloud Bare Metal API",
            "description": "Bare metal enrolment and provisioning (a subset of Ironic's v1 API)",
            "default_version": v1, "versions": [v1]}


def v1_doc(base: str) -> dict[str, Any]:
    url = f"{base}/baremetal/v1"
    return {"id": "v1", "links": [{"href": url + "/", "rel": "self"}],
            "media_types": [{"base": "application/json",
                             "type": "application/vnd.openstack.ironic.v1+json"}],
            "nodes": [{"href": url + "/nodes/", "rel": "self"}],
            "drivers": [{"href": url + "/drivers/", "rel": "self"}],
            "version": version_doc(base)}


def links(base: str, kind: str, ident: str) -> list[dict[str, str]]:
    return [{"href": f"{base}/baremetal/v1/{kind}/{ident}", "rel": "self"},
            {"href": f"{base}/baremetal/{kind}/{ident}", "rel": "bookmark"}]


def driver_info_view(node: Node) -> dict[str, Any]:
    info = dict(node.driver_info or {})
    if node.bmc_password:
        info[PASSWORD_FIELD.get(node.driver, "bmc_password")] = "******"
    return info


def node_view(node: Node, base: str, fields: set[str] | None = None) -> dict[str, Any]:
    power, boot = INTERFACES.get(node.driver, ("fake", "fake"))
    full: dict[str, Any] = {
        "uuid": node.id, "name": node.name, "driver": node.driver,
        "driver_info": driver_info_view(node),
        "driver_internal_info": {"bmc_calls": node.bmc_calls or 0,
                                 "bmc_failures_in_a_row": node.bmc_failures or 0},
        "properties": dict(node.properties or {}),
        "extra": {**(node.extra or {}), "role": node.role},
        "instance_info": {**(node.instance_info or {}),
                          **({"compute_host": node.host_name} if node.host_name else {})},
        "instance_uuid": None, "chassis_uuid": None, "allocation_uuid": None,
        "power_state": node.power_state, "target_power_state": node.target_power_state,
        "provision_state": node.provision_state,
        "target_provision_state": node.target_provision_state
        if node.provision_state in HEADING else None,
        "provision_updated_at": isoformat(node.provision_updated_at),
        "maintenance": bool(node.maintenance), "maintenance_reason": node.maintenance_reason,
        "fault": node.fault, "last_error": node.last_error,
        "reservation": node.reservation if node.reserved_until else None,
        "console_enabled": False, "resource_class": node.resource_class,
        "description": node.description, "owner": None, "lessee": None, "protected": False,
        "protected_reason": None, "retired": False, "retired_reason": None,
        "conductor": node.reservation, "conductor_group": "", "automated_clean": None,
        "inspection_started_at": isoformat(node.inspection_started_at),
        "inspection_finished_at": isoformat(node.inspection_finished_at),
        "boot_interface": boot, "deploy_interface": "direct" if node.driver != "fake"
        else "fake", "management_interface": power, "power_interface": power,
        "inspect_interface": power, "console_interface": "no-console",
        "network_interface": "noop", "raid_interface": "no-raid",
        "rescue_interface": "no-rescue", "storage_interface": "noop",
        "vendor_interface": "no-vendor", "bios_interface": "no-bios",
        "firmware_interface": "no-firmware", "traits": [],
        "clean_step": {}, "deploy_step": {}, "raid_config": {}, "target_raid_config": {},
        "network_data": {}, "boot_mode": None, "secure_boot": None, "shard": None,
        "parent_node": None, "disable_power_off": False, "instance_name": None,
        "created_at": isoformat(node.created_at), "updated_at": isoformat(node.updated_at),
        "links": links(base, "nodes", node.id),
        "ports": [{"href": f"{base}/baremetal/v1/nodes/{node.id}/ports", "rel": "self"}],
        "states": [{"href": f"{base}/baremetal/v1/nodes/{node.id}/states", "rel": "self"}],
    }
    if fields is None:
        return full
    return {k: v for k, v in full.items() if k in fields or k == "links"}


def states_view(node: Node) -> dict[str, Any]:
    view = node_view(node, "", {"power_state", "target_power_state", "provision_state",
                                "target_provision_state", "provision_updated_at",
                                "last_error", "console_enabled"})
    view.pop("links")
    return {**view, "raid_config": {}, "target_raid_config": {}, "boot_mode": None,
            "secure_boot": None}
