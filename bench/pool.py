"""Node pool benchmark: two demo sites with the fake agent driver (servers go ACTIVE at once,
no SSH) are the providers of one `infracloud pool` process; what the pool adds on top of the
clouds' own cost, idle and at saturation.

    .venv/bin/python bench/pool.py [--requests 1000] [--requestors 4] [--max-servers 50] ...

(1) Baseline, same run, same sites, no pool: servers created one at a time with openstacksdk
    (create_server, then get_server polled every 10 ms until ACTIVE, then deleted and polled
    until gone), alternating between the sites: create -> ACTIVE p50/p99, the cloud's own
    cost. Then the clouds' throughput: `--direct-clients` threads (half per site) cycling
    create -> ACTIVE -> delete -> gone for `--direct-seconds`: servers per minute, measured
    again after (3) (the pool idle); their mean is the baseline of (3).
(2) The pool idle with room free (min-ready 0): one request at a time, each node released
    once its request is fulfilled; request -> fulfilled as the client sees it (POST to the
    answer of GET ?wait) and as the pool records it (created_at -> state_at), as ratios to (1).
(3) Saturation: `--requests` requests posted by `--requestors` requestors (a thread each)
    while both providers are drained, so that all of them wait when the launches start (the
    API takes requests far slower than "at once"; its intake rate is reported); then both
    are undrained, max-servers per provider limiting concurrency, and `--waiters` threads
    long-poll the requests in the order they were posted and release each node as soon as its
    request is fulfilled. Wall time from the undrain, nodes launched per minute (against the
    direct throughput of (1)), undrain -> fulfilled p50/p99, failed requests (must be 0),
    each requestor's share of the first half of the fulfilments, and where the time and the
    cores went.

Everything runs on 127.0.0.1: the demos' servers are on loopback networks and the fake driver
opens no sockets. The client, both sites and the pool share the machine's cores; only the
ratios are meant to be compared between runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from common import BIN, free_port, stop_process

SITES = (("vanilla", "127.131.0.0/16"), ("chocolate", "127.132.0.0/16"))
FLAVOR = "ci.small"  # 1 vCPU, 1 GB, 10 GB
FLAVOR_VCPUS, FLAVOR_RAM_MB = 1, 1024
HOST_VCPUS = 24
IMAGE = "demo"
LABEL = "small"
TOKEN = "bench-pool-token-0123456789"
FINAL = ("fulfilled", "failed", "cancelled")


# ---- processes ------------------------------------------------------------------------------



@dataclass
class Site:
    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    state_dir: Path
    url: str = ""

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"


def launch_demo(folder: Path, name: str, cidr: str, hosts: int) -> Site:
    """`infracloud demo` with the fake driver and no machines; its output goes to a file (an
    unread pipe would fill and block it)."""
    out = folder / f"{name}.out"
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [str(BIN / "infracloud"), "demo", "--state-dir", str(folder / name), "--port",
             str(free_port()), "--site", "none", "--hosts", str(hosts), "--driver", "fake",
             "--min-ready", "0", "--network-cidr", cidr],
            stdout=f, stderr=subprocess.STDOUT)
    return Site(name, proc, out, folder / name)


def wait_demo(site: Site, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = site.out.read_text(errors="replace")
        m = re.search(r"ready at (https?://\S+)", text)
        if m:
            site.url = m.group(1)
            return
        if site.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"demo {site.name} did not become ready:\n"
                     f"{site.out.read_text(errors='replace')[-3000:]}")


def sdk(clouds_yaml: Path, cloud: str) -> Any:
    import openstack.config
    import openstack.connection

    config = openstack.config.OpenStackConfig(config_files=[str(clouds_yaml)])
    return openstack.connection.Connection(config=config.get_one(cloud))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores each named process used between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start()

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.t0
        return {k: (cpu_seconds(p) - self.c0[k]) / elapsed for k, p in self.pids.items()}


def proc_stat() -> list[int]:
    """The machine's CPU time counters (user nice system idle iowait irq softirq steal)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = math.ceil(p / 100 * len(ordered)) - 1
    return ordered[min(max(rank, 0), len(ordered) - 1)]


