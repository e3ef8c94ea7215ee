"""Block Storage v3, just enough for the SDK's and nodepool's quota code
(shared/specs/openstack-api.md §5): this cloud has no volumes yet."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.core.errors import NotFound
from infracloud.identity.policy import enforce

router = APIRouter(prefix="/volume")
LIMITS = {"maxTotalVolumes": -1, "maxTotalVolumeGigabytes": -1, "totalVolumesUsed": 0,
          "totalGigabytesUsed": 0, "maxTotalSnapshots": 0, "totalSnapshotsUsed": 0,
          "maxTotalBackups": 0, "maxTotalBackupGigabytes": 0, "totalBackupsUsed": 0,
          "totalBackupGigabytesUsed": 0}


@router.get("/v3")
@router.get("/v3/")
@router.get("/")
@router.get("")
def versions(services: ServicesDep) -> dict[str, Any]:
    return {"versions": [{"id": "v3.0", "status": "CURRENT", "version": "3.70",
                          "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
                          "links": [{"rel": "self",
                                     "href": f"{services.base_url}/volume/v3/"}]}]}


@router.get("/v3/{project_id}/limits", dependencies=[policy("volume:limits")])
def limits(caller: TokenDep, project_id: str) -> dict[str, Any]:
    return {"limits": {"rate": [], "absolute": dict(LIMITS)}}


@router.get("/v3/{project_id}/volumes/detail", dependencies=[policy("volume:get")])
@router.get("/v3/{project_id}/volumes", dependencies=[policy("volume:get")])
def volumes(caller: TokenDep, project_id: str) -> dict[str, Any]:
    return {"volumes": []}


@router.get("/v3/{project_id}/volumes/{volume_id}", dependencies=[policy("volume:get")])
def volume(caller: TokenDep, project_id: str, volume_id: str) -> dict[str, Any]:
    raise NotFound(f"Volume {volume_id} could not be found.")


@router.get("/v3/{project_id}/os-quota-sets/{target}", dependencies=[policy("volume:quota:show")])
def quota_set(caller: TokenDep, project_id: str, target: str) -> dict[str, Any]:
    enforce(caller.caller, "volume:quota:show", project_id=target)  # and the one it shows
    return {"quota_set": {"id": target, "volumes": 0, "gigabytes": 0, "snapshots": 0,
                          "backups": 0, "backup_gigabytes": 0, "per_volume_gigabytes": -1,
                          "groups": 0}}
