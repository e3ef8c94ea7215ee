"""`infracloud hardware ...` and `infracloud capacity`: the operator's view of the machines,
through the controller's API (the cloud comes from clouds.yaml: --os-cloud, else
INFRACLOUD_ADMIN_CLOUD, else OS_CLOUD)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infracloud.clients.cloud import Client
from infracloud.hardware import inventory as inv
from infracloud.hardware import workflow
from infracloud.hardware.workflow import Progress as Outcome

hardware_app = typer.Typer(help="Enrol, deploy and list the site's bare-metal machines.",
                           no_args_is_help=True)
Cloud = Annotated[str | None, typer.Option("--os-cloud", help="cloud in clouds.yaml (default: "
                                           "INFRACLOUD_ADMIN_CLOUD, else OS_CLOUD)")]
Format = Annotated[str, typer.Option("--format", help="table or json")]
LIST_FIELDS = workflow.FIELDS + ",driver,extra,instance_info,power_state"


def _fail(message: str) -> None:
    typer.echo(f"infracloud: error: {message}", err=True)
    raise typer.Exit(2)


def _check_format(value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(f"--format must be one of {', '.join(allowed)}, not {value!r}")


@contextmanager
def progress_bar(title: str, total: int) -> Iterator[Callable[[Outcome], None]]:
    """A progress bar on a terminal; on anything else, a line per change of the counts."""
    console = Console(stderr=True)
    if not console.is_terminal:
        last = [""]

        def report_lines(p: Outcome) -> None:
            line = f"{title}: {p.done}/{p.total} finished ({p.summary()})"
            if line != last[0]:
                last[0] = line
                typer.echo(line, err=True)

        yield report_lines
        return
    with Progress(TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                  transient=False) as bar:
        task = bar.add_task("", total=total)

        def report(p: Outcome) -> None:
            bar.update(task, completed=p.done, description=p.summary())

        yield report


def _finish(outcome: Outcome, what: str) -> None:
    if outcome.failed:
        for name, why in sorted(outcome.failed.items()):
            typer.echo(f"  {name}: {why}", err=True)
        typer.echo(f"{what}: {outcome.total - len(outcome.failed)} of {outcome.total} "
                   f"succeeded, {len(outcome.failed)} failed", err=True)
        raise typer.Exit(1)
    typer.echo(f"{what}: all {outcome.total} succeeded")


@hardware_app.command("enroll")
def enroll(inventory_file: Annotated[Path, typer.Argument(
               help="site inventory: infracloud YAML or bifrost JSON")],
           stop_at: Annotated[str, typer.Option(
               help="enroll, manageable (verified and inspected) or available")] = "available",
           timeout: Annotated[float, typer.Option(help="seconds to wait for all")] = 3600,
           cloud: Cloud = None) -> None:
    """Enrol every machine of an inventory: verify its BMC, inspect it, make it available."""
    if stop_at not in ("enroll", "manageable", "available"):
        _fail(f"--stop-at must be enroll, manageable or available, not {stop_at!r}")
    site = inv.load(inventory_file)
    with Client(cloud) as c, progress_bar(f"enrolling {site.name}",
                                           len(site.machines)) as report:
        outcome = workflow.enroll(c.call, site, report, stop_at=stop_at, timeout=timeout)
    _finish(outcome, f"enrolled {len(site.machines)} machines of {site.name}")


def _names(c: Client, names: list[str], all_: bool, role: str | None, state: str) -> list[str]:
    if names:
        return names
    if not all_:
        _fail("name the machines, or pass --all")
    nodes = workflow.list_nodes(c.call, LIST_FIELDS)
    return sorted(n for n, node in nodes.items() if node["provision_state"] == state and
                  not node["maintenance"] and (role is None or
                                               node["extra"].get("role") == role))


@hardware_app.command("deploy")
def deploy(names: Annotated[list[str] | None, typer.Argument(help="machines")] = None,
           all_: Annotated[bool, typer.Option("--all", help="every available machine")] = False,
           role: Annotated[str | None, typer.Option(help="compute or controller")] = None,
           timeout: Annotated[float, typer.Option(help="seconds to wait for all")] = 3600,
           cloud: Cloud = None) -> None:
    """Deploy machines: boot them with a one-time join token; compute ones join as hosts."""
    if role not in (None, "compute", "controller"):
        _fail(f"--role must be compute or controller, not {role!r}")
    with Client(cloud) as c:
        chosen = _names(c, names or [], all_, role, "available")
        if not chosen:
            _fail("no available machine matches")
        with progress_bar("deploying", len(chosen)) as report:
            outcome = workflow.deploy(c.call, chosen, report, timeout)
    _finish(outcome, f"deployed {len(chosen)} machines")


@hardware_app.command("undeploy")
def undeploy(names: Annotated[list[str] | None, typer.Argument(help="machines")] = None,
             all_: Annotated[bool, typer.Option("--all", help="every active machine")] = False,
             role: Annotated[str | None, typer.Option(help="compute or controller")] = None,
             evict: Annotated[bool, typer.Option(
                 help="delete the servers on them instead of waiting for them to go")] = False,
             timeout: Annotated[float, typer.Option(help="seconds to wait for all")] = 7200,
             cloud: Cloud = None) -> None:
    """Drain machines (no new servers; wait for, or --evict, theirs), power off, clean."""
    with Client(cloud) as c:
        chosen = _names(c, names or [], all_, role, "active")
        if not chosen:
            _fail("no active machine matches")
        with progress_bar("undeploying", len(chosen)) as report:
            outcome = workflow.undeploy(c.call, chosen, report, evict=evict, timeout=timeout)
    _finish(outcome, f"undeployed {len(chosen)} machines")


def _row(n: dict[str, Any]) -> dict[str, Any]:
    faults = [n.get("fault") or "", "maintenance" if n.get("maintenance") else "",
              n.get("last_error") or ""]
    return {"name": n["name"], "state": n["provision_state"], "power": n.get("power_state"),
            "role": (n.get("extra") or {}).get("role"), "driver": n.get("driver"),
            "host": (n.get("instance_info") or {}).get("compute_host"),
            "maintenance": bool(n.get("maintenance")), "fault": n.get("fault"),
            "last_error": n.get("last_error"), "faults": "; ".join(f for f in faults if f)}


@hardware_app.command("list")
def list_(output: Format = "table", cloud: Cloud = None) -> None:
    """Every machine: provisioning state, power, role, compute host, faults."""
    _check_format(output, ("table", "json"))
    with Client(cloud) as c:
        rows = [_row(n) for n in workflow.list_nodes(c.call, LIST_FIELDS).values()]
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("Name", "State", "Power", "Role", "Driver", "Host", "Faults")
    for r in sorted(rows, key=lambda r: r["name"] or ""):
        table.add_row(r["name"], r["state"], r["power"] or "-", r["role"], r["driver"],
                      r["host"] or "-", (r["faults"] or "-")[:80])
    Console(width=160).print(table)


def ansible_inventory(site: str, machines: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed 001's static inventory: a group per role, BMC address and MACs as host vars."""
    groups: dict[str, dict[str, Any]] = {"controller": {"hosts": {}}, "compute": {"hosts": {}}}
    for m in machines:
        hostvars = {k: v for k, v in (("ansible_host", m.get("ipv4_address")),
                                      ("bmc_driver", m.get("driver")),
                                      ("bmc_address", m.get("bmc_address")),
                                      ("macs", m.get("macs") or None)) if v}
        groups[m.get("role") or "compute"]["hosts"][m["name"]] = hostvars or None
    return {"all": {"vars": {"infracloud_site": site}, "children": groups}}


