"""The background duties' runner (site/duties.py) on SQLite and PostgreSQL with a clock the
tests move: three controllers' runners on one database, each duty done by one of them only;
a dead holder's duties taken over once its leases ran out; a paused holder that stops before
doing more; a clean stop that hands over at once; and what the status shows."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from infracloud.core.clock import FakeClock
from infracloud.core.settings import DutiesConfig
from infracloud.site.duties import Duties, Duty
from infracloud.store import Database
from infracloud.store.leases import Leases

CONFIG = DutiesConfig(lease_ttl=10, renew_every=3)
NAMES = ("maintenance", "reaper", "alerts", "conductor")


class Controller:
    def __init__(self, db: Database, clock: FakeClock, owner: str, rounds: Counter[str]) -> None:
        self.gained: list[str] = []
        duties = [Duty(n, 60 if n != "conductor" else 0,
                       (lambda n=n: rounds.update([f"{owner}:{n}"])) if n != "conductor"
                       else None, on_gain=lambda n=n: self.gained.append(n)) for n in NAMES]
        duties.append(Duty("keys", 60, lambda: rounds.update([f"{owner}:keys"]),
                           singleton=False))
        self.duties = Duties(Leases(db, clock, owner), clock, CONFIG, duties)

    def held(self) -> set[str]:
        return {n for n in NAMES if self.duties.holds(n)}

    def round(self) -> set[str]:
        """One round of every periodic duty (what the threads do): the ones that ran."""
        return {n for n in (*NAMES, "keys") if n != "conductor" and self.duties.run(n)}


Trio = tuple[Controller, Controller, Controller, Counter[str]]


@pytest.fixture
def trio(db: Database, clock: FakeClock) -> Trio:
    rounds: Counter[str] = Counter()
    a, b, c = (Controller(db, clock, o, rounds) for o in ("a#1", "b#2", "c#3"))
    return a, b, c, rounds


def test_each_duty_runs_on_one_controller_only(trio: Trio,
                                               clock: FakeClock) -> None:
    a, b, c, rounds = trio
    for _ in range(10):  # the first up takes every duty; the others keep trying
        for x in (a, b, c):
            x.duties.renew()
        for x in (a, b, c):
            x.round()
        clock.advance(3)
    assert a.held() == set(NAMES) and b.held() == c.held() == set()
    assert a.gained == list(NAMES)  # each taken once, not at every renewal
    assert rounds == Counter({"a#1:maintenance": 10, "a#1:reaper": 10, "a#1:alerts": 10,
                              "a#1:keys": 10, "b#2:keys": 10, "c#3:keys": 10})


def test_a_dead_holders_duties_are_taken_over_once_its_leases_run_out(
        trio: Trio, clock: FakeClock) -> None:
    a, b, c, _ = trio
    a.duties.renew()
    died = clock.now()  # a dies right after renewing: its leases run 10 s from here
    took: dict[str, dt.timedelta] = {}
    while len(took) < len(NAMES):
        clock.advance(1)
        for x in (b, c):
            x.duties.renew()
            for n in x.held():
                took.setdefault(n, clock.now() - died)
        assert clock.now() - died < dt.timedelta(seconds=30)
    # nobody before the lease ran out, everybody at the first renewal after it
    assert set(took.values()) == {dt.timedelta(seconds=11)}
    assert b.held() | c.held() == set(NAMES) and not b.held() & c.held()


def test_a_paused_holder_stops_before_doing_more(trio: Trio,
                                                 clock: FakeClock) -> None:
    a, b, _, rounds = trio
    a.duties.renew()
    assert a.round() == {"maintenance", "reaper", "alerts", "keys"}
    clock.advance(7)  # a cannot renew (paused, or its database unreachable) ...
    assert a.held() == set()  # ... so from here on it starts no rounds,
    assert a.round() == {"keys"}
    b.duties.renew()  # and nobody could take over yet: the leases are still a's
    assert b.held() == set()
    clock.advance(4)  # 11 s: they ran out
    b.duties.renew()
    assert b.held() == set(NAMES)
    a.duties.renew()  # a resumes: the leases are b's now
    assert a.held() == set() and a.round() == {"keys"}
    assert rounds["a#1:reaper"] == 1 and rounds["a#1:maintenance"] == 1


def test_a_holder_that_cannot_reach_the_database_lets_go_in_time(
        trio: Trio, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, *_ = trio
    a.duties.renew()

    def unreachable(name: str, ttl: float) -> bool:
        raise OperationalError("UPDATE leases", {}, Exception("connection refused"))

    monkeypatch.setattr(a.duties.leases, "acquire", unreachable)
    for _ in range(2):
        clock.advance(3)
        a.duties.renew()  # logged, not raised
    assert a.held() == set(NAMES)  # 6 s after the last renewal: still within its time
    clock.advance(1)
    assert a.held() == set()  # 7 s: it stops, 3 s before anyone may take over


def test_a_clean_stop_hands_the_duties_over_at_once(trio: Trio,
                                                     clock: FakeClock) -> None:
    a, b, _, _ = trio
    a.duties.start()
    try:
        b.duties.renew()
        assert a.held() == set(NAMES) and b.held() == set()
        status = b.duties.status()
        assert [(d["name"], d["holder"]) for d in status["duties"]] == \
            [(n, "a#1") for n in NAMES]
        assert all(d["expires_in"] == 10.0 and d["generation"] == 1
                   for d in status["duties"])
        assert {r["owner"] for r in status["controllers"]} == {"a#1", "b#2"}
    finally:
        a.duties.stop()
    assert a.held() == set()
    b.duties.renew()  # the same instant: no waiting for the leases to run out
    assert b.held() == set(NAMES)
    status = b.duties.status()
    assert [(d["holder"], d["generation"]) for d in status["duties"]] == [("b#2", 2)] * 4
    assert {r["owner"] for r in status["controllers"]} == {"a#1", "b#2"}  # until the conductor
    a.duties.release_heartbeat()  # stopped too
    assert {r["owner"] for r in b.duties.status()["controllers"]} == {"b#2"}


def test_nobody_holding_a_duty_shows(db: Database, clock: FakeClock) -> None:
    rounds: Counter[str] = Counter()
    a = Controller(db, clock, "a#1", rounds)
    assert [d["holder"] for d in a.duties.status()["duties"]] == [None] * 4
    a.duties.renew()
    clock.advance(11)
    status = a.duties.status()
    assert [(d["holder"], d["expires_in"]) for d in status["duties"]] == [(None, None)] * 4
    assert status["controllers"] == []


def test_renewals_must_come_well_within_the_lease() -> None:
    with pytest.raises(ValidationError, match="must be under half of lease_ttl"):
        DutiesConfig(lease_ttl=10, renew_every=5)


def test_the_status_screen_says_where_each_duty_is(trio: Trio, clock: FakeClock) -> None:
    from rich.console import Console

    from infracloud.cli.status import _controllers, _duties

    a, b, _, _ = trio
    a.duties.renew()
    b.duties.renew()
    console = Console(record=True, width=200, color_system="truecolor")
    status = b.duties.status()
    console.print(_controllers(status["controllers"]))
    console.print(_duties(status["duties"]))
    assert console.export_text(styles=False).splitlines() == [
        "2 controllers live: a#1, b#2", "maintenance, reaper, alerts, conductor on a#1"]
    clock.advance(11)  # a died; b has not renewed yet
    console = Console(record=True, width=200, color_system="truecolor")
    status = b.duties.status()
    console.print(_controllers(status["controllers"]))
    console.print(_duties(status["duties"]))
    assert console.export_text(styles=False, clear=False).splitlines() == [
        "no controller heartbeating", "maintenance, reaper, alerts, conductor held by nobody"]
    assert "\x1b[1;31mmaintenance, reaper" in console.export_text(styles=True)
