"""The lifetimes duty's cost per round (compute/lifetimes.py) as the site's servers grow: a
round when nothing is due (the usual one, every compute.lifetimes.interval seconds), and a
round that deletes a full page (100) of expired servers (each through the normal delete path,
with its event), in-process on a SQLite file holding N servers with expiries spread over a day.

    .venv/bin/python bench/lifetimes.py [--servers 1000 10000 50000] [--rounds 20]

The rows are written with Core inserts (untimed); the servers have no host, so a delete removes
the record at once (on a live host it would mark it `deleting` for the agent: less work)."""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert

from infracloud.compute.flavors import FlavorService
from infracloud.compute.keypairs import KeypairService
from infracloud.compute.lifetimes import Lifetimes
from infracloud.compute.quotas import Quotas
from infracloud.compute.servers import ServerService
from infracloud.core.clock import FakeClock
from infracloud.core.settings import ComputeConfig, LifetimesConfig
from infracloud.network.service import NetworkService
from infracloud.ops.events import EventLog
from infracloud.store import Database
from infracloud.store.models import Instance

DAY = 86400


def run(folder: Path, servers: int, rounds: int) -> dict[str, float]:
    db = Database(f"sqlite:///{folder / 'lifetimes.db'}", pool_size=2)
    db.migrate()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    clock = FakeClock(start)
    config = ComputeConfig()
    flavors = FlavorService(db, clock)
    flavors.ensure(config.flavors)
    quotas = Quotas(db, config.quota)
    network = NetworkService(db, config.network, clock, quotas.port_limit)
    network.ensure()
    service = ServerService(db, config, clock, flavors, KeypairService(db, clock, 100), quotas,
                            network, lambda caller, image_id: None, lambda _: None)
    events = EventLog(db, "bench", clock)
    events.install()
    lifetimes = Lifetimes(db, LifetimesConfig(warn_before=0, page=100), clock, service,
                          events.record)
    rows = []
    for i in range(servers):  # expiries spread evenly over the day after `start`
        expires = start + dt.timedelta(seconds=DAY * (i + 1) / servers)
        rows.append({"id": str(uuid.uuid4()), "name": f"n{i}", "project_id": "p-bench",
                     "user_id": "u-bench", "flavor_id": "ci.8g", "state": "active",
                     "vcpus": 8, "ram_mb": 8192, "disk_gb": 80, "metadata": {},
                     "config_drive": True, "created_at": start, "updated_at": start,
                     "state_changed_at": start, "expires_at": expires,
                     "lifetime_limit": DAY, "lifetime_reason": "bench"})
    with db.write() as s:
        for n in range(0, len(rows), 5000):
            s.execute(insert(Instance), rows[n:n + 5000])
    idle, full = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        assert lifetimes.sweep() == (0, 0)
        idle.append(time.perf_counter() - t0)
    # far enough for a full page: every round below deletes 100
    clock.advance(DAY * (100 * rounds + 1) / servers)
    for _ in range(rounds):
        t0 = time.perf_counter()
        assert lifetimes.sweep() == (0, 100)
        full.append(time.perf_counter() - t0)
    db.dispose()
    return {"servers": servers, "idle_ms": statistics.median(idle) * 1000,
            "page_ms": statistics.median(full) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, nargs="*", default=[1000, 10000, 50000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| servers | round, nothing due (median ms) | round deleting 100 (median ms) |")
    print("| --- | --- | --- |")
    for n in args.servers:
        with tempfile.TemporaryDirectory(prefix="infracloud-bench-lifetimes-") as tmp:
            r = run(Path(tmp), n, args.rounds)
        print(f"| {r['servers']} | {r['idle_ms']:.2f} | {r['page_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
