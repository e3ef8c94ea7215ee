"""Node pool failover: two `infracloud pool` processes on one PostgreSQL database (a throwaway
cluster, tests/pgcluster.py) over a demo site (fake agent driver), requestors churning
(request -> fulfilled -> release) through the pool client given both URLs.

    .venv/bin/python bench/pool_failover.py [--kills 10] [--stops 10] [--requestors 3]

(1) `--kills` times: `kill -9` of the active process while nodes are building; the time from
    the kill until the standby's /readyz says it is active (the issue's bound: 15 s); the
    killed process is started again and stands by.
(2) `--stops` times: SIGTERM of the active process (a clean stop): the time from the signal
    until the standby is active.
Printed: p50 and max of each, and the requestors' calls, requests served and failed calls
(must be 0). Everything runs on 127.0.0.1 and shares the machine's cores.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from common import free_port, stop_process  # first: it puts the repository on the path

TOKEN = "bench-pool-token-0123456789"


class Pool:
    def __init__(self, folder: Path, name: str, db: str, clouds: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = folder / f"{name}.yaml"
        self.log = folder / f"{name}.log"
        self.config.write_text(yaml.safe_dump({
            "name": "bench-pool", "listen": {"host": "127.0.0.1", "port": self.port},
            "database": db, "auth": {"static-token-file": str(folder / "token")},
            "cleanup-interval": 5, "labels": [{"name": "small"}],
            "providers": [{"name": "site", "cloud": "infracloud-ci",
                           "clouds-file": str(clouds), "max-servers": 6,
                           "status-interval": 0.2,
                           "pools": [{"name": "main", "host-key-checking": False,
                                      "labels": [{"name": "small", "image": "demo",
                                                  "flavor-name": "ci.small"}]}]}]}))
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        from tests.servers import start_pool

        self.proc, _ = start_pool(self.config, self.log)

    def role(self) -> str | None:
        try:
            r = httpx.get(self.url + "/readyz", timeout=2)
        except httpx.HTTPError:
            return None
        return str(r.json()["role"]) if r.status_code == 200 else None


def wait(what: str, cond: Any, timeout: float = 60, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


class Churn:
    def __init__(self, urls: str, count: int) -> None:
        from infracloud.pool.client import PoolClient

        self.stop = threading.Event()
        self.calls = self.served = 0
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.clients = [PoolClient(urls, TOKEN) for _ in range(count)]
        self.threads = [threading.Thread(target=self.run, args=(c,), daemon=True)
                        for c in self.clients]
        for t in self.threads:
            t.start()

    def run(self, client: Any) -> None:
        while not self.stop.is_set():
            try:
                req = client.create_request(["small"])
                calls = 1
                while req["state"] not in ("fulfilled", "failed", "cancelled"):
                    req = client.get_request(req["id"], wait=10)
                    calls += 1
                for node in req["node_ids"]:
                    client.release(node)
                    calls += 1
                with self.lock:
                    self.calls += calls
                    self.served += req["state"] == "fulfilled"
                if req["state"] != "fulfilled":
                    self.failed.append(f"{req['id']}: {req['state']}")
            except Exception as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
        for c in self.clients:
            c.close()


def handovers(pools: list[Pool], times: int, sig: int) -> list[float]:
    out = []
    for _ in range(times):
        wait("one active, one standing by",
             lambda: sorted(str(p.role()) for p in pools) == ["active", "standby"])
        active = next(p for p in pools if p.role() == "active")
        other = next(p for p in pools if p is not active)
        assert active.proc is not None
        time.sleep(1.0)  # let the churn have nodes building at the moment of the signal
        start = time.monotonic()
        active.proc.send_signal(sig)
        wait("the standby to take over", lambda o=other: o.role() == "active", timeout=60)
        out.append(time.monotonic() - start)
        active.proc.wait(60)
        active.start()
    return out


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: none"
    return (f"{name}: p50 {statistics.median(values):.1f} s, max {max(values):.1f} s "
            f"over {len(values)} ({', '.join(f'{v:.1f}' for v in values)})")


def main() -> None:
    from tests import pgcluster
    from tests.servers import start_demo

    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--stops", type=int, default=10)
    ap.add_argument("--requestors", type=int, default=3)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pool-failover-"))
    pg = Path(tempfile.mkdtemp(prefix="pool-failover-pg-"))  # its own: postgres reads it
    admin = pgcluster.start(pg)
    demo = start_demo(folder / "site", "--site", "none", "--hosts", "1", "--driver", "fake",
                      "--min-ready", "0")
    pools: list[Pool] = []
    churn: Churn | None = None
    try:
        (folder / "token").write_text(TOKEN + "\n")
        pools = [Pool(folder, name, admin, demo.clouds_yaml) for name in ("pool1", "pool2")]
        for p in pools:
            p.start()
        churn = Churn(",".join(p.url for p in pools), args.requestors)
        kills = handovers(pools, args.kills, signal.SIGKILL)
        stops = handovers(pools, args.stops, signal.SIGTERM)
        churn.close()
        print()
        print(f"pool failover: two processes on PostgreSQL, {args.requestors} requestors "
              f"churning through both URLs")
        print("  " + summary("kill -9 -> standby active", kills))
        print("  " + summary("clean stop -> standby active", stops))
        print(f"  requestor calls {churn.calls}, requests served {churn.served}, "
              f"failed calls {len(churn.failed)}" +
              (f" (first: {churn.failed[0]})" if churn.failed else ""))
    finally:
        if churn is not None:
            churn.stop.set()
        for p in pools:
            if p.proc is not None:
                stop_process(p.proc)
        demo.stop()
        pgcluster.stop(pg)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(pg, ignore_errors=True)


if __name__ == "__main__":
    main()
