"""How the dashboard and `infracloud status` write durations and amounts (no heavy imports:
the CLI loads this)."""

from __future__ import annotations

import datetime as dt

# what usage reports group by (the API checks it, and the CLI before it logs in)
USAGE_GROUPS = ("project", "flavor", "host", "user")


def month_start(t: dt.datetime) -> dt.datetime:
    """The first instant of `t`'s month, UTC: where usage reports start by default."""
    return t.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


RESOURCE_TITLES = {"vcpus": "vCPUs", "ram_mb": "RAM", "disk_gb": "Disk"}


def ago(seconds: float | None) -> str:
    """12 s, 4 min, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return ""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def amount(value: float, resource: str) -> str:
    """vCPUs as a count, RAM (MiB) in GiB, disk in GB."""
    if resource == "ram_mb":
        gib = value / 1024
        return f"{gib:,.0f} GiB" if gib >= 10 or gib.is_integer() else f"{gib:,.1f} GiB"
    if resource == "disk_gb":
        return f"{value:,.0f} GB"
    return f"{value:,.0f}"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"
