"""Host wake-ups benchmark: how long a server takes to become ACTIVE (and to go once deleted)
when the agent long-polls another controller than the client's, with and without the
wake-ups through PostgreSQL (store.wakeups), as a ratio to one controller, same run.

    .venv/bin/python bench/hostwake.py [--cycles 20] [--pg-url URL] [--seed 1]

Each row is a site of tests/ha/pgsite.py on a database of its own in one throwaway PostgreSQL
cluster (tests/pgcluster.py; or --pg-url): HTTPS controllers behind HAProxy with the shipped
deploy/haproxy.cfg (`balance leastconn`), one fake-driver agent and one openstacksdk client,
both through HAProxy. The agent's long-poll holds a connection to one controller, so with two
controllers HAProxy sends the client's requests to the other. One client runs `--cycles`
cycles: create -> ACTIVE -> delete -> gone, looking every 50 ms, with a pause drawn between 0
and the long-poll's re-read interval (RECHECK) before the create and before the delete, the
same pauses for every row, so the changes land at random points of the agent's long-poll as
independent users' would.
Times are from the call to the first look that saw the result.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text

import common  # noqa: F401
from infracloud.api.agent import RECHECK

# isort: split
# tests/ is importable once `common` has put the repository on sys.path
from tests import pgcluster
from tests.ha.pgsite import Site, prepare

ROWS = (("one controller", 1, True),
        ("two controllers, no wake-ups (before)", 2, False),
        ("two controllers, wake-ups (after)", 2, True))
LOOK = 0.05


@contextlib.contextmanager
def cluster(pg_url: str | None) -> Iterator[str]:
    if pg_url is not None:
        yield pg_url
        return
    folder = Path(tempfile.mkdtemp(prefix="infracloud-bench-pg-"))
    try:
        yield pgcluster.start(folder)
    finally:
        pgcluster.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def database(admin_url: str, name: str) -> str:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def until(what: str, probe: Callable[[], bool], timeout: float = 120) -> float:
    """Seconds to the start of the first look (every LOOK s) that saw `what`."""
    start = time.monotonic()
    while True:
        looked = time.monotonic()
        if probe():
            return looked - start
        if looked - start > timeout:
            raise SystemExit(f"{what}: not after {timeout} s")
        time.sleep(LOOK)


def cycle(conn: Any, image: str, flavor: str, name: str,
          pauses: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    time.sleep(pauses[0])  # a random point of the agent's long-poll
    start = time.monotonic()
    server = conn.compute.create_server(name=name, image_id=image, flavor_id=flavor)
    to_active = time.monotonic() - start + until(
        f"{name} ACTIVE", lambda: conn.compute.get_server(server.id).status == "ACTIVE")
    time.sleep(pauses[1])  # and another
    start = time.monotonic()
    conn.compute.delete_server(server.id)
    to_gone = time.monotonic() - start + until(
        f"{name} gone", lambda: conn.compute.find_server(server.id) is None)
    return to_active, to_gone


def row(admin_url: str, folder: Path, n: int, controllers: int, wakeups: bool,
        pauses: list[tuple[float, float]]) -> list[tuple[float, float]]:
    site = Site(folder, database(admin_url, f"bench_hostwake_{n}"), controllers)
    for c in site.controllers:
        config = yaml.safe_load(c.config.read_text())
        config["database"]["host_wakeups"] = wakeups
        config["logging"]["level"] = "warning"
        c.config.write_text(yaml.safe_dump(config))
    try:
        site.start()
        image, flavor = prepare(site)
        conn = site.sdk()
        cycle(conn, image, flavor, "warm-up")
        took = []
        for i, pair in enumerate(pauses):
            took.append(cycle(conn, image, flavor, f"bench-{i}", pair))
        return took
    finally:
        site.close()


def run(cycles: int, pg_url: str | None, seed: int) -> None:
    rng = random.Random(seed)
    pauses = [(rng.uniform(0, RECHECK), rng.uniform(0, RECHECK)) for _ in range(cycles)]
    results = []
    with tempfile.TemporaryDirectory() as tmp, cluster(pg_url) as admin_url:
        for n, (_, controllers, wakeups) in enumerate(ROWS):
            folder = Path(tmp, f"site{n}")
            folder.mkdir()
            results.append(row(admin_url, folder, n, controllers, wakeups, pauses))
    base_active = statistics.median(a for a, _ in results[0])
    base_gone = statistics.median(g for _, g in results[0])
    print(f"host wake-ups benchmark: {cycles} cycles a row, one client and one agent through "
          f"HAProxy, seconds (p50 / p90 / max), ratios of the p50 to one controller")
    print(f"{'site':40} {'create->ACTIVE':>22} {'ratio':>6} {'delete->gone':>22} {'ratio':>6}")
    for (name, _, _), took in zip(ROWS, results, strict=True):
        active = sorted(a for a, _ in took)
        gone = sorted(g for _, g in took)
        print(f"{name:40} {spread(active):>22} {statistics.median(active) / base_active:6.2f} "
              f"{spread(gone):>22} {statistics.median(gone) / base_gone:6.2f}")


def spread(values: list[float]) -> str:
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"{statistics.median(values):.2f} / {p90:.2f} / {values[-1]:.2f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="of the pauses between cycles")
    parser.add_argument("--pg-url", help="an admin URL of a PostgreSQL server to use instead "
                        "of a throwaway cluster (databases bench_hostwake_* are made in it)")
    args = parser.parse_args()
    run(args.cycles, args.pg_url, args.seed)
