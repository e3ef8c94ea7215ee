"""Servers' maximum lifetimes (compute/lifetimes.py) with an injected clock: the shortest of
the flavor's, the image's and the project's limits applies; nothing is deleted a second early
and nothing survives one round past its expiry (deleted through the normal path, with an event
saying why); the owner extends up to the limit and not past it; an admin exempts a server; the
warning fires once per expiry (and again after an extension); the controller's metadata item
cannot be written by the owner; the limits' syntax is checked."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from infracloud.compute.actions import ServerActions
from infracloud.compute.flavor_access import FlavorAccess
from infracloud.compute.hosts import Report
from infracloud.compute.lifetimes import Lifetimes
from infracloud.compute.reserved_meta import EXPIRES_AT
from infracloud.core.clock import FakeClock, isoformat
from infracloud.core.durations import describe, parse_duration
from infracloud.core.errors import BadRequest, Conflict, Forbidden
from infracloud.core.settings import ComputeConfig, FlavorConfig, LifetimesConfig
from infracloud.ops import context
from infracloud.ops.alerting import AlertRecord
from infracloud.ops.events import EventLog, Query
from infracloud.site.services import build_services
from infracloud.store import Database
from infracloud.store.models import Image, Project
from tests.unit.api_env import quick_config
from tests.unit.compute_env import ADMIN, IMAGE_ID, UNLIMITED, ZUUL, Env
from tests.webhooks import Hook

DAY = 86400
FLAVORS = [FlavorConfig(name="ci.8g", vcpus=8, ram_mb=8192, disk_gb=80),
           FlavorConfig(name="builder.8g", vcpus=8, ram_mb=8192, disk_gb=80,
                        max_lifetime="24h"),
           FlavorConfig(name="builder.6h", vcpus=8, ram_mb=8192, disk_gb=80,
                        max_lifetime="1d", lifetime="6h")]


class Site:
    def __init__(self, db: Database, clock: FakeClock, warn_before: float = 3600) -> None:
        self.env = Env(db, clock, ComputeConfig(quota=UNLIMITED, flavors=FLAVORS))
        self.clock = clock
        self.events = EventLog(db, "vanilla", clock)
        self.events.install()
        self.warnings: list[AlertRecord] = []
        self.lifetimes = Lifetimes(db, LifetimesConfig(warn_before=warn_before, page=2),
                                   clock, self.env.servers, self.events.record,
                                   self.warnings.append)
        with db.write() as s:
            s.add(Project(id=ZUUL.project_id, name="zuul"))
            s.add(Image(id=IMAGE_ID, name="fedora", owner=ZUUL.project_id, status="active",
                        properties={}))
        self.host = self.env.host("h1")
        self.env.beat(self.host)

    def image_limit(self, value: str | None) -> None:
        with self.env.db.write() as s:
            image = s.get(Image, IMAGE_ID)
            assert image is not None
            image.properties = {} if value is None else {"infracloud_max_lifetime": value}

    def round(self) -> tuple[int, int]:
        with context.acting("system:lifetimes"):
            return self.lifetimes.sweep()

    def state(self, server_id: str) -> str | None:
        rows = [i for i in self.env.instances() if i.id == server_id]
        return rows[0].state if rows else None

    def events_of(self, server_id: str, action: str) -> list[Any]:
        return [e for e in self.events.query(Query(resource_id=server_id, limit=1000))
                if e.action == action]


@pytest.fixture
def site(db: Database, clock: FakeClock) -> Site:
    return Site(db, clock)


def test_durations() -> None:
    assert parse_duration("24h") == DAY == parse_duration("86400") == parse_duration(86400)
    assert parse_duration("1d12h") == 36 * 3600 and parse_duration("90m") == 5400
    for bad in ("", "0", "-1", "h", "24x", "12h1d", "1.5h", True, None, "99999d", "24 h"):
        with pytest.raises(BadRequest):
            parse_duration(bad)
    assert describe(DAY) == "24 h" and describe(5400) == "90 min" and describe(61) == "61 s"


def test_no_limit_lives_until_deleted(site: Site) -> None:
    server = site.env.boot(flavor="ci.8g")
    assert server.expires_at is None and EXPIRES_AT not in server.metadata_
    site.clock.advance(365 * DAY)
    assert site.round() == (0, 0)
    assert site.state(server.id) not in (None, "deleting")


def test_nothing_early_nothing_late(site: Site) -> None:
    start = site.clock.now()
    server = site.env.boot(flavor="builder.8g")
    expires = start + dt.timedelta(seconds=DAY)
    assert server.metadata_[EXPIRES_AT] == isoformat(expires)
    site.clock.advance(DAY - 1)  # one second before: still there
    site.round()
    assert site.state(server.id) not in (None, "deleting")
    assert site.events_of(server.id, "expire") == []
    site.clock.advance(1)  # its expiry: the next round deletes it
    assert site.round()[1] == 1
    assert site.state(server.id) == "deleting"
    (event,) = site.events_of(server.id, "expire")
    assert event.reason == "expired: flavor builder.8g limits servers to 24 h"
    assert event.actor == "system:lifetimes"
    assert site.round() == (0, 0)  # being deleted: not again


def test_the_shortest_limit_applies(site: Site) -> None:
    site.image_limit("12h")
    server = site.env.boot(flavor="builder.8g")
    assert server.lifetime_limit == 12 * 3600
    assert server.lifetime_reason == "image fedora limits servers to 12 h"
    site.lifetimes.set_project_limit(ZUUL.project_id, "2h")
    server = site.env.boot(flavor="builder.8g")
    assert server.lifetime_reason == "project zuul limits servers to 2 h"
    server = site.env.boot(flavor="ci.8g")  # the project's limit alone
    assert server.lifetime_limit == 7200
    site.lifetimes.set_project_limit(ZUUL.project_id, None)
    site.image_limit("48h")
    server = site.env.boot(flavor="builder.8g")
    assert server.lifetime_reason == "flavor builder.8g limits servers to 24 h"
    with pytest.raises(BadRequest):
        site.lifetimes.set_project_limit(ZUUL.project_id, "forever")


def test_extend_up_to_the_limit_and_not_past(site: Site) -> None:
    start = site.clock.now()
    server = site.env.boot(flavor="builder.6h")  # lives 6 h, extensible to 24 h
    assert server.metadata_[EXPIRES_AT] == isoformat(start + dt.timedelta(hours=6))
    site.clock.advance(3600)
    out = site.lifetimes.extend(ZUUL, server.id, 3600 * 17)
    assert out["expires_at"] == isoformat(start + dt.timedelta(hours=23))
    assert out["latest_expiry"] == isoformat(start + dt.timedelta(days=1))
    assert site.env.state(server.id).metadata_[EXPIRES_AT] == out["expires_at"]
    with pytest.raises(Conflict, match=r"expires at .* at the latest"):
        site.lifetimes.extend(ZUUL, server.id, 3601)
    out = site.lifetimes.extend(ZUUL, server.id, 3600)  # exactly to the limit
    assert out["expires_at"] == out["latest_expiry"]
    with pytest.raises(Conflict):
        site.lifetimes.extend(ZUUL, server.id, 1)
    for bad in (0, -5, "1h", True, None):
        with pytest.raises(BadRequest):
            site.lifetimes.extend(ZUUL, server.id, bad)
    (event,) = [e for e in site.events_of(server.id, "extend") if "23" in (e.target or "")]
    assert event.reason.startswith(f"extended by {ZUUL.user_id}")
    site.clock.advance(23 * 3600 - 1)  # extended: alive until its new expiry
    site.round()
    assert site.state(server.id) not in (None, "deleting")
    site.clock.advance(1)
    assert site.round()[1] == 1


def test_a_server_with_no_limit_has_nothing_to_extend(site: Site) -> None:
    server = site.env.boot(flavor="ci.8g")
    with pytest.raises(Conflict, match="no expiry"):
        site.lifetimes.extend(ZUUL, server.id, 60)


def test_an_admin_exempts_a_server(site: Site) -> None:
    server = site.env.boot(flavor="builder.8g")
    with pytest.raises(Forbidden):
        site.lifetimes.exempt(ZUUL, server.id, "zuul")
    out = site.lifetimes.exempt(ADMIN, server.id, "admin")
    assert out["expires_at"] is None and out["exempted_by"] == "admin"
    assert EXPIRES_AT not in site.env.state(server.id).metadata_
    (event,) = site.events_of(server.id, "exempt")
    assert event.reason == "exempted from its lifetime by admin"
    site.clock.advance(30 * DAY)
    assert site.round() == (0, 0)
    assert site.state(server.id) not in (None, "deleting")
    with pytest.raises(Conflict):
        site.lifetimes.extend(ZUUL, server.id, 60)


def test_the_warning_fires_once_per_expiry(site: Site) -> None:
    site.image_limit("3h")
    server = site.env.boot(flavor="builder.8g")
    site.clock.advance(2 * 3600 - 1)  # a second before the warning time
    assert site.round() == (0, 0)
    site.clock.advance(1)
    assert site.round() == (1, 0)
    site.clock.advance(60)
    assert site.round() == (0, 0)  # once
    (event,) = site.events_of(server.id, "expiry-warning")
    assert "image fedora limits servers to 3 h" in event.reason
    (alert,) = site.warnings
    assert alert.rule == "server_expiring" and alert.subject == server.id
    assert alert.summary == event.reason


def test_an_extended_expiry_is_warned_of_again(site: Site) -> None:
    server = site.env.boot(flavor="builder.6h")
    site.clock.advance(5 * 3600)
    assert site.round() == (1, 0)
    site.lifetimes.extend(ZUUL, server.id, 7200)  # now 8 h from its creation
    assert site.round() == (0, 0)
    site.clock.advance(2 * 3600)
    assert site.round() == (1, 0)
    assert len(site.events_of(server.id, "expiry-warning")) == 2
    assert len(site.warnings) == 2


def test_a_round_handles_a_page(site: Site) -> None:
    servers = [site.env.boot(flavor="builder.8g", name=f"b{i}") for i in range(5)]
    site.clock.advance(DAY)
    assert site.round() == (0, 2)
    assert site.round() == (0, 2)
    assert site.round() == (0, 1)
    assert {site.state(s.id) for s in servers} == {"deleting"}


def test_the_owner_cannot_write_the_expiry(site: Site) -> None:
    server = site.env.boot(flavor="builder.8g", metadata={"job": "1"})
    with pytest.raises(Forbidden):
        site.env.servers.set_metadata(ZUUL, server.id, {EXPIRES_AT: "2099-01-01T00:00:00Z"},
                                      replace=False)
    with pytest.raises(Forbidden):
        site.env.servers.delete_metadata(ZUUL, server.id, EXPIRES_AT)
    kept = site.env.servers.set_metadata(ZUUL, server.id, {"job": "2"}, replace=True)
    assert kept == {"job": "2", EXPIRES_AT: server.metadata_[EXPIRES_AT]}
    with pytest.raises(Forbidden):
        site.env.boot(flavor="ci.8g", metadata={EXPIRES_AT: "2099-01-01T00:00:00Z"})


def test_the_limits_are_checked_where_they_are_written(site: Site) -> None:
    access = FlavorAccess(site.env.flavors)
    with pytest.raises(BadRequest):
        access.set_specs(ADMIN, "ci.8g", {"infracloud:max_lifetime": "a day"})
    assert access.set_specs(ADMIN, "ci.8g", {"infracloud:max_lifetime": "36h"})
    server = site.env.boot(flavor="ci.8g")
    assert server.lifetime_reason == "flavor ci.8g limits servers to 36 h"


def test_a_controller_runs_it_as_a_duty_and_warns_through_the_alert_webhook(
        tmp_path: Path) -> None:
    """The wiring of services.py: the `lifetimes` duty (one controller at a time, by lease)
    and the warning to the site's alert webhook."""
    hook = Hook()
    services = build_services(quick_config(tmp_path), clock=FakeClock())
    try:
        services.alerts.notifier.set_webhook(hook.url, 2, hook.transport)
        duty = services.duties.duties["lifetimes"]
        assert duty.singleton and duty.every == services.config.compute.lifetimes.interval
        services.duties.renew()  # alone: it takes every duty
        assert services.duties.run("lifetimes")  # a round, holding its lease
        assert services.lifetimes.warn is not None
        services.lifetimes.warn(AlertRecord(
            id="x", rule="server_expiring", subject="server-id", severity="warning",
            state="firing", summary="server n expires", started_at=services.clock.now(),
            resource_type="server"))
        (body,) = hook.wait(1)
        assert (body["rule"], body["subject"], body["summary"], body["status"]) == (
            "server_expiring", "server-id", "server n expires", "firing")
    finally:
        services.close()


