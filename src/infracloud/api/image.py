"""Image v2 (shared/specs/openstack-api.md section 3): records, streamed data upload and
download, members, tags. Compute hosts fetch image data through GET .../file (see docs/api.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from infracloud.api.bodies import JSONRoute
from infracloud.api.deps import ServicesDep, TokenDep, next_query, policy
from infracloud.api.image_import import declared_size
from infracloud.api.image_models import PATCH_BODY, ImageIn, MemberIn, MemberStatusIn, patch_ops
from infracloud.api.image_views import (
    image_schema,
    image_view,
    member_schema,
    member_view,
    members_schema,
)
from infracloud.core.errors import BadRequest, NotFound, UnsupportedMediaType
from infracloud.images import filters, patch
from infracloud.images.data import Download
from infracloud.images.imports import IMPORT_METHODS
from infracloud.images.service import ListQuery

router = APIRouter(prefix="/image", route_class=JSONRoute)
MAX_LIMIT = 1000


def _versions(base: str) -> dict[str, Any]:
    href = f"{base}/image/v2/"
    return {"versions": [
        {"id": f"v2.{minor}", "status": "CURRENT" if minor == 16 else "SUPPORTED",
         "links": [{"rel": "self", "href": href}]} for minor in range(16, 0, -1)]}


@router.get("")
@router.get("/")
@router.get("/v2")
@router.get("/v2/")
def versions(services: ServicesDep) -> JSONResponse:
    return JSONResponse(_versions(services.base_url), status_code=300)


@router.get("/v2/schemas/image")
def schema_image() -> dict[str, Any]:
    return image_schema()


@router.get("/v2/schemas/images")
def schema_images() -> dict[str, Any]:
    return {"name": "images", "properties": {"images": {"type": "array",
                                                        "items": image_schema()}},
            "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                      {"rel": "describedby", "href": "{schema}"}]}


@router.get("/v2/schemas/member")
def schema_member() -> dict[str, Any]:
    return member_schema()


@router.get("/v2/schemas/members")
def schema_members() -> dict[str, Any]:
    return members_schema()


async def _json(request: Request) -> Any:
    try:
        return await request.json() if await request.body() else None
    except ValueError:
        raise BadRequest("The request body is not valid JSON.") from None


@router.post("/v2/images", status_code=201, dependencies=[policy("image:create")])
async def create_image(services: ServicesDep, caller: TokenDep, body: ImageIn
                       ) -> JSONResponse:
    image = await run_in_threadpool(services.images.create, caller.caller,
                                    body.model_dump(exclude_unset=True))
    return JSONResponse(image_view(image), status_code=201,
                        headers={"Location": f"{services.base_url}/image/v2/images/{image.id}",
                                 # how clients learn that the import API is there (Glance)
                                 "OpenStack-image-import-methods": ",".join(IMPORT_METHODS)})


@router.get("/v2/images", dependencies=[policy("image:get")])
def list_images(services: ServicesDep, caller: TokenDep, request: Request) -> dict[str, Any]:
    q = request.query_params
    try:
        limit = min(int(q.get("limit", 200)), MAX_LIMIT)
    except ValueError:
        raise BadRequest("limit param must be an integer") from None
    if limit < 0:
        raise BadRequest("limit param must be positive")
    sort_key, sort_dir = q.get("sort_key", "created_at"), q.get("sort_dir", "desc")
    if "sort" in q:  # the newer sort=key:dir form
        sort_key, _, direction = q["sort"].split(",")[0].partition(":")
        sort_dir = direction or "desc"
    query = ListQuery(filters=filters.parse(q, q.getlist("tag")), limit=limit,
                      marker=q.get("marker"), sort_key=sort_key, sort_dir=sort_dir)
    images, next_marker = services.images.list_images(caller.caller, query)
    body: dict[str, Any] = {"images": [image_view(i) for i in images],
                            "first": "/v2/images", "schema": "/v2/schemas/images"}
    if next_marker:
        body["next"] = "/v2/images?" + next_query(request, next_marker, limit)
    return body


@router.get("/v2/images/", dependencies=[policy("image:get")], include_in_schema=False)
@router.delete("/v2/images/", dependencies=[policy("image:delete")], include_in_schema=False)
def empty_image_id() -> Response:
    """An empty image id names no image (Glance: 404), not the list."""
    raise NotFound("No image found with ID ")


@router.get("/v2/images/{image_id}", dependencies=[policy("image:get")])
def show_image(services: ServicesDep, caller: TokenDep, image_id: str) -> dict[str, Any]:
    return image_view(services.images.get(caller.caller, image_id))


@router.patch("/v2/images/{image_id}", openapi_extra=PATCH_BODY,
              dependencies=[policy("image:modify")])
async def update_image(services: ServicesDep, caller: TokenDep, request: Request,
                       image_id: str) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media not in patch.MEDIA_TYPES:
        allowed = ", ".join(sorted(patch.MEDIA_TYPES))
        raise UnsupportedMediaType(f"Image PATCH expects Content-Type one of: {allowed}",
                                   headers={"Accept-Patch": allowed})
    body = await _json(request)
    changes, removed = patch_ops(patch.from_v20(body) if media == patch.V20 else body)
    image = await run_in_threadpool(services.images.update, caller.caller, image_id, changes,
                                    removed)
    return image_view(image)


@router.delete("/v2/images/{image_id}", status_code=204, dependencies=[policy("image:delete")])
def delete_image(services: ServicesDep, caller: TokenDep, image_id: str) -> Response:
    services.images.delete(caller.caller, image_id)
    return Response(status_code=204)


@router.post("/v2/images/{image_id}/actions/{action}", status_code=204,
             dependencies=[policy("image:action")])
def image_action(services: ServicesDep, caller: TokenDep, image_id: str, action: str
                 ) -> Response:
    if action not in ("deactivate", "reactivate"):
        raise BadRequest(f"Unknown action: {action}")
    services.images.set_status(caller.caller, image_id, action)
    return Response(status_code=204)


# ---- data ---------------------------------------------------------------------------------

@router.put("/v2/images/{image_id}/file", status_code=204, dependencies=[policy("image:upload")])
async def upload(services: ServicesDep, caller: TokenDep, request: Request,
                 image_id: str) -> Response:
    data = services.image_data
    ticket = await run_in_threadpool(data.begin, caller.caller, image_id,
                                     declared_size(request))
    try:
        await data.receive(ticket, request.stream())
    except ClientDisconnect:
        raise BadRequest("The client went away during the upload; the image is killed.") from None
    return Response(status_code=204)


@router.get("/v2/images/{image_id}/file", dependencies=[policy("image:download")])
def download(services: ServicesDep, caller: TokenDep, image_id: str,
             range_: Annotated[str | None, Header(alias="range")] = None) -> Response:
    return data_response(services.image_data.download(caller.caller, image_id, range_))


def data_response(found: Download | None) -> Response:
    """An image's data (or the range asked for) as it streams from the store; 204 when the
    image has none yet. The agents' image route answers the same way."""
    if found is None:
        return Response(status_code=204)
    image = found.image
    headers = {"Content-Length": str(found.length), "Accept-Ranges": "bytes",
               "Content-MD5": image.checksum or "",
               "X-Image-Meta-Os-Hash-Algo": image.os_hash_algo or "",
               "X-Image-Meta-Os-Hash-Value": image.os_hash_value or ""}
    if found.partial:
        headers["Content-Range"] = (f"bytes {found.start}-{found.start + found.length - 1}/"
                                    f"{found.total}")
    return StreamingResponse(found.chunks, status_code=206 if found.partial else 200,
                             media_type="application/octet-stream", headers=headers)


