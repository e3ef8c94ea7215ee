"""Password and secret hashing with argon2id."""

from __future__ import annotations

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from infracloud.core.settings import PasswordHashConfig


class Hasher:
    def __init__(self, config: PasswordHashConfig | None = None) -> None:
        c = config or PasswordHashConfig()
        self._ph = argon2.PasswordHasher(
            time_cost=c.time_cost, memory_cost=c.memory_cost_kib, parallelism=c.parallelism
        )
        # Verifying against this when the user does not exist keeps the timing the same.
        self._dummy = self._ph.hash("not-a-real-password")

    def hash(self, secret: str) -> str:
        return self._ph.hash(secret)

    def verify(self, hashed: str | None, secret: str) -> bool:
        try:
            return self._ph.verify(hashed or self._dummy, secret) and hashed is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, hashed: str) -> bool:
        return self._ph.check_needs_rehash(hashed)
