"""Server metadata keys the controller writes (`infracloud:...`, e.g. `infracloud:expires_at`
from compute/lifetimes.py): shown with the owner's metadata, but the owner can neither set nor
remove them through the metadata routes, and they do not count against the metadata quota."""

from __future__ import annotations

from collections.abc import Iterable

from infracloud.core.errors import Forbidden

PREFIX = "infracloud:"
EXPIRES_AT = PREFIX + "expires_at"


def refuse(keys: Iterable[str]) -> None:
    """403 for a key of the controller's in what a caller writes."""
    for key in keys:
        if isinstance(key, str) and key.startswith(PREFIX):
            raise Forbidden(f"Metadata item {key} is set by the cloud and cannot be changed.")


def controllers(meta: dict[str, str]) -> dict[str, str]:
    """The controller's keys of a server's metadata."""
    return {k: v for k, v in meta.items() if k.startswith(PREFIX)}


def owners_count(meta: dict[str, str]) -> int:
    """How many items count against the metadata quota."""
    return sum(1 for k in meta if not k.startswith(PREFIX))