@hardware_app.command("inventory")
def inventory(source: Annotated[Path | None, typer.Argument(
                  help="an inventory file to convert (default: the controller's machines)")
              ] = None,
              output: Annotated[str, typer.Option("--format", help="ansible or json")
                                ] = "ansible",
              cloud: Cloud = None) -> None:
    """Print a static inventory of the machines (passwords are never printed)."""
    _check_format(output, ("ansible", "json"))
    if source is not None:
        site = inv.load(source)
        name = site.name
        machines = [{"name": m.name, "role": m.role, "driver": m.bmc.driver,
                     "bmc_address": m.bmc.address, "macs": m.macs,
                     "ipv4_address": m.ipv4_address} for m in site.machines]
    else:
        with Client(cloud) as c:
            nodes = c.call("GET", "/baremetal/v1/nodes/detail")["nodes"]
        name = next((n["extra"].get("site") for n in nodes if n["extra"].get("site")), "site")
        machines = [{"name": n["name"] or n["uuid"], "role": n["extra"].get("role"),
                     "driver": n["driver"],
                     "bmc_address": n["driver_info"].get("bmc_address") or
                     n["driver_info"].get("redfish_address") or
                     n["driver_info"].get("ipmi_address"),
                     "macs": n["properties"].get("macs"),
                     "ipv4_address": n["extra"].get("ipv4_address")} for n in nodes]
    if output == "json":
        typer.echo(json.dumps({"site": name, "machines": machines}, indent=2))
    else:
        sys.stdout.write(yaml.safe_dump(ansible_inventory(name, machines), sort_keys=False))


def capacity(flavor: Annotated[str, typer.Option(help="flavor name or id")] = "ci.8g",
             output: Format = "table", cloud: Cloud = None) -> None:
    """How many servers of a flavor this site's hardware holds, and what binds."""
    _check_format(output, ("table", "json"))
    with Client(cloud) as c:
        cap = c.call("GET", "/hardware/v1/capacity", params={"flavor": flavor})["capacity"]
    if output == "json":
        typer.echo(json.dumps(cap, indent=2))
        return
    typer.echo(f"site {cap['site']}, flavor {cap['flavor']}: {cap['hosts']} compute hosts up")
    typer.echo(f"  holds {cap['total']} servers when empty; {cap['free']} more fit now")
    typer.echo(f"  in use: {cap['in_use']} of this flavor ({cap['servers']} servers in all)")
    by = ", ".join(f"{r} {n}" for r, n in cap["by_resource"].items())
    typer.echo(f"  binding resource: {cap['binding'] or '-'} (servers each resource allows: "
               f"{by or '-'})")
    if cap["undeployed_machines"]:
        typer.echo(f"  {cap['undeployed_machines']} enrolled compute machines not deployed "
                   f"would add {cap['undeployed_would_add']}")
