"""Caches that cross controllers.

Each controller keeps some rows in memory: flavors, token validations (user, project, roles,
revocations), role implications, the token keys. Several controllers share one database, so a
write through one must reach the caches of all. It does through the database:

- a write that changes cached data names what it changed (`touch(session, FLAVORS)`); when its
  transaction commits, the same transaction adds one to that name's counter in
  `cache_generations` (so the counter moves exactly when the change becomes visible);
- before a cache is used, `check()` reads every counter in one query, at most once every
  `interval` seconds (0: on every use), and empties the caches whose counters moved;
- the controller that wrote empties its own caches at once, after its commit.

The bound: a change committed at time T is used by no request of any controller that reads a
cache at T + interval or later. A cache is trusted without a check only within `interval` of
the start of the last check, and a check that starts after T sees the commit. A value read from
the database before T and stored after the check that emptied its cache is not stored (each
cache has an epoch that every emptying moves; `Cache.get` stores only under the epoch it read
before loading).

Why counters rather than PostgreSQL's LISTEN/NOTIFY: they work the same on SQLite, a
notification sent while a listener reconnects is lost (so the counters would be needed as the
fallback anyway), and a listener needs a connection and a thread per controller; one indexed
read of a few rows every second costs less than either.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from infracloud.core.clock import utcnow
from infracloud.store.models import CacheGeneration

if TYPE_CHECKING:
    from infracloud.store.db import Database

# What the caches hold, one counter each.
FLAVORS = "flavors"
IDENTITY = "identity"  # users, projects, roles, assignments, app credentials, revocations
TOKEN_KEYS = "token_keys"

_TOUCHED = "infracloud_cache_touched"
_READ = select(CacheGeneration.name, CacheGeneration.generation)

K = TypeVar("K")
V = TypeVar("V")


def bump_touched(session: Session) -> None:
    """The write session's `before_commit` hook: add one to the counter of every name touched
    in it, in one statement (names sorted, so two writers lock the rows in the same order)."""
    names = sorted(session.info.pop(_TOUCHED, ()))
    if not names:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    stmt = insert(CacheGeneration).values([{"name": n, "generation": 1, "changed_at": now}
                                           for n in names])
    stmt = stmt.on_conflict_do_update(
        index_elements=[CacheGeneration.name],
        set_={"generation": CacheGeneration.generation + 1,
              "changed_at": stmt.excluded.changed_at})
    session.execute(stmt)


class Generations:
    """The counters as this controller last read them, and the caches that watch them."""

    def __init__(self, db: Database, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval < 0:
            raise ValueError("the check interval cannot be negative")
        self.db = db
        self.interval = interval
        self.clock = clock
        self.checks = 0  # how many times the counters were read (tests, the benchmark)
        self._seen: dict[str, int] | None = None  # None: never read
        self._checked_at = float("-inf")  # when the last complete check started
        self._lock = threading.Lock()
        self._watchers: list[tuple[frozenset[str], Callable[[], None]]] = []

    def watch(self, names: Iterable[str], drop: Callable[[], None]) -> None:
        """Call `drop` (it empties a cache) whenever one of `names` moves."""
        self._watchers.append((frozenset(names), drop))

    def fresh(self) -> bool:
        """Whether caches may be used without a check now (no I/O: the event loop asks)."""
        return self._checked_at > self.clock() - self.interval

    def check(self, conn: Connection | Session | None = None) -> None:
        """Read the counters unless a check started less than `interval` ago, and empty the
        caches whose counters moved. Concurrent callers wait for one check that started
        after they asked, instead of each reading. `conn`: read on it (a flush hook inside a
        write transaction), else on a connection of the pool."""
        asked = self.clock()
        if self._checked_at > asked - self.interval:
            return
        # the connection first, then the lock: whoever holds the lock never waits for the
        # pool, which the threads waiting for the lock may have emptied
        with self._reader(conn) as reader, self._lock:
            if self._checked_at > asked - self.interval:
                return  # another thread's check started late enough
            started = self.clock()
            rows = {name: int(gen) for name, gen in reader.execute(_READ)}
            self.checks += 1
            seen, self._seen = self._seen, rows
            if seen is None:  # the first read: drop what was cached before it
                moved: set[str] | None = None
            else:
                moved = {n for n in rows.keys() | seen.keys() if rows.get(n) != seen.get(n)}
            self._drop(moved)
            self._checked_at = max(self._checked_at, started)

    def touch(self, session: Session, *names: str) -> None:
        """Mark `names` as changed by the write transaction of `session`: their counters move
        when it commits, and this controller's caches of them are emptied after the commit."""
        from infracloud.store.db import after_commit

        if not session.get_bind().get_execution_options().get("infracloud_write"):
            raise RuntimeError("touch() needs a session of db.write(): reads never commit")
        touched = session.info.setdefault(_TOUCHED, set())
        fresh = set(names) - touched
        touched.update(fresh)
        if fresh:
            after_commit(session, lambda: self._drop(fresh))

    def _drop(self, names: set[str] | None) -> None:
        """Empty the caches watching any of `names` (None: every cache)."""
        for watched, drop in self._watchers:
            if names is None or watched & names:
                drop()

    @contextlib.contextmanager
    def _reader(self, conn: Connection | Session | None) -> Iterator[Connection | Session]:
        if conn is not None:
            yield conn
            return
        with self.db.connect() as own:
            yield own


class Cache(Generic[K, V]):
    """A dict of values loaded from the database, emptied when one of its names moves (on any
    controller). `limit`: the most entries kept (the oldest go first)."""

    def __init__(self, generations: Generations, *names: str, limit: int = 10_000) -> None:
        self.generations = generations
        self.limit = limit
        self._data: OrderedDict[K, V] = OrderedDict()
        self._epoch = 0
        self._lock = threading.Lock()
        generations.watch(names, self.clear)

    def get(self, key: K, load: Callable[[K], V | None],
            conn: Connection | Session | None = None) -> V | None:
        """The cached value, else `load(key)` (kept unless None, or unless the cache was
        emptied while it loaded)."""
        self.generations.check(conn)
        with self._lock:
            epoch = self._epoch
            if key in self._data:
                return self._data[key]
        value = load(key)
        if value is not None:
            with self._lock:
                if self._epoch == epoch:
                    self._data[key] = value
                    if len(self._data) > self.limit:
                        self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._epoch += 1

    def __len__(self) -> int:
        return len(self._data)
