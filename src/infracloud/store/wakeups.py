"""Agents' long-polls woken across controllers: PostgreSQL LISTEN/NOTIFY.

An agent long-polls one controller for its host's desired state (api/agent.py); every write
that changes that state moves the host's `generation`. The controller that made the write
wakes its own long-polls after the commit (compute.signals). With several controllers on one
PostgreSQL database, the agent may be waiting on another one; this module tells it:

- `wake(session, host_id, local)`, called in the write transaction that moved the
  generation: on PostgreSQL it sends `pg_notify('infracloud_hosts', host_id)` in that same
  transaction, so every controller hears of the change when, and only if, it commits (and
  never before its rows can be read); after the commit it calls `local(host_id)`, which wakes
  this controller's long-polls at once, on SQLite too.
- `Listener`: one per controller, a thread with a PostgreSQL connection of its own (taken
  from the engine, so with the same URL, hosts and connect timeout, and detached from the
  pool) that LISTENs on the channel and hands each batch of host ids it hears of to the
  controller's signals. It never blocks the event loop: the hand-over is one
  `call_soon_threadsafe` a batch (compute.signals coalesces further).

What bounds the work: a notification is a 32-character host id; those for hosts nobody
long-polls on this controller are dropped in the listener's thread with one dictionary look-up
each; the ids of one batch (what one read of the socket brought) are made a set first, so a
host changed many times at once is woken once. PostgreSQL itself folds identical
notifications of one transaction into one.

What NOTIFY is not: reliable across a lost connection. While the listener reconnects
(PostgreSQL restarting, a standby promoted) notifications are not queued for it; the long-poll
therefore still re-reads the generation every few seconds (api/agent.py RECHECK), and each
time the listener is listening again, every waiting long-poll re-reads it once (`resync`). So
correctness never rests on a notification arriving, only the latency does.

The cost on the writer: a transaction that sent a NOTIFY takes PostgreSQL's notification lock
as it commits, so such commits (server creates, deletes, state reports) are serialised with
one another for the length of their commit; a compute site makes a few of them a second.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import text, update
from sqlalchemy.orm import Session

from infracloud.store.db import after_commit
from infracloud.store.models import Host

if TYPE_CHECKING:
    from infracloud.store.db import Database

log = logging.getLogger(__name__)

CHANNEL = "infracloud_hosts"
MAX_PAYLOAD = 64  # host ids are 32 characters: anything longer on the channel is not ours
IDLE_SECONDS = 15.0  # with nothing heard this long, the listener checks its connection
# A database machine that vanishes sends no reset: the kernel gives up on the connection after
# KEEPALIVE (idle, interval, count) while it is quiet, after USER_TIMEOUT with a ping unanswered
KEEPALIVE = (10, 5, 3)
USER_TIMEOUT_MS = 30_000
BACKOFF = (0.5, 5.0)  # seconds between reconnection attempts: the first, the most

_WOKEN = "infracloud_woken_hosts"
_NOTIFY = text("SELECT pg_notify(:channel, :host)")


def wake(session: Session, host_id: str, local: Callable[[str], None]) -> None:
    """`host_id`'s generation moved in the write transaction of `session`: tell every
    controller when it commits (PostgreSQL: a NOTIFY in this transaction), and call
    `local(host_id)` once after the commit (never on a rollback). Once per host and
    transaction, however often it is called."""
    if not session.get_bind().get_execution_options().get("infracloud_write"):
        raise RuntimeError("wake() needs a session of db.write(): reads never commit")
    woken = session.info.setdefault(_WOKEN, set())
    if host_id in woken:
        return
    woken.add(host_id)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_NOTIFY, {"channel": CHANNEL, "host": host_id})
    after_commit(session, functools.partial(local, host_id))


def bump(session: Session, host_ids: Iterable[str], local: Callable[[str], None]) -> None:
    """The hosts' desired state changed in this write transaction: move their generations
    (what an agent's long-poll compares) and `wake` each one's agent, on any controller."""
    ids = sorted({h for h in host_ids if h})
    if not ids:
        return
    session.execute(update(Host).where(Host.id.in_(ids))
                    .values(generation=Host.generation + 1)
                    .execution_options(synchronize_session=False))
    for host_id in ids:
        wake(session, host_id, local)


class Channel(Protocol):
    """A connection that listens on CHANNEL (PgChannel; a fake in the unit tests)."""

    def receive(self, timeout: float) -> list[str]:
        """The payloads that arrived, waiting up to `timeout` seconds for the first (an
        empty list: none came, or `interrupt()` was called). Raises when the connection
        is lost."""

    def interrupt(self) -> None:
        """Make a `receive` that waits in another thread return now."""

    def close(self) -> None: ...


class PgChannel:
    """LISTEN on a psycopg connection of its own, in autocommit."""

    def __init__(self, db: Database) -> None:
        raw = db.engine.raw_connection()  # the engine's URL, hosts and connect timeout
        conn: Any = raw.driver_connection
        raw.detach()  # ours alone, closed for real, not counted in the pool
        try:
            conn.rollback()  # the pool's ping may have begun a transaction
            conn.autocommit = True
            _keepalive(conn.fileno())
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)

    def receive(self, timeout: float) -> list[str]:
        got = self._drain()  # what libpq has read already (during a ping, say)
        if got:
            return got
        ready, _, _ = select.select([self.conn.fileno(), self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(64)
            return []
        if not ready:  # quiet for a while: is the connection still there?
            self.conn.execute("SELECT 1")
        return self._drain()

    def _drain(self) -> list[str]:
        return [n.payload for n in self.conn.notifies(timeout=0)]

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        self._wake_r.close()
        self._wake_w.close()


def _keepalive(fd: int) -> None:
    """TCP keepalives and a user timeout on the listener's socket (Linux; nothing on a Unix
    socket): a dead peer is noticed within a minute instead of TCP's quarter of an hour."""
    idle, interval, count = KEEPALIVE
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                        ("TCP_KEEPCNT", count), ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    sock = socket.socket(fileno=os.dup(fd))  # a duplicate: closing it leaves libpq's open
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        for level, option, value in options:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)
    finally:
        sock.close()


