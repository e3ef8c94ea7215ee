"""`infracloud keys`: the token encryption keys of a site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infracloud.cli.common import load_config

keys_app = typer.Typer(help="Manage the token encryption keys of a site.", no_args_is_help=True)


@keys_app.command("rotate")
def keys_rotate(config_file: Annotated[Path, typer.Option("--config", help="controller YAML")]
                ) -> None:
    """Add a new primary token key; tokens made with older kept keys stay valid."""
    from infracloud.site.services import build_services

    services = build_services(load_config(config_file))
    try:
        count = services.identity.keys.rotate()
    finally:
        services.close()
    typer.echo(f"rotated: {count} keys active")
