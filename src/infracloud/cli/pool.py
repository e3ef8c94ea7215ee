"""`infracloud pool`: run the node pool (`--config pool.yaml`), or use one through its HTTP API
(request, list, release and hold test nodes; drain providers; which process is active). The
pool's URL (or its processes' URLs, comma-separated) and token come from --url/--token or
INFRACLOUD_POOL_URL/INFRACLOUD_POOL_TOKEN; --os-cloud (or INFRACLOUD_POOL_CLOUD) logs in to a
clouds.yaml cloud for a Keystone token instead."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from infracloud.core.errors import Conflict, InfracloudError
from infracloud.pool.client import PoolClient

pool_app = typer.Typer(help="Run the node pool (--config), or request, list and release its "
                       "test nodes.", invoke_without_command=True)

Url = Annotated[str | None, typer.Option(
    "--url", envvar="INFRACLOUD_POOL_URL",
    help="the pool's base URL, or its processes' URLs, comma-separated")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar="INFRACLOUD_POOL_TOKEN",
    help="the pool's static token, or any Keystone token")]
OsCloud = Annotated[str | None, typer.Option(
    "--os-cloud", envvar="INFRACLOUD_POOL_CLOUD",
    help="cloud in clouds.yaml to log in to for a Keystone token (when no --token)")]
CaCert = Annotated[Path | None, typer.Option(
    "--cacert", envvar="INFRACLOUD_POOL_CACERT",
    help="CA file to trust for the pool (default: the --os-cloud's, else the system's)")]
Format = Annotated[str, typer.Option("--format", help="table or json")]

FINAL = ("fulfilled", "failed", "cancelled")
WAIT_EACH = 30.0  # seconds of each long poll while --wait waits


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"infracloud: error: {message}", err=True)
    raise typer.Exit(code)


def _check_format(value: str) -> None:
    if value not in ("table", "json"):
        _fail(f"--format must be table or json, not {value!r}")


# ---- running the pool -------------------------------------------------------------------------

@pool_app.callback()
def pool(ctx: typer.Context,
         config_file: Annotated[Path | None, typer.Option(
             "--config", help="pool YAML file: run the pool service until Ctrl-C")] = None,
         log_format: Annotated[str, typer.Option(help="json or text (the service's log, on "
                                                 "stderr)")] = "json") -> None:
    """Run the node pool (--config pool.yaml), or use a running one (the commands below)."""
    if ctx.invoked_subcommand is not None:
        if config_file is not None:
            _fail("--config runs the pool service; it does not go with a command")
        return
    if config_file is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    if log_format not in ("json", "text"):
        _fail(f"--log-format must be json or text, not {log_format!r}")
    serve(config_file, log_format)


def serve(config_file: Path, log_format: str) -> None:
    from infracloud.core.settings import validate_file
    from infracloud.ops import logging as logs
    from infracloud.pool.config import PoolConfig
    from infracloud.processes.pool_server import serve_pool

    config, errors = validate_file(config_file, PoolConfig)
    if not isinstance(config, PoolConfig):
        for line in errors:
            typer.echo(line, err=True)
        raise typer.Exit(2)
    logs.configure(log_format, "info")

    def ready(url: str) -> None:
        typer.echo(f"infracloud pool serving at {url}")

    try:
        serve_pool(config, config_file, ready)
    except InfracloudError as exc:
        _fail(exc.message)


# ---- talking to a pool ------------------------------------------------------------------------

@contextmanager
def connect(url: str | None, token: str | None, cloud: str | None, cacert: Path | None
            ) -> Iterator[PoolClient]:
    """A client of the pool at `url`; any error of the pool or the login ends the command
    with its message (exit 2)."""
    from infracloud.clients.cloud import cloud_verify, login

    if not url:
        _fail("which pool? pass --url or set INFRACLOUD_POOL_URL")
    assert url is not None
    ca: str | bool | None = str(cacert) if cacert else None
    try:
        if cloud and not token:
            session = login(cloud)
            token = session.token
            ca = ca if ca is not None else session.verify
        elif cloud and ca is None:
            ca = cloud_verify(cloud)
        with PoolClient(url, token, ca) as client:
            yield client
    except InfracloudError as exc:
        _fail(exc.message)


# ---- formatting -----------------------------------------------------------------------------

def fingerprint(key_line: str) -> str:
    """ssh-keygen's SHA256 fingerprint of an OpenSSH public key line ("type base64 [comment]")."""
    parts = key_line.split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise ValueError("not an OpenSSH public key line") from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def host_key(keys: list[str], short: int = 12) -> str:
    """The first host key's type and the start of its fingerprint ("-" if none)."""
    if not keys:
        return "-"
    try:
        return f"{keys[0].split()[0]} {fingerprint(keys[0])[:7 + short]}"
    except ValueError:
        return "(not a key)"


