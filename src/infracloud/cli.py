"""The `infracloud` command."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from infracloud import __version__
from infracloud.cli_hardware import capacity, hardware_app
from infracloud.cli_ops import events
from infracloud.cli_pool import pool_app
from infracloud.cli_report import report_app
from infracloud.cli_status import status
from infracloud.core.errors import InfracloudError
from infracloud.core.settings import ControllerConfig

app = typer.Typer(help="infracloud: donated bare metal as a private cloud of CI test nodes.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Check controller configuration files.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage the token encryption keys of a site.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(hardware_app, name="hardware")
app.add_typer(pool_app, name="pool")
app.command("capacity")(capacity)
app.command("events")(events)
app.add_typer(report_app, name="report")
app.command("status")(status)


def fail(message: str) -> None:
    typer.echo(f"infracloud: error: {message}", err=True)
    raise typer.Exit(2)


def _log_format(value: str) -> str:
    if value not in ("json", "text"):
        fail(f"--log-format must be json or text, not {value!r}")
    return value


def _load(config_file: Path) -> ControllerConfig:
    from infracloud.core.settings import config_errors

    config, errors = config_errors(config_file)
    if config is None:
        for line in errors:
            typer.echo(line, err=True)
        raise typer.Exit(2)
    return config


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


SITES = ("small", "vanilla", "chocolate", "none")


@app.command()
def demo(
    state_dir: Annotated[Path, typer.Option(help="folder for the demo site's data")] = Path(
        "var/demo"),
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8443,
    no_tls: Annotated[bool, typer.Option("--no-tls", help="serve plain HTTP")] = False,
    log_format: Annotated[str, typer.Option(help="json or text")] = "json",
    site: Annotated[str, typer.Option(
        help="simulated machines to enrol and deploy as compute hosts: small (4), vanilla "
        "(48), chocolate (100) or none")] = "small",
    hosts: Annotated[int, typer.Option(
        help="extra compute hosts started directly (no machine behind them)", min=0,
        max=64)] = 0,
    driver: Annotated[str, typer.Option(help="sandbox (SSH works) or fake")] = "sandbox",
    ssh_port: Annotated[int | None, typer.Option(
        help="port of the sandbox servers' SSH (default 22 as root, else 2222)")] = None,
    network_cidr: Annotated[str, typer.Option(
        help="the servers' network (loopback, so SSH works without touching the host's "
        "network); two demos side by side need two")] = "127.100.0.0/16",
    min_ready: Annotated[int, typer.Option(
        help="nodes of label ubuntu-noble the demo's pool keeps ready", min=0, max=50)] = 2,
    ci_load: Annotated[float, typer.Option(
        help="JOBS_PER_MIN: run a synthetic CI workload on the pool (0: none)", min=0,
        max=600)] = 0,
) -> None:
    """Run an all-in-one demo site (embedded SQLite, simulated machines, a node pool) until
    Ctrl-C."""
    import ipaddress

    from infracloud import demo as demo_mod
    from infracloud import demo_pool
    from infracloud.agent.hosts import AgentThreads
    from infracloud.cli_hardware import progress_bar
    from infracloud.ops import logging as logs
    from infracloud.pool_server import attach
    from infracloud.runtime import check_port_free, serve
    from infracloud.services import Services, build_services

    _log_format(log_format)
    if driver not in ("sandbox", "fake"):
        fail(f"--driver must be sandbox or fake, not {driver!r}")
    if site not in SITES:
        fail(f"--site must be one of {', '.join(SITES)}, not {site!r}")
    if ssh_port is None:
        ssh_port = 22 if os.geteuid() == 0 else 2222
    try:
        if not ipaddress.ip_network(network_cidr).is_loopback:
            fail(f"--network-cidr must be a loopback network (127.0.0.0/8), not {network_cidr}")
    except ValueError as exc:
        fail(f"--network-cidr: {exc}")
    check_port_free(host, port)
    config, paths = demo_mod.prepare(state_dir, host, port, tls=not no_tls,
                                     log_format=log_format, site=site, driver=driver,
                                     ssh_port=ssh_port, cidr=network_cidr)
    log_stream = open(paths.log, "a", buffering=1)  # noqa: SIM115 - lives as long as the demo
    logs.configure(config.logging.format, config.logging.level, stream=log_stream)
    typer.echo(f"infracloud demo: preparing {paths.state_dir} (log: {paths.log})")
    services = build_services(config)
    demo_mod.bootstrap(services, paths)

    agents: list[AgentThreads] = []
    pool, pool_auth = demo_pool.build(services, paths.state_dir, driver=driver,
                                      ssh_port=ssh_port, min_ready=min_ready, max_servers=10)
    pool.load()
    stop_load = threading.Event()

    def bring_up(s: Services) -> None:
        if site != "none":
            machines = len(demo_mod.inventory.load(demo_mod.site_file(site)).machines)
            typer.echo(f"  site {site}: {machines} simulated machines, enrolled through their "
                       f"BMCs and deployed as compute hosts ({driver} driver)")
            with progress_bar(f"  site {site}", machines) as report:
                enrolled, deployed = demo_mod.bring_up_site(s, paths, site, report)
            for name, why in {**enrolled.failed, **deployed.failed}.items():
                typer.echo(f"  {name}: {why}")
        if hosts:
            agents.append(demo_mod.start_hosts(s, paths, hosts, driver, ssh_port))
            typer.echo(f"  {hosts} extra compute hosts ({driver} driver)")
        typer.echo(f"  servers on {network_cidr}" + (
            f", SSH port {ssh_port}" if driver == "sandbox" else ""))
        pool.start()
        # (no "ready" in this line: scripts wait for the one line that says it)
        typer.echo(f"  node pool: label {demo_pool.LABEL}, {min_ready} nodes kept on hand "
                   f"(config: {paths.state_dir / 'pool.yaml'}, SSH key: "
                   f"{paths.state_dir / 'pool-key'})")
        typer.echo(f"infracloud demo ready at {s.base_url} — clouds.yaml: {paths.clouds_yaml}")
        typer.echo(f"  try: source {paths.env_file} && openstack server list")
        typer.echo(f"       infracloud pool request {demo_pool.LABEL} --count 2 --wait")
        typer.echo(f"       infracloud status; infracloud events --follow; "
                   f"open {s.base_url}/dashboard")
        sys.stdout.flush()
        if ci_load:
            demo_pool.start_ci_load(s, paths.state_dir, ci_load, driver, stop_load)

    def ready(s: Services) -> None:
        def run() -> None:
            try:
                bring_up(s)
            except InfracloudError as exc:
                typer.echo(f"infracloud: error: {exc.message}", err=True)
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=run, name="demo-site", daemon=True).start()

    try:
        serve(config, services=services, on_ready=ready,
              extend=lambda app: attach(app, pool, pool_auth), on_stop=stop_load.set)
    finally:
        stop_load.set()
        pool.stop()
        for a in agents:
            a.stop()
    typer.echo("infracloud demo stopped")


@app.command()
def controller(
    config_file: Annotated[Path, typer.Option("--config", help="controller YAML file")],
    log_format: Annotated[str | None, typer.Option(help="json or text (overrides the file)")
                          ] = None,
) -> None:
    """Run a site controller configured by a YAML file."""
    from infracloud.ops import logging as logs
    from infracloud.runtime import serve

    config = _load(config_file)
    if log_format:
        config.logging.format = "text" if _log_format(log_format) == "text" else "json"
    logs.configure(config.logging.format, config.logging.level)
    serve(config)


@app.command()
def agent(
    controller_url: Annotated[str | None, typer.Option(
        "--controller", help="controller base URL")] = None,
    join: Annotated[Path | None, typer.Option(
        help="join config of a deployed machine (from its deploy media): controller, "
        "one-time join token, host name, CA")] = None,
    token: Annotated[str | None, typer.Option(
        help="the site's agent token (or INFRACLOUD_AGENT_TOKEN)")] = None,
    driver: Annotated[str, typer.Option(help="sandbox or fake")] = "sandbox",
    name: Annotated[str | None, typer.Option(help="host name (default: this machine's)")
                    ] = None,
    availability_zone: Annotated[str, typer.Option("--az", help="availability zone")] = "nova",
    state_dir: Annotated[Path, typer.Option(help="where instances live")] = Path(
        "var/agent"),
    vcpus: Annotated[int | None, typer.Option(help="vCPUs to offer (default: all)")] = None,
    ram_mb: Annotated[int | None, typer.Option(help="RAM to offer, MiB (default: all)")
                      ] = None,
    disk_gb: Annotated[int | None, typer.Option(help="disk to offer, GiB (default: free)")
                       ] = None,
    cacert: Annotated[str | None, typer.Option(help="CA file to trust for the controller")
                      ] = None,
    ssh_port: Annotated[int, typer.Option(help="sandbox: SSH port of servers")] = 22,
    reserve_vcpus: Annotated[int, typer.Option(help="vCPUs kept for the host itself", min=0)
                             ] = 0,
    reserve_ram_mb: Annotated[int, typer.Option(help="RAM kept for the host, MiB", min=0)
                              ] = 0,
    reserve_disk_gb: Annotated[int, typer.Option(help="disk kept for the host, GiB", min=0)
                               ] = 0,
    log_format: Annotated[str, typer.Option(help="json or text")] = "json",
    metrics_port: Annotated[int | None, typer.Option(
        help="serve Prometheus metrics on this port (default: none)", min=1, max=65535)
                            ] = None,
    metrics_host: Annotated[str, typer.Option(
        help="address the metrics listen on")] = "127.0.0.1",
    alert_webhook: Annotated[str | None, typer.Option(
        help="URL that gets a JSON POST when the controller stays unreachable, and when it "
        "answers again")] = None,
    alert_after: Annotated[float | None, typer.Option(
        help="seconds without the controller before the alert fires (default: 3 long-polls, "
        "60 s)", min=1)] = None,
) -> None:
    """Run a compute host's agent until Ctrl-C."""
    import socket

    from infracloud.agent.hosts import host_info, machine_capacity, make_driver
    from infracloud.agent.runner import Agent
    from infracloud.ops import logging as logs

    join_token = None
    if join is not None:
        try:
            joined = json.loads(join.read_text())
            controller_url, join_token = joined["controller"], joined["join_token"]
            name = name or joined["name"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"--join {join}: not a join config ({exc})")
        if joined.get("cacert") and not cacert:
            state_dir.mkdir(parents=True, exist_ok=True)
            (state_dir / "controller-ca.pem").write_text(joined["cacert"])
            cacert = str(state_dir / "controller-ca.pem")
    token = token or os.environ.get("INFRACLOUD_AGENT_TOKEN")
    if not token and not join_token:
        fail("an agent token is needed: --token, INFRACLOUD_AGENT_TOKEN or --join")
    if not controller_url:
        fail("--controller (or --join) is needed")
    if driver not in ("sandbox", "fake"):
        fail(f"--driver must be sandbox or fake, not {driver!r}")
    if alert_webhook is not None and not alert_webhook.startswith(("http://", "https://")):
        fail(f"--alert-webhook must be an http:// or https:// URL, not {alert_webhook!r}")
    logs.configure(_log_format(log_format), "info")
    cpus, ram, disk = machine_capacity(state_dir)
    info = host_info(name or socket.gethostname(), vcpus or cpus, ram_mb or ram,
                     disk_gb if disk_gb is not None else disk, availability_zone,
                     reserved=(reserve_vcpus, reserve_ram_mb, reserve_disk_gb))
    runner = Agent(str(controller_url), token or "", make_driver(driver, state_dir,
                                                                 ssh_port=ssh_port),
                   info, state_dir, cacert=cacert or True, join_token=join_token,
                   alert_after=alert_after, alert_webhook=alert_webhook)
    if metrics_port is not None:
        import prometheus_client

        from infracloud.ops.collectors import agent_registry

        try:
            prometheus_client.start_http_server(metrics_port, addr=metrics_host,
                                                registry=agent_registry(runner))
        except OSError as exc:
            runner.close()
            fail(f"--metrics-port {metrics_port}: cannot listen on {metrics_host}: "
                 f"{exc.strerror or exc}")
    from infracloud.core.lifecycle import stop_on_signals

    try:
        with stop_on_signals():
            runner.run()
    except KeyboardInterrupt:
        pass
    finally:
        runner.close()
        runner.driver.close()