# ---- tags and members ---------------------------------------------------------------------

@router.put("/v2/images/{image_id}/tags/{tag}", status_code=204,
            dependencies=[policy("image:modify")])
def add_tag(services: ServicesDep, caller: TokenDep, image_id: str, tag: str) -> Response:
    services.images.add_tag(caller.caller, image_id, tag)
    return Response(status_code=204)


@router.delete("/v2/images/{image_id}/tags/{tag}", status_code=204,
               dependencies=[policy("image:modify")])
def remove_tag(services: ServicesDep, caller: TokenDep, image_id: str, tag: str) -> Response:
    services.images.remove_tag(caller.caller, image_id, tag)
    return Response(status_code=204)


@router.get("/v2/images/{image_id}/members", dependencies=[policy("image:member:get")])
def list_members(services: ServicesDep, caller: TokenDep, image_id: str) -> dict[str, Any]:
    return {"members": [member_view(m) for m in services.images.members(caller.caller,
                                                                        image_id)],
            "schema": "/v2/schemas/members"}


@router.post("/v2/images/{image_id}/members", dependencies=[policy("image:member:modify")])
async def add_member(services: ServicesDep, caller: TokenDep, body: MemberIn,
                     image_id: str) -> dict[str, Any]:
    member = await run_in_threadpool(services.images.add_member, caller.caller, image_id,
                                     body.member)
    return member_view(member)


@router.get("/v2/images/{image_id}/members/{member_id}", dependencies=[policy("image:member:get")])
def show_member(services: ServicesDep, caller: TokenDep, image_id: str, member_id: str
                ) -> dict[str, Any]:
    return member_view(services.images.get_member(caller.caller, image_id, member_id))


@router.put("/v2/images/{image_id}/members/{member_id}",
            dependencies=[policy("image:member:modify")])
async def update_member(services: ServicesDep, caller: TokenDep, body: MemberStatusIn,
                        image_id: str, member_id: str) -> dict[str, Any]:
    member = await run_in_threadpool(services.images.set_member_status, caller.caller,
                                     image_id, member_id, body.status)
    return member_view(member)


@router.delete("/v2/images/{image_id}/members/{member_id}", status_code=204,
               dependencies=[policy("image:member:modify")])
def remove_member(services: ServicesDep, caller: TokenDep, image_id: str, member_id: str
                  ) -> Response:
    services.images.remove_member(caller.caller, image_id, member_id)
    return Response(status_code=204)
