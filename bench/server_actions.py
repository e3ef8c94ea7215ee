"""Server actions benchmark: how long each action takes from the API call to the server's
status being what the action leads to (with no task left), on the demo site's hosts.

    .venv/bin/python bench/server_actions.py [--driver sandbox|libvirt] [--rounds 3]

Starts `infracloud demo --driver DRIVER --min-ready 0` on 127.0.0.1 (its own state folder,
servers on 127.70.0.0/16), creates one `ci.small` server of the image `demo` (with libvirt:
the tiny test guest, waited for until its console says READY) and times, through
openstacksdk, each of: os-stop (-> SHUTOFF), os-start (-> ACTIVE), reboot SOFT and HARD
(-> ACTIVE), rebuild (-> ACTIVE), and with libvirt createImage of the stopped server (-> the
image `active`). The status is polled every 0.1 s. Rounds are repeated and the medians
printed; with libvirt the guest's boot after a start is not waited for (ACTIVE is the domain
running), and a stop waits for the guest's ACPI shutdown (30 s at most, then cut off)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import sdk, start_demo


def settled(conn: Any, server_id: str, status: str, timeout: float = 600) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        s = conn.compute.get_server(server_id)
        if s.status == status and s.task_state is None:
            return time.monotonic() - start
        if s.status == "ERROR":
            raise RuntimeError(f"server in ERROR: {s.fault}")
        time.sleep(0.1)
    raise RuntimeError(f"no {status} within {timeout} s")


def timed(conn: Any, server_id: str, call: Callable[[], Any], status: str) -> float:
    start = time.monotonic()
    call()
    settled(conn, server_id, status)
    return time.monotonic() - start


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--driver", choices=("sandbox", "libvirt"), default="sandbox")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-actions-"))
    demo = start_demo(state, "--driver", args.driver, "--min-ready", "0", "--network-cidr",
                      "127.70.0.0/16", timeout=240)
    rows: dict[str, list[float]] = {}
    try:
        conn = sdk(demo.clouds_yaml, "infracloud")
        image = conn.image.find_image("demo")
        server = conn.compute.create_server(name="bench", flavor_id="ci.small",
                                            image_id=image.id)
        settled(conn, server.id, "ACTIVE")
        compute = conn.compute

        def ready() -> None:
            if args.driver == "libvirt":  # the guest up, so that it answers ACPI
                while "READY hostname=bench" not in compute.get_server_console_output(
                        server.id)["output"]:
                    time.sleep(0.2)

        for _ in range(args.rounds):
            ready()
            steps = [("os-stop", lambda: compute.stop_server(server.id), "SHUTOFF")]
            if args.driver == "libvirt":
                steps.append(("createImage (stopped)", lambda: snapshot(conn, server.id),
                              "SHUTOFF"))
            steps += [("os-start", lambda: compute.start_server(server.id), "ACTIVE"),
                      ("reboot SOFT", lambda: compute.reboot_server(server.id, "SOFT"),
                       "ACTIVE"),
                      ("reboot HARD", lambda: compute.reboot_server(server.id, "HARD"),
                       "ACTIVE"),
                      ("rebuild", lambda: compute.rebuild_server(server.id, image), "ACTIVE")]
            for name, call, status in steps:
                if name == "reboot SOFT":
                    ready()
                rows.setdefault(name, []).append(timed(conn, server.id, call, status))
        compute.delete_server(server.id)
        compute.wait_for_delete(server, wait=300)
    finally:
        demo.stop()
    print(f"server actions, driver {args.driver}, {args.rounds} rounds: API call -> status "
          f"(seconds, median / max)")
    for name, times in rows.items():
        print(f"  {name:24} {statistics.median(times):7.2f} {max(times):7.2f}")
    return 0


def snapshot(conn: Any, server_id: str) -> None:
    image = conn.compute.create_server_image(server_id, "bench-snap", wait=True, timeout=600)
    conn.image.delete_image(image)


if __name__ == "__main__":
    sys.exit(main())
