"""Nova's image proxy (`/compute/v2.1/images`), which older scripts still use: the image
service's records read in process, in Nova 2.1's shapes (status ACTIVE/SAVING/..., progress,
minRam, minDisk, metadata, OS-EXT-IMG-SIZE:size), paged by marker and limit as the server
list is. Filters as Nova passes them to Glance: name, status, minRam, minDisk, server, type,
changes-since. An image's metadata (its properties) is read and written as Nova's image
metadata proxy does (a write replaces the properties as a whole, purge_props)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from infracloud.api.bodies import JSONRoute
from infracloud.api.compute import HEADERS, MAX_LIMIT, _limit, _next_link, reply
from infracloud.api.compute_models import MetadataBody, MetaItemBody
from infracloud.api.compute_views import C
from infracloud.api.deps import ServicesDep, TokenDep, policy
from infracloud.compute.server_filters import parse_changes_since
from infracloud.core.clock import as_utc, isoformat
from infracloud.core.errors import BadRequest, Forbidden, NotFound
from infracloud.images.filters import Filters
from infracloud.images.service import BASE_FIELDS, READ_ONLY, ListQuery
from infracloud.site.services import Services
from infracloud.store.models import Image

router = APIRouter(prefix="/compute", route_class=JSONRoute)
STATUS = {"active": "ACTIVE", "queued": "SAVING", "saving": "SAVING", "importing": "SAVING",
          "uploading": "SAVING", "deleted": "DELETED", "pending_delete": "DELETED",
          "killed": "ERROR"}
PROGRESS = {"queued": 25, "saving": 50, "active": 100}
# a Nova status filter -> the Glance statuses it stands for
STATUS_FILTER = {"ACTIVE": "active", "SAVING": "saving", "QUEUED": "queued",
                 "DELETED": "deleted", "ERROR": "killed"}


def _links(base: str, image_id: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{base}{C}/images/{image_id}"},
            {"rel": "bookmark", "href": f"{base}/compute/images/{image_id}"},
            {"rel": "alternate", "type": "application/vnd.openstack.image",
             "href": f"{base}/image/images/{image_id}"}]


def image_view(base: str, i: Image, detail: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": i.id, "name": i.name, "links": _links(base, i.id)}
    if not detail:
        return out
    props = dict(i.properties or {})
    out.update({"minRam": int(i.min_ram or 0), "minDisk": int(i.min_disk or 0),
                "metadata": props, "created": isoformat(i.created_at),
                "updated": isoformat(i.updated_at), "status": STATUS.get(i.status, "UNKNOWN"),
                "progress": PROGRESS.get(i.status, 0), "OS-EXT-IMG-SIZE:size": i.size})
    server = props.get("instance_uuid")
    if server:
        out["server"] = {"id": server, "links": [
            {"rel": "self", "href": f"{base}{C}/servers/{server}"},
            {"rel": "bookmark", "href": f"{base}/compute/servers/{server}"}]}
    auto = props.get("auto_disk_config")
    if auto is not None:
        out["OS-DCF:diskConfig"] = "AUTO" if auto.strip().lower() in (
            "1", "t", "true", "on", "y", "yes") else "MANUAL"
    return out


@dataclass(frozen=True)
class _Wanted:
    """The filters Glance's list does not take, applied here."""
    min_ram: int | None = None
    min_disk: int | None = None
    server: str | None = None  # property instance_uuid
    kind: str | None = None  # `type`: property image_type (snapshot, backup)
    since: dt.datetime | None = None  # changes-since

    def __call__(self, i: Image) -> bool:
        props = i.properties or {}
        return ((self.min_ram is None or (i.min_ram or 0) >= self.min_ram)
                and (self.min_disk is None or (i.min_disk or 0) >= self.min_disk)
                and (self.server is None or props.get("instance_uuid") == self.server)
                and (self.kind is None or props.get("image_type") == self.kind)
                and (self.since is None or as_utc(i.updated_at) >= self.since))


def _int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"Invalid filter field: {name}.")
    return int(raw)


def _images(services: Services, caller: TokenDep, request: Request, detail: bool
            ) -> JSONResponse:
    q = request.query_params
    limit = _limit(request)
    status = q.get("status")
    since = q.get("changes-since")
    wanted = _Wanted(_int(request, "minRam"), _int(request, "minDisk"), q.get("server"),
                     q.get("type"), parse_changes_since(since) if since is not None else None)
    page = limit if limit is not None else MAX_LIMIT
    marker = q.get("marker")
    lists: dict[str, list[str]] = {}  # the image service's filters (images/filters.py)
    if q.get("name"):
        lists["name"] = [q["name"]]
    if status:
        lists["status"] = [STATUS_FILTER.get(status.upper(), status.lower())]
    found: list[Image] = []
    while len(found) <= page:  # the filters read here may thin a page: read on
        rows, marker = services.images.list_images(caller.caller, ListQuery(
            Filters(lists=lists), limit=page + 1, marker=marker))
        found.extend(r for r in rows if wanted(r))
        if marker is None:
            break
    more = len(found) > page
    found = found[:page]
    base = services.base_url
    body: dict[str, Any] = {"images": [image_view(base, i, detail) for i in found]}
    if more and limit is not None and found:
        body["images_links"] = _next_link(services, request, "images/detail" if detail
                                          else "images", found[-1].id, limit)
    return reply(body)


