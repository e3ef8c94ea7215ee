"""`infracloud keys`: the token encryption keys of a site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infracloud.cli.common import load_config

keys_app = typer.Typer(help="Manage the token encryption keys and the compute hosts' "
                       "credentials of a site.", no_args_is_help=True)


@keys_app.command("rotate")
def keys_rotate(config_file: Annotated[Path, typer.Option("--config", help="controller YAML")]
                ) -> None:
    """Add a new primary token key; tokens made with older kept keys stay valid. Every compute
    host's credential gets a successor, which its agent takes at its next call (the site's
    agent token file is the operator's to change)."""
    from infracloud.site.services import build_services

    services = build_services(load_config(config_file))
    try:
        count = services.identity.keys.rotate()
        hosts = services.credentials.rotate()
    finally:
        services.close()
    typer.echo(f"rotated: {count} keys active")
    if hosts:
        typer.echo(f"rotated: {hosts} host credentials (each agent takes its new one at its "
                   f"next call)")
