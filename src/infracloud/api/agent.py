"""The agents' API (infracloud's own, not OpenStack's). Agents authenticate with their host's
credential (`X-Agent-Token`; compute.credentials), register their host, long-poll for the servers
it should run and report what they have, for their own host only. Every request counts as a
heartbeat. A deployed machine joins once with its one-time join token and gets its credential.
A host reads the images of the servers it should run, and no other (`/images/{id}`)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from infracloud.api.bodies import JSONRoute
from infracloud.api.deps import ServicesDep, get_services
from infracloud.api.image import data_response
from infracloud.api.limits import Seconds
from infracloud.compute.credentials import HANDOVER_HEADER, AgentAuth
from infracloud.compute.hosts import Registration, Report
from infracloud.compute.unknown import Unknown
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, ServiceUnavailable
from infracloud.ops import context
from infracloud.site.services import Services
from infracloud.store.models import Instance

MAX_WAIT = 30.0
# re-read the generation this often while waiting: the fallback for a change no one signalled
# (another controller's, heard of through PostgreSQL's NOTIFY unless its listener was away)
RECHECK = 5.0


AgentToken = Annotated[str | None, Header(alias="X-Agent-Token")]


def _agent(services: ServicesDep, request: Request, response: Response,
           token: AgentToken = None) -> AgentAuth:
    """Checked before the body is read (_CredentialsFirst). A rotated credential's successor
    rides on the answer."""
    auth: AgentAuth = getattr(request.state, "agent_auth", None) or \
        services.credentials.authenticate(token)
    if auth.successor:
        response.headers[HANDOVER_HEADER] = auth.successor
    context.identify("agent")
    return auth


AgentDep = Annotated[AgentAuth, Depends(_agent)]


class _CredentialsFirst(JSONRoute):
    """On the routes that take an agent's credential, it is checked before FastAPI reads and
    parses the body: a caller without one gets a 401, never a 400 that lists the fields."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()
        if not any(d.call is _agent for d in self.dependant.dependencies):
            return handler

        async def checked(request: Request) -> Response:
            credentials = get_services(request).credentials
            request.state.agent_auth = await run_in_threadpool(
                credentials.authenticate, request.headers.get("X-Agent-Token"))
            response: Response = await handler(request)
            return response

        return checked


router = APIRouter(prefix="/agent/v1", route_class=_CredentialsFirst)


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
    state: str = Field(pattern="^(running|stopped|failed|absent)$")
    fault: str | None = Field(None, max_length=4000)
    console: str | None = None
    task: str | None = Field(None, max_length=36)  # the server action this report ends


