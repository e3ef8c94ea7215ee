"""Glance's JSON-patch dialect (application/openstack-images-v2.1-json-patch) for images:
add / replace / remove of top-level attributes."""

from __future__ import annotations

from typing import Any

from infracloud.core.errors import BadRequest

MEDIA_TYPES = ("application/openstack-images-v2.1-json-patch",
               "application/openstack-images-v2.0-json-patch")


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
