"""Identifiers. Resource ids are 32 hex characters, as keystone's are."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1c2a8e-5b1d-4c59-9f83-9d0e3f0b7a11")


def new_id() -> str:
    return uuid.uuid4().hex


def stable_id(*parts: str) -> str:
    """An id that is the same on every controller and after every restart for the same parts."""
    return uuid.uuid5(_NAMESPACE, "/".join(parts)).hex


def request_id() -> str:
    return f"req-{uuid.uuid4()}"
