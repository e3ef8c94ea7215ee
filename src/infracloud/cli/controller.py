"""`infracloud controller`: run a site controller."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infracloud.cli.common import check_log_format, fail, load_config
from infracloud.core.settings import ControllerConfig


def check_schema(config: ControllerConfig) -> None:
    """Refuse, on one line before logging starts, a schema newer than this code knows (or
    behind it when database.auto_upgrade is off); starting checks it again under the
    migration lock. An unreachable database is left to the start to report."""
    from sqlalchemy.exc import SQLAlchemyError

    from infracloud.store import Database
    from infracloud.store.db import SchemaError

    db = Database(config.database.url, pool_size=1)
    try:
        db.check_schema(upgrade=config.database.auto_upgrade)
    except SchemaError as exc:
        fail(exc.message)
    except SQLAlchemyError:
        pass
    finally:
        db.dispose()


def controller(
    config_file: Annotated[Path, typer.Option("--config", help="controller YAML file")],
    log_format: Annotated[str | None, typer.Option(help="json or text (overrides the file)")
                          ] = None,
) -> None:
    """Run a site controller configured by a YAML file."""
    from infracloud.ops import logging as logs
    from infracloud.processes.runtime import serve

    config = load_config(config_file)
    refusal = config.plain_http_refusal()
    if refusal:
        fail(refusal)
    check_schema(config)
    if log_format:
        config.logging.format = "text" if check_log_format(log_format) == "text" else "json"
    logs.configure(config.logging.format, config.logging.level)
    serve(config)