class Listener:
    """The thread that listens: `wanted(host_id)` says whether anyone waits on the host here
    (called in the listener's thread: a look-up, no I/O); `deliver(hosts)` gets each batch's
    wanted hosts once; `resync()` is called each time the listener is listening (again), for
    what it may have missed meanwhile. Reconnects with a backoff until closed."""

    def __init__(self, open_channel: Callable[[], Channel], wanted: Callable[[str], bool],
                 deliver: Callable[[set[str]], None], resync: Callable[[], None], *,
                 idle: float = IDLE_SECONDS, backoff: tuple[float, float] = BACKOFF) -> None:
        self.open_channel = open_channel
        self.wanted = wanted
        self.deliver = deliver
        self.resync = resync
        self.idle = idle
        self.backoff = backoff
        # what it did (tests, the benchmark)
        self.connects = 0  # times it started listening
        self.received = 0  # notifications read
        self.delivered = 0  # hosts handed over (after dropping and coalescing)
        self.listening = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._channel: Channel | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="host-wakeups", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop listening. Waits `timeout` at most: a connection attempt in progress may
        take libpq's connect timeout, and the thread then ends by itself."""
        self._stopping.set()
        with self._lock:
            channel = self._channel
        if channel is not None:
            channel.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)

    def take(self, payloads: Iterable[str]) -> set[str]:
        """One batch: every host someone waits on here, once; the others are dropped."""
        got = list(payloads)
        self.received += len(got)
        batch = set(got)
        hosts = {h for h in batch if len(h) <= MAX_PAYLOAD and self.wanted(h)}
        if hosts:
            self.delivered += len(hosts)
            self.deliver(hosts)
        return hosts

    def _run(self) -> None:
        delay = self.backoff[0]
        lost: str | None = None  # why the last connection or attempt failed
        while not self._stopping.is_set():
            channel: Channel | None = None
            try:
                channel = self.open_channel()
                with self._lock:
                    if self._stopping.is_set():
                        break
                    self._channel = channel
                self.connects += 1
                self.listening.set()
                log.info("host wake-ups: listening %s", "again" if lost else "on PostgreSQL")
                lost = None
                self.resync()  # what was sent while nobody listened
                delay = self.backoff[0]
                while not self._stopping.is_set():
                    self.take(channel.receive(self.idle))
            except Exception as exc:
                self.listening.clear()
                if self._stopping.is_set():
                    break
                reason = _reason(exc)
                if lost is None:
                    log.warning("host wake-ups: not listening (%s); agents' long-polls on this "
                                "controller see changes made through others within a few "
                                "seconds instead, until it listens again", reason,
                                exc_info=not _is_database_error(exc))
                lost = reason
            finally:
                with self._lock:
                    self._channel = None
                if channel is not None:
                    channel.close()
            self._stopping.wait(delay)
            delay = min(delay * 2, self.backoff[1])
        self.listening.clear()


def _is_database_error(exc: BaseException) -> bool:
    import psycopg
    from sqlalchemy.exc import DBAPIError

    return isinstance(exc, (psycopg.Error, DBAPIError, OSError))


def _reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first[:300]


def listener(db: Database, wanted: Callable[[str], bool], deliver: Callable[[set[str]], None],
             resync: Callable[[], None]) -> Listener | None:
    """The listener for `db` (not started), or None on SQLite (one controller: the local
    wake-up is enough)."""
    if db.is_sqlite:
        return None
    return Listener(functools.partial(PgChannel, db), wanted, deliver, resync)

