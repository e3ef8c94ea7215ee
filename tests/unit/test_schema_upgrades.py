"""Schema upgrades: what `infracloud db` and a starting controller see of the database's
revision, the refusal of a schema newer than the code, and the additive-first rule of the
migration scripts (README, "Schema upgrades")."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import text

from infracloud.site.services import build_services
from infracloud.store import Database
from infracloud.store.db import SchemaError
from tests.conftest import BACKENDS, create_pg_database
from tests.unit.api_env import quick_config

VERSIONS = Path(str(resources.files("infracloud.store") / "migrations" / "versions"))
FUTURE = "0999_from_a_newer_infracloud"


def stamp(db: Database, revision: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return create_pg_database(request.getfixturevalue("pg_admin_url"))


def test_status_and_migrate_tell_the_pending_revisions_oldest_first(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        before = db.schema_status()
        revisions = [rev for rev, _ in before.pending]
        head = revisions[-1]  # the newest, whichever branch added it
        assert (before.current, before.known, before.head) == (None, True, head)
        assert revisions[:12] == [f"{n:04}" for n in range(1, 13)]
        assert revisions == sorted(revisions)  # oldest first
        assert dict(before.pending)["0012"] == ("cache generations: a counter per kind of "
                                                "cached data, so every controller sees "
                                                "another's changes")
        assert all("\n" not in doc for _, doc in before.pending)  # one line each
        with pytest.raises(SchemaError, match=r"at revision none \(an empty database\), behind "
                                              rf"this infracloud's '{head}', and "
                                              r"database.auto_upgrade is false"):
            db.check_schema()
        db.check_schema(upgrade=True)  # a controller that migrates starts
        assert db.migrate() == before.pending
        after = db.schema_status()
        assert (after.current, after.pending) == (head, ())
        assert db.migrate() == ()
        db.check_schema()
        stamp(db, "0008")  # one release behind: what is left to apply, and nothing else
        assert [rev for rev, _ in db.schema_status().pending] == revisions[8:]
        with pytest.raises(SchemaError, match="at revision '0008', behind"):
            db.check_schema()
    finally:
        db.dispose()


def test_a_schema_newer_than_the_code_is_refused_and_left_alone(db: Database) -> None:
    head = db.schema_status().head
    stamp(db, FUTURE)
    status = db.schema_status()
    assert (status.current, status.known, status.pending) == (FUTURE, False, ())
    message = (f"the database's schema is at revision '{FUTURE}', newer than this infracloud "
               f"knows (its newest is '{head}'): a newer version upgraded it; run that version "
               f"or a newer one")
    with pytest.raises(SchemaError) as refused:
        db.migrate()
    assert refused.value.message == message
    for upgrade in (True, False):
        with pytest.raises(SchemaError, match="newer than this infracloud knows"):
            db.check_schema(upgrade=upgrade)
    assert db.current_revision() == FUTURE
    if not db.is_sqlite:  # the migration lock was given back: another migrate gets it
        stamp(db, head)
        assert db.migrate() == ()


def test_a_controller_that_does_not_upgrade_starts_only_on_the_head(tmp_path: Path) -> None:
    config = quick_config(tmp_path)
    config.database.auto_upgrade = False
    with pytest.raises(SchemaError, match=r"at revision none \(an empty database\), behind"):
        build_services(config)
    db = Database(config.database.url)
    db.migrate()
    db.dispose()
    build_services(config).close()
    config.database.auto_upgrade = True
    db = Database(config.database.url)
    stamp(db, FUTURE)
    db.dispose()
    with pytest.raises(SchemaError, match="newer than this infracloud knows"):
        build_services(config)


# --- the rule: migrations are additive; removals come a release later, marked -------------

# scripts allowed to break the rule without a marker, each with why (none so far: every
# upgrade() of 0001-0012 only creates tables, indexes and nullable columns, or widens one)
ALLOWED: dict[str, str] = {}
MARKER = "# removal:"


def removals(source: str) -> list[tuple[int, str]]:
    """The unmarked removals in upgrade() of a migration script: drop_column, drop_table and
    alter_column(..., nullable=False), each (line, what) unless its line or the line above
    carries `# removal: <release>`."""
    lines = source.splitlines()
    found = []
    for fn in ast.parse(source).body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name == "upgrade"):
            continue
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            tightens = name == "alter_column" and any(
                kw.arg == "nullable" and isinstance(kw.value, ast.Constant)
                and kw.value.value is False for kw in node.keywords)
            if name not in ("drop_column", "drop_table") and not tightens:
                continue
            near = lines[max(0, node.lineno - 2):node.end_lineno or node.lineno]
            if not any(MARKER in line and line.split(MARKER, 1)[1].strip() for line in near):
                found.append((node.lineno, name))
    return sorted(found)


def test_the_guard_finds_unmarked_removals() -> None:
    script = (
        "def upgrade():\n"
        "    with op.batch_alter_table('t') as b:\n"
        "        b.drop_column('a')\n"
        "        b.alter_column('b', existing_type=sa.Integer(),\n"
        "                       nullable=False)\n"
        "        b.alter_column('c', existing_nullable=False, type_=sa.Text())\n"
        "    # removal: 0.4 (unused since 0.3)\n"
        "    op.drop_table('old')\n"
        "    op.drop_table('other')  # removal:\n"
        "def downgrade():\n"
        "    op.drop_table('t')\n")
    assert removals(script) == [(3, "drop_column"), (4, "alter_column"), (9, "drop_table")]


def test_every_migration_is_additive_or_marks_its_removals() -> None:
    scripts = sorted(VERSIONS.glob("[0-9]*.py"))
    assert len(scripts) >= 10
    unmarked = {p.name: found for p in scripts
                if p.name not in ALLOWED and (found := removals(p.read_text()))}
    assert unmarked == {}, (
        "upgrade() removes or tightens a column or table: controllers of the previous release "
        "still use it during a rolling upgrade. Make the change additive now and the removal "
        "a release later, marked `# removal: <release>` (README, Schema upgrades)")
