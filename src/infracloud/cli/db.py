"""`infracloud db`: the schema of a site's database (status, upgrade)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from infracloud.cli.common import fail, load_config

if TYPE_CHECKING:
    from infracloud.store import Database

db_app = typer.Typer(help="Show and upgrade the schema of a site's database.",
                     no_args_is_help=True)

ConfigFile = Annotated[Path, typer.Option("--config", help="controller YAML")]


def _database(config_file: Path) -> Database:
    from infracloud.store import Database

    config = load_config(config_file)
    return Database(config.database.url, pool_size=1)


def _unreachable(exc: Exception) -> None:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()
    fail(f"cannot use the database: {first[0] if first else type(orig).__name__}")


@db_app.command("upgrade")
def db_upgrade(config_file: ConfigFile) -> None:
    """Apply the pending schema migrations, printing each revision applied (safe while
    controllers of the previous version serve: migrations are additive, see the README)."""
    from sqlalchemy.exc import SQLAlchemyError

    db = _database(config_file)
    try:
        applied = db.migrate()
        revision = db.current_revision()
    except SQLAlchemyError as exc:
        _unreachable(exc)
        return
    finally:
        db.dispose()
    for rev, doc in applied:
        typer.echo(f"applied {rev}: {doc}")
    if not applied:
        typer.echo(f"up to date: the database is at {revision}, this infracloud's newest")


@db_app.command("status")
def db_status(config_file: ConfigFile) -> None:
    """The database's schema revision, this infracloud's newest, and whether an upgrade is
    pending (exit 1 when one is, 0 when up to date)."""
    from sqlalchemy.exc import SQLAlchemyError

    db = _database(config_file)
    try:
        status = db.schema_status()
    except SQLAlchemyError as exc:
        _unreachable(exc)
        return
    finally:
        db.dispose()
    if not status.known:
        fail(status.newer_message())
    typer.echo(f"database: {status.current or 'none (empty)'}")
    typer.echo(f"code:     {status.head}")
    if not status.pending:
        typer.echo("up to date")
        return
    count = len(status.pending)
    typer.echo(f"pending:  {count} migration{'s' if count > 1 else ''}: "
               f"{', '.join(rev for rev, _ in status.pending)} "
               f"(run `infracloud db upgrade --config FILE`)")
    raise typer.Exit(1)
