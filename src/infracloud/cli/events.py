"""Operations commands that read a controller: `infracloud events` (and the options and client
that `status` and `report` share). The controller is found by a clouds.yaml cloud
(--os-cloud, $INFRACLOUD_ADMIN_CLOUD, $OS_CLOUD: what `source infracloud.env` sets), or by
--url / $INFRACLOUD_URL alone when the controller's operations views are open."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from infracloud.cli.common import CaCert, Cloud, Url, call, check_format, client, fail, when
from infracloud.core.clock import isoformat
from infracloud.core.errors import InfracloudError


def _what(e: dict[str, Any]) -> str:
    name = e.get("resource_name") or e.get("resource_id") or ""
    if e["kind"] == "api":
        about = f"  {e['resource_type']} {name}" if e.get("resource_id") else ""
        if about and e.get("resource_name") and e["resource_id"] != e["resource_name"]:
            about += f" ({e['resource_id']})"
        return f"{e['action']} → {e['target']}{about}"
    change = f"{e['source'] or '∅'} → {e['target']}" if e["target"] else ""
    return f"{e['resource_type']} {name} {e['action']} {change}".strip()


def _line(e: dict[str, Any]) -> str:
    where = e.get("host") or e.get("site") or ""
    reason = f"  ({e['reason']})" if e.get("reason") else ""
    return f"{e['at'][:19]}Z  {e['actor']:<20} {where:<14} {_what(e)}{reason}"


def events(
    since: Annotated[str, typer.Option(help="from: 1h, 30m, 2d ago or an ISO date/time")] = "1h",
    until: Annotated[str | None, typer.Option(help="until (same forms as --since)")] = None,
    project: Annotated[str | None, typer.Option(help="project name or id")] = None,
    host: Annotated[str | None, typer.Option(help="compute host (or machine) name")] = None,
    user: Annotated[str | None, typer.Option(help="acting user's name or id")] = None,
    resource: Annotated[str | None, typer.Option(help="resource id")] = None,
    kind: Annotated[str | None, typer.Option(help="state, api or alert")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="keep printing new events as they happen")] = False,
    limit: Annotated[int, typer.Option(help="show the newest this many (--format jsonl "
                                            "exports all)")] = 1000,
    fmt: Annotated[str, typer.Option("--format", help="table, json or jsonl")] = "table",
    url: Url = None, os_cloud: Cloud = None, cacert: CaCert = None,
) -> None:
    """Events: who did what, when and where (state changes, API writes, alerts)."""
    check_format(fmt, ("table", "json", "jsonl"))
    if follow and fmt == "json":
        fmt = "jsonl"  # one object per line as they come
    if kind is not None and kind not in ("state", "api", "alert"):
        fail(f"--kind must be state, api or alert, not {kind!r}")
    if limit < 1:
        fail("--limit must be at least 1")
    params: dict[str, Any] = {
        "since": isoformat(when("--since", since), micro=True),
        "until": isoformat(when("--until", until), micro=True) if until else None,
        "project": project, "host": host, "resource": resource, "kind": kind, "user": user}
    with client(url, os_cloud, cacert) as c:
        if fmt == "jsonl" and not follow:
            try:
                for line in c.stream("/ops/v1/events", params={
                        **{k: v for k, v in params.items() if v is not None},
                        "format": "jsonl"}):
                    if line:
                        typer.echo(line)
            except InfracloudError as exc:
                fail(str(exc))
            return
        # the newest `limit` events, printed oldest first
        page = call(c, "/ops/v1/events", **params, limit=limit, order="desc")
        rows = page["events"][::-1]
        if not follow:
            _print(rows, fmt)
            return
        _print(rows, fmt, header=True)
        cursor = page["next"]
        params.pop("since")
        try:
            while True:
                page = call(c, "/ops/v1/events", **params, after=cursor, wait=30, limit=1000)
                _print(page["events"], fmt, header=False)
                cursor = page["next"]
                if not page["events"]:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return


def _print(rows: list[dict[str, Any]], fmt: str, header: bool = True) -> None:
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if fmt == "jsonl":
        for e in rows:
            typer.echo(json.dumps(e, separators=(",", ":")))
        return
    if not rows:
        if header:
            typer.echo("no events")
        return
    console = Console(soft_wrap=True)
    if header:
        table = Table(box=None, pad_edge=False)
        for col in ("time (UTC)", "actor", "where", "what", "reason"):
            table.add_column(col)
        for e in rows:
            table.add_row(e["at"][:19].replace("T", " "), e["actor"],
                          e.get("host") or e.get("site") or "", _what(e), e.get("reason") or "")
        console.print(table)
    else:
        for e in rows:
            console.print(_line(e), highlight=False, markup=False)
