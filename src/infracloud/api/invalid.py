"""The message of a request that fails its model, worded as each OpenStack service words a
schema failure, from the first error pydantic found (as jsonschema reports one):

- Nova and Ironic: `Invalid input for field/attribute name. Value: 5. 5 is not of type 'string'`
- Neutron: `Invalid input for network_id. Reason: 5 is not of type 'string'.`, unknown
  attributes `Unrecognized attribute(s) 'a, b'`, missing ones `Failed to parse request. Required
  attribute 'network_id' not specified`
- Glance: `Provided object does not match schema 'image': 5 is not of type 'string'`
- Keystone (and infracloud's own APIs): `Invalid input for field 'project.name': 5 is not of
  type 'string'`"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

_WHERE = ("body", "query", "path", "header", "cookie")
_TYPES = {"string": "string", "int": "integer", "float": "number", "bool": "boolean",
          "dict": "object", "model": "object", "list": "array", "tuple": "array",
          "set": "array"}
MAX_SHOWN = 80  # characters of a value repeated in a message


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def _quoted(value: Any) -> str:
    return _shown(repr(value))


def reason(err: Mapping[str, Any]) -> str:
    """jsonschema's wording of one pydantic error."""
    kind: str = err.get("type", "")
    value = err.get("input")
    ctx = err.get("ctx") or {}
    loc = [p for p in err.get("loc", ()) if p not in _WHERE]
    leaf = str(loc[-1]) if loc else ""
    prefix = kind.split("_", 1)[0]
    if kind == "missing":
        return f"'{leaf}' is a required property"
    if kind == "extra_forbidden":
        return f"Additional properties are not allowed ('{leaf}' was unexpected)"
    if prefix in _TYPES and kind.endswith(("_type", "_parsing", "_from_float")):
        return f"{_quoted(value)} is not of type '{_TYPES[prefix]}'"
    if kind == "string_too_long" or kind == "too_long":
        return f"{_quoted(value)} is too long"
    if kind == "string_too_short" or kind == "too_short":
        return f"{_quoted(value)} is too short"
    if kind == "greater_than_equal":
        return f"{_quoted(value)} is less than the minimum of {ctx.get('ge')}"
    if kind == "greater_than":
        return f"{_quoted(value)} is less than or equal to the minimum of {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"{_quoted(value)} is greater than the maximum of {ctx.get('le')}"
    if kind == "less_than":
        return f"{_quoted(value)} is greater than or equal to the maximum of {ctx.get('lt')}"
    if kind in ("literal_error", "enum"):
        return f"{_quoted(value)} is not one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return f"{_quoted(value)} does not match {ctx.get('pattern')!r}"
    msg = str(err.get("msg", "is not valid"))
    return msg.removeprefix("Value error, ")


def _walk(body: Any, path: Sequence[Any]) -> Any:
    for part in path:
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def _location(body: Any, loc: Sequence[Any], missing: bool) -> list[Any]:
    """The keys and indexes of `loc` that are in the body: not the names pydantic gives a
    union's branches (`list[NetworkIn]`), nor `body` and the like (a missing property's name
    is kept, last)."""
    loc = [p for p in loc if p not in _WHERE]
    if body is None:  # a query or header parameter
        return loc
    out: list[Any] = []
    last = len(loc) - 1
    for i, part in enumerate(loc):
        key = isinstance(body, dict) and isinstance(part, str) and part in body
        index = isinstance(body, list) and isinstance(part, int) and 0 <= part < len(body)
        if key or index:
            body = body[part]
        elif not (missing and i == last):
            continue
        out.append(part)
    return out


def message(style: str, exc: RequestValidationError, path: str) -> str:
    errors = exc.errors()
    if not errors:
        return "Invalid input."
    err = dict(errors[0])
    if err.get("type") == "json_invalid":
        return "Malformed request body: not valid JSON."
    body = getattr(exc, "body", None)
    loc = _location(body, err.get("loc", ()), err.get("type") == "missing")
    err["loc"] = loc
    why = reason(err)
    # a missing or unexpected property is reported on the object that holds it
    holder = err.get("type") in ("missing", "extra_forbidden")
    field_loc = loc[:-1] if holder else loc
    field = str(field_loc[-1]) if field_loc else ""
    value = _walk(body, field_loc) if holder else err.get("input")
    if style == "neutron":
        if err.get("type") == "missing":
            return f"Failed to parse request. Required attribute '{loc[-1]}' not specified"
        if err.get("type") == "extra_forbidden":
            unknown = [str(e["loc"][-1]) for e in errors if e.get("type") == "extra_forbidden"]
            return f"Unrecognized attribute(s) '{', '.join(unknown)}'"
        return f"Invalid input for {field or 'the request'}. Reason: {why}."
    if style == "glance":
        schema = "member" if "/members" in path else "image"
        return f"Provided object does not match schema '{schema}': {why}"
    if style in ("nova", "ironic"):
        if not field:
            return why
        return f"Invalid input for field/attribute {field}. Value: {_shown(value)}. {why}"
    dotted = ".".join(str(p) for p in loc)  # Keystone names the whole path
    return f"Invalid input for field '{dotted}': {why}" if dotted else why
