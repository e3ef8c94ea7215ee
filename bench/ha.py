"""Several controllers: churn through HAProxy, duty failover, and the issue's soak.

    .venv/bin/python bench/ha.py [--seconds 60] [--clients 4] [--kills 10]
    .venv/bin/python bench/ha.py --soak [--minutes 10] [--kills 10] [--seed N]
    .venv/bin/python bench/ha.py [--soak] --quick  # smoke: 2 min, 15 s a configuration, 2 kills

The sites are tests/ha/pgsite.py's: HTTPS controllers as separate processes behind Debian's
HAProxy with deploy/haproxy.cfg, an agent (fake driver) through HAProxy, openstacksdk clients
churning create -> ACTIVE -> delete through HAProxy, each call tried again until it succeeds.
PostgreSQL is a throwaway cluster of the run's own (tests/pgcluster.py).

Default mode:
(1) churn: cycles per second with one controller on SQLite (the baseline), then one, two and
    three controllers on PostgreSQL, each as a ratio to the baseline of the same run;
(2) failover: on the three-controller site, still churning, `--kills` times: `kill -9` of the
    controller holding the duties (found through GET /ops/v1/status), the time until every
    duty is held by a survivor (the status again), then the killed one is started again.

--soak: the issue's "Done when". Three controllers on PostgreSQL with the churn, plus two
`infracloud pool` processes (active/standby on their own database, as bench/pool_failover.py
runs them) launching nodes on the same site through HAProxy, with requestors churning nodes
through both pool URLs. Over `--minutes`: `--kills` `kill -9`s at random moments (one in each
slot), every other one of the controller holding duties, the rest of a random controller, each
started again once its duties moved; and one of the active pool. Then the churn stops, every
node is released, and the run checks: every client request answered (after retries), every
takeover within 15 s, nothing left (servers, ports, host claims, pool nodes), no server made
twice for one request, no pool node launched twice. Prints a verdict; exits 1 on a violation.

The machine's load average is printed with the figures: other work shares its cores.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select

import common

# isort: split
# tests/ is importable once `common` has put the repository on sys.path
from tests.conftest import create_pg_database
from tests.ha.pgsite import Churn, Controller, Site, own_cluster, prepare
from tests.ha.verdict import Figures, duplicate_servers, spread, violations
from tests.servers import wait_for

from infracloud.store.models import Event
from pool_failover import TOKEN as POOL_TOKEN
from pool_failover import Churn as PoolChurn
from pool_failover import Pool, handovers

POOL_CLOUD = "infracloud-ci"  # what bench/pool_failover.Pool's providers name
POOL_PREFIX = "small-site-"  # the pool names a server small-<provider>-<node id>


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


# ---- the status API: who holds the duties ----------------------------------------------------

def status(site: Site) -> dict[str, Any] | None:
    try:
        r = httpx.get(site.public + "/ops/v1/status", verify=str(site.ca), timeout=10)
    except httpx.HTTPError:
        return None
    return dict(r.json()) if r.status_code == 200 else None


def port_of(owner: str) -> str:
    """An owner id is host:port#suffix."""
    return owner.split("#", 1)[0].rsplit(":", 1)[1]


def holds(c: Controller, duties: list[dict[str, Any]]) -> bool:
    port = c.url.rsplit(":", 1)[1]
    return any(d["holder"] and port_of(d["holder"]) == port for d in duties)


def holder(site: Site) -> Controller:
    """The controller holding the first duty (the first controller up takes them all)."""
    now = wait_for("the status to name the duties' holders",
                   lambda: (s := status(site)) and all(d["holder"] for d in s["duties"]) and s,
                   timeout=60)
    port = port_of(now["duties"][0]["holder"])
    return next(c for c in site.controllers if c.url.endswith(":" + port))


def kill(site: Site, victim: Controller, timeout: float = 60) -> tuple[float | None, bool]:
    """`kill -9` of `victim`; the seconds until every duty is held by another controller (None:
    not within `timeout`) and whether it held any; then it is started again."""
    before = wait_for("the status", lambda: status(site), timeout=60)
    held = holds(victim, before["duties"])
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.proc.wait()
    took: float | None = None
    while time.monotonic() - killed < timeout:
        now = status(site)
        if now and all(d["holder"] for d in now["duties"]) and not holds(victim, now["duties"]):
            took = time.monotonic() - killed
            break
        time.sleep(0.1)
    site.launch(victim)  # restarted: always three again
    site.wait_serving(victim, timeout=120)
    return took, held


# ---- a site ----------------------------------------------------------------------------------

def open_site(stack: ExitStack, folder: Path, db_url: str, controllers: int) -> Site:
    folder.mkdir(parents=True)
    site = Site(folder, db_url, controllers)
    stack.callback(site.close)
    site.start()
    return site


def churn_rate(site: Site, clients: int, seconds: float, warmup: float = 5.0) -> float:
    """Cycles per second of `clients` churn clients, after a warm-up."""
    image, flavor = prepare(site)
    churn = Churn(site, image, flavor, threads=clients, prefix="rate").start()
    time.sleep(warmup)  # the measured window starts once every client is in its cycles
    first, started = churn.cycles(), time.monotonic()
    time.sleep(seconds)  # the measured window itself
    rate = (churn.cycles() - first) / (time.monotonic() - started)
    churn.stop()
    return rate


