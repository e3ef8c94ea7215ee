"""`infracloud controller`: run a site controller."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infracloud.cli.common import check_log_format, fail, load_config


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
    if log_format:
        config.logging.format = "text" if check_log_format(log_format) == "text" else "json"
    logs.configure(config.logging.format, config.logging.level)
    serve(config)
