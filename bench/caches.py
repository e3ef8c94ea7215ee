"""Caches benchmark: what checking the caches against other controllers' changes costs
(store.generations), as requests per second with the check on and (almost) off, same run.

    .venv/bin/python bench/caches.py [--seconds 5] [--clients 8] [--database sqlite|postgresql]

Starts three real controllers on 127.0.0.1, each on a database of its own (SQLite files, or
databases of one throwaway PostgreSQL cluster started with tests/pgcluster.py, or of
--pg-url), differing only in `database.cache_check_seconds`: 60 (one check a minute: the check
"off" for the length of a row), 1 (the default) and 0 (a check on every use). The request is
an authenticated `GET /compute/v2.1/flavors/{id}`, served from two caches (the token's
validation and the flavor), and `GET /healthz` as the empty baseline. Rows alternate between
the controllers over several rounds to spread the machine's noise; the ratios are against the
"off" controller's rate.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from common import admin_token, free_port, measure, start_controller, stop_process

SETTINGS = (("check off (every 60 s)", 60.0), ("check every 1 s (default)", 1.0),
            ("check on every use (0)", 0.0))


@contextmanager
def databases(kind: str, folder: Path, pg_url: str | None) -> Iterator[list[str]]:
    """One database URL per setting."""
    if kind == "sqlite":
        yield [f"sqlite:///{folder / f'c{i}.db'}" for i in range(len(SETTINGS))]
        return
    from tests import pgcluster

    cluster = None
    if pg_url is None:  # a folder of its own: the server's user must reach it
        cluster = Path(tempfile.mkdtemp(prefix="infracloud-bench-pg-"))
        pg_url = pgcluster.start(cluster)
    try:
        engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        names = [f"bench_caches_{i}" for i in range(len(SETTINGS))]
        with engine.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        yield [pg_url.rsplit("/", 1)[0] + "/" + name for name in names]
    finally:
        if cluster is not None:
            pgcluster.stop(cluster)
            shutil.rmtree(cluster, ignore_errors=True)


def run(seconds: float, clients: int, kind: str, pg_url: str | None, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, databases(kind, Path(tmp), pg_url) as urls:
        procs, bases = [], []
        try:
            for i, ((_, every), url) in enumerate(zip(SETTINGS, urls, strict=True)):
                folder = Path(tmp, f"c{i}")
                folder.mkdir()
                port = free_port()
                procs.append(start_controller(
                    folder, port, database={"url": url, "cache_check_seconds": every},
                    hardware={"secret_key_file": str(folder / "secret.key")}))
                bases.append(f"http://127.0.0.1:{port}")
            tokens = [admin_token(base) for base in bases]
            flavor = httpx.get(bases[0] + "/compute/v2.1/flavors",
                               headers={"X-Auth-Token": tokens[0]}).json()["flavors"][0]["id"]
            empty: list[float] = []
            rates: list[list[float]] = [[] for _ in SETTINGS]
            for _ in range(rounds):
                empty.append(measure(bases[0], seconds, clients, lambda c, i: c.get("/healthz")))
                for n, (base, token) in enumerate(zip(bases, tokens, strict=True)):
                    rates[n].append(measure(
                        base, seconds, clients,
                        lambda c, i: c.get(f"/compute/v2.1/flavors/{flavor}"), 200,
                        headers={"X-Auth-Token": token}))
        finally:
            for p in procs:
                stop_process(p, sig=15)
    off = statistics.median(rates[0])
    print(f"caches benchmark ({kind}): {clients} client threads, {rounds} rounds of "
          f"{seconds:g} s per row, medians; GET /compute/v2.1/flavors/{{id}} with a token")
    print(f"{'scenario':30} {'req/s':>10} {'ratio to off':>13}")
    print(f"{'empty endpoint (baseline)':30} {statistics.median(empty):10.1f} "
          f"{statistics.median(empty) / off:13.3f}")
    for (name, _), rate in zip(SETTINGS, rates, strict=True):
        median = statistics.median(rate)
        print(f"{name:30} {median:10.1f} {median / off:13.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", help="an admin URL of a PostgreSQL server to use instead "
                        "of a throwaway cluster (databases bench_caches_* are made in it)")
    args = parser.parse_args()
    run(args.seconds, args.clients, args.database, args.pg_url, args.rounds)