def iso(value: str | None) -> float:
    """An ISO timestamp of the pool's as seconds since the epoch."""
    assert value is not None
    return dt.datetime.fromisoformat(value).timestamp()


# ---- (1) the clouds on their own ------------------------------------------------------------

@dataclass
class Catalog:
    image_id: str
    flavor_id: str


def wait_status(conn: Any, server_id: str, want: str, timeout: float = 120,
                pause: float = 0.01, backoff: bool = False) -> None:
    """Polls get_server until its status is `want` ("GONE": until it is not found)."""
    from openstack import exceptions as os_exc

    deadline = time.monotonic() + timeout
    while True:
        try:
            server = conn.compute.get_server(server_id)
        except os_exc.NotFoundException:
            if want == "GONE":
                return
            raise
        if server.status == want:
            return
        if server.status == "ERROR":
            raise RuntimeError(f"server {server_id} went to ERROR: {server.fault}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server {server_id} is {server.status} after {timeout:g} s")
        time.sleep(pause)
        if backoff:
            pause = min(pause * 2, 0.1)


def direct_cycle(conn: Any, cat: Catalog, name: str, backoff: bool = False
                 ) -> tuple[float, float]:
    """create -> ACTIVE -> delete -> gone; the two times in seconds."""
    t0 = time.monotonic()
    server = conn.compute.create_server(name=name, image_id=cat.image_id,
                                        flavor_id=cat.flavor_id, networks="auto")
    wait_status(conn, server.id, "ACTIVE", backoff=backoff)
    t1 = time.monotonic()
    conn.compute.delete_server(server.id)
    wait_status(conn, server.id, "GONE", backoff=backoff)
    return t1 - t0, time.monotonic() - t1


def direct_sequential(conns: list[Any], cats: list[Catalog], n: int
                      ) -> tuple[list[float], list[float]]:
    to_active: list[float] = []
    to_gone: list[float] = []
    for i in range(n):
        k = i % len(conns)
        a, g = direct_cycle(conns[k], cats[k], f"bench-direct-{i}")
        to_active.append(a)
        to_gone.append(g)
    return to_active, to_gone


def direct_churn(sites: list[Site], cats: list[Catalog], clients: int, seconds: float
                 ) -> tuple[int, float]:
    """Cycles from `clients` threads (spread over the sites, each its own connection)."""
    conns = [sdk(sites[i % len(sites)].clouds_yaml, "infracloud-ci") for i in range(clients)]
    stop = time.monotonic() + seconds
    done = [0] * clients
    errors: list[BaseException] = []
    names = itertools.count()

    def worker(i: int) -> None:
        k = i % len(sites)
        while time.monotonic() < stop and not errors:
            try:
                direct_cycle(conns[i], cats[k], f"bench-churn-{next(names)}", backoff=True)
            except Exception as exc:
                errors.append(exc)
                return
            done[i] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError(f"direct churn failed: {errors[0]}")
    return sum(done), elapsed


# ---- the pool -------------------------------------------------------------------------------

@dataclass
class Pool:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/pool/v1", timeout=90,
                            headers={"X-Auth-Token": TOKEN})


