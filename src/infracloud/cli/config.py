"""`infracloud config`: check configuration files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infracloud.cli.common import load_config

config_app = typer.Typer(help="Check controller configuration files.", no_args_is_help=True)


@config_app.command("validate")
def config_validate(config_file: Annotated[Path, typer.Argument(
        help="controller or pool YAML file (a pool file has `providers:`)")]) -> None:
    """Report every error in a controller or pool config file (exit 2 if there is any)."""
    import yaml

    from infracloud.core.settings import read_text, validate_file
    from infracloud.pool.config import PoolConfig

    try:  # a file that cannot be read or parsed is reported by the controller's checks
        is_pool = "providers" in (yaml.safe_load(read_text(config_file)) or {})
    except (ValueError, yaml.YAMLError, TypeError):
        is_pool = False
    if is_pool:
        _, errors = validate_file(config_file, PoolConfig)
        for line in errors:
            typer.echo(line, err=True)
        if errors:
            raise typer.Exit(2)
    else:
        load_config(config_file)
    typer.echo(f"{config_file}: ok")
