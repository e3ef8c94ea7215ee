"""`infracloud db status|upgrade` on a controller's config, and controllers that refuse a
schema they cannot serve: one line, exit 2, before they listen."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import yaml

from tests.servers import infracloud, start_controller, write_controller_config

FUTURE = "0999_from_a_newer_infracloud"
# the migration scripts, oldest first (each file is named after its revision)
SCRIPTS = sorted(Path(str(resources.files("infracloud.store") / "migrations" / "versions"))
                 .glob("[0-9][0-9][0-9][0-9]_*.py"))
REVISIONS = [p.name[:4] for p in SCRIPTS]
HEAD = REVISIONS[-1]
# its docstring's first paragraph, on one line (alembic's `doc`)
HEAD_DOC = " ".join(SCRIPTS[-1].read_text().split('"""')[1].split("\n\n")[0].split())
NEWER = (f"infracloud: error: the database's schema is at revision '{FUTURE}', newer than this "
         f"infracloud knows (its newest is '{HEAD}'): a newer version upgraded it; run that "
         f"version or a newer one\n")


def test_status_then_upgrade_then_status(tmp_path: Path) -> None:
    path, _ = write_controller_config(tmp_path, f"sqlite:///{tmp_path / 'site.db'}")
    pending = infracloud("db", "status", "--config", str(path))
    assert (pending.returncode, pending.stderr) == (1, "")
    assert pending.stdout.splitlines() == [
        "database: none (empty)", f"code:     {HEAD}",
        f"pending:  {len(REVISIONS)} migrations: {', '.join(REVISIONS)} "
        "(run `infracloud db upgrade --config FILE`)"]
    upgrade = infracloud("db", "upgrade", "--config", str(path))
    assert (upgrade.returncode, upgrade.stderr) == (0, "")
    lines = upgrade.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"applied {rev}" for rev in REVISIONS]
    assert lines[-1] == f"applied {HEAD}: {HEAD_DOC}"
    again = infracloud("db", "upgrade", "--config", str(path))
    assert (again.returncode, again.stdout) == (
        0, f"up to date: the database is at {HEAD}, this infracloud's newest\n")
    status = infracloud("db", "status", "--config", str(path))
    assert (status.returncode, status.stdout) == (0, f"database: {HEAD}\ncode:     {HEAD}\n"
                                                     "up to date\n")


def test_a_schema_newer_than_the_code_stops_every_command_on_one_line(tmp_path: Path) -> None:
    db_file = tmp_path / "site.db"
    path, _ = write_controller_config(tmp_path, f"sqlite:///{db_file}")
    assert infracloud("db", "upgrade", "--config", str(path)).returncode == 0
    with sqlite3.connect(db_file) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (FUTURE,))
    for args in (("controller",), ("db", "status"), ("db", "upgrade"), ("keys", "rotate")):
        r = infracloud(*args, "--config", str(path), timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (2, "", NEWER), args
    with sqlite3.connect(db_file) as conn:  # left as the newer version made it
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(FUTURE,)]


def test_without_auto_upgrade_a_controller_waits_for_db_upgrade(tmp_path: Path) -> None:
    path, base_url = write_controller_config(
        tmp_path, f"sqlite:///{tmp_path / 'site.db'}",
        sections={"database": {"url": f"sqlite:///{tmp_path / 'site.db'}",
                               "auto_upgrade": False}})
    assert yaml.safe_load(path.read_text())["database"]["auto_upgrade"] is False
    refused = infracloud("controller", "--config", str(path), timeout=60)
    assert (refused.returncode, refused.stderr) == (2, (
        "infracloud: error: the database's schema is at revision none (an empty database), "
        f"behind this infracloud's '{HEAD}', and database.auto_upgrade is false: run "
        "`infracloud db upgrade --config FILE` first\n"))
    assert infracloud("db", "upgrade", "--config", str(path)).returncode == 0
    controller = start_controller(path, base_url, verify=False)
    assert controller.stop() == 0
