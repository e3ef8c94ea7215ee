"""Image v2's interoperable import (glance-direct only): discovery, stage, import.
The work is in images/imports.py and images/data.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from infracloud.api.bodies import JSONRoute
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.core.errors import BadRequest, UnsupportedMediaType
from infracloud.images.imports import import_info

router = APIRouter(prefix="/image", route_class=JSONRoute)
# the bodies, for /openapi.json (images/imports.check_body checks the import's, in Glance's words)
STAGE_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
IMPORT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["method"], "properties": {
        "method": {"type": "object", "required": ["name"],
                   "properties": {"name": {"type": "string", "enum": ["glance-direct"]}}},
        "all_stores": {"type": "boolean"}, "all_stores_must_succeed": {"type": "boolean"}}}}}}}


@router.get("/v2/info/import", dependencies=[policy("image:info")])
def info_import() -> dict[str, Any]:
    return import_info()


def declared_size(request: Request) -> int | None:
    for header in ("x-openstack-image-size", "content-length"):
        if header in request.headers:
            try:
                size = int(request.headers[header])
            except ValueError:
                raise BadRequest(f"Invalid {header} header.") from None
            if size < 0:
                raise BadRequest(f"Invalid {header} header.")
            return size
    return None


@router.put("/v2/images/{image_id}/stage", status_code=204, openapi_extra=STAGE_BODY,
            dependencies=[policy("image:stage")])
async def stage(services: ServicesDep, caller: TokenDep, request: Request,
                image_id: str) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media != "application/octet-stream":  # as Glance's stage (and upload) answer
        raise UnsupportedMediaType(f"Content type {media or '(none)'} not supported: staged "
                                   f"data is application/octet-stream.")
    data = services.image_data
    ticket = await run_in_threadpool(data.begin, caller.caller, image_id,
                                     declared_size(request), True)
    try:
        await data.receive(ticket, request.stream())
    except ClientDisconnect:
        raise BadRequest("The client went away while staging; the image is killed.") from None
    return Response(status_code=204)


@router.post("/v2/images/{image_id}/import", status_code=202, openapi_extra=IMPORT_BODY,
             dependencies=[policy("image:import")])
async def import_image(services: ServicesDep, caller: TokenDep, request: Request,
                       image_id: str) -> Response:
    try:
        body = await request.json() if await request.body() else None
    except ValueError:
        raise BadRequest("The request body is not valid JSON.") from None
    await run_in_threadpool(services.image_imports.start, caller.caller, image_id, body)
    return Response(status_code=202)
