"""Durations as people write them in extra specs, image properties and settings: a number of
seconds (`86400`) or amounts with units, largest first (`24h`, `1d12h`, `90m`, `30s`; units
d, h, m, s). A duration is a positive whole number of seconds."""

from __future__ import annotations

import re

from infracloud.core.errors import BadRequest

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d{1,9})([dhms])")
FLAVOR_KEY = "infracloud:max_lifetime"  # a flavor's extra spec: its servers' maximum lifetime
# a flavor's extra spec: how long its servers first live (at most the limit); their owners
# extend them up to the limit
FLAVOR_INITIAL_KEY = "infracloud:lifetime"
IMAGE_KEY = "infracloud_max_lifetime"  # an image's property (Glance's snake_case names)
MAX_SECONDS = 10 * 365 * 86400  # ten years: anything longer is a mistake


def parse_duration(value: object, what: str = "duration") -> int:
    """Seconds; a BadRequest naming `what` for anything else."""
    text = str(value).strip().lower() if isinstance(value, (str, int)) and not isinstance(
        value, bool) else ""
    seconds = 0
    if text.isdigit():
        seconds = int(text)
    elif text:
        pos, last = 0, -1
        for m in _PART.finditer(text):
            unit = list(UNITS).index(m.group(2))
            if m.start() != pos or unit <= last:
                break
            seconds += int(m.group(1)) * UNITS[m.group(2)]
            pos, last = m.end(), unit
        if pos != len(text):
            seconds = 0
    if not 0 < seconds <= MAX_SECONDS:
        raise BadRequest(f"Invalid {what} {value!r}: a number of seconds or a duration such as "
                         f"24h, 1d12h, 90m (units d, h, m, s), more than 0 and at most "
                         f"{MAX_SECONDS // 86400} days.")
    return seconds


def describe(seconds: int) -> str:
    """`24 h`, `90 min`, `45 s`: for messages."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
