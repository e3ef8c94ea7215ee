"""The verdict of bench/ha.py: what a run of churn under `kill -9`s measured, and the rules it
must keep (the "Done when" of issue 16). Pure functions of the figures, so a unit test can
hand them made-up numbers (tests/unit/test_ha_verdict.py)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

TAKEOVER_BOUND = 15.0  # seconds: every duty (and the pool) taken over within this


@dataclass
class Figures:
    """What one run saw. `takeovers`: seconds from each controller's `kill -9` until every
    duty was held by a live controller (None: not within the wait); `pool_takeovers`: the
    same for the pool's standby becoming active."""
    calls: int = 0  # openstacksdk calls the churn made
    failed: int = 0  # calls that failed (and were made again)
    retried: int = 0
    unanswered: list[str] = field(default_factory=list)  # failed even after the retries
    pool_calls: int = 0
    pool_retried: int = 0
    pool_failed: list[str] = field(default_factory=list)  # pool calls failed after retries
    takeovers: list[float | None] = field(default_factory=list)
    holder_kills: int = 0  # how many of the kills hit the controller holding duties
    pool_takeovers: list[float | None] = field(default_factory=list)
    leftovers: dict[str, int] = field(default_factory=dict)  # servers, ports, claims...
    unexplained_servers: int = 0  # servers made that no create call's answer named
    cleaned: int = 0  # servers a create whose answer was lost made, found and deleted
    nodes_launched_twice: int = 0  # pool nodes with more than one server made


def duplicate_servers(made: int, answered: int, cleaned: int) -> int:
    """Servers made for no client request: `made` servers the site created for the churn's
    names, `answered` of them named in a create's answer, `cleaned` found after a create
    whose answer was lost (each such create made one server, which the client deleted)."""
    return max(0, made - answered - cleaned)


def spread(values: list[float | None]) -> str:
    """`p50 X s, max Y s over N` of what was measured (a missing one counts as unbounded)."""
    got = [v for v in values if v is not None]
    if not values:
        return "none"
    if len(got) < len(values):
        return f"{len(values) - len(got)} of {len(values)} never taken over"
    return (f"p50 {statistics.median(got):.1f} s, max {max(got):.1f} s over {len(got)}")


def violations(f: Figures, bound: float = TAKEOVER_BOUND) -> list[str]:
    """Every rule the run broke, one line each; empty: the run passed."""
    out = []
    if f.unanswered:
        out.append(f"{len(f.unanswered)} client request(s) not answered after retries "
                   f"(first: {f.unanswered[0]})")
    if f.pool_failed:
        out.append(f"{len(f.pool_failed)} pool call(s) failed after retries "
                   f"(first: {f.pool_failed[0]})")
    for what, values in (("duty", f.takeovers), ("pool", f.pool_takeovers)):
        slow = [v for v in values if v is None or v >= bound]
        if slow:
            shown = ", ".join("never" if v is None else f"{v:.1f} s" for v in slow)
            out.append(f"{len(slow)} {what} takeover(s) not within {bound:g} s: {shown}")
    leaks = {k: v for k, v in f.leftovers.items() if v}
    if leaks:
        out.append("leaked after the churn: " +
                   ", ".join(f"{v} {k}" for k, v in sorted(leaks.items())))
    if f.unexplained_servers:
        out.append(f"{f.unexplained_servers} server(s) created twice for one client request")
    if f.nodes_launched_twice:
        out.append(f"{f.nodes_launched_twice} pool node(s) launched twice")
    return out