def age(stamp: str | None, now: dt.datetime | None = None) -> str:
    """"42s", "5m", "3h", "2d" since an ISO time ("-" if none)."""
    if not stamp:
        return "-"
    try:
        then = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return "-"
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    secs = max(0, int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _print(table: Table) -> None:
    console = Console()
    (console if console.is_terminal else Console(width=200)).print(table)


def _json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def print_nodes(nodes: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        _json(nodes)
        return
    table = Table("ID", "Label", "Provider", "State", "IP", "Port", "User", "Key", "Host key",
                  "Age")
    for n in nodes:
        state = n["state"] + (f" ({n['hold_reason']})" if n.get("hold_reason") else "")
        table.add_row(n["id"], n["label"], n["provider"], state, _cell(n.get("interface_ip")),
                      _cell(n.get("ssh_port")), _cell(n.get("username")),
                      _cell(n.get("key_name")), host_key(n.get("host_keys") or []),
                      age(n.get("created_at")))
    _print(table)


def _labels(labels: list[str]) -> str:
    return ", ".join(f"{name} x{count}" if count > 1 else name
                     for name, count in Counter(labels).items())


def print_requests(reqs: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        _json(reqs)
        return
    table = Table("ID", "Requestor", "Labels", "State", "Nodes", "Age", "Reason")
    for r in reqs:
        table.add_row(r["id"], r["requestor"], _labels(r["labels"]), r["state"],
                      ", ".join(r.get("node_ids") or []) or "-", age(r.get("created_at")),
                      _cell(r.get("reason")))
    _print(table)


def _quota(quota: dict[str, Any] | None) -> str:
    if not quota:
        return "-"
    limit = quota["instances"]
    return f"{quota['instances_used']}/{'unlimited' if limit < 0 else limit}"


# ---- commands -------------------------------------------------------------------------------

@pool_app.command("request")
def request(
    labels: Annotated[list[str], typer.Argument(metavar="LABEL",
                                                help="labels of the nodes wanted")],
    count: Annotated[int, typer.Option(help="nodes of each label")] = 1,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the nodes are ready and "
                                       "print them")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits; then the request is "
                                           "cancelled")] = 900,
    requestor: Annotated[str | None, typer.Option(
        help="request for another requestor (admins; default: the token's)")] = None,
    priority: Annotated[int, typer.Option(help="higher first among the requestor's requests "
                                          "(-1000 to 1000)")] = 0,
    output: Format = "table", url: Url = None, token: Token = None, cloud: OsCloud = None,
    cacert: CaCert = None,
) -> None:
    """Ask for nodes; with --wait, print them once ready (exit 1 if it fails or times out)."""
    _check_format(output)
    if count < 1:
        _fail(f"--count must be 1 or more, not {count}")
    if timeout <= 0:
        _fail(f"--timeout must be more than 0 seconds, not {timeout:g}")
    wanted = [label for label in labels for _ in range(count)]
    with connect(url, token, cloud, cacert) as client:
        req = client.create_request(wanted, requestor, priority)
        if not wait:
            if output == "json":
                _json(req)
            else:
                print_requests([req], output)
            return
        try:
            req = wait_for(client, req, timeout)
        except KeyboardInterrupt:
            _cancel(client, req["id"])
            _fail(f"interrupted; request {req['id']} is cancelled", 130)
        timed_out = req["state"] not in FINAL
        if timed_out:
            req = _cancel(client, req["id"])
        if req["state"] == "fulfilled":
            print_nodes(req["nodes"], output)
            return
        if req["state"] == "failed":
            _fail(f"request {req['id']} failed: {req.get('reason') or 'no reason given'}", 1)
        if timed_out:
            _fail(f"request {req['id']} was not fulfilled within {timeout:g} s; it is "
                  f"cancelled", 1)
        _fail(f"request {req['id']} was cancelled: {req.get('reason') or 'no reason given'}",
              1)


