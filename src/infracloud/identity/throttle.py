"""Logins that cost a password hash (argon2, ~40 ms of CPU each) are rate-limited per client
address (every attempt) and per user name (failed attempts: a success gives its turn back),
so that neither a flood from one address nor a guesser spread over many can take the
controller's CPU or a user's password. In memory: each controller limits its own share."""

from __future__ import annotations

import time
from collections.abc import Callable

from infracloud.core.errors import TooManyRequests
from infracloud.core.ratelimit import Buckets
from infracloud.core.settings import LoginLimitConfig
from infracloud.ops import context


class LoginThrottle:
    def __init__(self, config: LoginLimitConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        a, u = config.per_address, config.per_user
        self.by_address = Buckets(a.per_minute, a.burst, clock=clock)
        self.by_user = Buckets(u.per_minute, u.burst, clock=clock)

    def attempt(self, user: str) -> None:
        """Before checking a password for `user` (a name or an id), from the request's client
        address: a 429 with Retry-After when either has had its share."""
        address = context.current().client
        wait = self.by_address.take(address) if address else 0
        if wait:
            raise TooManyRequests(f"Too many login attempts from {address}; retry in {wait} s.",
                                  headers={"Retry-After": str(wait)})
        wait = self.by_user.take(user.lower())
        if wait:
            raise TooManyRequests(f"Too many failed login attempts for this user; retry in "
                                  f"{wait} s.", headers={"Retry-After": str(wait)})

    def succeeded(self, user: str) -> None:
        self.by_user.give_back(user.lower())
