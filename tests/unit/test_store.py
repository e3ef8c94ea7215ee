"""The store on SQLite and PostgreSQL: migrations, types, constraints, transactions."""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from infracloud.core.ids import new_id
from infracloud.store import Database
from infracloud.store.db import after_commit
from infracloud.store.models import Assignment, Base, Project, Role, User


def test_migrations_reach_head_and_match_the_models(db: Database) -> None:
    assert db.current_revision() is not None
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    assert diff == [], f"models and migrations disagree; write a migration: {diff}"


def test_migrate_twice_is_a_no_op(db: Database) -> None:
    before = db.current_revision()
    db.migrate()
    assert db.current_revision() == before


def test_datetimes_come_back_as_utc(db: Database) -> None:
    stamp = dt.datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with db.write() as s:
        s.add(Project(id="p1", name="x", created_at=stamp))
    with db.read() as s:
        got = s.get(Project, "p1")
    assert got is not None
    assert got.created_at == stamp
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == dt.timedelta(0)


def test_unique_names_and_foreign_keys_are_enforced(db: Database) -> None:
    with db.write() as s:
        s.add(Project(id="p1", name="zuul"))
    with pytest.raises(IntegrityError), db.write() as s:
        s.add(Project(id="p2", name="zuul"))
    with pytest.raises(IntegrityError), db.write() as s:
        s.add(Assignment(user_id="nobody", project_id="p1", role_id="none"))


def test_deleting_a_project_cascades_to_its_assignments(db: Database) -> None:
    with db.write() as s:
        s.add_all([Project(id="p1", name="zuul"), User(id="u1", name="zuul"),
                   Role(id="r1", name="member")])
        s.flush()
        s.add(Assignment(user_id="u1", project_id="p1", role_id="r1"))
    with db.write() as s:
        s.execute(text("DELETE FROM projects WHERE id = 'p1'"))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Assignment)) == 0
        assert s.get(User, "u1") is not None


def test_failed_write_leaves_nothing_behind(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as s:
        s.add(Project(id="p1", name="half"))
        s.flush()
        raise RuntimeError("crash mid-transaction")
    with db.read() as s:
        assert s.get(Project, "p1") is None


def test_after_commit_runs_once_committed_and_never_after_a_rollback(db: Database) -> None:
    told: list[str] = []
    with pytest.raises(IntegrityError), db.write() as s:
        s.add(Project(id="p1", name="twin"))
        after_commit(s, lambda: told.append("first"))
        s.flush()
        s.add(Project(id="p2", name="twin"))  # the same name: the commit fails
    assert told == []
    with db.write() as s:
        s.add(Project(id="p1", name="zuul"))
        after_commit(s, lambda: told.append("second"))
        assert told == []  # not while the transaction is open
        after_commit(s, lambda: told.append(str(_exists(db, "p1"))))  # visible once told
    assert told == ["second", "True"]
    with db.write() as s:
        s.add(Project(id="p3", name="other"))
    assert told == ["second", "True"]  # once


def _exists(db: Database, project_id: str) -> bool:
    with db.read() as s:
        return s.get(Project, project_id) is not None


def test_objects_stay_readable_after_the_transaction(db: Database) -> None:
    with db.write() as s:
        s.add(Project(id="p1", name="zuul"))
    with db.read() as s:
        project = s.get(Project, "p1")
    assert project is not None and project.name == "zuul"


def test_concurrent_read_modify_write_loses_no_update(db: Database) -> None:
    """Writers read then write in one transaction; none fails and none is lost."""
    with db.write() as s:
        s.add(Project(id="counter", name="counter", description="0"))
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(10):
                with db.write() as s:
                    if db.is_sqlite:
                        p = s.get(Project, "counter")
                    else:
                        p = s.scalar(select(Project).where(Project.id == "counter")
                                     .with_for_update())
                    assert p is not None
                    p.description = str(int(p.description) + 1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.read() as s:
        p = s.get(Project, "counter")
        assert p is not None and p.description == "80"


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


def test_sqlite_files_are_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new database and its -wal and -shm files are mode 0600 whatever the umask lets
    through; an existing database made readable to all becomes private at the next start."""
    old = os.umask(0o022)
    try:
        db = Database(f"sqlite:///{tmp_path / 'new.db'}")
        db.migrate()
        with db.write() as s:
            s.add(Project(id=new_id(), name="p"))
        with db.connect() as conn:  # the WAL files exist while a connection is open
            conn.execute(text("SELECT 1"))
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        db.dispose()
        (tmp_path / "old.db").touch(mode=0o644)
        Database(f"sqlite:///{tmp_path / 'old.db'}").dispose()
        old_mode = stat.S_IMODE((tmp_path / "old.db").stat().st_mode)
    finally:
        os.umask(old)
    assert modes == {"new.db": 0o600, "new.db-wal": 0o600, "new.db-shm": 0o600}
    assert old_mode == 0o600


def test_postgres_urls_use_psycopg3() -> None:
    from infracloud.store.db import normalise_url

    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_ids_are_unique_hex() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
