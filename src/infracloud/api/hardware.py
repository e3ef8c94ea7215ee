"""infracloud's own hardware endpoints: the deploy media that BMCs fetch (no token: a BMC has
none; the media id is a one-time secret that stops working once the machine has joined), and
the capacity report."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from infracloud.agent import configdrive
from infracloud.api.deps import ServicesDep, policy
from infracloud.core.errors import NotFound
from infracloud.hardware.capacity import capacity
from infracloud.site.services import Services

router = APIRouter(prefix="/hardware/v1")


def join_config(services: Services, media_id: str) -> dict[str, Any]:
    node, token = services.nodes.media(media_id)
    tls = services.config.tls
    return {"controller": services.base_url, "join_token": token, "name": node.name or node.id,
            "node": node.id, "role": node.role, "site": services.config.site,
            "driver": services.config.hardware.deploy_agent_driver,
            "cacert": tls.ca.read_text() if tls and tls.ca else None}


def cloud_config(config: dict[str, Any]) -> bytes:
    """user_data for cloud-init in the deploy image: write the join config, start the agent."""
    doc = {"write_files": [{"path": "/etc/infracloud/join.json", "permissions": "0600",
                            "content": json.dumps(config)}],
           "runcmd": [["infracloud", "agent", "--join", "/etc/infracloud/join.json"]]}
    return ("#cloud-config\n" + json.dumps(doc, indent=1) + "\n").encode()


def build_iso(config: dict[str, Any]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deploy.iso"
        configdrive.build(path, meta_data=configdrive.meta_data(
            uuid=config["node"], name=config["name"], project_id="", hostname=config["name"]),
            network_data={"links": [], "networks": [], "services": []},
            user_data=cloud_config(config))
        return path.read_bytes()


@router.get("/media/{media_file}")
async def media(services: ServicesDep, media_file: str) -> Response:
    media_id, dot, kind = media_file.rpartition(".")
    if not dot or kind not in ("iso", "json"):
        raise NotFound("No deploy media with this id.")
    config = await run_in_threadpool(join_config, services, media_id)
    if kind == "json":
        return Response(json.dumps(config), media_type="application/json",
                        headers={"Cache-Control": "no-store"})
    data = await run_in_threadpool(build_iso, config)
    return Response(data, media_type="application/x-iso9660-image",
                    headers={"Cache-Control": "no-store"})


@router.get("/capacity", dependencies=[policy("hardware:capacity")])
def capacity_report(services: ServicesDep, flavor: str = "ci.8g") -> dict[str, Any]:
    return {"capacity": capacity(services.db, services.config.site, flavor).as_dict()}
