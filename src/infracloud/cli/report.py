"""`infracloud report usage`: instance-, vCPU-, RAM- and disk-hours by project, user, flavor or
host over a period (GET /ops/v1/usage), as a table with the capacity left per flavor, CSV,
JSON or a PNG chart of the use over time."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from infracloud.cli.common import CaCert, Cloud, Url, call, check_format, client, fail, when
from infracloud.clients.cloud import Client
from infracloud.core.clock import isoformat, utcnow
from infracloud.core.errors import InfracloudError
from infracloud.site.units import USAGE_GROUPS, month_start

report_app = typer.Typer(help="Reports of the site's use.", no_args_is_help=True)

FORMATS = ("table", "csv", "json", "png")
COLUMNS = (("servers", "servers"), ("instance_hours", "instance-hours"),
           ("vcpu_hours", "vCPU-hours"), ("ram_gb_hours", "RAM GiB-hours"),
           ("disk_gb_hours", "disk GB-hours"))


@report_app.command()
def usage(
    since: Annotated[str | None, typer.Option(
        help="from: an ISO date or time (UTC), or 2d, 12h... ago (default: the start of this "
             "month)")] = None,
    until: Annotated[str | None, typer.Option(help="until (same forms; default: now)")] = None,
    by: Annotated[str, typer.Option(help="project, flavor, host or user")] = "project",
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json or png")] = "table",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="write to this file (png: default usage.png; others: stdout)")
    ] = None,
    url: Url = None, os_cloud: Cloud = None, cacert: CaCert = None,
) -> None:
    """Instance-, vCPU-, RAM- and disk-hours by project, flavor, host or user over a period,
    and how many more servers of each flavor fit."""
    check_format(fmt, FORMATS)
    if by not in USAGE_GROUPS:
        fail(f"--by must be one of {', '.join(USAGE_GROUPS)}, not {by!r}")
    start = when("--since", since) if since else month_start(utcnow())
    end = when("--until", until) if until else None
    if end is not None and start >= end:
        fail("--since must be before --until")
    params = {"since": isoformat(start), "until": isoformat(end) if end else None, "by": by}
    with client(url, os_cloud, cacert) as c:
        if fmt in ("csv", "png"):
            body = _fetch(c, "/ops/v1/usage", {**params, "format": fmt})
        else:
            data = call(c, "/ops/v1/usage", **params)["usage"]
    if fmt == "png":
        path = output or Path("usage.png")
        _write(path, body)
        typer.echo(f"wrote {path}")
    elif fmt == "table":
        if output is None:
            Console(highlight=False).print(*screen(data))
            return
        buffer = io.StringIO()
        Console(file=buffer, width=120, highlight=False).print(*screen(data))
        _write(output, buffer.getvalue().encode())
    else:
        text = body.decode() if fmt == "csv" else json.dumps(data, indent=2) + "\n"
        if output is None:
            typer.echo(text, nl=False)
        else:
            _write(output, text.encode())


def _fetch(c: Client, path: str, params: dict[str, Any]) -> bytes:
    """A GET whose answer is not JSON (CSV, PNG)."""
    try:
        return c.raw("GET", path, params={k: v for k, v in params.items()
                                          if v is not None}).content
    except InfracloudError as exc:
        fail(str(exc))
        raise


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        fail(f"--output {path}: {exc.strerror or exc}")


def _hours(value: float) -> str:
    """Two decimals; a few significant digits below one (a short period's hours)."""
    return f"{value:,.2f}" if value >= 1 or value == 0 else f"{value:.3g}"


def screen(data: dict[str, Any]) -> list[Any]:
    """The report as a table, its total last, and the capacity left per flavor under it."""
    by = data["by"]
    title = (f"Usage of {data['site']} by {by}, {data['since'][:16].replace('T', ' ')} to "
             f"{data['until'][:16].replace('T', ' ')} UTC")
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column(by)
    for _, heading in COLUMNS:
        table.add_column(heading, justify="right")
    rows = data["rows"]
    for i, r in enumerate(rows):
        table.add_row(r["name"], str(r["servers"]),
                      *(_hours(r[key]) for key, _ in COLUMNS[1:]),
                      end_section=i == len(rows) - 1)
    t = data["total"]
    table.add_row("total", str(t["servers"]), *(_hours(t[key]) for key, _ in COLUMNS[1:]),
                  style="bold")
    out: list[Any] = [table]
    if not rows:
        out.append("no servers ran in this period")
    left = data.get("capacity_left") or []
    if left:
        cap = Table(title="\nCapacity left per flavor", title_justify="left", box=None,
                    pad_edge=False)
        for heading in ("flavor", "fit now", "hosts hold", "in use", "binding"):
            cap.add_column(heading, justify="left" if heading in ("flavor", "binding")
                           else "right")
        for c in left:
            cap.add_row(c["flavor"], str(c["free"]), str(c["total"]), str(c["in_use"]),
                        c["binding"] or "-")
        out.append(cap)
    return out
