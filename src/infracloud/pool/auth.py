"""Who is calling the pool's API. Two ways, chosen in the config:

- `identity-url`: a Keystone (infracloud's or any) validates the token. The caller's requestor
  is the token's project and its roles are the token's (identity.policy's rules: reader reads,
  member requests, releases and holds, admin drains); it sees only its own project's requests,
  nodes and events. With the admin role it may name another requestor and see and act on any.
- `static-token-file`: one shared token for a standalone pool; its holder is an admin, trusted
  to name the requestor.

Validations are cached for a minute (never past the token's expiry), so a busy CI system costs
one identity call per token per minute."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from infracloud.clients import http
from infracloud.core.errors import ServiceUnavailable as Unavailable
from infracloud.core.errors import Unauthorized
from infracloud.identity.policy import ADMIN_ROLE, Caller, enforce

CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class PoolCaller:
    requestor: str  # the requestor new requests are made for, unless an admin names another
    roles: frozenset[str] = frozenset({ADMIN_ROLE})

    @property
    def admin(self) -> bool:
        """May name any requestor, and see and act on any request and node."""
        return ADMIN_ROLE in self.roles

    def owner(self) -> str | None:
        """The requestor whose requests and nodes this caller may see and touch (None: any)."""
        return None if self.admin else self.requestor

    def enforce(self, action: str) -> None:
        """The pool's rule `action` of the policy table (the requestor is the project)."""
        enforce(Caller(self.requestor, self.requestor, self.roles), action)


class TokenCheck(Protocol):
    def check(self, token: str | None) -> PoolCaller: ...


class StaticToken:
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the pool's static token is empty")
        self.token = token

    @classmethod
    def from_file(cls, path: Path) -> StaticToken:
        return cls(path.read_text().strip())

    def check(self, token: str | None) -> PoolCaller:
        if not token or not hmac.compare_digest(token.encode(), self.token.encode()):
            raise Unauthorized("The request you have made requires authentication.")
        return PoolCaller("default")


class IdentityTokens:
    def __init__(self, identity_url: str | Sequence[str], cacert: Path | None = None,
                 timeout: float = 10, *, transport: httpx.BaseTransport | None = None) -> None:
        """`identity_url`: one Keystone base URL, or several (`URL,URL` or a list) that the
        pool fails over between (`http.Failover`)."""
        urls = http.split_urls(identity_url)
        self.url = urls[0] + "/v3/auth/tokens"
        self.http = http.client("pool", verify=cacert or True, timeout=timeout,
                                base_url=urls[0], also=urls[1:], transport=transport)
        self._cache: dict[str, tuple[float, PoolCaller]] = {}
        self._lock = threading.Lock()

    def check(self, token: str | None) -> PoolCaller:
        if not token:
            raise Unauthorized("The request you have made requires authentication.")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            r = self.http.get(self.url, headers={"X-Auth-Token": token,
                                                 "X-Subject-Token": token})
        except httpx.HTTPError as exc:
            raise Unavailable(f"The identity service did not answer: {exc}") from None
        if r.status_code in (401, 403, 404):
            raise Unauthorized("The token is not valid.")
        if r.status_code != 200:
            raise Unavailable(f"The identity service answered {r.status_code}.")
        body = r.json().get("token", {})
        project = (body.get("project") or {}).get("name")
        if not project:
            raise Unauthorized("The token is not scoped to a project.")
        roles = frozenset(str(role.get("name")) for role in body.get("roles", []))
        caller = PoolCaller(project, roles)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + CACHE_SECONDS, caller)
        return caller

    def close(self) -> None:
        self.http.close()


class Open:
    """No authentication: only for a pool that listens on loopback (the config's default)."""

    def check(self, token: str | None) -> PoolCaller:
        return PoolCaller("default")
