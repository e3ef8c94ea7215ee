"""What Nova's JSON schemas (microversion 2.1) check on a server's create and update beyond
types: the `name` format, the access addresses' syntax, `min_count`/`max_count`, security
group names, and the metadata_items quota. Each failure is the 400 (or 403) Nova answers,
worded as Nova words it."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Any

from infracloud.core.errors import BadRequest, Forbidden

NAME_RULE = ("An invalid 'name' value was provided. The name must be: printable characters. "
             "Can not start or end with whitespace.")
DEFAULT_METADATA_ITEMS = 128  # nova's default metadata_items quota
SECURITY_GROUPS = ("default",)  # the one group every project has (no security-group API yet)
_DIGITS = re.compile(r"^[0-9]+$")


def _invalid(field: str, value: Any, why: str) -> BadRequest:
    shown = str(value) if len(str(value)) <= 80 else str(value)[:80] + "..."
    return BadRequest(f"Invalid input for field/attribute {field}. Value: {shown}. {why}")


def check_name(name: Any, field: str = "name") -> str:
    """Nova's `name` parameter: a string of 1 to 255 printable characters that neither starts
    nor ends with whitespace."""
    if not isinstance(name, str):
        raise _invalid(field, name, f"{name!r} is not of type 'string'")
    if not name:
        raise _invalid(field, name, "'' is too short")
    if len(name) > 255:
        raise _invalid(field, name, f"{name!r} is too long")
    if name[0].isspace() or name[-1].isspace() or not all(_printable(c) for c in name):
        raise BadRequest(NAME_RULE)
    return name


def _printable(char: str) -> bool:
    """Nova's printable: not an "other" (control, format...), no space but the horizontal."""
    category = unicodedata.category(char)
    return not category.startswith("C") and (not category.startswith("Z") or category == "Zs")


def check_access_ip(value: Any, version: int) -> str | None:
    """`accessIPv4`/`accessIPv6` (formats ipv4/ipv6); an empty string or None sets none."""
    field = f"accessIPv{version}"
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid(field, value, f"{value!r} is not of type 'string'")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        raise _invalid(field, value, f"{value!r} is not a 'ipv{version}'")
    return str(addr) if version == 6 else value


def check_count(value: Any, field: str) -> int:
    """min_count/max_count: Nova's positive_integer (an integer, or a string of digits, >= 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _invalid(field, value, f"{value!r} is not of type 'integer', 'string'")
    if isinstance(value, str):
        if not value:
            raise _invalid(field, value, "'' is too short")
        if not _DIGITS.match(value):
            raise _invalid(field, value, f"{value!r} does not match '^[0-9]*$'")
        number = int(value)
    else:
        number = value
    if number < 1:
        raise _invalid(field, value, f"{value!r} is less than the minimum of 1")
    return number


def check_counts(min_count: Any, max_count: Any) -> tuple[int, int]:
    low = check_count(1 if min_count is None else min_count, "min_count")
    high = check_count(low if max_count is None else max_count, "max_count")
    if low > high:
        raise BadRequest("min_count must be <= max_count")
    return low, high


def check_security_groups(groups: Any) -> None:
    """Nova with Neutron refuses a group the project does not have (400)."""
    for group in groups or []:
        name = group.get("name") if isinstance(group, dict) else getattr(group, "name", None)
        if name not in SECURITY_GROUPS:
            raise BadRequest(f"Security group {name} not found.")


def check_metadata_quota(count: int, limit: int = DEFAULT_METADATA_ITEMS) -> None:
    """Nova answers 403 when a server's metadata would hold more items than its quota."""
    if 0 <= limit < count:
        raise Forbidden(f"Quota exceeded for metadata_items: Requested {count}, but the limit "
                        f"is {limit} metadata_items")
