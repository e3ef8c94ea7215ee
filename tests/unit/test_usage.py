"""Usage reports over a scripted timeline: servers created and removed at known times on two
hosts, for two projects, of two flavors (usage records written by the events hook as in
production); the hours of every group are computed by hand. Also the timeline, CSV/JSON, the
chart, capacity left and retention."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from infracloud.compute.hosts import Report as AgentReport
from infracloud.core.clock import FakeClock
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest
from infracloud.core.settings import ComputeConfig, ControllerConfig, FlavorConfig, OpsConfig
from infracloud.ops.events import EventLog
from infracloud.site.services import build_services
from infracloud.site.usage import Report, Row, UsageReports, auto_step, month_start
from infracloud.store import Database
from infracloud.store.models import CapacitySample, Instance, Project, UsageRecord, User
from tests.unit.compute_env import ADMIN, CI, UNLIMITED, ZUUL, Env

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the FakeClock's start
SINCE, UNTIL = T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=8)
# RAM per vCPU differs between the flavors, so no two measures can stand in for each other
FLAVORS = [FlavorConfig(name="big", vcpus=8, ram_mb=16384, disk_gb=80),
           FlavorConfig(name="small", vcpus=1, ram_mb=1536, disk_gb=10)]


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


class Site:
    """Hosts h1 (zone az1) and h2 (az2), 40 vCPUs, 40 GiB and 400 GB each; servers created
    and removed when the script says."""

    def __init__(self, db: Database, clock: FakeClock) -> None:
        self.clock = clock
        EventLog(db, "vanilla", clock).install()
        self.env = Env(db, clock, ComputeConfig(quota=UNLIMITED, flavors=FLAVORS))
        self.h1, self.h2 = self.env.host("h1", zone="az1"), self.env.host("h2", zone="az2")
        self.servers: dict[str, Instance] = {}
        self.config = ControllerConfig(site="vanilla", ops=OpsConfig(usage_retention_days=2))
        self.usage = UsageReports(db, clock, self.config)

    def go(self, hours: float) -> None:
        assert at(hours) >= self.clock.now(), "the script runs forward"
        self.clock.advance((at(hours) - self.clock.now()).total_seconds())
        self.env.beat(self.h1, self.h2)

    def create(self, hours: float, name: str, caller: Caller, flavor: str, zone: str) -> None:
        self.go(hours)
        server = self.env.boot(caller, name=name, flavor=flavor, availability_zone=zone)
        host = self.h1 if zone == "az1" else self.h2
        assert server.host_id == host.id
        self.env.hosts.report(host.id, [AgentReport(server.id, "running")])
        self.servers[name] = server

    def remove(self, hours: float, name: str, caller: Caller) -> None:
        self.go(hours)
        server = self.servers[name]
        self.env.servers.delete(caller, server.id)
        self.env.hosts.report(server.host_id or "", [AgentReport(server.id, "absent")])


@pytest.fixture
def site(db: Database, clock: FakeClock) -> Site:
    """The script (hours after T0; the report's period is [2 h, 8 h), the clock ends at 9 h):

        A  zuul  big    h1   0    → 3      crosses the start: 1 h in the period
        F  zuul  small  h2   0.5  → 1.5    before the period: not counted
        B  ci    small  h2   1    → 5.5    3.5 h
        C  zuul  small  h2   3    → 4.25   1.25 h
        D  ci    big    h1   4    → (runs) crosses the end: 4 h (5 h until now)
        E  zuul  big    h2   6    → 8.5    crosses the end: 2 h (2.5 h until now)
        G  ci    small  h1   8.25 → 8.75   after the period: not counted (0.5 h until now)
    """
    s = Site(db, clock)
    with db.write() as w:  # zuul has a project row; ci's project was deleted (its id stays)
        w.add(Project(id=ZUUL.project_id, name="zuul"))
        w.add(User(id=CI.user_id, name="ci-bot"))
    s.create(0, "A", ZUUL, "big", "az1")
    s.create(0.5, "F", ZUUL, "small", "az2")
    s.create(1, "B", CI, "small", "az2")
    s.remove(1.5, "F", ZUUL)
    s.create(3, "C", ZUUL, "small", "az2")
    s.remove(3, "A", ZUUL)
    s.create(4, "D", CI, "big", "az1")
    s.remove(4.25, "C", ZUUL)
    s.remove(5.5, "B", CI)
    s.create(6, "E", ZUUL, "big", "az2")
    s.create(8.25, "G", CI, "small", "az1")
    s.remove(8.5, "E", ZUUL)
    s.remove(8.75, "G", CI)
    s.go(9)
    return s


def table(report: Report) -> dict[str, tuple[int, float, float, float, float]]:
    return {r.name: (r.servers, r.instance_hours, r.vcpu_hours, r.ram_gb_hours,
                     r.disk_gb_hours) for r in [*report.rows, report.total]}


def test_hours_by_project_flavor_host_and_user_are_exact(site: Site) -> None:
    # zuul: A 1 h x (8, 16 GiB, 80 GB) + C 1.25 h x (1, 1.5, 10) + E 2 h x (8, 16, 80)
    # ci:   B 3.5 h x (1, 1.5, 10) + D 4 h x (8, 16, 80)
    by_project = site.usage.report(SINCE, UNTIL, "project")
    assert table(by_project) == {
        "p-ci": (2, 7.5, 35.5, 69.25, 355.0),
        "zuul": (3, 4.25, 25.25, 49.875, 252.5),
        "(total)": (5, 11.75, 60.75, 119.125, 607.5)}
    assert [r.name for r in by_project.rows] == ["p-ci", "zuul"]  # the most vCPU-hours first
    assert {r.name: r.id for r in by_project.rows} == {"p-ci": CI.project_id,
                                                       "zuul": ZUUL.project_id}
    assert (by_project.since, by_project.until, by_project.generated_at) == (SINCE, UNTIL,
                                                                             at(9))
    # big: A 1 h, D 4 h, E 2 h; small: B 3.5 h, C 1.25 h
    assert table(site.usage.report(SINCE, UNTIL, "flavor")) == {
        "big": (3, 7.0, 56.0, 112.0, 560.0),
        "small": (2, 4.75, 4.75, 7.125, 47.5),
        "(total)": (5, 11.75, 60.75, 119.125, 607.5)}
    # h1: A 1 h, D 4 h; h2: B 3.5 h, C 1.25 h, E 2 h
    assert table(site.usage.report(SINCE, UNTIL, "host")) == {
        "h1": (2, 5.0, 40.0, 80.0, 400.0),
        "h2": (3, 6.75, 20.75, 39.125, 207.5),
        "(total)": (5, 11.75, 60.75, 119.125, 607.5)}
    # users by name when they have a row, else by id
    assert {r.name: r.vcpu_hours for r in site.usage.report(SINCE, UNTIL, "user").rows} == {
        "ci-bot": 35.5, ZUUL.user_id: 25.25}


def test_until_now_counts_running_servers_up_to_now(site: Site) -> None:
    # until now (9 h): D runs 5 h, E 2.5 h, and G's half hour comes in
    report = site.usage.report(SINCE)
    assert report.until == at(9)
    assert table(report) == {
        "p-ci": (3, 9.0, 44.0, 86.0, 440.0),  # B 3.5 + D 5 + G 0.5
        "zuul": (3, 4.75, 29.25, 57.875, 292.5),  # A 1 + C 1.25 + E 2.5
        "(total)": (6, 13.75, 73.25, 143.875, 732.5)}
    # a period in the future holds nothing yet; one before any server neither
    assert site.usage.report(at(10), at(12)).rows == []
    assert site.usage.report(T0 - dt.timedelta(days=1), T0).rows == []
    # the default period starts with the month
    assert site.usage.report().since == month_start(at(9)) == T0


def test_timeline_is_the_average_use_per_step(site: Site) -> None:
    t = site.usage.timeline(SINCE, UNTIL, "flavor", dt.timedelta(hours=1))
    assert t.times == [at(h) for h in range(2, 8)]
    assert t.groups == ["big", "small"]
    # big: A until 3 h, D from 4 h, E from 6 h
    assert t.vcpus["big"] == [8, 0, 8, 8, 16, 16]
    # small: B until 5.5 h, C from 3 h to 4.25 h
    assert t.vcpus["small"] == [1, 2, 1.25, 0.5, 0, 0]
    assert t.ram_gb["small"] == [1.5, 3, 1.875, 0.75, 0, 0]
    assert t.disk_gb["big"] == [80, 0, 80, 80, 160, 160]
    assert t.capacity == {"vcpus": 80, "ram_gb": 80, "disk_gb": 800}
    # no capacity sample yet (the maintenance loop takes them): every step is now
    assert t.capacity_over_time["vcpus"] == [80] * 6
    # a last step cut short by the period's end averages over what it holds; the timeline
    # stops now: the future has no use yet
    late = site.usage.timeline(at(7), at(12), "project", dt.timedelta(hours=1.5))
    assert late.until == at(9) and late.times == [at(7), at(8.5)]
    # D, and G's quarter hours: of the first step's 1.5 h, and of the last's half hour
    assert late.vcpus["p-ci"] == pytest.approx([8 + 0.25 / 1.5, 8 + 0.25 / 0.5], abs=1e-9)
    assert late.vcpus["zuul"] == [8, 0]
    with pytest.raises(BadRequest, match="too many"):
        site.usage.timeline(T0, at(9), "host", dt.timedelta(seconds=1))
    assert auto_step(dt.timedelta(days=30)) == dt.timedelta(hours=6)
    assert auto_step(dt.timedelta(hours=2)) == dt.timedelta(minutes=1)


def test_the_capacity_line_follows_the_hosts_that_take_servers(db: Database,
                                                               clock: FakeClock) -> None:
    """Samples every 5 minutes at most: h2 (40 vCPUs) is disabled from 1 h to 2 h, and a
    third host joins at 2.5 h; the chart's capacity per 30-minute step follows."""
    env = Env(db, clock, ComputeConfig(quota=UNLIMITED, flavors=FLAVORS))
    hosts = [env.host("h1"), env.host("h2")]
    usage = UsageReports(db, clock, ControllerConfig(site="vanilla"))

    def go(hours: float) -> None:
        clock.advance((at(hours) - clock.now()).total_seconds())
        env.beat(*hosts)

    assert usage.sample_capacity()  # 0 h: 80
    go(0.05)
    assert not usage.sample_capacity()  # three minutes later: too soon
    go(1)
    env.hosts.set_enabled(ADMIN, "h2", False, "disk died")
    assert usage.sample_capacity()  # 1 h: 40
    go(1.25)
    assert usage.sample_capacity()  # 1.25 h: 40 (the step 1-1.5 h averages 40)
    go(2)
    env.hosts.set_enabled(ADMIN, "h2", True)
    assert usage.sample_capacity()  # 2 h: 80
    go(2.5)
    hosts.append(env.host("h3"))
    assert usage.sample_capacity()  # 2.5 h: 120
    go(3)
    t = usage.timeline(at(0), at(3), "project", dt.timedelta(minutes=30))
    assert t.capacity_over_time["vcpus"] == [80, 80, 40, 40, 80, 120]
    assert t.capacity_over_time["ram_gb"] == [80, 80, 40, 40, 80, 120]
    assert t.capacity["vcpus"] == 120
    # a period that starts after the last sample carries it; one before the first takes it
    assert usage.timeline(at(2.75), at(3), step=dt.timedelta(minutes=5)
                          ).capacity_over_time["vcpus"] == [120] * 3
    early = usage.timeline(at(-1), at(0.5), step=dt.timedelta(minutes=30))
    assert early.capacity_over_time["vcpus"] == [80, 80, 80]
    assert json.loads(json.dumps(t.as_dict()))["capacity_over_time"]["disk_gb"] == [
        800, 800, 400, 400, 800, 1200]
    assert usage.png(at(0), at(3)).startswith(b"\x89PNG")
    # retention: the samples go with the usage records
    short = UsageReports(db, clock, ControllerConfig(
        site="vanilla", ops=OpsConfig(usage_retention_days=1)))
    clock.advance(dt.timedelta(days=1, hours=-2).total_seconds())  # 1 day after 1 h
    short.prune()
    kept = short.timeline(at(0), at(3), step=dt.timedelta(minutes=30))
    assert kept.capacity_over_time["vcpus"] == [40, 40, 40, 40, 80, 120]  # 0 h gone


def test_csv_json_and_png(site: Site) -> None:
    report = site.usage.report(SINCE, UNTIL, "project")
    rows = list(csv.reader(io.StringIO(report.csv())))
    assert rows[0] == ["project", "project_id", "servers", "instance_hours", "vcpu_hours",
                       "ram_gb_hours", "disk_gb_hours"]
    assert rows[1] == ["p-ci", CI.project_id, "2", "7.5", "35.5", "69.25", "355.0"]
    assert rows[-1] == ["(total)", "", "5", "11.75", "60.75", "119.125", "607.5"]
    by_host = list(csv.DictReader(io.StringIO(site.usage.report(SINCE, UNTIL, "host").csv())))
    assert [(r["host"], r["vcpu_hours"]) for r in by_host] == [
        ("h1", "40.0"), ("h2", "20.75"), ("(total)", "60.75")]

    data = json.loads(json.dumps(report.as_dict()))
    assert data["site"] == "vanilla" and data["by"] == "project"
    assert (data["since"], data["until"]) == ("2026-01-01T02:00:00Z", "2026-01-01T08:00:00Z")
    assert data["rows"][1] == {"name": "zuul", "id": ZUUL.project_id, "servers": 3,
                               "instance_hours": 4.25, "vcpu_hours": 25.25,
                               "ram_gb_hours": 49.875, "disk_gb_hours": 252.5}
    assert data["total"]["vcpu_hours"] == 60.75

    png = site.usage.png(SINCE, UNTIL, "project")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert 10_000 < len(png) < 1_000_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1000, 500)
    # a period with no servers still draws (the capacity line and a note)
    assert site.usage.png(at(10), at(12)).startswith(b"\x89PNG")


