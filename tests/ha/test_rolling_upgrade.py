"""A rolling upgrade of a live three-controller site behind HAProxy, one controller at a time,
with zero failed client requests (README: "Upgrading a site one controller at a time").

The two versions: the "old" one is this code with its real migrations (the database at their
head). The "new" one is the same code with one more, additive, migration: the real scripts
copied into a temporary folder with a test-only revision after their head that adds a
nullable column to `instances` (the table the churn writes), used through
$INFRACLOUD_MIGRATIONS (store/db.py). Nothing else differs, so what is tested is the
procedure: `infracloud db upgrade` of the new version while old controllers serve on the
changed schema, then each controller drained (SIGTERM: /readyz answers 404, HAProxy's
disable-on-404 sends it nothing new, it finishes what it serves and exits) and started again
as the new version, waiting for HAProxy to take it back before the next. openstacksdk
churn (create -> ACTIVE -> delete) and an agent run through HAProxy the whole time; neither
the churn nor anything HAProxy logged may see a failure."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from infracloud.store import Database
from infracloud.store.db import MIGRATIONS_ENV
from tests.conftest import create_pg_database
from tests.ha.pgsite import Churn, Site, prepare
from tests.servers import infracloud, wait_for

pytestmark = pytest.mark.pg
REVISION = "rolling_upgrade_test"

MIGRATION = '''"""rolling upgrade test: instances get a nullable column (never shipped)

Revision ID: {revision}
Revises: {head}
"""

from alembic import op
import sqlalchemy as sa


revision = "{revision}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("upgrade_note", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("instances", "upgrade_note")
'''


def new_version(folder: Path) -> tuple[Path, str]:
    """The migrations of the "new version": a copy of the real ones plus an additive one.
    Its folder and the real head it follows."""
    real = Path(str(resources.files("infracloud.store") / "migrations"))
    head = str(ScriptDirectory(str(real)).get_current_head())
    shutil.copytree(real, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / f"{REVISION}.py").write_text(
        MIGRATION.format(revision=REVISION, head=head))
    return folder, head


def test_rolling_upgrade_of_three_controllers_fails_no_request(tmp_path: Path,
                                                               pg_admin_url: str) -> None:
    migrations, head = new_version(tmp_path / "new-migrations")
    new = {MIGRATIONS_ENV: str(migrations)}
    db_url = create_pg_database(pg_admin_url)
    db = Database(db_url)
    db.migrate()  # the old version's schema
    db.dispose()
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    # drain for twice HAProxy's check interval (1 s); no controller migrates by itself
    site = Site(site_dir, db_url, controllers=3, drain_seconds=2.0, auto_upgrade=False)
    try:
        site.start()
        image, flavor = prepare(site)
        churn = Churn(site, image, flavor, threads=3).start()
        wait_for("churn before the upgrade", lambda: churn.creates() >= 3 or churn.errors,
                 timeout=60)

        config = str(site.controllers[0].config)
        r = infracloud("db", "upgrade", "--config", config, env=new)
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        assert r.stdout.startswith(f"applied {REVISION}: rolling upgrade test: ")
        old = Database(db_url)  # the old version's view: a schema newer than it knows
        assert (old.schema_status().current, old.schema_status().known) == (REVISION, False)
        with old.connect() as conn:
            assert "upgrade_note" in {c["name"] for c in inspect(conn).get_columns("instances")}
        old.dispose()
        upgraded_at = churn.creates()
        wait_for("old controllers to create servers on the new schema",
                 lambda: churn.creates() >= upgraded_at + 2 or churn.errors, timeout=60)

        for c in site.controllers:
            assert site.stop_controller(c) == 0  # SIGTERM
            # it was drained (404: "stopping") before it went (DOWN), never cut while ready
            states = site.states(c)
            since_up = states[len(states) - states[::-1].index("UP"):] if "UP" in states \
                else states
            assert since_up in (["stopping"], ["stopping", "DOWN"]), states
            assert any("controller draining" in line for line in c.lines), c.output()
            site.launch(c, env=new)
            site.wait_serving(c)
            wait_for(f"HAProxy to take controller{c.number} back",
                     lambda c=c: site.states(c)[-1:] == ["UP"])

        after = churn.cycles()
        wait_for("churn on the new version", lambda: churn.cycles() > after or churn.errors,
                 timeout=60)
        tally = churn.stop()
        print(tally.summary())
        assert (tally.failed, tally.retried, tally.cleaned) == (0, 0, 0), tally.failures
        assert all(status < 400 or status == 404 for status in tally.answers), tally.summary()
        logged = site.logged_requests()
        bad = [r for r in logged if r.status >= 500 or r.status < 0 or r.termination != "----"]
        assert logged and bad == [], bad[:10]
        assert {r.server for r in logged} >= {"controller1", "controller2", "controller3"}
        wait_for("nothing left in the database", lambda: site.leftovers() == {
            "servers": 0, "ports": 0, "claimed_vcpus": 0, "claimed_ram_mb": 0})
    finally:
        site.close()
    assert head != REVISION
