"""`infracloud agent`: run a compute host's agent."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from infracloud.cli.common import check_log_format, fail

DRIVERS = ("libvirt", "sandbox", "fake")
NETWORKS = ("user", "bridge")


def check_driver(driver: str | None, allow_unisolated_sandbox: bool) -> str:
    """No default driver on a real site; the sandbox only when asked for knowingly."""
    if driver is None:
        fail("--driver is needed (libvirt, sandbox or fake): the join config names none")
    elif driver not in DRIVERS:
        fail(f"--driver must be libvirt, sandbox or fake, not {driver!r}")
    elif driver == "sandbox" and not allow_unisolated_sandbox:
        fail("--driver sandbox runs every server's commands as this user on this host, "
             "unisolated: add --allow-unisolated-sandbox to mean it (laptops and CI only)")
    assert driver is not None
    return driver


def agent(
    controller_url: Annotated[str | None, typer.Option(
        "--controller", help="controller base URL, or several separated by commas: the "
        "agent fails over to the next when one refuses or answers 502/503/504")] = None,
    join: Annotated[Path | None, typer.Option(
        help="join config of a deployed machine (from its deploy media): controller, "
        "one-time join token, host name, CA")] = None,
    token: Annotated[str | None, typer.Option(
        help="the site's agent token (or INFRACLOUD_AGENT_TOKEN)")] = None,
    driver: Annotated[str | None, typer.Option(
        help="libvirt (real VMs), sandbox or fake (default: the one the join config names)")
    ] = None,
    libvirt_uri: Annotated[str, typer.Option(help="libvirt: the hypervisor's URI")
                           ] = "qemu:///system",
    virt_type: Annotated[str | None, typer.Option(
        help="libvirt: kvm or qemu (TCG, no hardware acceleration); default: kvm where a "
        "KVM vCPU runs")] = None,
    network: Annotated[str, typer.Option(
        help="libvirt: user (each server's SSH forwarded from its loopback address) or "
        "bridge (a tap on --bridge, the provider network)")] = "user",
    bridge: Annotated[str | None, typer.Option(help="libvirt: the bridge of --network "
                                                    "bridge")] = None,
    allow_unisolated_sandbox: Annotated[bool, typer.Option(
        "--allow-unisolated-sandbox", help="let --driver sandbox run every server's commands "
        "as this user on this host, with no isolation (laptops and CI only)")] = False,
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
    ssh_port: Annotated[int, typer.Option(
        help="sandbox, libvirt user networking: SSH port of servers")] = 22,
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

    from infracloud.agent.drivers.base import DriverError
    from infracloud.agent.hosts import driver_capacity, host_info, make_driver
    from infracloud.agent.runner import Agent
    from infracloud.ops import logging as logs

    join_token, join_driver = None, None
    if join is not None:
        try:
            joined = json.loads(join.read_text())
            controller_url, join_token = joined["controller"], joined["join_token"]
            name = name or joined["name"]
            join_driver = joined.get("driver")
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
    driver = check_driver(driver or join_driver, allow_unisolated_sandbox)
    if virt_type is not None and virt_type not in ("kvm", "qemu"):
        fail(f"--virt-type must be kvm or qemu, not {virt_type!r}")
    if network not in NETWORKS:
        fail(f"--network must be user or bridge, not {network!r}")
    if network == "bridge" and not bridge:
        fail("--network bridge needs --bridge NAME (the provider network's bridge)")
    if alert_webhook is not None and not alert_webhook.startswith(("http://", "https://")):
        fail(f"--alert-webhook must be an http:// or https:// URL, not {alert_webhook!r}")
    logs.configure(check_log_format(log_format), "info")
    try:
        hypervisor = make_driver(driver, state_dir, ssh_port=ssh_port, libvirt_uri=libvirt_uri,
                                 virt_type=virt_type, network=network, bridge=bridge)
        cpus, ram, disk = driver_capacity(hypervisor, state_dir)
    except DriverError as exc:
        fail(str(exc))
    info = host_info(name or socket.gethostname(), vcpus or cpus, ram_mb or ram,
                     disk_gb if disk_gb is not None else disk, availability_zone,
                     reserved=(reserve_vcpus, reserve_ram_mb, reserve_disk_gb))
    runner = Agent(str(controller_url), token or "", hypervisor, info, state_dir,
                   cacert=cacert or True, join_token=join_token,
                   credential_file=state_dir / "host-credential.json" if join_token else None,
                   alert_after=alert_after, alert_webhook=alert_webhook)
    if metrics_port is not None:
        import prometheus_client

        from infracloud.site.collectors import agent_registry

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
