"""Write a new Alembic migration from the difference between the models and the migrations.

    .venv/bin/python tools/new_migration.py "add hosts"

Review the generated file before committing it.
"""

from __future__ import annotations

import sys
import tempfile
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config

from infracloud.store import Database


def main() -> None:
    message = sys.argv[1] if len(sys.argv) > 1 else "schema change"
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'gen.db'}")
        db.migrate()
        migrations = resources.files("infracloud.store") / "migrations"
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations))
        with db.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            count = sum(1 for f in (migrations / "versions").iterdir() if f.name[0].isdigit())
            command.revision(cfg, message=message, autogenerate=True, rev_id=f"{count + 1:04d}")
        db.dispose()


if __name__ == "__main__":
    main()
