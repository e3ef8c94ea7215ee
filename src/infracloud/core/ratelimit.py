"""Token buckets by key (a client address, a user name), in this process's memory: each
controller limits its own share."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class Buckets:
    """`burst` tokens per key, refilled at `per_minute`; 0 per minute means no limit. At most
    `max_keys` keys are kept: full buckets (keys that have waited long enough) go first."""

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._tokens: dict[str, tuple[float, float]] = {}  # key → (tokens, at)
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._tokens.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def take(self, key: str) -> int:
        """0 if a token was taken, else the whole seconds until one is there (Retry-After)."""
        if self.rate <= 0:
            return 0
        with self._lock:
            now = self.clock()
            level = self._level(key, now)
            if level < 1:
                return max(1, math.ceil((1 - level) / self.rate))
            if len(self._tokens) >= self.max_keys and key not in self._tokens:
                self._prune(now)
            self._tokens[key] = (level - 1, now)
            return 0

    def give_back(self, key: str) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            self._tokens[key] = (min(float(self.burst), self._level(key, now) + 1), now)

    def _prune(self, now: float) -> None:
        full = [k for k in self._tokens if self._level(k, now) >= self.burst]
        for k in full or list(self._tokens)[: len(self._tokens) // 2]:
            del self._tokens[k]
