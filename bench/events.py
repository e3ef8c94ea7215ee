"""Events benchmark: what recording every state change costs the compute path, and how fast
the event log answers on a big table.

    .venv/bin/python bench/events.py [--servers 400] [--events 200000]

(a) In-process, on a SQLite file: the server life cycle the API and the agents drive
    (create -> report running -> delete -> report absent) for N servers over 20 hosts, with
    the events' flush hook installed (as every controller runs) and, in the same run on a
    fresh database, without it (the baseline). Rounds alternate to spread the machine's noise.
(b) A table of M events: the newest page (`events --since`), a page for one project, one
    host, one acting user (`events --user`), the export of one host's events, and a follow
    poll (`after=` the newest id).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import event, insert, text

from infracloud.compute.flavors import FlavorService
from infracloud.compute.hosts import HostService, Registration, Report
from infracloud.compute.keypairs import KeypairService
from infracloud.compute.quotas import Quotas
from infracloud.compute.servers import CreateRequest, ServerService
from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.settings import ComputeConfig, ComputeQuotaConfig
from infracloud.network.service import NetworkService
from infracloud.ops.events import EventLog, Query
from infracloud.store import Database
from infracloud.store.models import Event

CALLER = Caller("u-bench", "p-bench", frozenset({"member", "reader"}))
IMAGE = "11111111-2222-3333-4444-555555555555"


class _Image:
    id, status, min_ram, min_disk = IMAGE, "active", 0, 0


def _cycle(folder: Path, servers: int, hook: bool) -> float:
    """CPU seconds of this process for `servers` full life cycles on a fresh database."""
    db = Database(f"sqlite:///{folder / uuid.uuid4().hex}.db")
    db.migrate()
    clock = Clock()
    log = EventLog(db, "bench", clock)
    log.install()
    if not hook:
        event.remove(db._write, "before_flush", log._before_flush)
    config = ComputeConfig(quota=ComputeQuotaConfig(instances=-1, cores=-1, ram_mb=-1, ports=-1))
    flavors = FlavorService(db, clock)
    flavors.ensure(config.flavors)
    network = NetworkService(db, config.network, clock)
    network.ensure()
    servers_svc = ServerService(db, config, clock, flavors, KeypairService(db, clock, 100),
                                Quotas(db, config.quota), network, lambda c, i: _Image(),
                                lambda h: None)
    hosts = HostService(db, config, clock, servers_svc, lambda h: None)
    for i in range(20):
        hosts.register(Registration(name=f"h{i}", driver="fake", vcpus=400, ram_mb=409600,
                                    disk_gb=4000))
    started = time.process_time()  # CPU time: other processes on the machine don't count
    for n in range(servers):
        inst = servers_svc.create(CALLER, CreateRequest(name=f"s{n}", flavor_ref="ci.8g",
                                                        image_ref=IMAGE))
        assert inst.host_id
        hosts.report(inst.host_id, [Report(inst.id, "running")])
        servers_svc.delete(CALLER, inst.id)
        hosts.report(inst.host_id, [Report(inst.id, "absent")])
    took = time.process_time() - started
    db.dispose()
    return took


def _fill(folder: Path, count: int) -> EventLog:
    db = Database(f"sqlite:///{folder / 'events.db'}")
    db.migrate()
    log = EventLog(db, "bench", Clock())
    now = Clock().now()
    rows = [{"at": now, "kind": "state", "site": "bench", "host": f"h{i % 200}",
             "actor": "system", "actor_id": f"u{i % 40}", "project_id": f"p{i % 50}",
             "resource_type": "server",
             "resource_id": uuid.uuid4().hex, "action": "booted", "source": "spawning",
             "target": "active"} for i in range(count)]
    with db.write() as s:
        for start in range(0, count, 20000):
            s.execute(insert(Event), rows[start:start + 20000])
    return log


def _timed(fn: object, rounds: int = 20) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=400)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"(a) {args.servers} server life cycles (create, running, delete, absent), "
              f"in-process, SQLite, {args.rounds} alternating rounds")
        with_hook, without = [], []
        for _ in range(args.rounds):
            without.append(_cycle(folder, args.servers, hook=False))
            with_hook.append(_cycle(folder, args.servers, hook=True))
        base, ev = min(without), min(with_hook)
        print(f"  without events (baseline)   {args.servers / base:8.1f} cycles per CPU-s")
        print(f"  with events                 {args.servers / ev:8.1f} cycles per CPU-s   "
              f"ratio {base / ev:.3f}")
        print(f"\n(b) {args.events:,} events in the table")
        log = _fill(folder, args.events)
        newest = log.latest_id()
        for what, q in (
                ("newest 1000 (events --since)", Query(limit=1000, newest_first=True)),
                ("one project, newest 100", Query(project_id="p7", limit=100,
                                                  newest_first=True)),
                ("one host, newest 100", Query(host="h42", limit=100, newest_first=True)),
                ("one user, newest 100 (--user)", Query(user_id="u7", limit=100,
                                                        newest_first=True)),
                ("a user with no events (--user)", Query(user_id="u-none", limit=100,
                                                         newest_first=True)),
                ("follow poll (after the newest)", Query(after=newest, limit=1000))):
            print(f"  {what:34} p50 {_timed(lambda q=q: log.query(q)):7.2f} ms")
        t = time.perf_counter()
        size = sum(len(chunk) for chunk in log.export(Query(host="h42")))
        print(f"  export one host's events (jsonl) {size / 1e6:7.2f} MB in "
              f"{(time.perf_counter() - t) * 1000:.0f} ms")
        def select_one() -> None:
            with log.db.read() as s:
                s.execute(text("SELECT 1"))

        baseline = _timed(select_one)
        print(f"  baseline: SELECT 1                 p50 {baseline:7.2f} ms")


if __name__ == "__main__":
    main()