def test_an_expired_server_can_be_neither_extended_nor_exempted(site: Site) -> None:
    """Between the duty's reading of the expired servers and their deletion, nothing saves
    one (it would be deleted all the same)."""
    server = site.env.boot(flavor="builder.6h")
    site.clock.advance(6 * 3600)
    with pytest.raises(Conflict, match="has expired"):
        site.lifetimes.extend(ZUUL, server.id, 60)
    with pytest.raises(Conflict, match="has expired"):
        site.lifetimes.exempt(ADMIN, server.id, "admin")
    assert site.round() == (0, 1)
    with pytest.raises(Conflict):
        site.lifetimes.exempt(ADMIN, server.id, "admin")


def test_a_rebuild_keeps_the_expiry(site: Site) -> None:
    server = site.env.boot(flavor="builder.8g")
    site.env.hosts.report(site.host.id, [Report(server.id, "running")])
    actions = ServerActions(site.env.servers)
    with pytest.raises(Forbidden):
        actions.rebuild(ZUUL, server.id, IMAGE_ID, metadata={EXPIRES_AT: "2099-01-01T00:00:00Z"})
    rebuilt = actions.rebuild(ZUUL, server.id, IMAGE_ID, metadata={"k": "v"})
    assert rebuilt.metadata_ == {"k": "v", EXPIRES_AT: server.metadata_[EXPIRES_AT]}


def test_the_status_says_what_expires_next(site: Site) -> None:
    from rich.console import Console

    from infracloud.cli.status import screen
    from infracloud.site.status import gather

    site.env.boot(flavor="ci.8g", name="forever")
    site.env.boot(flavor="builder.8g", name="later")
    site.clock.advance(3600)
    site.env.boot(flavor="builder.6h", name="sooner")
    data = gather(site.env.db, None, site.clock, site="vanilla", region="RegionOne",
                  url="https://ctl.example:8443")
    soon = data["instances"]["expiring"]
    assert soon["count"] == 2 and soon["next_in"] == 6 * 3600
    console = Console(record=True, width=100)
    console.print(screen(data))
    assert "2 with an expiry; the next in 6 h 0 min" in console.export_text()
