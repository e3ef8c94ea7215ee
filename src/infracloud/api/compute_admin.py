"""Compute v2.1's admin views of the compute hosts (shared/specs/openstack-api.md §2), in Nova
2.1's shapes: hypervisors (list, detail, show, statistics, search and servers by hostname
pattern), compute services (list, enable, disable), availability zones (list and detail) and
host aggregates (none here). The hosts are the ones their agents registered."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import reply
from infracloud.api.compute_admin_models import ServiceIn
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.compute.hypervisors import HostServer, Hypervisors, int_id
from infracloud.core.errors import BadRequest, NotFound
from infracloud.site.services import Services
from infracloud.site.tenant_usage import nova_time
from infracloud.store.models import Host

router = APIRouter(prefix="/compute", route_class=JSONRoute)
HYPERVISOR_TYPES = {"libvirt": "QEMU"}  # what Nova's libvirt driver reports; others as named
BINARY = "nova-compute"


def _state(h: Host) -> str:
    return "up" if h.state == "up" else "down"


def _status(h: Host) -> str:
    return "enabled" if h.enabled else "disabled"


# ---- hypervisors --------------------------------------------------------------------------

def _hypervisor(h: Host, running: int, detail: bool,
                servers: list[HostServer] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": int_id(h.id), "hypervisor_hostname": h.name,
                           "state": _state(h), "status": _status(h)}
    if detail:
        free_disk = h.disk_gb - h.used_disk_gb - h.reserved_disk_gb
        out.update({
            "hypervisor_type": HYPERVISOR_TYPES.get(h.driver, h.driver),
            "hypervisor_version": 1000, "host_ip": None,
            "service": {"host": h.name, "id": int_id(h.id),
                        "disabled_reason": h.disabled_reason},
            "vcpus": h.vcpus, "memory_mb": h.ram_mb, "local_gb": h.disk_gb,
            "vcpus_used": h.used_vcpus,
            "memory_mb_used": h.used_ram_mb + h.reserved_ram_mb,
            "local_gb_used": h.used_disk_gb + h.reserved_disk_gb,
            "free_ram_mb": h.ram_mb - h.used_ram_mb - h.reserved_ram_mb,
            "free_disk_gb": free_disk, "current_workload": 0, "running_vms": running,
            "disk_available_least": free_disk, "cpu_info": "{}"})
    if servers:  # 2.1 leaves the key out for a host without servers
        out["servers"] = [{"uuid": s.uuid, "name": s.name} for s in servers]
    return out


def _hypervisors(services: Services, detail: bool) -> JSONResponse:
    view = Hypervisors(services.db)
    hosts, running = view.hosts(), view.running()
    return reply({"hypervisors": [_hypervisor(h, running.get(h.id, 0), detail)
                                  for h in hosts]})


@router.get("/v2.1/os-hypervisors", dependencies=[policy("compute:hypervisor:list")])
def list_hypervisors(services: ServicesDep) -> JSONResponse:
    return _hypervisors(services, detail=False)


@router.get("/v2.1/os-hypervisors/detail", dependencies=[policy("compute:hypervisor:list")])
def list_hypervisors_detail(services: ServicesDep) -> JSONResponse:
    return _hypervisors(services, detail=True)


@router.get("/v2.1/os-hypervisors/statistics",
            dependencies=[policy("compute:hypervisor:statistics")])
def hypervisor_statistics(services: ServicesDep) -> JSONResponse:
    view = Hypervisors(services.db)
    hosts, running = view.hosts(), view.running()
    each = [_hypervisor(h, running.get(h.id, 0), True) for h in hosts]
    keys = ("vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used",
            "free_ram_mb", "free_disk_gb", "current_workload", "running_vms",
            "disk_available_least")
    return reply({"hypervisor_statistics": {"count": len(each), **{
        k: sum(int(h[k]) for h in each) for k in keys}}})


def _one(services: Services, hypervisor_id: str) -> Host:
    host = Hypervisors(services.db).by_int_id(hypervisor_id)
    if host is None:  # 2.1's ids are integers: anything else is not found either
        raise NotFound(f"Hypervisor with ID '{hypervisor_id}' could not be found.")
    return host


@router.get("/v2.1/os-hypervisors/{hypervisor_id}",
            dependencies=[policy("compute:hypervisor:show")])
def show_hypervisor(services: ServicesDep, hypervisor_id: str) -> JSONResponse:
    host = _one(services, hypervisor_id)
    running = Hypervisors(services.db).running([host.id]).get(host.id, 0)
    return reply({"hypervisor": _hypervisor(host, running, True)})


@router.get("/v2.1/os-hypervisors/{hypervisor_id}/uptime",
            dependencies=[policy("compute:hypervisor:show")])
def hypervisor_uptime(services: ServicesDep, hypervisor_id: str) -> JSONResponse:
    """Nova answers 501 for drivers that cannot tell; the agents do not report it."""
    _one(services, hypervisor_id)
    message = "The hosts' agents do not report their uptime."
    return reply({"notImplemented": {"code": 501, "message": message}}, 501)


def _matching(services: Services, pattern: str) -> list[Host]:
    hosts = Hypervisors(services.db).hosts(pattern)
    if not hosts:
        raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    return hosts


@router.get("/v2.1/os-hypervisors/{hostname_pattern}/search",
            dependencies=[policy("compute:hypervisor:list")])
def search_hypervisors(services: ServicesDep, hostname_pattern: str) -> JSONResponse:
    return reply({"hypervisors": [_hypervisor(h, 0, False)
                                  for h in _matching(services, hostname_pattern)]})


@router.get("/v2.1/os-hypervisors/{hostname_pattern}/servers",
            dependencies=[policy("compute:hypervisor:servers")])
def hypervisor_servers(services: ServicesDep, hostname_pattern: str) -> JSONResponse:
    hosts = _matching(services, hostname_pattern)
    on = Hypervisors(services.db).servers([h.id for h in hosts])
    return reply({"hypervisors": [_hypervisor(h, 0, False, on.get(h.id)) for h in hosts]})


# ---- compute services: one nova-compute per host -------------------------------------------

def _service(h: Host) -> dict[str, Any]:
    """2.1's shape: no `forced_down` (2.11 added it)."""
    return {"id": int_id(h.id), "binary": BINARY, "host": h.name,
            "zone": h.availability_zone, "status": _status(h), "state": _state(h),
            "updated_at": nova_time(h.last_heartbeat), "disabled_reason": h.disabled_reason}


