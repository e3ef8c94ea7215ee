"""The lease primitive (store/leases.py) on SQLite and PostgreSQL, with a clock the tests move:
one owner at a time, renewal, expiry, release, the fencing generation, and owners racing for
one lease from separate connection pools (as separate controllers would)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import literal, select

from infracloud.core.clock import FakeClock
from infracloud.store import Database
from infracloud.store.leases import Leases, alive, heartbeat_name


def test_one_owner_at_a_time_until_it_expires(db: Database, clock: FakeClock) -> None:
    a, b = Leases(db, clock, "a"), Leases(db, clock, "b")
    assert a.holder("duty:reaper") is None
    assert a.acquire("duty:reaper", 10)
    taken = a.holder("duty:reaper")
    assert taken is not None and (taken.owner, taken.generation) == ("a", 1)
    assert taken.acquired_at == clock.now() and taken.expires_at == clock.now() + \
        (taken.expires_at - taken.acquired_at)
    assert not b.acquire("duty:reaper", 10)
    clock.advance(9)
    assert a.acquire("duty:reaper", 10)  # a renewal: same holding, later expiry
    clock.advance(9)
    assert not b.acquire("duty:reaper", 10)  # 18 s after the first acquire: still a's
    renewed = b.holder("duty:reaper")
    assert renewed is not None and renewed.owner == "a" and renewed.generation == 1
    assert renewed.acquired_at == taken.acquired_at and renewed.renewed_at > taken.renewed_at
    clock.advance(10)  # a stopped renewing (died, or paused) 10 s ago: expired
    assert b.holder("duty:reaper") is None
    assert b.acquire("duty:reaper", 10)
    now_b = a.holder("duty:reaper")
    assert now_b is not None and (now_b.owner, now_b.generation) == ("b", 2)
    assert now_b.acquired_at == clock.now()
    assert not a.acquire("duty:reaper", 10)  # a came back: too late, it is b's now


def test_exactly_at_its_expiry_a_lease_is_still_held(db: Database, clock: FakeClock) -> None:
    a, b = Leases(db, clock, "a"), Leases(db, clock, "b")
    assert a.acquire("x", 5)
    clock.advance(5)
    assert not b.acquire("x", 5)
    assert a.holder("x") is not None
    clock.advance(0.001)
    assert b.acquire("x", 5)


def test_release_hands_over_at_once_and_only_by_the_owner(db: Database,
                                                           clock: FakeClock) -> None:
    a, b = Leases(db, clock, "a"), Leases(db, clock, "b")
    assert a.acquire("duty:conductor", 10)
    b.release("duty:conductor")  # not b's: nothing happens
    assert not b.acquire("duty:conductor", 10)
    a.release("duty:conductor")
    assert a.holder("duty:conductor") is None
    assert b.acquire("duty:conductor", 10)  # at the same instant, without waiting
    view = b.holder("duty:conductor")
    assert view is not None and (view.owner, view.generation) == ("b", 2)
    b.release("duty:conductor")
    assert b.acquire("duty:conductor", 10)  # released and taken again: a new holding
    again = b.holder("duty:conductor")
    assert again is not None and again.generation == 3
    a.release("never-taken")  # no row: nothing to do


def test_all_lists_every_lease_held_or_not(db: Database, clock: FakeClock) -> None:
    a, b = Leases(db, clock, "a"), Leases(db, clock, "b")
    assert a.acquire("duty:alerts", 10)
    assert b.acquire("duty:reaper", 30)
    assert a.acquire(heartbeat_name("a"), 10)
    a.release("duty:alerts")
    clock.advance(11)
    views = {v.name: v for v in a.all()}
    assert list(views) == sorted(views)
    assert set(views) == {"controller:a", "duty:alerts", "duty:reaper"}
    assert (views["duty:alerts"].owner, views["duty:alerts"].held) == (None, False)
    assert (views["controller:a"].owner, views["controller:a"].held) == ("a", False)
    assert (views["duty:reaper"].owner, views["duty:reaper"].held) == ("b", True)


def test_a_ttl_must_be_positive_and_an_owner_named(db: Database, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="positive"):
        Leases(db, clock, "a").acquire("x", 0)
    with pytest.raises(ValueError, match="name"):
        Leases(db, clock, "")


def test_alive_tells_whose_heartbeat_is_live(db: Database, clock: FakeClock) -> None:
    a = Leases(db, clock, "c1#01")
    assert a.acquire(heartbeat_name("c1#01"), 10)
    assert Leases(db, clock, "intruder").acquire("controller:c2#02", 10)  # not c2's own

    def live(owner: str) -> bool:
        with db.read() as s:
            return bool(s.scalar(select(alive(literal(owner), clock.now()))))

    assert live("c1#01") and not live("c2#02") and not live("c3#03")
    clock.advance(11)
    assert not live("c1#01")  # its heartbeat stopped
    assert a.acquire(heartbeat_name("c1#01"), 10)
    assert live("c1#01")
    a.release(heartbeat_name("c1#01"))  # a clean stop
    assert not live("c1#01")


@pytest.mark.parametrize("existing", [False, True], ids=["new", "expired"])
def test_owners_racing_for_one_lease_get_it_once(db_url: str, db: Database, clock: FakeClock,
                                                 existing: bool) -> None:
    """Eight owners, each with its own connection pool (on SQLite: its own writer lock, so
    SQLite's own locking decides), try at the same moment, round after round."""
    if existing:
        assert Leases(db, clock, "gone").acquire("race", 1)
        clock.advance(2)
    dbs = [Database(db_url) for _ in range(8)]
    try:
        for round_ in range(5):
            name = "race" if round_ == 0 else f"race{round_}"
            if existing and round_:
                assert Leases(db, clock, "gone").acquire(name, 1)
            clock.advance(2)
            barrier = threading.Barrier(len(dbs))
            got: dict[str, bool] = {}

            def take(i: int, name: str = name, barrier: threading.Barrier = barrier,
                     got: dict[str, bool] = got) -> None:
                leases = Leases(dbs[i], clock, f"owner{i}")
                barrier.wait()
                got[leases.owner] = leases.acquire(name, 30)

            threads = [threading.Thread(target=take, args=(i,)) for i in range(len(dbs))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            winners = [owner for owner, won in got.items() if won]
            assert len(winners) == 1, got
            view = Leases(db, clock, "reader").holder(name)
            assert view is not None and view.owner == winners[0]
            assert view.generation == (2 if existing else 1)
    finally:
        for d in dbs:
            d.dispose()


class _InsertRace:
    """A Database whose owner finds no row, then loses the insert to another owner that
    inserts in between (the race the primary key settles)."""

    def __init__(self, db: Database, between: Any) -> None:
        self._db = db
        self._between = between
        self._writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    @contextmanager
    def write(self) -> Iterator[Any]:
        with self._db.write() as s:
            yield s
        self._writes += 1
        if self._writes == 1:
            self._between()


def test_losing_the_insert_race_is_not_getting_the_lease(db: Database, clock: FakeClock) -> None:
    first = Leases(db, clock, "first")
    late = Leases(_InsertRace(db, lambda: first.acquire("fresh", 10)),  # type: ignore[arg-type]
                  clock, "late")
    assert not late.acquire("fresh", 10)
    view = first.holder("fresh")
    assert view is not None and view.owner == "first"
