"""Image v2 list filters, read from the query string as Glance reads them.

- `name`, `id`, `status`, `disk_format`, `container_format`: a value, `eq:value`, or
  `in:a,b,"c,d"` (Glance's list form, quotes around values holding commas);
- `created_at`, `updated_at`: `[op:]` an ISO 8601 time, op one of gt, gte, lt, lte, eq, neq;
- `size_min`, `size_max`: whole numbers of bytes (both ends included);
- `tag` (repeatable: every tag must be on the image), `owner`, `checksum`, `os_hash_value`;
- `protected`, `os_hidden`: true or false (hidden images are listed only with os_hidden=true);
- `visibility` (public, private, shared, community, all) and `member_status` (pending,
  accepted, rejected, all: the caller's membership of images shared with it);
- any other name filters on the image property of that name (Glance's extra properties).
Bad values answer 400 in Glance's words. One difference: a value whose text before its first
colon is not an operator (a name like `ubuntu:24.04`) is that value, where Glance refuses it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from infracloud.core.clock import parse_time
from infracloud.core.errors import BadRequest

COMPARISONS = ("gt", "gte", "lt", "lte", "eq", "neq")
VISIBILITY_FILTERS = ("community", "public", "private", "shared", "all")
MEMBER_STATUS_FILTERS = ("pending", "accepted", "rejected", "all")
LISTED = ("name", "id", "status", "disk_format", "container_format")
TIMES = ("created_at", "updated_at")
NUMBERS = ("size", "virtual_size", "min_ram", "min_disk")  # compared equal
# parameters that are not filters (paging and sorting)
NOT_FILTERS = frozenset({"limit", "marker", "sort", "sort_key", "sort_dir", "member_status",
                         "tag", "visibility", "size_min", "size_max", "protected", "os_hidden",
                         "owner", "checksum", "os_hash_value", *LISTED, *TIMES, *NUMBERS})
_QUOTED = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)",?|([^,]+),?|,')


@dataclass
class Filters:
    """What a list asks for; None or empty: no condition."""

    lists: dict[str, list[str]] = field(default_factory=dict)  # LISTED name -> allowed values
    times: list[tuple[str, str, dt.datetime]] = field(default_factory=list)  # (column, op, t)
    size_min: int | None = None
    size_max: int | None = None
    tags: list[str] = field(default_factory=list)
    equal: dict[str, object] = field(default_factory=dict)  # owner, protected, checksum...
    os_hidden: bool = False
    visibility: str | None = None  # None: every image the caller may see ("all")
    member_status: str | None = "accepted"  # None: any ("all")
    properties: dict[str, str] = field(default_factory=dict)


def split_op(value: str, ops: Sequence[str]) -> tuple[str, str]:
    """(operator, operand); a value with no known operator before a colon is compared equal."""
    left, sep, right = value.partition(":")
    if sep and left in ops:
        return left, right
    return "eq", value


def split_quoted(value: str) -> list[str]:
    """`a,b,"c,d"` -> [a, b, "c,d"] (Glance's split_filter_value_for_quotes)."""
    if value.count('"') % 2:
        raise BadRequest(f"Invalid filter value {value}. The quote is not closed.")
    return [m.group(1) if m.group(1) is not None else (m.group(2) or "")
            for m in _QUOTED.finditer(value)]


def _bool(name: str, value: str | None, default: bool | None) -> bool | None:
    if value is None:
        return default
    low = value.strip().lower()
    if low not in ("true", "false"):
        raise BadRequest(f"Invalid value '{value}' for '{name}' filter. Valid values are "
                         f"'true' or 'false'.")
    return low == "true"


def _size(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest("Unable to filter on a range with a non-numeric value.") from None


def parse(params: Mapping[str, str], tags: list[str]) -> Filters:
    """Filters from the query parameters (last value of each; `tags`: every `tag` given)."""
    f = Filters(tags=[t.strip() for t in tags if t.strip()])
    if "changes-since" in params:
        raise BadRequest('The "changes-since" filter is no longer available on v2.')
    visibility = params.get("visibility")
    if visibility:
        if visibility not in VISIBILITY_FILTERS:
            raise BadRequest(f"Invalid visibility value: {visibility}")
        f.visibility = None if visibility == "all" else visibility
    status = params.get("member_status", "accepted")
    if status not in MEMBER_STATUS_FILTERS:
        raise BadRequest(f"Invalid status: {status}")
    f.member_status = None if status == "all" else status
    f.os_hidden = bool(_bool("os_hidden", params.get("os_hidden"), False))
    protected = _bool("protected", params.get("protected"), None)
    if protected is not None:
        f.equal["protected"] = protected
    for name in ("owner", "checksum", "os_hash_value"):
        if params.get(name):
            f.equal[name] = params[name]
    f.size_min, f.size_max = _size(params.get("size_min")), _size(params.get("size_max"))
    for name in NUMBERS:
        if name in params:
            f.equal[name] = _size(params[name])
    for name in LISTED:
        if name in params:
            op, operand = split_op(params[name], ("in", "eq"))
            f.lists[name] = split_quoted(operand) if op == "in" else [operand]
    for name in TIMES:
        if name in params:
            op, operand = split_op(params[name], COMPARISONS)
            try:
                when = parse_time(operand)
            except ValueError:
                raise BadRequest(f'Bad "{name}" query filter format. Use ISO 8601 DateTime '
                                 f'notation.') from None
            f.times.append((name, op, when))
    for name, value in params.items():
        if name not in NOT_FILTERS:
            f.properties[name] = value
    return f
