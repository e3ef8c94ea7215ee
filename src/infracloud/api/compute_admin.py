"""Compute v2.1's admin views (shared/specs/openstack-api.md §2): availability zones, quota
sets, hypervisors and compute services, answered from the compute hosts as their agents
registered them."""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import reply
from infracloud.api.compute_models import QuotaSetBody, ServiceIn
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.core.clock import isoformat
from infracloud.core.errors import BadRequest
from infracloud.site.services import Services

router = APIRouter(prefix="/compute", route_class=JSONRoute)


@router.get("/v2.1/os-availability-zone", dependencies=[policy("compute:availability_zone:list")])
def availability_zones(services: ServicesDep, caller: TokenDep) -> JSONResponse:
    return reply({"availabilityZoneInfo": [
        {"zoneName": z, "zoneState": {"available": True}, "hosts": None}
        for z in services.servers.availability_zones()]})


def _quota_set(project_id: str, lim: dict[str, int], used: Any | None) -> dict[str, Any]:
    values = {"instances": lim["instances"], "cores": lim["cores"], "ram": lim["ram"],
              "key_pairs": lim["key_pairs"], "metadata_items": 128, "server_groups": 10,
              "server_group_members": 10, "injected_files": 5,
              "injected_file_content_bytes": 10240, "injected_file_path_bytes": 255}
    if used is None:
        return {"id": project_id, **values}
    in_use = {"instances": used.instances, "cores": used.cores, "ram": used.ram}
    return {"id": project_id, **{k: {"limit": v, "in_use": in_use.get(k, 0), "reserved": 0}
                                 for k, v in values.items()}}


@router.get("/v2.1/os-quota-sets/{project_id}", dependencies=[policy("compute:quota:show")])
def show_quota(services: ServicesDep, caller: TokenDep, project_id: str) -> JSONResponse:
    lim, _ = services.quotas.show(project_id)
    return reply({"quota_set": _quota_set(project_id, lim, None)})


@router.get("/v2.1/os-quota-sets/{project_id}/detail", dependencies=[policy("compute:quota:show")])
def show_quota_detail(services: ServicesDep, caller: TokenDep, project_id: str
                      ) -> JSONResponse:
    lim, used = services.quotas.show(project_id)
    return reply({"quota_set": _quota_set(project_id, lim, used)})


@router.get("/v2.1/os-quota-sets/{project_id}/defaults",
            dependencies=[policy("compute:quota:defaults")])
def show_quota_defaults(services: ServicesDep, caller: TokenDep, project_id: str
                        ) -> JSONResponse:
    d = services.config.compute.quota
    lim = {"instances": d.instances, "cores": d.cores, "ram": d.ram_mb,
           "key_pairs": d.key_pairs}
    return reply({"quota_set": _quota_set(project_id, lim, None)})


@router.put("/v2.1/os-quota-sets/{project_id}", dependencies=[policy("compute:quota:update")])
async def update_quota(services: ServicesDep, caller: TokenDep, body: QuotaSetBody,
                       project_id: str) -> JSONResponse:
    await run_in_threadpool(services.quotas.set, caller.caller, project_id,
                            body.quota_set.limits())
    lim, _ = services.quotas.show(project_id)
    return reply({"quota_set": _quota_set(project_id, lim, None)})


# ---- hypervisors (admin): the compute hosts ------------------------------------------------

def _int_id(h: Any) -> int:
    """Hypervisors and services have integer ids at 2.1: a stable hash of the host's id."""
    return zlib.crc32(h.id.encode())


def _hypervisor(h: Any, running: int, detail: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"id": _int_id(h), "hypervisor_hostname": h.name,
                           "state": h.state, "status": "enabled" if h.enabled else "disabled"}
    if detail:
        out.update({
            "vcpus": h.vcpus, "vcpus_used": h.used_vcpus, "memory_mb": h.ram_mb,
            "memory_mb_used": h.used_ram_mb + h.reserved_ram_mb, "local_gb": h.disk_gb,
            "local_gb_used": h.used_disk_gb + h.reserved_disk_gb,
            "free_ram_mb": h.ram_mb - h.used_ram_mb - h.reserved_ram_mb,
            "free_disk_gb": h.disk_gb - h.used_disk_gb - h.reserved_disk_gb,
            "running_vms": running,
            "hypervisor_type": h.driver, "hypervisor_version": 1, "host_ip": None,
            "current_workload": 0, "disk_available_least": h.disk_gb - h.used_disk_gb,
            "cpu_info": "{}", "service": {"host": h.name, "id": _int_id(h),
                                          "disabled_reason": h.disabled_reason}})
    return out


def _hypervisors(services: Services, caller: TokenDep, detail: bool) -> JSONResponse:
    hosts = services.hosts.list_hosts()
    counts = services.hosts.instance_counts()
    return reply({"hypervisors": [_hypervisor(h, counts.get(h.id, 0), detail)
                                  for h in hosts]})


@router.get("/v2.1/os-hypervisors", dependencies=[policy("compute:hypervisor:list")])
def list_hypervisors(services: ServicesDep, caller: TokenDep) -> JSONResponse:
    return _hypervisors(services, caller, detail=False)


@router.get("/v2.1/os-hypervisors/detail", dependencies=[policy("compute:hypervisor:list")])
def list_hypervisors_detail(services: ServicesDep, caller: TokenDep) -> JSONResponse:
    return _hypervisors(services, caller, detail=True)


# ---- compute services (admin): enable / disable hosts ----------------------------------------

def _service(h: Any) -> dict[str, Any]:
    return {"id": _int_id(h), "binary": "nova-compute", "host": h.name,
            "zone": h.availability_zone, "status": "enabled" if h.enabled else "disabled",
            "state": h.state, "updated_at": isoformat(h.last_heartbeat, micro=True),
            "disabled_reason": h.disabled_reason, "forced_down": False}


@router.get("/v2.1/os-services", dependencies=[policy("compute:service:list")])
def list_services(services: ServicesDep, caller: TokenDep, request: Request) -> JSONResponse:
    host = request.query_params.get("host")
    return reply({"services": [_service(h) for h in services.hosts.list_hosts()
                               if host in (None, h.name)]})


@router.put("/v2.1/os-services/{action}", dependencies=[policy("compute:service:update")])
async def set_service(services: ServicesDep, caller: TokenDep, body: ServiceIn, action: str
                      ) -> JSONResponse:
    if action not in ("enable", "disable", "disable-log-reason"):
        raise BadRequest(f"Unknown action: {action}")
    host = await run_in_threadpool(services.hosts.set_enabled, caller.caller, body.host,
                                   action == "enable", body.disabled_reason)
    out = {"host": host.name, "binary": "nova-compute",
           "status": "enabled" if host.enabled else "disabled"}
    if host.disabled_reason:
        out["disabled_reason"] = host.disabled_reason
    return reply({"service": out})
