"""Bare-metal benchmark: enrol and deploy the chocolate site (100 machines, fake BMCs, each
with its configured boot delay) on a real controller, through the Bare Metal API as
`infracloud hardware` does it.

Reports the time from the first deploy request to all compute machines active, against the
baseline of the same run's configuration: the sum of the simulated boot delays (what one
machine at a time would take), and the BMC calls per machine. A second pass does the same
with every BMC failing 30 % of its calls (timeouts and 500s).

    .venv/bin/python bench/hardware.py [--site chocolate] [--flaky 0.3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from common import PASSWORD, free_port, start_controller
from infracloud.clients.cloud import Client
from infracloud.hardware import inventory, workflow
from infracloud.hardware.workflow import Progress
from infracloud.processes.demo import site_file


def run(site: inventory.Inventory, flaky: float) -> dict[str, Any]:
    for i, m in enumerate(site.machines):
        if flaky:
            m.bmc.options.update(failure_rate=flaky, seed=i)
    with tempfile.TemporaryDirectory(prefix="bench-hw-") as tmp:
        folder = Path(tmp)
        port = free_port()
        (folder / "agent-token").write_text("bench-agent-token-0123456789")
        proc = start_controller(folder, port, site=site.name, compute={
            "agent_token_file": str(folder / "agent-token"),
            "network": {"name": "bench", "cidr": "127.102.0.0/16"}}, hardware={
            "bmc_timeout": 0.5, "backoff": 0.1, "backoff_max": 1, "retries": 8,
            "fence_after": 8,
            "simulation": {"agent_driver": "fake", "root": str(folder / "sim")}})
        clouds = folder / "clouds.yaml"
        clouds.write_text(yaml.safe_dump({"clouds": {"bench": {"auth": {
            "auth_url": f"http://127.0.0.1:{port}/identity", "username": "admin",
            "password": PASSWORD, "project_name": "admin"}}}}))
        client = Client("bench", clouds_file=clouds)
        try:
            def quiet(p: Progress) -> None:
                pass

            t0 = time.monotonic()
            enrolled = workflow.enroll(client.call, site, quiet)
            t1 = time.monotonic()
            compute = [m.name for m in site.machines if m.role == "compute"]
            deployed = workflow.deploy(client.call, compute, quiet)
            t2 = time.monotonic()
            nodes = client.call("GET", "/baremetal/v1/nodes/detail")["nodes"]
        finally:
            client.close()
            proc.terminate()
            proc.wait(30)
    by_name = {m.name: m for m in site.machines}
    boot_sum = sum(float(by_name[n].bmc.options.get("boot_delay", 0)) for n in compute)
    boot_max = max(float(by_name[n].bmc.options.get("boot_delay", 0)) for n in compute)
    calls = [n["driver_internal_info"]["bmc_calls"] for n in nodes]
    return {"machines": len(site.machines), "compute": len(compute),
            "enrol_s": t1 - t0, "deploy_s": t2 - t1, "boot_sum_s": boot_sum,
            "boot_max_s": boot_max, "failed": len(enrolled.failed) + len(deployed.failed),
            "calls_mean": statistics.mean(calls), "calls_max": max(calls),
            "active": sum(n["provision_state"] == "active" for n in nodes)}


def report(label: str, r: dict[str, Any]) -> None:
    print(f"{label}")
    print(f"  machines enrolled (verify, inspect, clean)   {r['machines']:8d} in "
          f"{r['enrol_s']:6.1f} s")
    print(f"  compute machines deployed to active        {r['active']:8d} of {r['compute']} "
          f"in {r['deploy_s']:6.1f} s  ({r['failed']} failed)")
    print(f"  baseline: sum of simulated boot delays     {r['boot_sum_s']:8.1f} s")
    print(f"  deploy time / sum of boot delays           {r['deploy_s'] / r['boot_sum_s']:8.3f}")
    print(f"  deploy time / longest single boot delay    {r['deploy_s'] / r['boot_max_s']:8.2f}")
    print(f"  BMC calls per machine (enrol + deploy)     mean {r['calls_mean']:.1f}, "
          f"max {r['calls_max']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="chocolate")
    parser.add_argument("--flaky", type=float, default=0.3,
                        help="failure rate of the second pass (0: skip it)")
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"hardware benchmark: site {args.site}, {cores} cores, one controller (plain HTTP, "
          f"SQLite), fake BMCs in the controller's process")
    report("(a) healthy BMCs", run(inventory.load(site_file(args.site)), 0.0))
    if args.flaky:
        report(f"(b) every BMC fails {args.flaky:.0%} of its calls (half time out after "
               f"0.5 s, half answer 500)", run(inventory.load(site_file(args.site)),
                                               args.flaky))


if __name__ == "__main__":
    main()
