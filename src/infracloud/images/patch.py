"""Glance's JSON-patch dialects for images: add / replace / remove of top-level attributes.
v2.1 (application/openstack-images-v2.1-json-patch) says `{"op": "replace", "path": "/name",
"value": ...}`; the older v2.0 says `{"replace": "/name", "value": ...}` (the op's name is the
key); `from_v20` turns the latter into the former."""

from __future__ import annotations

from typing import Any

from infracloud.core.errors import BadRequest

V21 = "application/openstack-images-v2.1-json-patch"
V20 = "application/openstack-images-v2.0-json-patch"
MEDIA_TYPES = (V21, V20)
OPERATIONS = ("add", "remove", "replace")


def from_v20(ops: Any) -> Any:
    """v2.0 operations in the v2.1 form (Glance's checks and wording for the op names)."""
    if not isinstance(ops, list):
        raise BadRequest("Request body must be a JSON array of operation objects.")
    out = []
    for raw in ops:
        if not isinstance(raw, dict):
            raise BadRequest("Operations must be JSON objects.")
        names = [name for name in OPERATIONS if name in raw]
        if len(names) != 1:
            count = "only one member" if names else "exactly one member"
            raise BadRequest(f'Operation objects must contain {count} named "add", '
                             f'"remove", or "replace".')
        op = {"op": names[0], "path": raw[names[0]]}
        if "value" in raw:
            op["value"] = raw["value"]
        out.append(op)
    return out


def _key(path: Any) -> str:
    if not isinstance(path, str) or not path.startswith("/") or len(path) < 2:
        raise BadRequest(f"Invalid JSON pointer for this resource: '{path}'")
    key = path[1:]
    if "/" in key:
        raise BadRequest(f"Nested paths are not supported: '{path}'")
    return key.replace("~1", "/").replace("~0", "~")


def parse(ops: Any) -> tuple[dict[str, Any], list[str]]:
    """The attributes to set and the properties to remove, in the order the patch gives."""
    if not isinstance(ops, list):
        raise BadRequest("The request body must be a JSON array of operation objects.")
    changes: dict[str, Any] = {}
    removed: list[str] = []
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise BadRequest("Each operation needs an 'op' and a 'path'.")
        key = _key(op["path"])
        if op["op"] in ("add", "replace"):
            if "value" not in op:
                raise BadRequest(f"Operation '{op['op']}' on {op['path']} needs a 'value'.")
            changes[key] = op["value"]
            if key in removed:
                removed.remove(key)
        elif op["op"] == "remove":
            changes.pop(key, None)
            removed.append(key)
        else:
            raise BadRequest(f"Invalid operation: '{op['op']}'. Operations: add, replace, "
                             f"remove.")
    return changes, removed
