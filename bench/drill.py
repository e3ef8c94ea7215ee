"""Disaster drill benchmark: how long a site takes from the start of `infracloud restore` to
serving again, and to consistent with what its hosts run, against a plain controller start of
the same run.

    .venv/bin/python bench/drill.py [--rounds 5] [--hosts 3] [--before 30] [--after 15]
                                    [--deleted 10] [--grace 5] [--postgresql URL]

Each round (tests/ha/drill_site.py, the disaster drill's site): a controller on SQLite (or a
database of the PostgreSQL server at URL) and `--hosts` agents as separate processes (fake
driver) that know the controller's URL and the address a restored one will have. `--before`
servers are created, the controller is restarted on that data (the baseline: a plain start of
the same site), a backup is taken, `--after` more servers are created and `--deleted` of the
first ones deleted; the controller is killed and its folder deleted; then, timed from the
start of `infracloud restore`:

- serving: the restored controller's first `/readyz` 200;
- agents back: every host up again (the agents fail over within their backoff, 10 s at most);
- consistent: openstacksdk lists ACTIVE exactly the servers that survived, ERROR exactly those
  deleted after the backup, and the agents run exactly the survivors: the servers made after
  the backup were reaped once `--grace` (compute.unknown_servers.grace) had passed.

The client, the agents and the controller share the machine's cores; other work on the
machine shows in every figure, so the ratios (each to the restart of the same round, their
median printed) are what compares between runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

import common  # noqa: F401  (puts the repository on the path, for tests/)

# isort: split
# tests/ is importable once `common` has put the repository on sys.path
from tests.ha.drill_site import DrillSite
from tests.servers import wait_for


def _create_database(admin_url: str, name: str) -> str:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _hosts(conn: Any) -> dict[str, str]:
    return {h.name: h.state for h in conn.compute.hypervisors(details=True)}


def _boot(conn: Any, count: int, prefix: str, flavor: Any, image: Any) -> list[str]:
    made = [conn.compute.create_server(name=f"{prefix}-{n}", flavor_id=flavor.id,
                                       image_id=image.id, networks="auto").id
            for n in range(count)]
    wait_for(f"{count} servers ACTIVE", lambda: {
        s.id for s in conn.compute.servers() if s.status == "ACTIVE"} >= set(made),
        timeout=300, every=0.5)
    return made


def one_round(folder: Path, args: argparse.Namespace, n: int) -> dict[str, float]:
    dbs = ("sqlite", "sqlite")
    if args.postgresql:
        dbs = (_create_database(args.postgresql, f"drill_{n}_old_{int(time.time())}"),
               _create_database(args.postgresql, f"drill_{n}_new_{int(time.time())}"))
    site = DrillSite(folder, *dbs, driver="fake", grace=args.grace,
                     pg_admin_url=args.postgresql)
    try:
        out = {"plain start (empty database)": site.start_old()}
        names = [f"host-{i}" for i in range(args.hosts)]
        for name in names:
            site.start_agent(name, site.old_url, site.new_url)
        old = site.conn("old")
        wait_for("the hosts up", lambda: _hosts(old) == dict.fromkeys(names, "up"),
                 timeout=120)
        image = old.image.create_image(name="drill", data=b"x" * 1024, disk_format="raw",
                                       container_format="bare", allow_duplicates=True)
        flavor = old.compute.find_flavor("ci.small")
        before = _boot(old, args.before, "before", flavor, image)
        out["controller restart on the site's data (baseline)"] = site.restart_old()
        archive = site.backup()
        old = site.conn("old")
        _boot(old, args.after, "after", flavor, image)
        deleted = set(before[:args.deleted])
        for server_id in deleted:
            old.compute.delete_server(server_id)
        wait_for("the deletes", lambda: not deleted & {s.id for s in old.compute.servers()},
                 timeout=120)
        survivors = set(before) - deleted
        site.lose_controller()

        conns: list[Any] = []
        marks: dict[str, float] = {}

        def probe() -> bool:
            if not conns:
                conns.append(site.conn("new"))
            new = conns[0]
            if "back" not in marks and _hosts(new) == dict.fromkeys(names, "up"):
                marks["back"] = time.monotonic()
            listed = {s.id: s.status for s in new.compute.servers()}
            counts = [a.count() for a in site.agents.values()]
            return ("back" in marks
                    and {i for i, st in listed.items() if st == "ACTIVE"} == survivors
                    and {i for i, st in listed.items() if st == "ERROR"} == deleted
                    and set(listed) == survivors | deleted
                    and all(c is not None and c.get("busy") == 0 for c in counts)
                    and sum(c["running"] for c in counts if c) == len(survivors))

        restore_started = time.monotonic()
        t = site.restore(archive, consistent=probe, timeout=300)
        out["restore command"] = t.restore
        out["restore -> serving"] = t.serving
        out["restore -> agents back (every host up)"] = marks["back"] - restore_started
        out["restore -> consistent"] = t.consistent
        return out
    finally:
        site.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--before", type=int, default=30)
    parser.add_argument("--after", type=int, default=15)
    parser.add_argument("--deleted", type=int, default=10)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--postgresql", metavar="URL", help="an admin URL of a PostgreSQL "
                        "server (postgresql+psycopg://...): the databases are made there")
    args = parser.parse_args()
    if args.deleted > args.before:
        sys.exit("--deleted cannot be more than --before")
    backend = "PostgreSQL" if args.postgresql else "SQLite"
    print(f"disaster drill: {args.hosts} hosts (fake driver, agent processes), "
          f"{args.before} servers before the backup, {args.after} after it, {args.deleted} of "
          f"the first deleted after it; {backend}; grace {args.grace:.0f} s; "
          f"{args.rounds} rounds", flush=True)
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="infracloud-drill-") as tmp:
        for n in range(args.rounds):
            got = one_round(Path(tmp) / f"round-{n}", args, n)
            rounds.append(got)
            print(f"  round {n + 1}: " + ", ".join(f"{k.split(' (')[0]} {v:.2f} s"
                                                   for k, v in got.items()), flush=True)
    base = "controller restart on the site's data (baseline)"
    rounds = [{**r, "restore -> consistent, less the grace": r["restore -> consistent"] -
               args.grace} for r in rounds]
    print(f"\n  {'median of ' + str(args.rounds) + ' rounds':58} {'seconds':>8} "
          f"{'ratio to the restart':>21}")
    for what in rounds[0]:
        seconds = statistics.median(r[what] for r in rounds)
        ratio = statistics.median(r[what] / r[base] for r in rounds)  # paired, per round
        print(f"  {what:58} {seconds:8.2f} {ratio:21.2f}")


if __name__ == "__main__":
    main()