def test_capacity_left_per_flavor(site: Site) -> None:
    # now only D (big, 8 vCPUs, 16 GiB, 80 GB) runs, on h1; RAM binds both flavors:
    # big: h1 24 GiB free → 1, h2 40 GiB → 2; small: 24/1.5 = 16 and 40/1.5 → 26
    left = {c["flavor"]: c for c in site.usage.capacity_left()}
    assert [c["flavor"] for c in site.usage.capacity_left()] == ["small", "big"]
    assert (left["big"]["free"], left["big"]["total"], left["big"]["in_use"]) == (3, 4, 1)
    assert (left["small"]["free"], left["small"]["total"]) == (42, 52)
    assert left["big"]["binding"] == left["small"]["binding"] == "ram"
    assert site.usage.report(SINCE, UNTIL).capacity_left == site.usage.capacity_left()


def test_bad_values_are_refused(site: Site) -> None:
    with pytest.raises(BadRequest, match="by must be one of project, flavor, host, user"):
        site.usage.report(SINCE, UNTIL, "colour")
    with pytest.raises(BadRequest, match="must be before until"):
        site.usage.report(UNTIL, SINCE)
    with pytest.raises(BadRequest, match="must be before until"):
        site.usage.timeline(SINCE, SINCE)


def test_prune_forgets_servers_gone_longer_than_the_retention(site: Site,
                                                              db: Database) -> None:
    site.go(9 + 24 * 2 - 1)  # 2 days retention: E (gone at 8.5 h) and G (8.75 h) stay
    assert site.usage.prune() == 4  # A, B, C, F
    with db.read() as s:
        kept = {u.name for u in s.query(UsageRecord)}
    assert kept == {"D", "E", "G"}
    site.go(9 + 24 * 2)
    assert site.usage.prune() == 2
    assert [r.name for r in site.usage.report(T0).rows] == ["p-ci"]  # D runs on
    assert site.usage.prune() == 0


def test_an_empty_report_has_a_zero_total(db: Database, clock: FakeClock) -> None:
    usage = UsageReports(db, clock, ControllerConfig())
    report = usage.report(T0 - dt.timedelta(days=1))
    assert report.rows == [] and report.total == Row("(total)", None, 0, 0, 0, 0, 0)
    assert report.csv().splitlines()[-1] == "(total),,0,0,0,0,0"


def test_the_maintenance_loop_samples_the_capacity(tmp_path: Path) -> None:
    config = ControllerConfig.model_validate({
        "database": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "images": {"store_path": str(tmp_path / "images")}})
    services = build_services(config)
    try:
        services.maintenance()
        services.maintenance()  # a minute later in production: too soon for another
        with services.db.read() as s:
            assert s.scalar(select(func.count()).select_from(CapacitySample)) == 1
    finally:
        services.close()