def wait_for(client: PoolClient, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Long-poll the request until it is final or `timeout` seconds pass. Progress goes to
    stderr."""
    start = time.monotonic()
    with _progress(req["id"]) as show:
        while True:
            ready = _ready(client, req)
            show(req, ready, time.monotonic() - start)
            left = start + timeout - time.monotonic()
            if req["state"] in FINAL or left <= 0:
                break
            req = client.get_request(req["id"], wait=min(WAIT_EACH, left))
    return req


def _cancel(client: PoolClient, request_id: str) -> dict[str, Any]:
    try:
        return client.cancel_request(request_id)
    except Conflict:  # it became final meanwhile
        return client.get_request(request_id)


def _ready(client: PoolClient, req: dict[str, Any]) -> int:
    """How many of the request's nodes are ready."""
    if req["state"] == "fulfilled":
        return len(req["labels"])
    ids = set(req.get("node_ids") or [])
    if not ids or req["state"] in FINAL:
        return 0
    return sum(1 for n in client.list_nodes() if n["id"] in ids and n["state"] == "ready")


@contextmanager
def _progress(request_id: str) -> Iterator[Callable[[dict[str, Any], int, float], None]]:
    """A spinner on a terminal; on anything else, one line per change of state."""
    console = Console(stderr=True)

    def text(req: dict[str, Any], ready: int) -> str:
        return f"request {request_id}: {req['state']}, {ready}/{len(req['labels'])} nodes ready"

    if not console.is_terminal:
        last = [""]

        def line(req: dict[str, Any], ready: int, waited: float) -> None:
            now = text(req, ready)
            if now != last[0]:
                last[0] = now
                typer.echo(f"{now} ({waited:.0f} s)", err=True)

        yield line
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(f"request {request_id}", total=None)

        def spin(req: dict[str, Any], ready: int, waited: float) -> None:
            bar.update(task, description=text(req, ready))

        yield spin


@pool_app.command("list")
def list_(label: Annotated[str | None, typer.Option(help="only nodes of this label")] = None,
          state: Annotated[str | None, typer.Option(
              help="only nodes in this state (building, ready, in-use, used, held, failed, "
              "deleting)")] = None,
          output: Format = "table", url: Url = None, token: Token = None,
          cloud: OsCloud = None, cacert: CaCert = None) -> None:
    """The pool's nodes: label, provider, state, address, SSH user and host key."""
    _check_format(output)
    with connect(url, token, cloud, cacert) as client:
        nodes = client.list_nodes(label, state)
    print_nodes(nodes, output)


@pool_app.command("requests")
def requests(history: Annotated[bool, typer.Option(
                 "--history", help="also requests finished in the last week")] = False,
             output: Format = "table", url: Url = None, token: Token = None,
             cloud: OsCloud = None, cacert: CaCert = None) -> None:
    """The node requests: who asked for what, their state and nodes."""
    _check_format(output)
    with connect(url, token, cloud, cacert) as client:
        reqs = client.list_requests(history)
    print_requests(reqs, output)


@pool_app.command("labels")
def labels(output: Format = "table", url: Url = None, token: Token = None,
           cloud: OsCloud = None, cacert: CaCert = None) -> None:
    """The labels: min-ready, nodes by state, requests waiting, providers."""
    _check_format(output)
    with connect(url, token, cloud, cacert) as client:
        rows = client.list_labels()
    if output == "json":
        _json(rows)
        return
    table = Table("Name", "Min-ready", "Ready", "Building", "In-use", "Waiting", "Providers")
    for r in rows:
        table.add_row(r["name"], str(r["min_ready"]), str(r["ready"]), str(r["building"]),
                      str(r["in_use"]), str(r["waiting"]), ", ".join(r["providers"]) or "-")
    _print(table)


@pool_app.command("providers")
def providers(output: Format = "table", url: Url = None, token: Token = None,
              cloud: OsCloud = None, cacert: CaCert = None) -> None:
    """The providers: state, nodes by state, quota, launch failures, last error."""
    _check_format(output)
    with connect(url, token, cloud, cacert) as client:
        rows = client.list_providers()
    if output == "json":
        _json(rows)
        return
    table = Table("Name", "State", "Max-servers", "Nodes", "Building", "Ready", "In-use",
                  "Quota", "Launch failures", "Last error")
    for r in rows:
        state = r["state"] + (f" ({r['drained_reason']})" if r.get("drained_reason") else "")
        table.add_row(r["name"], state, str(r["max_servers"]), str(r["nodes"]),
                      str(r["building"]), str(r["ready"]), str(r["in_use"]),
                      _quota(r.get("quota")), str(r["launch_failures"]),
                      _cell(r.get("last_error"))[:80])
    _print(table)


@pool_app.command("release")
def release(nodes: Annotated[list[str], typer.Argument(metavar="NODE", help="node ids")],
            url: Url = None, token: Token = None, cloud: OsCloud = None,
            cacert: CaCert = None) -> None:
    """Done with nodes: they are deleted (exit 2 if any could not be released)."""
    failed = 0
    with connect(url, token, cloud, cacert) as client:
        for node_id in nodes:
            try:
                node = client.release(node_id)
            except InfracloudError as exc:
                typer.echo(f"infracloud: error: {exc.message}", err=True)
                failed += 1
                continue
            typer.echo(f"node {node['id']}: {node['state']}")
    if failed:
        raise typer.Exit(2)


@pool_app.command("hold")
def hold(node: Annotated[str, typer.Argument(metavar="NODE", help="node id")],
         reason: Annotated[str, typer.Option(help="why (shown in the node list)")],
         url: Url = None, token: Token = None, cloud: OsCloud = None,
         cacert: CaCert = None) -> None:
    """Keep a ready or in-use node (to look at a failed job) until it is released."""
    with connect(url, token, cloud, cacert) as client:
        n = client.hold(node, reason)
    typer.echo(f"node {n['id']}: {n['state']} ({n.get('hold_reason') or reason})")


def _provider_line(p: dict[str, Any]) -> str:
    why = f" ({p['drained_reason']})" if p.get("drained_reason") else ""
    return f"provider {p['name']}: {p['state']}{why}"


@pool_app.command("drain")
def drain(provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="provider name")],
          reason: Annotated[str | None, typer.Option(help="why (shown in the providers "
                                                     "list)")] = None,
          url: Url = None, token: Token = None, cloud: OsCloud = None,
          cacert: CaCert = None) -> None:
    """Stop new launches on a provider (admins); its nodes finish as usual."""
    with connect(url, token, cloud, cacert) as client:
        p = client.drain(provider, reason)
    typer.echo(_provider_line(p))


