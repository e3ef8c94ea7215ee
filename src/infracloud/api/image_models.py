"""The request bodies of Image v2's write routes, as Glance's schemas describe them: base fields
typed (strictly: Glance takes no "5" for an integer), any other property a string. Listed in
/openapi.json; a body that does not fit answers 400 in Glance's wording (api/invalid.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from infracloud.api.bodies import MAX_INT
from infracloud.api.invalid import reason
from infracloud.core.errors import BadRequest
from infracloud.images import patch
from infracloud.images.service import (
    CONTAINER_FORMATS,
    DISK_FORMATS,
    MEMBER_STATUSES,
    VISIBILITIES,
)

Size = Annotated[int, Field(ge=0, le=MAX_INT)]
Tag = Annotated[str, Field(min_length=1, max_length=255)]


class ImageIn(BaseModel):
    """Glance's image schema: extra properties are strings (`additionalProperties: string`);
    read-only ones (status, size, ...) are refused by the service with a 403, as Glance does."""
    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, Annotated[str, Field(max_length=65535)]]
    id: Annotated[str, Field(max_length=36)] | None = None
    name: Annotated[str, Field(max_length=255)] | None = None
    visibility: Literal[VISIBILITIES] | None = None  # type: ignore[valid-type]
    protected: bool | None = None
    os_hidden: bool | None = None
    disk_format: Literal[DISK_FORMATS] | None = None  # type: ignore[valid-type]
    container_format: Literal[CONTAINER_FORMATS] | None = None  # type: ignore[valid-type]
    min_disk: Size | None = None
    min_ram: Size | None = None
    tags: Annotated[list[Tag], Field(max_length=128)] | None = None
    owner: Annotated[str, Field(max_length=255)] | None = None


class PatchOp(BaseModel):
    """One operation of Glance's JSON-patch dialect (top-level attributes only)."""
    model_config = ConfigDict(extra="forbid")
    op: Literal["add", "replace", "remove"]
    path: Annotated[str, Field(min_length=2, max_length=300, pattern="^/[^/]+$")]
    value: Any = None


_PATCH = TypeAdapter(list[PatchOp])
PATCH_BODY = {"requestBody": {"required": True, "content": {
    media: {"schema": {"type": "array", "items": PatchOp.model_json_schema()}}
    for media in patch.MEDIA_TYPES}}}


def patch_ops(body: Any) -> tuple[dict[str, Any], list[str]]:
    """The attributes a PATCH body sets and removes (images/patch.py), its operations checked
    against PatchOp first; the values are checked by the service (ImageService._split)."""
    try:
        _PATCH.validate_python(body)
    except ValidationError as exc:
        raise BadRequest("Provided object does not match schema 'image patch': " +
                         reason(exc.errors()[0])) from None
    return patch.parse(body)


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    member: Annotated[str, Field(min_length=1, max_length=255)]


class MemberStatusIn(BaseModel):
    """Glance reads only `status` (openstacksdk's update_member sends the member too)."""
    model_config = ConfigDict(extra="ignore")
    status: Literal[MEMBER_STATUSES]  # type: ignore[valid-type]
