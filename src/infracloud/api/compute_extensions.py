"""Compute v2.1's extension list (`GET /extensions`, `/extensions/{alias}`): Nova answers a
fixed list; this one names the extensions whose behaviour this cloud serves, in Nova's words."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import reply
from infracloud.api.deps import policy
from infracloud.core.errors import NotFound

router = APIRouter(prefix="/compute", route_class=JSONRoute)
# (alias, name, description)
SERVED = (
    ("OS-DCF", "DiskConfig", "Disk Management Extension."),
    ("OS-EXT-AZ", "ExtendedAvailabilityZone", "Extended Availability Zone support."),
    ("OS-EXT-IPS", "ExtendedIps", "Adds type parameter to the ip list."),
    ("OS-EXT-IPS-MAC", "ExtendedIpsMac", "Adds mac address parameter to the ip list."),
    ("OS-EXT-SRV-ATTR", "ExtendedServerAttributes", "Extended Server Attributes support."),
    ("OS-EXT-STS", "ExtendedStatus", "Extended Status support."),
    ("OS-FLV-DISABLED", "FlavorDisabled", "Support to show the disabled status of a flavor."),
    ("OS-FLV-EXT-DATA", "FlavorExtraData", "Provide additional data for flavors."),
    ("OS-SRV-USG", "ServerUsage", "Adds launched_at and terminated_at on Servers."),
    ("os-availability-zone", "AvailabilityZone",
     "1. Add availability_zone to the Create Server API. 2. Add availability zones "
     "describing."),
    ("os-config-drive", "ConfigDrive", "Config Drive Extension."),
    ("os-console-output", "ConsoleOutput", "Console log output support, with tailing ability."),
    ("os-extended-hypervisors", "ExtendedHypervisors", "Extended hypervisors support."),
    ("os-extended-quotas", "ExtendedQuotas", "Adds ability for admins to delete quota and "
     "optionally force the update Quota command."),
    ("os-extended-services", "ExtendedServices", "Extended services support."),
    ("os-extended-volumes", "ExtendedVolumes", "Extended Volumes support."),
    ("os-flavor-extra-specs", "FlavorExtraSpecs", "Flavors extra specs support."),
    ("os-flavor-manage", "FlavorManage", "Flavor create/delete API support."),
    ("os-flavor-rxtx", "FlavorRxtx", "Support to show the rxtx status of a flavor."),
    ("os-flavor-swap", "FlavorSwap", "Support to show the swap status of a flavor."),
    ("os-hypervisor-status", "HypervisorStatus", "Show hypervisor status."),
    ("os-hypervisors", "Hypervisors", "Admin-only hypervisor administration."),
    ("os-keypairs", "Keypairs", "Keypair Support."),
    ("os-quota-class-sets", "QuotaClasses", "Quota classes management support."),
    ("os-quota-sets", "Quotas", "Quotas management support."),
    ("os-services", "Services", "Services support."),
    ("os-simple-tenant-usage", "SimpleTenantUsage", "Simple tenant usage extension."),
    ("os-used-limits", "UsedLimits", "Provide data on limited resources that are being used."),
    ("os-user-data", "UserData", "Add user_data to the Create Server API."),
)
EXTENSIONS = [{"alias": alias, "name": name, "description": description, "links": [],
               "namespace": "http://docs.openstack.org/compute/ext/fake_xml",
               "updated": "2014-12-03T00:00:00Z"} for alias, name, description in SERVED]


@router.get("/v2.1/extensions", dependencies=[policy("compute:extension:list")])
def list_extensions() -> JSONResponse:
    return reply({"extensions": EXTENSIONS})


@router.get("/v2.1/extensions/{alias}", dependencies=[policy("compute:extension:list")])
def show_extension(alias: str) -> JSONResponse:
    found = next((e for e in EXTENSIONS if e["alias"] == alias), None)
    if found is None:
        raise NotFound(f"Extension {alias} could not be found.")
    return reply({"extension": found})