@router.get("/v2.1/images", dependencies=[policy("compute:image:get")])
def list_images(services: ServicesDep, caller: TokenDep, request: Request) -> JSONResponse:
    return _images(services, caller, request, detail=False)


@router.get("/v2.1/images/detail", dependencies=[policy("compute:image:get")])
def list_images_detail(services: ServicesDep, caller: TokenDep, request: Request
                       ) -> JSONResponse:
    return _images(services, caller, request, detail=True)


@router.get("/v2.1/images/{image_id}", dependencies=[policy("compute:image:get")])
def show_image(services: ServicesDep, caller: TokenDep, image_id: str) -> JSONResponse:
    try:
        image = services.images.get(caller.caller, image_id)
    except NotFound:
        raise NotFound("Image not found.") from None
    return reply({"image": image_view(services.base_url, image)})


@router.delete("/v2.1/images/{image_id}", status_code=204,
               dependencies=[policy("compute:image:delete")])
def delete_image(services: ServicesDep, caller: TokenDep, image_id: str) -> Response:
    try:
        services.images.delete(caller.caller, image_id)
    except NotFound:
        raise NotFound("Image not found.") from None
    return Response(status_code=204, headers=HEADERS)


# ---- an image's metadata (its properties), as Nova's image metadata proxy ---------------------

RESERVED = frozenset(BASE_FIELDS) | READ_ONLY | {"owner"}
MAX_IMAGE_META = 128  # nova's maxImageMeta (the metadata_items quota)


def _properties(services: Services, caller: TokenDep, image_id: str) -> dict[str, str]:
    try:
        return dict(services.images.get(caller.caller, image_id).properties or {})
    except NotFound:
        raise NotFound("Image not found.") from None


def _write(services: Services, caller: TokenDep, image_id: str, new: dict[str, str]
           ) -> dict[str, str]:
    """Make the image's properties `new` (nova updates with purge_props)."""
    for key in new:
        if key in RESERVED:
            raise Forbidden(f"Attribute '{key}' is read-only or reserved.")
    if len(new) > MAX_IMAGE_META:
        raise Forbidden("Image metadata limit exceeded")
    old = _properties(services, caller, image_id)
    changes = {k: v for k, v in new.items() if old.get(k) != v}
    removed = [k for k in old if k not in new]
    image = services.images.update(caller.caller, image_id, changes, removed)
    return dict(image.properties or {})


M = "/v2.1/images/{image_id}/metadata"


@router.get(M, dependencies=[policy("compute:image:get")])
def image_metadata(services: ServicesDep, caller: TokenDep, image_id: str) -> JSONResponse:
    return reply({"metadata": _properties(services, caller, image_id)})


@router.post(M, dependencies=[policy("compute:image:metadata:set")])
async def merge_image_metadata(services: ServicesDep, caller: TokenDep, image_id: str,
                               body: MetadataBody) -> JSONResponse:
    merged = await run_in_threadpool(lambda: _write(services, caller, image_id, {
        **_properties(services, caller, image_id), **body.metadata}))
    return reply({"metadata": merged})


@router.put(M, dependencies=[policy("compute:image:metadata:set")])
async def replace_image_metadata(services: ServicesDep, caller: TokenDep, image_id: str,
                                 body: MetadataBody) -> JSONResponse:
    await run_in_threadpool(_write, services, caller, image_id, dict(body.metadata))
    return reply({"metadata": body.metadata})


@router.get(M + "/{key}", dependencies=[policy("compute:image:get")])
def image_metadata_item(services: ServicesDep, caller: TokenDep, image_id: str, key: str
                        ) -> JSONResponse:
    props = _properties(services, caller, image_id)
    if key not in props:
        raise NotFound("The resource could not be found.")
    return reply({"meta": {key: props[key]}})


@router.put(M + "/{key}", dependencies=[policy("compute:image:metadata:set")])
async def set_image_metadata_item(services: ServicesDep, caller: TokenDep, image_id: str,
                                  key: str, body: MetaItemBody) -> JSONResponse:
    if key not in body.meta:
        raise BadRequest("Request body and URI mismatch")
    await run_in_threadpool(lambda: _write(services, caller, image_id, {
        **_properties(services, caller, image_id), **body.meta}))
    return reply({"meta": body.meta})


@router.delete(M + "/{key}", status_code=204,
               dependencies=[policy("compute:image:metadata:set")])
def delete_image_metadata_item(services: ServicesDep, caller: TokenDep, image_id: str, key: str
                               ) -> Response:
    props = _properties(services, caller, image_id)
    if key not in props:
        raise NotFound("Invalid metadata key")
    _write(services, caller, image_id, {k: v for k, v in props.items() if k != key})
    return Response(status_code=204, headers=HEADERS)