def bench(args: argparse.Namespace, pg_admin: str, folder: Path) -> int:
    rates: dict[str, float] = {}
    takeovers: list[float | None] = []
    print(f"churn: {args.clients} openstacksdk clients through HAProxy, {args.seconds:g} s "
          f"each; {load()}", flush=True)
    for name, db, count in (("1 controller, SQLite", "sqlite", 1),
                            ("1 controller, PostgreSQL", "pg", 1),
                            ("2 controllers, PostgreSQL", "pg", 2),
                            ("3 controllers, PostgreSQL", "pg", 3)):
        with ExitStack() as stack:
            where = folder / f"{db}-{count}"
            url = (f"sqlite:///{where / 'site.db'}" if db == "sqlite"
                   else create_pg_database(pg_admin))
            site = open_site(stack, where, url, count)
            rates[name] = churn_rate(site, args.clients, args.seconds)
            print(f"  {name}: {rates[name]:.2f} cycles/s", flush=True)
            if count == 3 and args.kills:
                image, flavor = prepare(site)
                churn = Churn(site, image, flavor, threads=args.clients,
                              prefix="failover").start()
                for _ in range(args.kills):
                    took, _ = kill(site, holder(site))
                    takeovers.append(took)
                    print("    kill -9 of the duty holder: every duty moved in "
                          + ("never" if took is None else f"{took:.1f} s"), flush=True)
                tally = churn.stop()
                print(f"    churn meanwhile: {tally.summary()}")
                for failure in tally.failures[:10]:
                    print(f"      failed, then made again: {failure}")
    base = rates["1 controller, SQLite"]
    print(f"\nchurn through HAProxy ({args.clients} clients, create -> ACTIVE -> delete), "
          f"{load()}")
    for name, rate in rates.items():
        print(f"  {name:28} {rate:6.2f} cycles/s  ratio {rate / base:.2f}")
    if takeovers:
        print(f"failover (kill -9 of the duty holder, 3 controllers, churning): every duty "
              f"held by a survivor: {spread(takeovers)}")
    broken = violations(Figures(takeovers=takeovers))
    for line in broken:
        print("VIOLATION: " + line)
    return 1 if broken else 0


# ---- the soak --------------------------------------------------------------------------------

def pool_cloud(site: Site) -> Path:
    """clouds.yaml for the pool: the site's own, through HAProxy, under the pool's name."""
    path = site.folder / "pool-clouds.yaml"
    clouds = yaml.safe_load(site.clouds_yaml().read_text())
    path.write_text(yaml.safe_dump({"clouds": {POOL_CLOUD: clouds["clouds"]["ha"]}}))
    return path