def start_pool(folder: Path, sites: list[Site], args: argparse.Namespace) -> Pool:
    (folder / "token").write_text(TOKEN + "\n")
    port = free_port()
    provider_extra: dict[str, Any] = {}
    if args.status_interval is not None:
        provider_extra["status-interval"] = args.status_interval
    config: dict[str, Any] = {
        "name": "bench", "listen": {"host": "127.0.0.1", "port": port},
        "database": f"sqlite:///{folder / 'pool.db'}",
        "auth": {"static-token-file": str(folder / "token")},
        "labels": [{"name": LABEL, "min-ready": 0}],
        "providers": [{"name": s.name, "cloud": "infracloud-ci",
                       "clouds-file": str(s.clouds_yaml), "max-servers": args.max_servers,
                       **provider_extra,
                       "pools": [{"name": "main", "host-key-checking": False,
                                  "labels": [{"name": LABEL, "image": IMAGE,
                                              "flavor-name": FLAVOR}]}]}
                      for s in sites],
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = folder / "pool.log"
    with log.open("wb") as f:  # a file: an unread pipe would fill and block the pool
        proc = subprocess.Popen([str(BIN / "infracloud"), "pool", "--config", str(path),
                                 "--log-format", "text"], stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Pool(proc, url, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_process(proc)
    raise SystemExit(f"the pool did not start:\n{log.read_text(errors='replace')[-3000:]}")


def check(r: httpx.Response) -> Any:
    if r.status_code >= 300:
        raise RuntimeError(f"{r.request.method} {r.request.url.path} answered "
                           f"{r.status_code}: {r.text[:300]}")
    return r.json()


def post_request(c: httpx.Client, requestor: str) -> dict[str, Any]:
    return dict(check(c.post("/requests", json={"labels": [LABEL], "requestor": requestor}))
                ["request"])


def wait_final(c: httpx.Client, request_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        req = check(c.get(f"/requests/{request_id}", params={"wait": 30}))["request"]
        if req["state"] in FINAL:
            return dict(req)
        if time.monotonic() > deadline:
            raise RuntimeError(f"request {request_id} still {req['state']} after {timeout:g} s")


def release(c: httpx.Client, req: dict[str, Any]) -> None:
    for node in req["nodes"]:
        check(c.post(f"/nodes/{node['id']}/release"))


def settle(c: httpx.Client, timeout: float = 120) -> float:
    """Waits until the pool has no node left; the seconds it took."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        nodes = check(c.get("/nodes"))["nodes"]
        if not nodes:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            states = Counter(n["state"] for n in nodes)
            raise RuntimeError(f"nodes left after {timeout:g} s: {dict(states)}")
        time.sleep(0.2)


def wait_providers_up(c: httpx.Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        providers = check(c.get("/providers"))["providers"]
        if all(p["state"] == "up" for p in providers):
            return
        time.sleep(0.2)
    raise RuntimeError(f"providers not up: {providers}")


# ---- (2) one request at a time ----------------------------------------------------------------

@dataclass
class Sequential:
    client: list[float] = field(default_factory=list)  # POST sent -> final answer received
    server: list[float] = field(default_factory=list)  # created_at -> state_at
    node_launch: list[float] = field(default_factory=list)  # node created_at -> ready_at
    queued: list[float] = field(default_factory=list)  # request created -> node created
    assign: list[float] = field(default_factory=list)  # node ready_at -> request state_at


def sequential(pool: Pool, n: int) -> Sequential:
    out = Sequential()
    with pool.client() as c:
        for _ in range(n):
            t0 = time.monotonic()
            req = wait_final(c, post_request(c, "bench")["id"])
            t1 = time.monotonic()
            if req["state"] != "fulfilled":
                raise RuntimeError(f"request {req['id']} {req['state']}: {req['reason']}")
            release(c, req)
            node = req["nodes"][0]
            out.client.append(t1 - t0)
            out.server.append(iso(req["state_at"]) - iso(req["created_at"]))
            out.node_launch.append(iso(node["ready_at"]) - iso(node["created_at"]))
            out.queued.append(iso(node["created_at"]) - iso(req["created_at"]))
            out.assign.append(iso(req["state_at"]) - iso(node["ready_at"]))
    return out


# ---- (3) saturation ---------------------------------------------------------------------------

@dataclass
class Saturation:
    requests: int
    submit_s: float = 0.0  # all POSTs, providers drained
    post: list[float] = field(default_factory=list)  # each POST's answer time
    go_wall: float = 0.0  # the undrain, seconds since the epoch
    wall_s: float = 0.0  # undrain -> last fulfilment seen
    drain_s: float = 0.0
    launches: int = 0
    finals: list[dict[str, Any]] = field(default_factory=list)
    client: list[float] = field(default_factory=list)  # undrain -> fulfilment seen
    release_lag: list[float] = field(default_factory=list)  # fulfilled (pool) -> release sent
    release_call: list[float] = field(default_factory=list)  # POST .../release answer time
    providers_call: list[float] = field(default_factory=list)  # GET /providers answer time
    machine: dict[str, float] = field(default_factory=dict)  # busy, steal, idle shares
    errors: list[str] = field(default_factory=list)
    samples: list[dict[str, dict[str, int]]] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)

    @property
    def fulfilled(self) -> list[dict[str, Any]]:
        return [r for r in self.finals if r["state"] == "fulfilled"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.finals if r["state"] != "fulfilled"]


def provider_counts(c: httpx.Client) -> dict[str, dict[str, int]]:
    out = {}
    for p in check(c.get("/providers"))["providers"]:
        known = p["building"] + p["ready"] + p["in_use"] + p["deleting"]
        out[p["name"]] = {"building": p["building"], "ready": p["ready"],
                          "in_use": p["in_use"], "used": p["nodes"] - known,
                          "deleting": p["deleting"], "nodes": p["nodes"],
                          "launches": p["launches"], "failures": p["launch_failures"]}
    return out


def saturate(pool: Pool, args: argparse.Namespace, meter: CpuMeter) -> Saturation:
    """The providers are drained while the requests are posted (the API takes them far slower
    than at once), so that all of them wait when the launches start; then undrained."""
    out = Saturation(args.requests)
    per = [args.requests // args.requestors + (i < args.requests % args.requestors)
           for i in range(args.requestors)]
    todo: queue.Queue[str | None] = queue.Queue()
    lock = threading.Lock()
    stop_sampling = threading.Event()
    go = threading.Event()
    go_at = [0.0]
    last_final = [0.0]

    def submitter(k: int) -> None:
        name = f"requestor-{k + 1}"
        with pool.client() as c:
            for _ in range(per[k]):
                t0 = time.monotonic()
                try:
                    req = post_request(c, name)
                except Exception as exc:
                    out.errors.append(f"{name}: {exc}")
                    return
                out.post.append(time.monotonic() - t0)
                todo.put(req["id"])

    def waiter() -> None:
        with pool.client() as c:
            while True:
                rid = todo.get()
                if rid is None:
                    return
                try:
                    req = wait_final(c, rid)
                    t1 = time.monotonic()
                    if req["state"] == "fulfilled":
                        lag = time.time() - iso(req["state_at"])
                        t2 = time.monotonic()
                        release(c, req)
                        took = time.monotonic() - t2
                except Exception as exc:
                    out.errors.append(f"{rid}: {exc}")
                    continue
                with lock:
                    out.finals.append(req)
                    if req["state"] == "fulfilled":
                        out.client.append(t1 - go_at[0])
                        out.release_lag.append(lag)
                        out.release_call.append(took)
                    last_final[0] = max(last_final[0], t1)

    def sampler() -> None:
        go.wait()
        with pool.client() as c:
            while not stop_sampling.wait(0.5):
                try:
                    t0 = time.monotonic()
                    out.samples.append(provider_counts(c))
                    out.providers_call.append(time.monotonic() - t0)
                except Exception as exc:
                    out.errors.append(f"providers: {exc}")

    with pool.client() as c:
        names = list(provider_counts(c))
        for name in names:
            check(c.post(f"/providers/{name}/drain", json={"reason": "bench: queueing"}))
        before = provider_counts(c)
        waiters = [threading.Thread(target=waiter, daemon=True) for _ in range(args.waiters)]
        submitters = [threading.Thread(target=submitter, args=(k,), daemon=True)
                      for k in range(args.requestors)]
        sampling = threading.Thread(target=sampler, daemon=True)
        started = time.monotonic()
        for t in [*submitters, *waiters, sampling]:
            t.start()
        for t in submitters:
            t.join()
        out.submit_s = time.monotonic() - started
        print(f"  {len(out.post)} requests posted in {out.submit_s:.1f} s; undraining ...",
              flush=True)
        meter.start()
        stat0 = proc_stat()
        go_at[0], out.go_wall = time.monotonic(), time.time()
        for name in names:
            check(c.post(f"/providers/{name}/undrain"))
        go.set()
        for _ in waiters:
            todo.put(None)
        for t in waiters:
            t.join()
        out.wall_s = last_final[0] - go_at[0]
        out.cores = meter.stop()
        delta = [b - a for a, b in zip(stat0, proc_stat(), strict=True)]
        total = sum(delta) or 1
        out.machine = {"busy": (delta[0] + delta[1] + delta[2] + delta[5] + delta[6]) / total,
                       "steal": delta[7] / total, "idle": (delta[3] + delta[4]) / total}
        stop_sampling.set()
        sampling.join()
        out.drain_s = settle(c)
        after = provider_counts(c)
    out.launches = sum(after[p]["launches"] - before[p]["launches"] for p in after)
    return out


def fairness(sat: Saturation) -> dict[str, float]:
    """Each requestor's share of the first half of the fulfilments (by the pool's state_at)."""
    done = sorted(sat.fulfilled, key=lambda r: (r["state_at"], r["id"]))
    first = done[:len(done) // 2]
    counts = Counter(r["requestor"] for r in first)
    return {k: counts[k] / len(first) for k in sorted(counts)} if first else {}


# ---- the report -------------------------------------------------------------------------------

def ms(values: list[float], p: float) -> float:
    return pct(values, p) * 1e3


def row(label: str, values: list[float], base: list[float] | None) -> str:
    p50, p99 = ms(values, 50), ms(values, 99)
    line = f"  {label:52} {p50:9.0f} {p99:9.0f}"
    if base:
        line += f" {p50 / ms(base, 50):9.2f} {p99 / ms(base, 99):9.2f}"
    return line


def pool_log_summary(log: Path) -> tuple[int, list[str]]:
    lines = [ln for ln in log.read_text(errors="replace").splitlines()
             if re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL)\b", ln)]
    return len(lines), lines[:5]


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    hosts = args.hosts or math.ceil(max(args.max_servers, args.direct_clients) / HOST_VCPUS) + 1
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        folder = Path(tmp)
        sites: list[Site] = []
        pool: Pool | None = None
        try:
            for name, cidr in SITES:
                sites.append(launch_demo(folder, name, cidr, hosts))
            for s in sites:
                wait_demo(s)
            print(f"two demo sites up ({hosts} fake-driver hosts each) in "
                  f"{time.monotonic() - t_start:.1f} s; baseline ...", flush=True)

            # quota: the defaults (50 ports, 100 instances) may be too small for the settings
            need = max(args.max_servers, args.direct_clients) + 10
            conns, cats = [], []
            for s in sites:
                conn = sdk(s.clouds_yaml, "infracloud-ci")
                cats.append(Catalog(conn.image.find_image(IMAGE, ignore_missing=False).id,
                                    conn.compute.find_flavor(FLAVOR, ignore_missing=False).id))
                conns.append(conn)
                if need > 50:  # the port quota (Neutron's 50), then the instances (100)
                    admin = sdk(s.clouds_yaml, "infracloud-admin")
                    ci = admin.identity.find_project("ci", ignore_missing=False)
                    admin.network.update_quota(ci.id, ports=need)
                    admin.compute.update_quota_set(ci.id, instances=max(100, need),
                                                   cores=max(800, need * FLAVOR_VCPUS),
                                                   ram=max(800 * 1024, need * FLAVOR_RAM_MB))
                    admin.close()
            direct_sequential(conns, cats, 4)  # warm-up: tokens, connections
            to_active, to_gone = direct_sequential(conns, cats, args.baseline)
            for conn in conns:
                conn.close()
            print(f"direct churn, {args.direct_clients} clients for {args.direct_seconds:g} s "
                  f"...", flush=True)
            churned, churn_s = direct_churn(sites, cats, args.direct_clients,
                                            args.direct_seconds)

            pool = start_pool(folder, sites, args)
            with pool.client() as c:
                wait_providers_up(c)
                for _ in range(2):  # warm-up: the catalog, connections, tokens
                    req = wait_final(c, post_request(c, "bench")["id"])
                    if req["state"] != "fulfilled":
                        raise RuntimeError(f"warm-up request {req['state']}: {req['reason']}")
                    release(c, req)
                settle(c)
            print(f"pool up; {args.sequential} requests one at a time ...", flush=True)
            seq = sequential(pool, args.sequential)
            with pool.client() as c:
                settle(c)
            print(f"saturation: {args.requests} requests from {args.requestors} requestors, "
                  f"max-servers {args.max_servers} x {len(sites)} ...", flush=True)
            pids = {"pool": pool.proc.pid, **{s.name: s.proc.pid for s in sites},
                    "bench client": os.getpid()}
            sat = saturate(pool, args, CpuMeter(pids))
            print(f"direct churn again, {args.direct_clients} clients for "
                  f"{args.direct_seconds:g} s ...", flush=True)
            churned2, churn2_s = direct_churn(sites, cats, args.direct_clients,
                                              args.direct_seconds)
            log_count, log_first = pool_log_summary(pool.log)
        finally:
            if pool is not None:
                code = stop_process(pool.proc)
                if code != 0:
                    print(f"pool exited {code}:\n"
                          f"{pool.log.read_text(errors='replace')[-2000:]}")
            for s in sites:
                if s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGINT)
            for s in sites:
                stop_process(s.proc)

    # ---- print ------------------------------------------------------------------------------
    interval = (f"{args.status_interval:g} s" if args.status_interval is not None
                else "1 s, the pool's default")
    print()
    print(f"pool benchmark: {os.cpu_count()} cores; two demo sites (TLS, SQLite, {hosts} x "
          f"{HOST_VCPUS}-vCPU fake-driver hosts each), one `infracloud pool` (SQLite), label "
          f"{LABEL} = {FLAVOR}, host-key-checking off, status-interval {interval}")
    print()
    print(f"  {'':52} {'p50 ms':>9} {'p99 ms':>9} {'ratio p50':>9} {'ratio p99':>9}")
    print(f"(1) the clouds alone, openstacksdk, {args.baseline} one at a time (get_server "
          f"every 10 ms)")
    print(row("create -> ACTIVE (the baseline)", to_active, to_active))
    print(row("delete -> gone", to_gone, to_active))
    print(f"(2) the pool idle, room free, min-ready 0: {args.sequential} requests one at a time")
    print(row("request -> fulfilled, client (POST to ?wait answer)", seq.client, to_active))
    print(row("request -> fulfilled, pool (created_at -> state_at)", seq.server, to_active))
    print(row("  request created -> node created (launch starts)", seq.queued, None))
    print(row("  node created_at -> ready_at (create, ACTIVE seen)", seq.node_launch, None))
    print(row("  node ready_at -> request fulfilled", seq.assign, None))
    server_sat = [iso(r["state_at"]) - sat.go_wall for r in sat.fulfilled]
    nodes = [r["nodes"][0] for r in sat.fulfilled if r["nodes"]]
    queued = [iso(n["created_at"]) - sat.go_wall for n in nodes]
    launch = [iso(n["ready_at"]) - iso(n["created_at"]) for n in nodes]
    print(f"(3) saturation: {sat.requests} requests ({args.requestors} requestors) queued while "
          f"drained, then undrained; max-servers {args.max_servers} x {len(SITES)}, "
          f"{args.waiters} waiter threads")
    print(row("undrain -> fulfilled, pool (state_at)", server_sat, to_active))
    print(row("undrain -> fulfilled, client (?wait answer)", sat.client, to_active))
    print(row("  undrain -> node created (waiting for room)", queued, None))
    print(row("  node created_at -> ready_at (create, ACTIVE seen)", launch, None))
    print(row("  fulfilled -> release sent by the client", sat.release_lag, None))
    print(row("API: POST /requests, drained (4 posters, long-polls)", sat.post, None))
    print(row("API: POST /nodes/{id}/release, while launching", sat.release_call, None))
    print(row("API: GET /providers, while launching", sat.providers_call, None))
    print()
    per_min = sat.launches / sat.wall_s * 60 if sat.wall_s else 0.0
    before, after = churned / churn_s * 60, churned2 / churn2_s * 60
    direct_per_min = (before + after) / 2
    print(f"  {'':52} {'per min':>9} {'ratio':>9}")
    print(f"  {'the clouds alone: direct create..gone, mean':52} {direct_per_min:9.0f} "
          f"{1:9.2f}   ({args.direct_clients} client threads)")
    print(f"  {'  before (2)':52} {before:9.0f} {before / direct_per_min:9.2f}   "
          f"({churned} in {churn_s:.1f} s)")
    print(f"  {'  after (3)':52} {after:9.0f} {after / direct_per_min:9.2f}   "
          f"({churned2} in {churn2_s:.1f} s)")
    print(f"  {'pool at saturation: nodes launched (ready)':52} {per_min:9.0f} "
          f"{per_min / direct_per_min:9.2f}   ({sat.launches} in {sat.wall_s:.1f} s)")
    print()
    intake = len(sat.post) / sat.submit_s if sat.submit_s else 0.0
    print(f"  requests taken by the API (drained, {args.waiters} long-polls)   {intake:8.1f} "
          f"per s ({len(sat.post)} in {sat.submit_s:.1f} s)")
    print(f"  wall time, undrain to the last fulfilment seen    {sat.wall_s:8.1f} s "
          f"(every node deleted {sat.drain_s:.1f} s after)")
    print(f"  requests fulfilled / failed                        {len(sat.fulfilled):5d} / "
          f"{len(sat.failed)}" + (f"  first failure: {sat.failed[0]['reason']}"
                                  if sat.failed else ""))
    share = fairness(sat)
    print("  share of the first half of the fulfilments        " + ", ".join(
        f"{k} {v:.1%}" for k, v in share.items()) + f" (fair: {1 / args.requestors:.1%} each)")
    if sat.samples:
        slots = args.max_servers * len(SITES)
        mean: dict[str, float] = defaultdict(float)
        for sample in sat.samples:
            for counts in sample.values():
                for k, v in counts.items():
                    mean[k] += v / len(sat.samples)
        print(f"  mean of {slots} slots (sampled every 0.5 s)           " + ", ".join(
            f"{k} {mean[k]:.1f}" for k in ("building", "ready", "in_use", "used",
                                             "deleting")) +
              f"; nodes {mean['nodes']:.1f}")
    print("  cores used during (3)                              " + ", ".join(
        f"{k} {v:.2f}" for k, v in sat.cores.items()))
    print("  the machine's CPU time during (3)                  " + ", ".join(
        f"{k} {v:.0%}" for k, v in sat.machine.items()) + " (steal: taken by the hypervisor)")
    print(f"  pool log warnings/errors: {log_count}" +
          (f" (first: {log_first[0][:200]})" if log_first else ""))
    for e in sat.errors[:5]:
        print(f"  client error: {e}")
    print()
    print(f"README: pool, {sat.requests} requests over 2 fake-driver sites (max-servers "
          f"{args.max_servers} each): {per_min:.0f} nodes/min ({per_min / direct_per_min:.2f} x "
          f"the clouds' direct churn), request -> fulfilled p50 {pct(server_sat, 50):.1f} s / "
          f"p99 {pct(server_sat, 99):.1f} s from the undrain, {len(sat.failed)} failed, API "
          f"intake {intake:.0f} requests/s; idle request -> "
          f"fulfilled p50 {ms(seq.client, 50):.0f} ms / p99 {ms(seq.client, 99):.0f} ms = "
          f"{ms(seq.client, 50) / ms(to_active, 50):.1f} x / "
          f"{ms(seq.client, 99) / ms(to_active, 99):.1f} x the cloud's own create -> ACTIVE "
          f"({ms(to_active, 50):.0f} / {ms(to_active, 99):.0f} ms); total run "
          f"{time.monotonic() - t_start:.0f} s")
    ok = not sat.failed and not sat.errors and len(sat.fulfilled) == sat.requests
    if not ok:
        print("FAILED: every request must be fulfilled")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="saturation requests")
    parser.add_argument("--requestors", type=int, default=4)
    parser.add_argument("--waiters", type=int, default=16,
                        help="client threads long-polling and releasing (default 16)")
    parser.add_argument("--max-servers", type=int, default=50, help="per provider")
    parser.add_argument("--sequential", type=int, default=50,
                        help="requests one at a time, pool idle (default 50)")
    parser.add_argument("--baseline", type=int, default=50,
                        help="direct creates one at a time (default 50)")
    parser.add_argument("--direct-clients", type=int, default=16,
                        help="threads of the direct churn (default 16)")
    parser.add_argument("--direct-seconds", type=float, default=15.0)
    parser.add_argument("--hosts", type=int,
                        help="fake hosts per site (default: enough for max-servers)")
    parser.add_argument("--status-interval", type=float,
                        help="the providers' status-interval (default: the pool's, 1 s)")
    args = parser.parse_args()
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
