"""JSON views of images and members, as glance renders them (no wrapper key)."""

from __future__ import annotations

from typing import Any

from infracloud.core.clock import isoformat
from infracloud.store.models import Image, ImageMember


def image_view(i: Image) -> dict[str, Any]:
    out: dict[str, Any] = dict(i.properties or {})
    out.update({
        "id": i.id, "name": i.name, "status": i.status, "visibility": i.visibility,
        "protected": i.protected, "os_hidden": i.os_hidden, "owner": i.owner,
        "size": i.size, "virtual_size": i.virtual_size, "min_ram": i.min_ram,
        "min_disk": i.min_disk, "disk_format": i.disk_format,
        "container_format": i.container_format, "checksum": i.checksum,
        "os_hash_algo": i.os_hash_algo, "os_hash_value": i.os_hash_value,
        "tags": list(i.tags or []), "created_at": isoformat(i.created_at),
        "updated_at": isoformat(i.updated_at), "self": f"/v2/images/{i.id}",
        "file": f"/v2/images/{i.id}/file", "schema": "/v2/schemas/image"})
    return out


def member_view(m: ImageMember) -> dict[str, Any]:
    return {"image_id": m.image_id, "member_id": m.member_id, "status": m.status,
            "created_at": isoformat(m.created_at), "updated_at": isoformat(m.updated_at),
            "schema": "/v2/schemas/member"}


def image_schema() -> dict[str, Any]:
    """A short schema: enough for clients that read it to know the attributes."""
    text: dict[str, Any] = {"type": ["null", "string"]}
    names = ("id", "name", "status", "visibility", "owner", "checksum", "os_hash_algo",
             "os_hash_value", "disk_format", "container_format", "created_at", "updated_at",
             "self", "file", "schema")
    props: dict[str, Any] = {k: text for k in names}
    props |= {"size": {"type": ["null", "integer"]},
              "virtual_size": {"type": ["null", "integer"]},
              "min_ram": {"type": "integer"}, "min_disk": {"type": "integer"},
              "protected": {"type": "boolean"}, "os_hidden": {"type": "boolean"},
              "tags": {"type": "array", "items": {"type": "string"}}}
    return {"name": "image", "properties": props,
            "additionalProperties": {"type": "string"},
            "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                      {"rel": "describedby", "href": "{schema}"}]}


def member_schema() -> dict[str, Any]:
    """Glance's member schema (GET /v2/schemas/member)."""
    text: dict[str, Any] = {"type": "string"}
    return {"name": "member", "properties": {
        "member_id": {**text, "description": "An identifier for the image member (tenantId)"},
        "image_id": {**text, "description": "An identifier for the image",
                     "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
                                "-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
        "created_at": {**text, "description": "Date and time of image member creation"},
        "updated_at": {**text,
                       "description": "Date and time of last modification of image member"},
        "status": {**text, "description": "The status of this image member",
                   "enum": ["pending", "accepted", "rejected"]},
        "schema": {**text, "readOnly": True}}, "additionalProperties": False}


def members_schema() -> dict[str, Any]:
    """Glance's member collection schema (GET /v2/schemas/members)."""
    item = member_schema()
    item.pop("additionalProperties")
    return {"name": "members", "properties": {
        "members": {"type": "array", "items": item},
        "schema": {"type": "string"}},
        "links": [{"rel": "describedby", "href": "{schema}"}]}
