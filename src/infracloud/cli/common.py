"""What the command groups share: the one-line error, option types, the controller client and
config loading. The controller is found by a clouds.yaml cloud (--os-cloud,
$INFRACLOUD_ADMIN_CLOUD, $OS_CLOUD: what `source infracloud.env` sets), or by --url /
$INFRACLOUD_URL alone when the controller's operations views are open."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from infracloud.clients.cloud import Client
from infracloud.core.clock import parse_time, utcnow
from infracloud.core.errors import InfracloudError
from infracloud.core.settings import ControllerConfig

Url = Annotated[str | None, typer.Option(
    "--url", envvar="INFRACLOUD_URL",
    help="the controller's URL (no login: for controllers whose ops views are open)")]
Cloud = Annotated[str | None, typer.Option(
    "--os-cloud", help="cloud of clouds.yaml to log in to (default $INFRACLOUD_ADMIN_CLOUD, "
                       "then $OS_CLOUD)")]
CaCert = Annotated[Path | None, typer.Option(
    "--cacert", envvar="INFRACLOUD_CACERT", help="CA file for --url")]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def fail(message: str) -> None:
    typer.echo(f"infracloud: error: {message}", err=True)
    raise typer.Exit(2)


def check_format(value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        fail(f"--format must be one of {', '.join(allowed)}, not {value!r}")


def when(option: str, value: str, now: dt.datetime | None = None) -> dt.datetime:
    """'90s', '15m', '1h', '2d', '1w' ago, or an ISO 8601 date or time (UTC if naive)."""
    m = _DURATION.match(value.strip())
    if m:
        return (now or utcnow()) - dt.timedelta(seconds=float(m[1]) * _UNITS[m[2]])
    try:
        return parse_time(value)
    except ValueError:
        fail(f"{option}: {value!r} is neither a duration (90s, 15m, 1h, 2d, 1w) nor an "
             f"ISO 8601 date or time")
        raise  # unreachable


def client(url: str | None, cloud: str | None, cacert: Path | None) -> Client:
    try:
        return Client(cloud, url=url, cacert=cacert)
    except InfracloudError as exc:
        fail(str(exc))
        raise


def call(c: Client, path: str, **params: Any) -> Any:
    try:
        return c.call("GET", path, params={k: v for k, v in params.items() if v is not None})
    except InfracloudError as exc:
        fail(str(exc))


def check_log_format(value: str) -> str:
    if value not in ("json", "text"):
        fail(f"--log-format must be json or text, not {value!r}")
    return value


def load_config(config_file: Path) -> ControllerConfig:
    """A controller config file, or exit 2 with one line per error."""
    from infracloud.core.settings import config_errors

    config, errors = config_errors(config_file)
    if config is None:
        for line in errors:
            typer.echo(line, err=True)
        raise typer.Exit(2)
    return config
