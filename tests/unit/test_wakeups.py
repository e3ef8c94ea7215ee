"""Agents' long-polls woken across controllers (store.wakeups, compute.signals): what a write
sends (on PostgreSQL, a NOTIFY that only a commit delivers), how the listener bounds its work
(hosts nobody waits on here dropped, a batch's repeats woken once, one loop callback for many
notifications) and how it comes back after losing its connection."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from infracloud.compute.signals import HostSignals
from infracloud.store import Database
from infracloud.store.wakeups import CHANNEL, Listener, PgChannel, wake
from tests.conftest import create_pg_database
from tests.servers import async_wait_for, wait_for
from tests.unit.compute_env import Env

# ---- the listener's loop, with a fake connection ------------------------------------------


class FakeChannel:
    """Hands out `script` one item a receive (a batch of payloads, or an error to raise),
    then waits until interrupted."""

    def __init__(self, *script: list[str] | Exception) -> None:
        self.script = list(script)
        self.interrupted = threading.Event()
        self.closed = False

    def receive(self, timeout: float) -> list[str]:
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        self.interrupted.wait(timeout)
        return []

    def interrupt(self) -> None:
        self.interrupted.set()

    def close(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self, watched: set[str]) -> None:
        self.watched = watched
        self.asked: list[str] = []
        self.delivered: list[set[str]] = []
        self.resyncs = 0

    def wanted(self, host_id: str) -> bool:
        self.asked.append(host_id)
        return host_id in self.watched

    def listener(self, opens: list[Any], **kw: Any) -> Listener:
        def open_channel() -> FakeChannel:
            item = opens.pop(0)
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, FakeChannel)
            return item

        return Listener(open_channel, self.wanted, self.delivered.append, self.resync,
                        backoff=(0.01, 0.02), **kw)

    def resync(self) -> None:
        self.resyncs += 1


def test_a_batch_wakes_each_watched_host_once_and_drops_the_rest() -> None:
    rec = Recorder({"h1", "h2"})
    listener = rec.listener([])
    assert listener.take(["h1", "h1", "h2", "h1", "other", "other", "x" * 200]) == {"h1", "h2"}
    assert rec.delivered == [{"h1", "h2"}]  # one hand-over for the batch, each host once
    # each distinct payload looked up once; one too long to be a host id is not even that
    assert sorted(rec.asked) == ["h1", "h2", "other"]
    assert listener.take(["other", "nobody"]) == set()
    assert rec.delivered == [{"h1", "h2"}]  # nothing to hand over: no call at all
    assert (listener.received, listener.delivered) == (9, 2)


def test_the_listener_reconnects_with_backoff_and_catches_up(
        caplog: pytest.LogCaptureFixture) -> None:
    """The database refuses the first two connections; the third is lost after one batch;
    the fourth listens. Each time it listens, every waiting long-poll re-reads once
    (`resync`); each outage is one warning however many attempts fail, each return one
    line; close() ends the thread."""
    rec = Recorder({"h1", "h2"})
    second = FakeChannel(["h1", "h1", "other"], psycopg.OperationalError("server closed"))
    third = FakeChannel(["h2"])
    refused = psycopg.OperationalError("connection refused")
    opens: list[Any] = [refused, refused, second, third]
    listener = rec.listener(opens)
    with caplog.at_level(logging.INFO, logger="infracloud.store.wakeups"):
        listener.start()
        wait_for("both batches", lambda: len(rec.delivered) == 2)
        wait_for("the third connection to listen", listener.listening.is_set)
        listener.close()
    assert listener._thread is not None and not listener._thread.is_alive()
    assert rec.delivered == [{"h1"}, {"h2"}]
    assert (listener.connects, rec.resyncs, opens) == (2, 2, [])
    assert second.closed and third.closed
    lines = [(r.levelname, r.getMessage().split(";")[0]) for r in caplog.records]
    assert lines == [("WARNING", "host wake-ups: not listening (connection refused)"),
                     ("INFO", "host wake-ups: listening again"),
                     ("WARNING", "host wake-ups: not listening (server closed)"),
                     ("INFO", "host wake-ups: listening again")]


def test_close_ends_a_listener_that_waits_for_notifications() -> None:
    channel = FakeChannel()
    listener = Recorder(set()).listener([channel], idle=3600)
    listener.start()
    wait_for("it to listen", listener.listening.is_set)
    listener.close(timeout=30)
    assert channel.interrupted.is_set() and channel.closed
    assert listener._thread is not None and not listener._thread.is_alive()


# ---- the event loop's side ------------------------------------------------------------------


def test_notifications_from_threads_wake_each_waiting_host_in_one_loop_callback() -> None:
    signals = HostSignals()

    async def main() -> None:
        signals.bind(asyncio.get_running_loop())
        with signals.waiting("h1") as e1, signals.waiting("h2") as e2:
            assert signals.watched("h1") and not signals.watched("nobody")

            def burst() -> None:  # the listener and request threads, while the loop is busy
                for _ in range(100):
                    signals.notify_many(["h1", "h2", "nobody"])
                    signals.notify("h1")

            t = threading.Thread(target=burst)
            t.start()
            t.join()
            assert signals.callbacks == 1  # 200 notifications, one callback scheduled
            await async_wait_for("the hosts to be woken", lambda: e1.is_set() and e2.is_set())
            e1.clear()
            signals.wake_all()  # the listener is back: everyone re-reads once
            await async_wait_for("a wake-up for all", e1.is_set)
        assert not signals.watched("h1")  # nobody waits: the next notification costs nothing
        signals.notify("h1")
        assert signals.callbacks == 2

    asyncio.run(main())


def test_two_long_polls_of_one_host_share_its_event_until_the_last_leaves() -> None:
    signals = HostSignals()

    async def main() -> None:
        with signals.waiting("h") as first:
            with signals.waiting("h") as second:
                assert first is second
            assert signals.watched("h")
        assert not signals.watched("h")

    asyncio.run(main())


# ---- what a write sends -------------------------------------------------------------------


def test_wake_tells_this_controller_once_after_the_commit_and_never_on_a_rollback(
        db: Database) -> None:
    woken: list[str] = []
    with db.write() as s:
        wake(s, "h1", woken.append)
        wake(s, "h1", woken.append)
        wake(s, "h2", woken.append)
        assert woken == []  # not before the commit
    assert woken == ["h1", "h2"]
    with pytest.raises(RuntimeError), db.write() as s:
        wake(s, "h3", woken.append)
        raise RuntimeError("the transaction fails")
    assert woken == ["h1", "h2"]
    with pytest.raises(RuntimeError, match=r"db\.write\(\)"), db.read() as s:
        wake(s, "h4", woken.append)


@pytest.fixture
def pg(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    yield create_pg_database(pg_admin_url, template=pg_template)


@pytest.fixture
def channel(pg: str) -> Iterator[PgChannel]:
    """What another controller listens with, on its own Database object."""
    other = Database(pg)
    ch = PgChannel(other)
    yield ch
    ch.close()
    other.dispose()


@pytest.mark.pg
def test_another_controller_hears_of_a_change_only_once_it_commits(
        pg: str, channel: PgChannel) -> None:
    db = Database(pg)
    try:
        with db.write() as s:
            wake(s, "first", lambda h: None)
            with db.write() as s2:  # another transaction, which commits while this one is open
                wake(s2, "second", lambda h: None)
            assert channel.receive(30) == ["second"]
        assert channel.receive(30) == ["first"]
        with pytest.raises(RuntimeError), db.write() as s:
            wake(s, "rolled-back", lambda h: None)
            raise RuntimeError
        with db.write() as s:
            wake(s, "after", lambda h: None)
        assert channel.receive(30) == ["after"]  # the rolled-back one never came
    finally:
        db.dispose()


@pytest.mark.pg
def test_every_write_that_moves_a_hosts_generation_reaches_other_controllers(
        pg: str, channel: PgChannel) -> None:
    """Create, delete, the agent's reports: each a notification with the host's id."""
    from infracloud.compute.hosts import Report
    from infracloud.core.clock import FakeClock
    from tests.unit.compute_env import ZUUL

    db = Database(pg)
    try:
        env = Env(db, FakeClock())
        host = env.host("c1")
        env.beat(host)
        before = env.hosts.generation(host.id)
        server = env.boot()
        assert channel.receive(30) == [host.id]
        env.hosts.report(host.id, [Report(server.id, "running")])  # spawned: no change for it
        env.servers.delete(ZUUL, server.id)
        assert channel.receive(30) == [host.id]
        env.hosts.report(host.id, [Report(server.id, "absent")])
        assert channel.receive(30) == [host.id]
        assert env.hosts.generation(host.id) == before + 3
        assert env.notified == [host.id] * 3  # and this controller's own long-polls, as before
    finally:
        db.dispose()


@pytest.mark.pg
def test_a_listener_whose_connection_is_killed_listens_again_and_catches_up(pg: str) -> None:
    db = Database(pg)
    rec = Recorder({"h1"})
    listener = Listener(lambda: PgChannel(db), rec.wanted, rec.delivered.append, rec.resync,
                        backoff=(0.05, 0.1))
    listener.start()
    try:
        wait_for("it to listen", listener.listening.is_set)
        with db.write() as s:
            wake(s, "h1", lambda h: None)
        wait_for("the notification", lambda: rec.delivered == [{"h1"}])
        with db.engine.connect() as conn:  # as a PostgreSQL restart would end it
            ended = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query = :q AND datname = current_database()"),
                {"q": f"LISTEN {CHANNEL}"}).scalar()
            conn.commit()
        assert ended == 1
        wait_for("it to listen again", lambda: listener.connects == 2)
        assert rec.resyncs == 2  # the long-polls re-read what they may have missed
        with db.write() as s:
            wake(s, "h1", lambda h: None)
        wait_for("the next notification", lambda: rec.delivered == [{"h1"}, {"h1"}])
    finally:
        listener.close()
        db.dispose()
