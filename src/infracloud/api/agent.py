"""The agents' API (infracloud's own, not OpenStack's). Agents authenticate with the site's
agent token (`X-Agent-Token`), register their host, long-poll for the servers it should run
and report what they have. Every request counts as a heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from infracloud.api.deps import ServicesDep
from infracloud.compute.hosts import Registration, Report
from infracloud.core.errors import BadRequest, Forbidden, ServiceUnavailable, Unauthorized
from infracloud.ops import context
from infracloud.site.services import Services
from infracloud.store.models import Instance

router = APIRouter(prefix="/agent/v1")
MAX_WAIT = 30.0
RECHECK = 5.0  # re-read the generation this often while waiting (changes by other controllers)


def _check(services: Services, token: str | None) -> None:
    expected = services.agent_token
    if expected is None:
        raise Forbidden("This controller accepts no agents: compute.agent_token_file is not set.")
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("A valid X-Agent-Token is required.")
    context.identify("agent")


AgentToken = Annotated[str | None, Header(alias="X-Agent-Token")]


class HostIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=255)
    driver: str = Field(min_length=1, max_length=32)
    vcpus: int = Field(ge=1)
    ram_mb: int = Field(ge=1)
    disk_gb: int = Field(ge=0)
    availability_zone: str = "nova"
    reserved_vcpus: int = Field(0, ge=0)
    reserved_ram_mb: int = Field(0, ge=0)
    reserved_disk_gb: int = Field(0, ge=0)


class ReportItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    state: str = Field(pattern="^(running|failed|absent)$")
    fault: str | None = None
    console: str | None = None


class ReportIn(BaseModel):
    instances: list[ReportItem]


def hostname(name: str) -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return host[:63] or "server"


def spec(services: Services, i: Instance) -> dict[str, Any]:
    net = services.network
    subnet = net.subnet
    return {
        "id": i.id, "name": i.name, "state": i.state, "vcpus": i.vcpus, "ram_mb": i.ram_mb,
        "disk_gb": i.disk_gb, "image_id": i.image_id,
        "network": {"ip": i.ip_address, "prefix": net.prefix, "mac": i.mac_address,
                    "gateway": subnet.gateway_ip if subnet else None,
                    "dns": list(subnet.dns or []) if subnet else [],
                    "network_id": net.network.id if net.network else None},
        "config": {"hostname": hostname(i.name), "availability_zone": i.availability_zone,
                   "project_id": i.project_id, "meta": dict(i.metadata_ or {}),
                   "public_keys": {i.key_name: i.key_data} if i.key_name and i.key_data
                   else {}, "user_data": i.user_data},
    }


@router.post("/hosts")
def register(services: ServicesDep, body: HostIn, token: AgentToken = None) -> dict[str, Any]:
    _check(services, token)
    host = services.hosts.register(Registration(**body.model_dump()))
    c = services.config.compute
    return {"host": {"id": host.id, "name": host.name}, "heartbeat_seconds":
            c.heartbeat_seconds, "poll_seconds": min(MAX_WAIT, c.host_down_after / 3)}


class JoinIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    join_token: str = Field(min_length=16, max_length=256)
    host: HostIn | None = None


@router.post("/join")
def join(services: ServicesDep, body: JoinIn) -> dict[str, Any]:
    """A machine the conductor deployed trades its one-time join token (from its deploy
    media) for the site's agent token; a compute machine registers as a host named after it,
    with the capacity it found. Asking again (an agent restart) answers the same."""
    node = services.nodes.joining(body.join_token)
    out: dict[str, Any] = {"node": {"id": node.id, "name": node.name}, "host": None}
    host_name = None
    if node.role == "compute":
        if body.host is None:
            raise BadRequest("A compute machine joins with its host's capacity ('host').")
        if services.agent_token is None:
            raise Forbidden("This controller accepts no agents: compute.agent_token_file is "
                            "not set.")
        host_name = node.name or node.id
        host = services.hosts.register(Registration(**{**body.host.model_dump(),
                                                       "name": host_name}))
        c = services.config.compute
        out.update(host={"id": host.id, "name": host.name}, agent_token=services.agent_token,
                   heartbeat_seconds=c.heartbeat_seconds,
                   poll_seconds=min(MAX_WAIT, c.host_down_after / 3))
    services.nodes.joined(node.id, host_name)
    return out


@router.get("/hosts/{host_id}/desired")
async def desired(services: ServicesDep, host_id: str, generation: int = -1,
                  wait: float = 0, token: AgentToken = None) -> dict[str, Any]:
    """Answers at once if the host's generation differs from `generation`, else when it
    changes or after `wait` seconds."""
    _check(services, token)
    hosts = services.hosts
    await run_in_threadpool(hosts.heartbeat, host_id)
    deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
    while True:
        event = services.signals.event(host_id)
        event.clear()
        gen = await run_in_threadpool(hosts.generation, host_id)
        left = deadline - time.monotonic()
        if gen != generation or left <= 0 or services.signals.closed:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(RECHECK, left))
    if services.signals.closed:  # back off and come back to the next controller run
        raise ServiceUnavailable("The controller is stopping.")
    gen, rows, removing = await run_in_threadpool(hosts.desired, host_id)
    return {"generation": gen, "instances": [spec(services, r) for r in rows],
            "remove": removing}


@router.post("/hosts/{host_id}/report")
def report(services: ServicesDep, host_id: str, body: ReportIn,
           token: AgentToken = None) -> dict[str, Any]:
    _check(services, token)
    return {"generation": services.hosts.report(
        host_id, [Report(**i.model_dump()) for i in body.instances])}
