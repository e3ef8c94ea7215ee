"""`infracloud status`: the site on one screen (GET /ops/v1/status): hosts by state, capacity
used and free, free slots per flavor, servers and machines by state, the pool's waiting
requests, the controllers and which of them holds each background duty, firing alerts.
Failures come first and in red: nobody is on site to notice them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from infracloud.cli.common import CaCert, Cloud, Url, call, check_format, client
from infracloud.site.units import RESOURCE_TITLES, ago, amount, percent

BAR = 20
NAMED = 8  # hosts or machines named per line before "and N more"
HOST_STYLES = {"up": "green", "down": "bold red", "fenced": "bold red", "disabled": "yellow"}
INSTANCE_STYLES = {"active": "green", "error": "bold red", "deleting": "dim"}


def status(
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    url: Url = None, os_cloud: Cloud = None, cacert: CaCert = None,
) -> None:
    """The site on one screen: hosts, capacity, servers, machines, pool, alerts."""
    check_format(fmt, ("table", "json"))
    with client(url, os_cloud, cacert) as c:
        data = call(c, "/ops/v1/status")
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    Console(highlight=False).print(screen(data))


def _counts(by_state: dict[str, int], styles: dict[str, str], skip_zero: bool = True
            ) -> Text:
    parts = [(f"{n} {state}", styles.get(state, "") if n else "dim")
             for state, n in by_state.items() if n or not skip_zero]
    return Text(", ").join(Text(p, style=s) for p, s in parts) if parts else Text("none",
                                                                                 "dim")


def _names(rows: list[dict[str, Any]]) -> str:
    named = [f"{r['name']} ({r['note']})" if r.get("note") else r["name"]
             for r in rows[:NAMED]]
    more = f" and {len(rows) - NAMED} more" if len(rows) > NAMED else ""
    return ", ".join(named) + more


def _bar(c: dict[str, float]) -> Text:
    total = c["total"] or 1
    used = round(BAR * c["used"] / total)
    free = min(round(BAR * c["free"] / total), BAR - used)
    hot = c["total"] and c["used"] / c["total"] >= 0.9
    return Text.assemble(("█" * used, "yellow" if hot else "blue"), ("░" * free, "green"),
                         ("·" * (BAR - used - free), "dim"))


def screen(data: dict[str, Any]) -> Table:
    """The status as a two-column grid: what, and how it is."""
    site = data["site"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("Site", Text.assemble((site["name"], "bold"), f" ({site['region']})  ",
                                       site["url"], (f"  infracloud {site['version']}", "dim")))
    hosts = data["hosts"]
    grid.add_row("Hosts", Text.assemble(f"{hosts['total']}: ",
                                        _counts(hosts["by_state"], HOST_STYLES, False)))
    for state in ("down", "fenced", "disabled"):
        rows = [h for h in hosts["rows"] if h["state"] == state]
        if rows:
            grid.add_row("", Text(f"{state}: {_names(rows)}", HOST_STYLES[state]))
    capacity = data["capacity"]
    for i, (resource, c) in enumerate(capacity.items()):
        of = f"{amount(c['used'], resource).split()[0]}/{amount(c['total'], resource)}"
        grid.add_row("Capacity" if i == 0 else "", Text.assemble(
            f"{RESOURCE_TITLES[resource]:<6} ", _bar(c),
            f" {percent(c['used'], c['total']):>4}  {of} used, ",
            (f"{amount(c['free'], resource)} free", "bold")))
    if any(c["unavailable"] for c in capacity.values()):
        grid.add_row("", Text("on hosts that take no servers: " + ", ".join(
            f"{amount(c['unavailable'], r)} {RESOURCE_TITLES[r].replace('Disk', 'disk')}"
            for r, c in capacity.items()), "dim"))
    slots = [Text.assemble(f"{f['name']} ", (str(f["free"]), "bold" if f["free"] else
                                            "bold red"), f"/{f['total']}")
             for f in data["flavors"]]
    grid.add_row("Free slots", Text("  ").join(slots) if slots else Text("no flavors", "dim"))
    instances = data["instances"]
    grid.add_row("Servers", Text.assemble(f"{instances['total']}: ",
                                          _counts(instances["by_state"], INSTANCE_STYLES)))
    soon = instances.get("expiring") or {}
    if soon.get("count"):
        left = soon["next_in"]
        grid.add_row("", Text(f"{soon['count']} with an expiry; the next "
                              f"{'in ' + ago(left) if left > 0 else 'now'}", "dim"))
    machines = data["machines"]
    if machines["total"]:
        grid.add_row("Machines", Text.assemble(
            f"{machines['total']}: ", _counts(machines["by_state"], {"active": "green"})))
        faults = [{"name": m["name"], "note": m["fault"] or m["maintenance_reason"]
                   or m["provision_state"]} for m in machines["faults"]]
        if faults:
            grid.add_row("", Text(f"faults: {_names(faults)}", "bold red"))
    grid.add_row("Pool", _pool(data["pool"]))
    grid.add_row("Backup", _backup(data.get("backup")))
    if "duties" in data:
        grid.add_row("Duties", _duties(data["duties"]))
        grid.add_row("", _controllers(data.get("controllers") or []))
    alerts = data["alerts"]
    if not alerts:
        grid.add_row("Alerts", Text("no alerts", "green"))
    for i, a in enumerate(alerts):
        grid.add_row(Text("Alerts", "bold red") if i == 0 else "", Text.assemble(
            (f"{a['severity'].upper():<8} ", "bold red" if a["severity"] == "critical"
             else "bold yellow"), (a["summary"], "red"),
            (f"  {a['subject']}, for {ago(a['age_seconds'])}", "dim")))
    return grid


def _controllers(rows: list[dict[str, Any]]) -> Text:
    if not rows:
        return Text("no controller heartbeating", "bold red")
    return Text(f"{len(rows)} controller{'s' if len(rows) != 1 else ''} live: " +
                ", ".join(r["owner"] for r in rows), "dim")


def _duties(rows: list[dict[str, Any]]) -> Text:
    """Each holder and its duties; the duties nobody holds (between a holder's death and
    a survivor's next renewal) in red."""
    by_holder: dict[str, list[str]] = {}
    for d in rows:
        by_holder.setdefault(d["holder"] or "", []).append(d["name"])
    free = by_holder.pop("", [])
    parts = [Text(f"{', '.join(names)} on {holder}") for holder, names in by_holder.items()]
    if free:
        parts.append(Text(f"{', '.join(free)} held by nobody", "bold red"))
    return Text("; ").join(parts) if parts else Text("none", "dim")


def _backup(b: dict[str, Any] | None) -> Text:
    """The newest good scheduled backup: its time and age, none, or backups off."""
    if not b or not b.get("enabled"):
        return Text("backups off", "dim")
    style = "bold red" if b.get("stale") else "green"
    if b.get("last") is None:
        return Text(f"none yet in {b['dir']}", style)
    return Text(f"last {b['last']} ({ago(b['age_seconds'])} ago) {b['file']}", style)


def _pool(pool: dict[str, Any] | None) -> Text:
    if pool is None:
        return Text("no pool in this controller", "dim")
    waiting = pool["requests_waiting"]
    line = Text.assemble(
        f"{pool['name']}: ", (f"{waiting} request{'s' if waiting != 1 else ''} waiting",
                              "bold" if waiting else ""))
    if waiting:
        line.append(f" (oldest {ago(pool['oldest_wait_seconds'])}: "
                    + ", ".join(f"{label} {n}" for label, n in
                                pool["waiting_by_label"].items() if n) + ")")
    line.append("; nodes: ")
    line.append(_counts(pool["nodes_by_state"], {"ready": "green", "failed": "bold red"}))
    return line