@pool_app.command("undrain")
def undrain(provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="provider name")],
            url: Url = None, token: Token = None, cloud: OsCloud = None,
            cacert: CaCert = None) -> None:
    """Resume launches on a drained provider (admins)."""
    with connect(url, token, cloud, cacert) as client:
        p = client.undrain(provider)
    typer.echo(_provider_line(p))


def _ago(stamp: str | None) -> str:
    return "-" if not stamp else f"{age(stamp)} ago"


@pool_app.command("status")
def status(output: Format = "table", url: Url = None, token: Token = None,
           cloud: OsCloud = None, cacert: CaCert = None) -> None:
    """Which pool process is active, which stand by (several on one database)."""
    _check_format(output)
    with connect(url, token, cloud, cacert) as client:
        st = client.status()
    if output == "json":
        _json(st)
        return
    this, active = st["this"], st.get("active")
    if this.get("owner") is None:
        typer.echo(f"pool {st['pool']}: one process, {this['role']} (no other can take over)")
        return
    if active is None:
        typer.echo(f"pool {st['pool']}: no process is active now (a standby takes over "
                   f"within seconds)")
    else:
        typer.echo(f"pool {st['pool']}: active process {active['owner']} since "
                   f"{_ago(active['since'])} (lease generation {active['generation']})")
    table = Table("Process", "Where", "Role", "Since", "Seen")
    for p in st["processes"]:
        table.add_row(p["owner"], p["where"], p["role"], _ago(p.get("since")),
                      _ago(p.get("seen_at")))
    _print(table)
    typer.echo(f"answered by {this['owner']} ({this['role']}); "
               f"{st['commands_waiting']} writes waiting for the active process")


@pool_app.command("cancel")
def cancel(request_id: Annotated[str, typer.Argument(metavar="REQUEST", help="request id")],
           url: Url = None, token: Token = None, cloud: OsCloud = None,
           cacert: CaCert = None) -> None:
    """Withdraw a request that is not fulfilled yet."""
    with connect(url, token, cloud, cacert) as client:
        r = client.cancel_request(request_id)
    typer.echo(f"request {r['id']}: {r['state']}")
