"""Time. Services take a Clock so tests can move time without sleeping."""

from __future__ import annotations

import datetime as dt
import time


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Clock:
    def now(self) -> dt.datetime:
        return utcnow()

    def monotonic(self) -> float:
        """Seconds for measuring intervals (never goes back)."""
        return time.monotonic()


class FakeClock(Clock):
    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)


def isoformat(t: dt.datetime | None, *, micro: bool = False) -> str | None:
    """OpenStack's UTC timestamp form: 2026-11-22T01:35:34Z (or .000000Z with micro)."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    t = t.astimezone(dt.UTC)
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> dt.datetime:
    """Parse an ISO 8601 timestamp; naive values are taken as UTC."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def as_utc(t: dt.datetime) -> dt.datetime:
    """Databases may hand back naive datetimes (SQLite): they are UTC."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
