"""Nova's simple tenant usage over test_usage's scripted timeline (servers created and removed
at known times; hours computed by hand there): the totals per project, the per-server rows,
the period's rules and the bound on rows."""

from __future__ import annotations

import pytest

from infracloud.core.errors import BadRequest
from infracloud.site import tenant_usage
from infracloud.site.tenant_usage import TenantUsage
from tests.unit.compute_env import CI, ZUUL
from tests.unit.test_usage import SINCE, UNTIL, Site, at, site  # noqa: F401 (the fixture)


def usage_of(s: Site) -> TenantUsage:
    return TenantUsage(s.env.db, s.clock)


def test_totals_per_project_are_the_hours_times_the_flavor(site: Site) -> None:  # noqa: F811
    u = usage_of(site)
    found = {x["tenant_id"]: x for x in u.usages(u.period(SINCE, UNTIL), detailed=False)}
    # zuul: A 1 h x (8, 16384 MB, 80 GB) + C 1.25 h x (1, 1536, 10) + E 2 h x (8, 16384, 80)
    assert found[ZUUL.project_id] == {
        "tenant_id": ZUUL.project_id, "start": "2026-01-01T02:00:00.000000",
        "stop": "2026-01-01T08:00:00.000000", "total_hours": 4.25,
        "total_vcpus_usage": 25.25, "total_memory_mb_usage": 51072.0,
        "total_local_gb_usage": 252.5}
    # ci: B 3.5 h x (1, 1536, 10) + D 4 h x (8, 16384, 80)
    ci = found[CI.project_id]
    assert (ci["total_hours"], ci["total_vcpus_usage"], ci["total_memory_mb_usage"],
            ci["total_local_gb_usage"]) == (7.5, 35.5, 70912.0, 355.0)
    assert set(found) == {ZUUL.project_id, CI.project_id}


def test_server_rows_say_when_and_how_long(site: Site) -> None:  # noqa: F811
    u = usage_of(site)
    (zuul,) = u.usages(u.period(SINCE, UNTIL), ZUUL.project_id, detailed=True)
    rows = {r["name"]: r for r in zuul["server_usages"]}
    assert list(rows) == ["A", "C", "E"]  # the oldest first; F ended before the period
    assert rows["A"]["state"] == "terminated" and rows["A"]["hours"] == 1.0
    assert rows["A"]["uptime"] == 3 * 3600 and rows["A"]["ended_at"].startswith(
        "2026-01-01T03:00:00")
    assert (rows["E"]["vcpus"], rows["E"]["memory_mb"], rows["E"]["local_gb"]) == (8, 16384, 80)
    (ci,) = u.usages(u.period(SINCE, UNTIL), CI.project_id, detailed=True)
    running = {r["name"]: r for r in ci["server_usages"]}["D"]
    assert running["state"] == "active" and running["ended_at"] is None
    assert running["hours"] == 4.0 and running["uptime"] == 5 * 3600  # until now: 9 h
    assert running["flavor"] == "big" and running["tenant_id"] == CI.project_id


def test_the_period_follows_novas_rules(site: Site) -> None:  # noqa: F811
    u = usage_of(site)
    assert u.period(SINCE, at(20)).stop == at(9)  # the future holds no use yet
    for start, end in ((None, None), (UNTIL, SINCE), (SINCE, SINCE)):
        with pytest.raises(BadRequest, match="start time cannot occur after the end"):
            u.period(start, end)
    assert u.usages(u.period(at(0.1), at(0.2)), CI.project_id, detailed=True) == []


def test_server_rows_are_bounded_the_totals_are_not(site: Site,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenant_usage, "MAX_SERVERS", 2)
    u = usage_of(site)
    found = u.usages(u.period(SINCE, UNTIL), detailed=True)
    assert sum(len(x["server_usages"]) for x in found) == 2
    assert sum(x["total_hours"] for x in found) == 4.25 + 7.5