def pool_objects(site: Site) -> None:
    """The image and flavor bench/pool_failover.Pool's label asks for (`demo`, `ci.small`)."""
    conn = site.sdk()
    image = conn.image.create_image(name="demo", data=b"\0" * 4096, disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    wait_for("the pool's image", lambda: conn.image.get_image(image.id).status == "active")
    conn.compute.create_flavor(name="ci.small", vcpus=1, ram=512, disk=1)


def creations(site: Site) -> tuple[Counter[str], set[str]]:
    """Servers the site made, by name, from its events (a creation: a state event with no
    source), and the ids of the churn's."""
    names: Counter[str] = Counter()
    ids: set[str] = set()
    with site.engine().connect() as conn:
        rows = conn.execute(select(Event.resource_id, Event.resource_name).where(
            Event.resource_type == "server", Event.kind == "state", Event.source.is_(None)))
        for rid, name in rows:
            names[str(name)] += 1
            if str(name).startswith("soak-"):
                ids.add(str(rid))
    return names, ids


def settle(site: Site, pools: list[Pool], timeout: float = 240) -> int:
    """Release every pool node still in use and wait for the pool to have none and the site no
    server; returns the pool nodes left."""
    from infracloud.pool.client import PoolClient

    client = PoolClient(",".join(p.url for p in pools), POOL_TOKEN)
    try:
        def clean() -> bool:
            for node in client.list_nodes(state="in-use"):
                client.release(node["id"])
            return not client.list_nodes() and not site.leftovers()["servers"]

        with suppress(AssertionError):
            wait_for("the pool's nodes and the site's servers all gone", clean,
                     timeout=timeout, every=2)
        return len(client.list_nodes())
    finally:
        client.close()


def soak(args: argparse.Namespace, pg_admin: str, folder: Path) -> int:
    rng = random.Random(args.seed)
    f = Figures()
    with ExitStack() as stack:
        site = open_site(stack, folder / "site", create_pg_database(pg_admin), 3)
        image, flavor = prepare(site)
        pool_objects(site)
        (folder / "token").write_text(POOL_TOKEN + "\n")
        pool_db = create_pg_database(pg_admin)
        pools = [Pool(folder, name, pool_db, pool_cloud(site)) for name in ("pool1", "pool2")]
        for p in pools:
            p.start()
            stack.callback(lambda p=p: p.proc and common.stop_process(p.proc))
        churn = Churn(site, image, flavor, threads=args.clients, prefix="soak",
                      cycle_timeout=180)
        answered: set[str] = set()
        churn.watchers.append(answered.add)
        churn.start()
        requestors = PoolChurn(",".join(p.url for p in pools), args.requestors)
        print(f"soak: 3 controllers on PostgreSQL behind HAProxy, {args.clients} churn clients, "
              f"2 pool processes with {args.requestors} requestors; {args.minutes:g} min, "
              f"{args.kills} controller kills and 1 pool kill; seed {args.seed}; {load()}",
              flush=True)
        holder_times: list[float | None] = []
        started = time.monotonic()
        every = args.minutes * 60 / (args.kills + 1)
        for n in range(args.kills):
            # a random moment in the n-th slot, a random controller
            at = started + every * (n + 0.5 + rng.random())
            time.sleep(max(0.0, at - time.monotonic()))
            # every other kill hits the duty holder, the rest a random controller
            victim = holder(site) if n % 2 == 0 else rng.choice(site.controllers)
            took, held = kill(site, victim)
            f.takeovers.append(took)
            f.holder_kills += held
            if held:
                holder_times.append(took)
            print(f"  {time.monotonic() - started:5.0f} s kill -9 controller{victim.number}"
                  f"{' (duty holder)' if held else ''}: every duty held by a live controller "
                  + ("never" if took is None else f"after {took:.1f} s"), flush=True)
            if n == args.kills // 2:
                pool_took = handovers(pools, 1, signal.SIGKILL)
                f.pool_takeovers.extend(pool_took)
                print(f"  {time.monotonic() - started:5.0f} s kill -9 of the active pool: "
                      f"the standby active after {pool_took[0]:.1f} s", flush=True)
        time.sleep(max(0.0, started + args.minutes * 60 - time.monotonic()))
        print(f"  {time.monotonic() - started:5.0f} s the churn stops; {load()}", flush=True)
        try:
            tally = churn.stop(timeout=300)
        except AssertionError as exc:
            tally = churn.tally
            f.unanswered.append(str(exc)[:300])
        requestors.close()
        f.calls, f.failed, f.retried, f.cleaned = (tally.calls, tally.failed, tally.retried,
                                                   tally.cleaned)
        f.pool_calls = requestors.calls
        f.pool_retried = sum(c.retries for c in requestors.clients)
        f.pool_failed = list(requestors.failed)
        pool_left = settle(site, pools)
        f.leftovers = {**site.leftovers(), "pool nodes": pool_left}
        names, made = creations(site)
        f.unexplained_servers = duplicate_servers(len(made), len(answered & made), f.cleaned)
        f.nodes_launched_twice = sum(1 for name, count in names.items()
                                     if name.startswith(POOL_PREFIX) and count > 1)
        pool_servers = sum(count for name, count in names.items()
                           if name.startswith(POOL_PREFIX))
        print(f"\nsoak over {args.minutes:g} min (3 controllers on PostgreSQL, 2 pools), "
              f"{load()}")
        print(f"  churn: {tally.summary()}")
        for failure in tally.failures[:10]:
            print(f"    failed, then made again: {failure}")
        for r in site.logged_requests():
            if r.status >= 500 and r.status != 503:
                print(f"    HAProxy logged {r.status} ({r.termination}) from {r.server}: "
                      f"{r.method} {r.path}")
        print(f"  servers made for the churn: {len(made)}, named in a create's answer: "
              f"{len(answered & made)}; made by a create whose answer was lost and deleted: "
              f"{f.cleaned}")
        print(f"  pool: {requestors.served} requests served, {f.pool_calls} requestor calls, "
              f"{f.pool_retried} tried again, {len(f.pool_failed)} failed; {pool_servers} "
              f"servers launched for nodes")
        print(f"  controller kills: {len(f.takeovers)} ({f.holder_kills} of the duty holder); "
              f"every duty held by a live controller: {spread(f.takeovers)}")
        print(f"  of which kills of a duty holder (a survivor takes over): "
              f"{spread(holder_times)}")
        print(f"  pool kill: standby active: {spread(f.pool_takeovers)}")
        print(f"  left after the churn: {f.leftovers}")
    broken = violations(f)
    print("VERDICT: " + ("PASS" if not broken else "FAIL"))
    for line in broken:
        print("  VIOLATION: " + line)
    return 1 if broken else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--soak", action="store_true", help="the issue's soak, with a verdict")
    ap.add_argument("--quick", action="store_true", help="a smoke run (a minute or two)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="churn per configuration")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requestors", type=int, default=2)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.seconds, args.kills = 2.0, 15.0, 2
    folder = Path(tempfile.mkdtemp(prefix="bench-ha-"))
    try:
        with own_cluster("bench-ha-pg-") as (_, pg_admin):
            return (soak if args.soak else bench)(args, pg_admin, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
