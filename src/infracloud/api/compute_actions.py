"""Compute v2.1's server actions beside os-getConsoleOutput (`POST /servers/{id}/action`; the
route is compute.py's, which hands every other action here): os-stop, os-start, reboot,
rebuild, lock, unlock, createImage, os-resetState. Each has its own rule
(`compute:server:action:<name>`, identity/policy.py) on top of the route's; bodies as Nova's
schemas at 2.1; answers as Nova's: 202 with no body, but rebuild's server and createImage's
Location. A server that does not exist (or is another project's) is a 404 before anything."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal

from fastapi import Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from infracloud.api.compute_models import Metadata, Name
from infracloud.api.compute_views import server_view
from infracloud.compute.actions import ServerActions
from infracloud.core.errors import BadRequest
from infracloud.identity.auth import TokenInfo
from infracloud.identity.policy import enforce
from infracloud.site.services import Services

MAX_VERSION = "2.1"  # what the compute API advertises (compute.VERSION)
# the action's name in the body -> its rule's last part
RULE = {"os-stop": "stop", "os-start": "start", "reboot": "reboot", "rebuild": "rebuild",
        "lock": "lock", "unlock": "unlock", "createImage": "createImage",
        "os-resetState": "resetState"}


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RebootIn(_Closed):
    type: Literal["HARD", "Hard", "hard", "SOFT", "Soft", "soft"]


class RebuildIn(_Closed):
    imageRef: Annotated[str, Field(min_length=1, max_length=255)]
    name: Name | None = None
    metadata: Metadata | None = None
    adminPass: str | None = None
    preserve_ephemeral: bool | None = None
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    personality: list[Any] | None = None
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")


class CreateImageIn(_Closed):
    name: Name
    metadata: Metadata | None = None


class ResetStateIn(_Closed):
    state: Literal["active", "error"]


class LockIn(_Closed):
    locked_reason: Annotated[str, Field(max_length=255)] | None = None


def requested_version(request: Request) -> tuple[int, int]:
    """The compute microversion a request asks for, within what the API serves (no header:
    2.1; "latest" or more than the maximum: the maximum)."""
    top = tuple(int(p) for p in MAX_VERSION.split("."))
    raw = request.headers.get("OpenStack-API-Version", "")
    match = re.search(r"compute\s+(\S+)", raw) if raw else None
    asked = match.group(1) if match else request.headers.get("X-OpenStack-Nova-API-Version")
    if not asked:
        return (2, 1)
    if asked == "latest":
        return (top[0], top[1])
    try:
        major, minor = (int(p) for p in asked.split("."))
    except ValueError:
        raise BadRequest(f"API Version String {asked} is of invalid format. Must be of "
                         f"format MajorNum.MinorNum.") from None
    return min((major, minor), (top[0], top[1]))


def shows_locked(request: Request) -> bool:
    """`locked` is in a server's body from 2.9 on."""
    return requested_version(request) >= (2, 9)


def locked_filter(request: Request, admin: bool) -> bool | None:
    """`GET /servers?locked=...`: a filter for everyone from 2.73; before, Nova applies it
    for administrators only (others' unknown filters are dropped). 400 for a value that is
    not a boolean."""
    raw = request.query_params.get("locked")
    if raw is None or not (admin or requested_version(request) >= (2, 73)):
        return None
    value = raw.strip().lower()
    if value in ("1", "t", "true", "on", "y", "yes"):
        return True
    if value in ("0", "f", "false", "off", "n", "no"):
        return False
    raise BadRequest(f"Unrecognized value '{raw}', acceptable values are: '0', '1', 'f', "
                     f"'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'")


def _args(model: type[BaseModel], action: str, value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", action, *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors, body={action: value}) from None


async def perform(services: Services, token: TokenInfo, request: Request, server_id: str,
                  action: str, value: Any, headers: dict[str, str]) -> Response:
    """Carry out `action` (with its body's `value`) on the server; 400 for an action this
    cloud does not know."""
    caller = token.caller
    rule = RULE.get(action)
    services.servers.get(caller, server_id)  # 404 first, as nova does
    if rule is None:
        raise BadRequest(f"The action {action} is not supported by this cloud.")
    enforce(caller, f"compute:server:action:{rule}")
    actions = ServerActions(services.servers)
    accepted = Response(status_code=202, headers=headers)
    if action == "os-stop":
        await run_in_threadpool(actions.stop, caller, server_id)
    elif action == "os-start":
        await run_in_threadpool(actions.start, caller, server_id)
    elif action == "reboot":
        args = _args(RebootIn, action, value)
        await run_in_threadpool(actions.reboot, caller, server_id, args.type.upper() == "HARD")
    elif action == "lock":
        if value is not None:
            _args(LockIn, action, value)
        await run_in_threadpool(actions.lock, caller, server_id)
    elif action == "unlock":
        await run_in_threadpool(actions.unlock, caller, server_id)
    elif action == "os-resetState":
        args = _args(ResetStateIn, action, value)
        await run_in_threadpool(actions.reset_state, caller, server_id, args.state)
    elif action == "rebuild":
        return await _rebuild(services, actions, token, request, server_id, value, headers)
    else:
        return await _create_image(services, actions, token, server_id, value, headers)
    return accepted


async def _rebuild(services: Services, actions: ServerActions, token: TokenInfo,
                   request: Request, server_id: str, value: Any, headers: dict[str, str]
                   ) -> JSONResponse:
    args = _args(RebuildIn, "rebuild", value)
    inst = await run_in_threadpool(lambda: actions.rebuild(
        token.caller, server_id, args.imageRef, name=args.name, metadata=args.metadata))
    names = services.hosts.names({inst.host_id} if inst.host_id else set())
    body = server_view(services.base_url, inst, names.get(inst.host_id or ""),
                       token.caller.is_admin)
    body["adminPass"] = args.adminPass or secrets.token_urlsafe(12)
    if shows_locked(request):
        body["locked"] = bool(inst.locked_by)
    return JSONResponse({"server": body}, status_code=202, headers=headers)


async def _create_image(services: Services, actions: ServerActions, token: TokenInfo,
                        server_id: str, value: Any, headers: dict[str, str]) -> Response:
    """The image record (queued, owned by the server's project) is made once the server may
    be snapshotted; the host's agent uploads the data. 202 with its Location (2.1)."""
    args = _args(CreateImageIn, "createImage", value)
    caller = token.caller
    inst, driver = await run_in_threadpool(actions.snapshot_allowed, caller, server_id)
    props = {**(args.metadata or {}), "image_type": "snapshot", "instance_uuid": inst.id,
             "base_image_ref": inst.image_id or "", "user_id": inst.user_id}
    body: dict[str, Any] = {"name": args.name, "disk_format": "qcow2",
                            "container_format": "bare", "owner": inst.project_id, **props}
    # the server's project owns it (an administrator may make it for another project)
    image = await run_in_threadpool(services.images.create, caller, body)
    try:
        await run_in_threadpool(actions.snapshot, caller, server_id, image.id, driver)
    except Exception:
        await run_in_threadpool(services.images.delete, caller, image.id)
        raise
    location = f"{services.base_url}/image/v2/images/{image.id}"
    return Response(status_code=202, headers={**headers, "Location": location})
