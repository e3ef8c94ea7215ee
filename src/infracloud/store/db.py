"""Engines and transactions.

Services open their own short transactions: ``db.read()`` for queries and ``db.write()`` for
changes. On SQLite a write transaction starts with ``BEGIN IMMEDIATE`` so two writers queue on the
busy timeout instead of one failing half-way when it upgrades a read lock; WAL lets readers run
beside the writer. Slow work (password hashing) belongs outside ``write()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from infracloud.core.errors import ConfigError
from infracloud.store.generations import Generations, bump_touched

log = logging.getLogger(__name__)

_MIGRATION_LOCK_KEY = 74_610_231  # pg_advisory_lock key for migrations


class SchemaError(ConfigError):
    """The database's schema does not fit this code: newer than it knows, or behind it when
    the controller is not to upgrade it (the CLI prints it on one line and exits 2)."""


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # the database's revision (None: no schema yet)
    head: str  # the newest revision of this code's migration scripts
    known: bool  # False: the database was upgraded by a newer infracloud
    pending: tuple[tuple[str, str], ...]  # (revision, one-line description), oldest first

    def newer_message(self) -> str:
        return (f"the database's schema is at revision {self.current!r}, newer than this "
                f"infracloud knows (its newest is {self.head!r}): a newer version upgraded it; "
                f"run that version or a newer one")


def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(resources.files("infracloud.store") / "migrations"))


def _status(conn: Connection) -> SchemaStatus:
    from alembic.runtime.migration import MigrationContext

    current = MigrationContext.configure(conn).get_current_revision()
    scripts = _scripts()
    head = scripts.get_current_head()
    if current is not None and current not in {r.revision for r in scripts.walk_revisions()}:
        return SchemaStatus(current, head, False, ())
    revisions = list(scripts.iterate_revisions("head", current or "base"))
    pending = tuple((r.revision, " ".join(r.doc.split())) for r in reversed(revisions))
    return SchemaStatus(current, head, True, pending)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


_AFTER_COMMIT = "infracloud_after_commit"


def after_commit(session: Session, fn: Callable[[], object]) -> None:
    """Run `fn` once the write transaction of `session` has committed, never if it rolls
    back: what tells the world of a change (a metric) must not tell of one that did not
    happen, nor twice when a conflict makes the caller retry."""
    session.info.setdefault(_AFTER_COMMIT, []).append(fn)


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False,
                 cache_check_seconds: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """`cache_check_seconds`: how often the caches built on this database ask it whether
        another controller changed what they hold (store.generations); 0: on every use."""
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.backend = parsed.get_backend_name()
        # SQLite has one writer at a time; writers of this process queue here instead of
        # polling SQLite's busy handler (1-100 ms sleeps). Re-entrant for safety.
        self._write_lock: threading.RLock | None = threading.RLock()
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.backend == "sqlite":
            memory = parsed.database in (None, "", ":memory:")
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                private_sqlite_files(Path(str(parsed.database)))
                kwargs["pool_size"] = pool_size
                kwargs["max_overflow"] = pool_size
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.backend == "sqlite":
            _sqlite_setup(self.engine)
        else:
            self._write_lock = None
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            bind=self.engine.execution_options(infracloud_write=True), expire_on_commit=False
        )
        event.listen(self._write, "before_commit", bump_touched)
        self.generations = Generations(self, cache_check_seconds, monotonic)

    def on_flush(self, hook: Callable[..., None]) -> None:
        """Run `hook(session, flush_context, instances)` before every flush of a write
        transaction (the events' state-change hook)."""
        event.listen(self._write, "before_flush", hook)

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        session = self._read()
        try:
            yield session
        finally:
            # close() (not rollback()) so loaded objects stay readable after the block
            session.close()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A plain Core connection for hot read paths (no ORM bookkeeping)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Session]:
        lock = self._write_lock or contextlib.nullcontext()
        with lock:
            session = self._write()
            try:
                yield session
                session.commit()
            except BaseException:
                session.info.pop(_AFTER_COMMIT, None)
                session.rollback()
                raise
            finally:
                session.close()
        for fn in session.info.pop(_AFTER_COMMIT, ()):
            fn()

    def migrate(self) -> tuple[tuple[str, str], ...]:
        """Bring the schema to the newest revision (safe with several controllers starting):
        the revisions applied, oldest first, each with its one-line description. Raises
        SchemaError, changing nothing, when the database is at a revision this code does not
        know (a newer infracloud upgraded it)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("infracloud.store")
                                                   / "migrations"))
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                conn.commit()
            try:
                # read under the lock: another controller may have upgraded meanwhile
                status = _status(conn)
                conn.commit()
                if not status.known:
                    raise SchemaError(status.newer_message())
                if status.pending:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    conn.commit()
            finally:
                if not self.is_sqlite:
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                    conn.commit()
        return status.pending

    def schema_status(self) -> SchemaStatus:
        with self.engine.connect() as conn:
            return _status(conn)

    def check_schema(self, *, upgrade: bool = False) -> None:
        """Raise SchemaError when the schema is newer than this code knows, or, unless
        `upgrade` (the controller will migrate), when it is behind this code's head."""
        status = self.schema_status()
        if not status.known:
            raise SchemaError(status.newer_message())
        if status.pending and not upgrade:
            at = repr(status.current) if status.current else "none (an empty database)"
            raise SchemaError(f"the database's schema is at revision {at}, behind this "
                              f"infracloud's {status.head!r}, and database.auto_upgrade is "
                              f"false: run `infracloud db upgrade --config FILE` first")

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(conn).get_current_revision()

    def ping(self) -> None:
        """One cheap round trip to the database (raises when it cannot be reached): on
        SQLite a read of the schema, so the file itself is read, not only the library."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM sqlite_master" if self.is_sqlite
                              else "SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def private_sqlite_files(path: Path) -> None:
    """The database file is created mode 0600 before SQLite opens it (SQLite gives its -wal
    and -shm files the mode of the database), and files an older version made readable to
    all are made private."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        with contextlib.suppress(FileNotFoundError):
            if name.stat().st_mode & 0o077:
                name.chmod(0o600)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the sqlite3 module.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("infracloud_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
