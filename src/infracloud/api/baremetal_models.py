"""The request bodies of Bare Metal v1's write routes, as Ironic's API takes them: a node's
fields typed (properties, extra, driver_info and instance_info are objects), JSON-patch
operations whose values are checked against the same types, provision and power targets.
Listed in /openapi.json; worded as Ironic words a bad field (api/invalid.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from infracloud.api.invalid import reason
from infracloud.core.errors import BadRequest

Text = Annotated[str, Field(max_length=255)]
Fields = dict[str, Any]


class _Open(BaseModel):
    """Fields Ironic knows and infracloud does not keep pass unread."""
    model_config = ConfigDict(extra="ignore")


class NodeIn(_Open):
    driver: Annotated[str, Field(min_length=1, max_length=255)]
    name: Text | None = None
    uuid: Annotated[str, Field(max_length=36)] | None = None
    driver_info: Fields | None = None
    properties: Fields | None = None
    extra: Fields | None = None
    instance_info: Fields | None = None
    resource_class: Annotated[str, Field(max_length=80)] | None = None
    description: Annotated[str, Field(max_length=4096)] | None = None
    role: Text | None = None
    maintenance: bool | None = None


class PatchOp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["add", "replace", "remove"]
    path: Annotated[str, Field(min_length=2, max_length=300, pattern="^/")]
    value: Any = None


PatchBody = Annotated[list[PatchOp], Field(max_length=100)]
_FIELD_TYPES = {name: TypeAdapter[Any](info.annotation or Any)
                for name, info in NodeIn.model_fields.items()
                if name not in ("driver", "uuid")}


def check_value(field: str, value: Any) -> None:
    """A PATCH to a whole field (`/properties`, not `/properties/x`) gives it a value of the
    field's type (a field it has not is the service's to refuse)."""
    adapter = _FIELD_TYPES.get(field)
    if adapter is None:
        return
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        shown = str(value)[:80]
        raise BadRequest(f"Invalid input for field/attribute {field}. Value: {shown}. "
                         f"{reason(exc.errors()[0])}") from None


class Target(_Open):
    target: Annotated[str, Field(min_length=1, max_length=255)]


class ProvisionIn(Target):
    evict: bool = False


class MaintenanceIn(_Open):
    reason: Annotated[str, Field(max_length=255)] | None = None