class UnknownItem(BaseModel):
    """A server the agent runs that the controller listed neither to run nor to remove, with
    what the agent knows of it (compute.unknown)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=36)
    name: str | None = Field(None, max_length=255)
    project_id: str | None = Field(None, max_length=32)
    user_id: str | None = Field(None, max_length=32)
    flavor_id: str | None = Field(None, max_length=64)
    image_id: str | None = Field(None, max_length=36)
    ip: str | None = Field(None, max_length=45)
    mac: str | None = Field(None, max_length=17)
    vcpus: int | None = Field(None, ge=0)
    ram_mb: int | None = Field(None, ge=0)
    disk_gb: int | None = Field(None, ge=0)
    key_name: str | None = Field(None, max_length=255)
    key_data: str | None = Field(None, max_length=16384)
    availability_zone: str | None = Field(None, max_length=255)
    meta: dict[str, str] = Field(default_factory=dict, max_length=128)
    launched_at: str | None = Field(None, max_length=64)


class ReportIn(BaseModel):
    instances: list[ReportItem]
    # every server it runs unknown to the controller (absent: the agent does not say)
    unknown: list[UnknownItem] | None = Field(None, max_length=10000)


def hostname(name: str) -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return host[:63] or "server"


def spec(services: Services, i: Instance) -> dict[str, Any]:
    net = services.network
    subnet = net.subnet
    return {
        "id": i.id, "name": i.name, "state": i.state, "vcpus": i.vcpus, "ram_mb": i.ram_mb,
        "task": {"id": i.task_id, **(i.task_args or {})} if i.task_id else None,
        "disk_gb": i.disk_gb, "image_id": i.image_id, "flavor_id": i.flavor_id,
        "user_id": i.user_id,
        "network": {"ip": i.ip_address, "prefix": net.prefix, "mac": i.mac_address,
                    "gateway": subnet.gateway_ip if subnet else None,
                    "dns": list(subnet.dns or []) if subnet else [],
                    "network_id": net.network.id if net.network else None},
        "config": {"hostname": hostname(i.name), "availability_zone": i.availability_zone,
                   "project_id": i.project_id, "meta": dict(i.metadata_ or {}),
                   "public_keys": {i.key_name: i.key_data} if i.key_name and i.key_data
                   else {}, "user_data": i.user_data},
    }


def _timings(services: Services) -> dict[str, float]:
    c = services.config.compute
    return {"heartbeat_seconds": c.heartbeat_seconds,
            "poll_seconds": min(MAX_WAIT, c.host_down_after / 3)}


@router.post("/hosts")
def register(services: ServicesDep, body: HostIn, agent: AgentDep) -> dict[str, Any]:
    host = services.credentials.register(services.hosts, Registration(**body.model_dump()),
                                         agent)
    return {"host": {"id": host.id, "name": host.name}, **_timings(services)}


class JoinIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    join_token: str = Field(min_length=16, max_length=256)
    host: HostIn | None = None


@router.post("/join")
def join(services: ServicesDep, body: JoinIn) -> dict[str, Any]:
    """A machine the conductor deployed trades its one-time join token (from its deploy
    media) for its own credential; a compute machine registers as a host named after it, with
    the capacity it found. The join token works once: the agent keeps its credential."""
    node = services.nodes.joining(body.join_token)
    if node.role == "compute" and body.host is None:
        raise BadRequest("A compute machine joins with its host's capacity ('host').")
    host_name = (node.name or node.id) if node.role == "compute" else None
    node = services.nodes.joined(body.join_token, host_name)
    out: dict[str, Any] = {"node": {"id": node.id, "name": node.name}, "host": None}
    if host_name is not None and body.host is not None:
        host, secret = services.credentials.enrol(
            services.hosts, Registration(**{**body.host.model_dump(), "name": host_name}))
        out.update(host={"id": host.id, "name": host.name}, agent_token=secret,
                   **_timings(services))
    return out


@router.get("/hosts/{host_id}/desired")
async def desired(services: ServicesDep, host_id: str, agent: AgentDep,
                  generation: Annotated[int, Query(ge=-1)] = -1, wait: Seconds = 0
                  ) -> dict[str, Any]:
    """Answers at once if the host's generation differs from `generation`, else when it
    changes or after `wait` seconds."""
    agent.may_use(host_id)
    hosts = services.hosts
    await run_in_threadpool(hosts.heartbeat, host_id)
    deadline = time.monotonic() + min(wait, MAX_WAIT)
    with services.signals.waiting(host_id) as event:
        while True:
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
           agent: AgentDep) -> dict[str, Any]:
    agent.may_use(host_id)
    unknown = None if body.unknown is None else [Unknown(**u.model_dump())
                                                 for u in body.unknown]
    return {"generation": services.hosts.report(
        host_id, [Report(**i.model_dump()) for i in body.instances], unknown)}


def _image_reader(services: Services, agent: AgentAuth, host_id: str, image_id: str) -> Caller:
    """Who reads the image for the host: the project of a server the host should run that
    boots it (403 when there is none), with a reader's rights only."""
    agent.may_use(host_id)
    project = services.hosts.image_user(host_id, image_id)
    return Caller(f"host:{host_id}", project, frozenset({"reader"}))


@router.get("/hosts/{host_id}/images/{image_id}")
def image(services: ServicesDep, host_id: str, image_id: str,
          agent: AgentDep) -> dict[str, Any]:
    """What the agent verifies a download against (infracloud.agent.image_fetch)."""
    found = services.images.get(_image_reader(services, agent, host_id, image_id), image_id)
    return {"id": found.id, "status": found.status, "size": found.size,
            "disk_format": found.disk_format, "os_hash_algo": found.os_hash_algo,
            "os_hash_value": found.os_hash_value}


@router.get("/hosts/{host_id}/images/{image_id}/file")
def image_file(services: ServicesDep, host_id: str, image_id: str, agent: AgentDep,
               range_: Annotated[str | None, Header(alias="range")] = None) -> Response:
    """The image's data, streamed; a Range continues a dropped download (206)."""
    reader = _image_reader(services, agent, host_id, image_id)
    return data_response(services.image_data.download(reader, image_id, range_))


@router.put("/hosts/{host_id}/snapshots/{image_id}", status_code=204)
async def snapshot(services: ServicesDep, host_id: str, image_id: str, agent: AgentDep,
                   request: Request) -> Response:
    """A server's snapshot (createImage) from its host: the data of the one image the
    controller asked this host for, uploaded into the server's project as its member would
    (size limit and quota as for any upload)."""
    agent.may_use(host_id)
    project = await run_in_threadpool(services.hosts.snapshot_owner, host_id, image_id)
    uploader = Caller(f"host:{host_id}", project, frozenset({"member", "reader"}))
    data = services.image_data
    size = request.headers.get("content-length")
    ticket = await run_in_threadpool(data.begin, uploader, image_id,
                                     int(size) if size and size.isdigit() else None)
    try:
        await data.receive(ticket, request.stream())
    except ClientDisconnect:
        raise BadRequest("The agent went away during the upload; the image is killed.") from None
    return Response(status_code=204)
