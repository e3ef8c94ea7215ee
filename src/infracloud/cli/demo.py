"""`infracloud demo`: an all-in-one demo site."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from infracloud.cli.common import check_log_format, fail
from infracloud.core.errors import InfracloudError

SITES = ("small", "vanilla", "chocolate", "none")
DRIVERS = ("auto", "libvirt", "sandbox", "fake")


def pick_driver(driver: str) -> tuple[str, Path | None]:
    """The driver the demo runs, and the guest disk its image `demo` holds (libvirt). `auto`
    is libvirt when it can be used, else the sandbox, with one line saying why."""
    if driver not in ("auto", "libvirt"):
        return driver, None
    from infracloud.agent.drivers.base import DriverError
    from infracloud.processes.demo import GuestError, libvirt_guest

    try:
        return "libvirt", libvirt_guest()
    except (DriverError, GuestError) as exc:
        if driver == "libvirt":
            fail(str(exc))
        typer.echo(f"infracloud demo: sandbox driver, as libvirt cannot be used: {exc}")
        return "sandbox", None


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
    driver: Annotated[str, typer.Option(
        help="libvirt (servers are real VMs of the tiny test guest), sandbox (SSH works, "
        "into this machine), fake, or auto: libvirt when it can be used, else sandbox")
    ] = "auto",
    ssh_port: Annotated[int | None, typer.Option(
        help="port of the sandbox servers' SSH (default 22 as root, else 2222)")] = None,
    network_cidr: Annotated[str, typer.Option(
        help="the servers' network (loopback, so SSH works without touching the host's "
        "network); two demos side by side need two")] = "127.100.0.0/16",
    network_name: Annotated[str, typer.Option(
        help="the servers' network's name (the OpenStack clients' functional tests look for "
        "'private')")] = "demo-net",
    min_ready: Annotated[int, typer.Option(
        help="nodes of label ubuntu-noble the demo's pool keeps ready", min=0, max=50)] = 2,
    ci_load: Annotated[float, typer.Option(
        help="JOBS_PER_MIN: run a synthetic CI workload on the pool (0: none)", min=0,
        max=600)] = 0,
) -> None:
    """Run an all-in-one demo site (embedded SQLite, simulated machines, a node pool) until
    Ctrl-C."""
    import ipaddress

    from infracloud.agent.hosts import AgentThreads
    from infracloud.cli.hardware import progress_bar
    from infracloud.ops import logging as logs
    from infracloud.processes import demo as demo_mod
    from infracloud.processes import demo_pool
    from infracloud.processes.pool_server import attach
    from infracloud.processes.runtime import check_port_free, serve
    from infracloud.site.services import Services, build_services

    check_log_format(log_format)
    if driver not in DRIVERS:
        fail(f"--driver must be auto, libvirt, sandbox or fake, not {driver!r}")
    if site not in SITES:
        fail(f"--site must be one of {', '.join(SITES)}, not {site!r}")
    if ssh_port is None:
        ssh_port = 22 if os.geteuid() == 0 else 2222
    try:
        if not ipaddress.ip_network(network_cidr).is_loopback:
            fail(f"--network-cidr must be a loopback network (127.0.0.0/8), not {network_cidr}")
    except ValueError as exc:
        fail(f"--network-cidr: {exc}")
    if not network_name.strip() or len(network_name) > 255:
        fail("--network-name must be 1 to 255 characters")
    check_port_free(host, port)
    driver, guest = pick_driver(driver)
    try:
        config, paths = demo_mod.prepare(state_dir, host, port, tls=not no_tls,
                                         log_format=log_format, site=site, driver=driver,
                                         ssh_port=ssh_port, cidr=network_cidr,
                                         network=network_name)
    except OSError as exc:
        fail(f"--state-dir {state_dir}: cannot use {exc.filename or state_dir}: "
             f"{exc.strerror or exc}")
        raise
    log_stream = open(paths.log, "a", buffering=1)  # noqa: SIM115 - lives as long as the demo
    logs.configure(config.logging.format, config.logging.level, stream=log_stream)
    typer.echo(f"infracloud demo: preparing {paths.state_dir} (log: {paths.log})")
    services = build_services(config)
    demo_mod.bootstrap(services, paths, guest)

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