@app.command()
def states(
    kind: Annotated[str | None, typer.Argument(
        help="image, instance, host, node, pool-node or pool-request (default: all)")
                    ] = None,
    output: Annotated[str, typer.Option("--format", help="table or dot (Graphviz)")] = "table",
) -> None:
    """Print the state machines (states, transitions, timeouts) the code runs on."""
    from infracloud.core.states import MACHINES

    if kind is not None and kind not in MACHINES:
        fail(f"unknown kind {kind!r}; kinds: {', '.join(MACHINES)}")
    if output not in ("table", "dot"):
        fail(f"--format must be table or dot, not {output!r}")
    for machine in [MACHINES[kind]] if kind else list(MACHINES.values()):
        if output == "dot":
            typer.echo(machine.dot())
            continue
        typer.echo(f"{machine.kind}:")
        for st in machine.states.values():
            kind_of = "failure" if st.failure else ("stable" if st.stable else "in progress")
            limit = f", times out after {st.timeout:g} s" if st.timeout else ""
            typer.echo(f"  {st.name:15} {kind_of}{limit} - {st.description}")
        for source, event, target in machine.table():
            typer.echo(f"    {source:15} --{event}--> {target}")


@config_app.command("validate")
def config_validate(config_file: Annotated[Path, typer.Argument(
        help="controller or pool YAML file (a pool file has `providers:`)")]) -> None:
    """Report every error in a controller or pool config file (exit 2 if there is any)."""
    import yaml

    from infracloud.core.settings import validate_file
    from infracloud.pool.config import PoolConfig

    try:
        is_pool = "providers" in (yaml.safe_load(config_file.read_text()) or {})
    except (OSError, yaml.YAMLError, TypeError):
        is_pool = False
    if is_pool:
        _, errors = validate_file(config_file, PoolConfig)
        for line in errors:
            typer.echo(line, err=True)
        if errors:
            raise typer.Exit(2)
    else:
        _load(config_file)
    typer.echo(f"{config_file}: ok")


@keys_app.command("rotate")
def keys_rotate(config_file: Annotated[Path, typer.Option("--config", help="controller YAML")]
                ) -> None:
    """Add a new primary token key; tokens made with older kept keys stay valid."""
    from infracloud.services import build_services

    services = build_services(_load(config_file))
    try:
        count = services.identity.keys.rotate()
    finally:
        services.close()
    typer.echo(f"rotated: {count} keys active")


def main() -> None:
    # `kill -USR1 PID` prints every thread's stack to stderr (the log): what a stuck
    # controller, pool or agent is doing, without stopping it
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        app()
    except InfracloudError as exc:
        typer.echo(f"infracloud: error: {exc.message}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