@router.get("/v2.1/os-services", dependencies=[policy("compute:service:list")])
def list_services(services: ServicesDep, request: Request) -> JSONResponse:
    q = request.query_params
    if q.get("binary") not in (None, BINARY):
        return reply({"services": []})
    return reply({"services": [_service(h) for h in Hypervisors(services.db).hosts()
                               if q.get("host") in (None, h.name)]})


@router.put("/v2.1/os-services/{action}", dependencies=[policy("compute:service:update")])
async def set_service(services: ServicesDep, caller: TokenDep, body: ServiceIn, action: str
                      ) -> JSONResponse:
    if action not in ("enable", "disable", "disable-log-reason"):
        raise NotFound("Unknown action")
    if action == "disable-log-reason" and not body.disabled_reason:
        raise BadRequest("Missing disabled reason field")
    if body.binary != BINARY:
        raise NotFound(f"Compute host {body.host} could not be found.")
    reason = body.disabled_reason if action == "disable-log-reason" else None
    host = await run_in_threadpool(services.hosts.set_enabled, caller.caller, body.host,
                                   action == "enable", reason)
    out: dict[str, Any] = {"host": host.name, "binary": BINARY, "status": _status(host)}
    if action == "disable-log-reason":
        out["disabled_reason"] = host.disabled_reason
    return reply({"service": out})


# ---- availability zones and aggregates ----------------------------------------------------

@router.get("/v2.1/os-availability-zone", dependencies=[policy("compute:availability_zone:list")])
def availability_zones(services: ServicesDep) -> JSONResponse:
    return reply({"availabilityZoneInfo": [
        {"zoneName": z, "zoneState": {"available": True}, "hosts": None}
        for z in services.servers.availability_zones()]})


@router.get("/v2.1/os-availability-zone/detail",
            dependencies=[policy("compute:availability_zone:detail")])
def availability_zones_detail(services: ServicesDep) -> JSONResponse:
    """Each zone's hosts and their nova-compute service: `active` when enabled, `available`
    when up; a zone whose hosts are all disabled is not available (Nova's view)."""
    by_zone: dict[str, list[Host]] = {z: [] for z in services.servers.availability_zones()}
    for h in Hypervisors(services.db).hosts():
        by_zone.setdefault(h.availability_zone, []).append(h)
    zones = []
    for zone, hosts in sorted(by_zone.items()):
        zones.append({"zoneName": zone,
                      "zoneState": {"available": not hosts or any(h.enabled for h in hosts)},
                      "hosts": {h.name: {BINARY: {
                          "available": h.state == "up", "active": h.enabled,
                          "updated_at": nova_time(h.last_heartbeat)}} for h in hosts} or None})
    return reply({"availabilityZoneInfo": zones})


@router.get("/v2.1/os-aggregates", dependencies=[policy("compute:aggregate:list")])
def list_aggregates() -> JSONResponse:
    """No host aggregates here (`openstack hypervisor show` lists them)."""
    return reply({"aggregates": []})
