"""Compute benchmark: a site filled to the bound its hardware allows, create/delete churn as a
ratio to an empty endpoint of the same controller, scheduler decision time at 10,000 hosts,
and the controller's memory.

    .venv/bin/python bench/compute.py [--quick] [--clients 8] [--churn-seconds 30] ...

(a) Fill: a real controller on 127.0.0.1 (plain HTTP, SQLite, no quota) and 148 fake compute
    hosts, the seeds' "vanilla" (48 x 24 vCPU) and "chocolate" (100 x 32 vCPU) machines, each
    96 GiB and 1.8 TiB: real agents with the fake driver, on threads of this process, talking
    HTTP to the controller. ci.8g servers are created through the compute API until the
    answer is "No valid host"; the servers that reached ACTIVE must equal the bound computed
    from the hardware (48*3 + 100*4 = 544 with no overcommit): by scheduler.capacity() over
    the controller's host rows, from the agents' hardware, and from GET os-hypervisors/detail.
(b) Churn: half of the servers deleted, then create -> ACTIVE -> delete -> gone cycles from
    several client threads for a fixed time, against GET /healthz of the same controller
    (measured before and after; their mean is the baseline). Also the rate of GET
    /servers/{id}, what every client waiting for a server polls.
(c) Scheduler: scheduler.claim() in-process on a SQLite file holding 10,000 (and 148) hosts,
    each claim in its own write transaction, against an empty write transaction.
(d) The controller's resident memory after the fill and after the churn.

The client, the 148 agents and the controller share the machine's cores; only the ratios are
meant to be compared between runs. The servers' provider network (10.200.0.0/16) is address
bookkeeping only: the fake driver opens no sockets and nothing is sent to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import logging
import math
import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select, text, update

from common import admin_token, measure, start_controller
from infracloud.agent.hosts import AgentThreads, host_info, make_driver
from infracloud.agent.runner import Agent, HostInfo
from infracloud.compute import scheduler
from infracloud.core.clock import utcnow
from infracloud.store import Database
from infracloud.store.models import Host

SERVERS = "/compute/v2.1/servers"
FLAVOR = "ci.8g"
CI_8G = scheduler.Request(vcpus=8, ram_mb=8192, disk_gb=80)
RAM_MB = 96 * 1024  # 98304 MiB
DISK_GB = 1843  # 1.8 TiB
SITES = (("vanilla", 24), ("chocolate", 32))  # name, vCPUs of its machines
DOWN_AFTER = 300.0
NO_VALID_HOST = "No valid host"

FULL = {"vanilla": 48, "chocolate": 100, "clients": 8, "churn_seconds": 30.0,
        "baseline_seconds": 5.0, "sched_hosts": 10_000, "sched_requests": 2000,
        "poll_wait": 20.0}
QUICK = {"vanilla": 4, "chocolate": 6, "clients": 4, "churn_seconds": 4.0,
         "baseline_seconds": 2.0, "sched_hosts": 1000, "sched_requests": 200,
         "poll_wait": 5.0}

log = logging.getLogger("bench.compute")


# ---- small helpers --------------------------------------------------------------------------

def status_kib(pid: int, field_name: str) -> int:
    """A memory figure (VmRSS, VmHWM) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used by the controller and by this process between start() and stop()."""

    def __init__(self, controller_pid: int) -> None:
        self.pids = (controller_pid, os.getpid())
        self.start()

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = [cpu_seconds(p) for p in self.pids]

    def stop(self) -> tuple[float, float]:
        elapsed = time.monotonic() - self.t0
        ctl, me = ((cpu_seconds(p) - c) / elapsed for p, c in zip(self.pids, self.c0,
                                                                    strict=True))
        return ctl, me


def check_port_free(port: int) -> None:
    """start_controller() would take another controller on the same port for its own."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"127.0.0.1:{port} is in use; choose another --port") from None


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = math.ceil(p / 100 * len(ordered)) - 1
    return ordered[min(max(rank, 0), len(ordered) - 1)]


def per_host_bound(vcpus: int, ram_mb: int, disk_gb: int, req: scheduler.Request) -> int:
    """Servers of size `req` one empty host holds, no overcommit, by plain arithmetic."""
    return min(vcpus // req.vcpus, ram_mb // req.ram_mb, disk_gb // req.disk_gb)


def parallel(items: Iterable[Any], clients: int, fn: Callable[[httpx.Client, Any], None],
             base: str, headers: dict[str, str]) -> None:
    """fn(client, item) for every item, from `clients` threads; the first error is raised."""
    todo = iter(list(items))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            while not errors:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                try:
                    fn(c, item)
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def wait_server(c: httpx.Client, server_id: str, want: str, timeout: float = 120) -> None:
    """Polls GET /servers/{id} until its status is `want` ("GONE": until 404)."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        r = c.get(f"{SERVERS}/{server_id}")
        if r.status_code == 404 and want == "GONE":
            return
        r.raise_for_status()
        server = r.json()["server"]
        if server["status"] == want:
            return
        if server["status"] == "ERROR":
            raise RuntimeError(f"server {server_id} went to ERROR: {server.get('fault')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server {server_id} is still {server['status']} after "
                               f"{timeout:.0f} s (waiting for {want})")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def create_server(c: httpx.Client, name: str, image_id: str) -> str:
    r = c.post(SERVERS, json={"server": {"name": name, "imageRef": image_id,
                                         "flavorRef": FLAVOR}})
    if r.status_code != 202:
        raise RuntimeError(f"create answered {r.status_code}: {r.text[:300]}")
    return str(r.json()["server"]["id"])


def delete_server(c: httpx.Client, server_id: str) -> None:
    r = c.delete(f"{SERVERS}/{server_id}")
    if r.status_code not in (204, 404):
        raise RuntimeError(f"delete answered {r.status_code}: {r.text[:300]}")


def remove_server(c: httpx.Client, server_id: str) -> None:
    delete_server(c, server_id)
    wait_server(c, server_id, "GONE")


def request_rate(base: str, seconds: float, clients: int, path: str,
                 headers: dict[str, str] | None = None) -> float:
    """GETs of `path` per second from `clients` threads (each answer must be 200)."""
    return measure(base, seconds, clients, lambda c, _i: c.get(path), 200, headers)


class WarningCounter(logging.Handler):
    """Counts (and keeps the first few of) the agents' warnings and errors."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(record.getMessage())


# ---- (a) fill -------------------------------------------------------------------------------

@dataclass
class Fill:
    active: int = 0
    no_host: int = 0
    other_errors: list[str] = field(default_factory=list)
    active_ids: list[str] = field(default_factory=list)
    error_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bound_rows: int = 0
    bound_list: int = 0
    bound_api: int = -1  # from GET os-hypervisors/detail; -1: the API has none
    running_api: int = -1
    hosts_at_bound: int = 0
    hosts: int = 0
    hosts_over: int = 0


def fill(base: str, headers: dict[str, str], image_id: str, clients: int) -> Fill:
    """Creates ci.8g servers until one answer is ERROR "No valid host"; then waits for the
    others to be ACTIVE."""
    out = Fill()
    stop = threading.Event()
    names = itertools.count()
    lock = threading.Lock()
    created: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            while not stop.is_set():
                try:
                    sid = create_server(c, f"fill-{next(names)}", image_id)
                    server = c.get(f"{SERVERS}/{sid}").json()["server"]
                except (httpx.HTTPError, RuntimeError) as exc:
                    out.other_errors.append(str(exc))
                    stop.set()
                    return
                with lock:
                    if server["status"] != "ERROR":
                        created.append(sid)
                        continue
                    out.error_ids.append(sid)
                    message = (server.get("fault") or {}).get("message", "")
                    if NO_VALID_HOST in message:
                        out.no_host += 1
                    else:
                        out.other_errors.append(f"{sid}: {message}")
                stop.set()

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # every server the site took must become ACTIVE
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
        while True:
            listed = c.get(f"{SERVERS}/detail").json()["servers"]
            status = {s["id"]: s["status"] for s in listed}
            pending = [i for i in created if status.get(i) != "ACTIVE"]
            failed = [i for i in created if status.get(i) == "ERROR"]
            if failed:
                out.other_errors.append(f"{len(failed)} placed servers went to ERROR")
                break
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    out.seconds = time.monotonic() - started
    out.active_ids = [i for i in created if status.get(i) == "ACTIVE"]
    out.active = len(out.active_ids)
    if pending:
        out.other_errors.append(f"{len(pending)} servers never became ACTIVE")
    return out


def check_bound(out: Fill, db_url: str, infos: list[HostInfo], base: str,
                headers: dict[str, str]) -> None:
    """The bound from the controller's host rows (scheduler.capacity), from the hardware the
    agents announced and from the hosts the compute API lists (os-hypervisors), and how many
    hosts hold exactly their own bound."""
    r = httpx.get(f"{base}/compute/v2.1/os-hypervisors/detail", headers=headers, timeout=60)
    if r.status_code == 200:
        listed = r.json()["hypervisors"]
        out.bound_api = sum(per_host_bound(h["vcpus"], h["memory_mb"], h["local_gb"], CI_8G)
                            for h in listed)
        out.running_api = sum(h["running_vms"] for h in listed)
    db = Database(db_url, pool_size=1)
    try:
        with db.read() as s:
            hosts = list(s.scalars(select(Host)))
    finally:
        db.dispose()
    out.hosts = len(hosts)
    out.bound_rows = scheduler.capacity(hosts, CI_8G)
    out.bound_list = sum(per_host_bound(h.vcpus, h.ram_mb, h.disk_gb, CI_8G) for h in infos)
    for h in hosts:
        placed = h.used_vcpus // CI_8G.vcpus
        own = scheduler.capacity([h], CI_8G)
        out.hosts_at_bound += placed == own
        out.hosts_over += placed > own


# ---- (b) churn ------------------------------------------------------------------------------

@dataclass
class Churn:
    cycles: int
    seconds: float
    to_active: list[float]
    to_gone: list[float]

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds


def churn(base: str, headers: dict[str, str], image_id: str, clients: int,
          seconds: float) -> Churn:
    stop = time.monotonic() + seconds
    to_active: list[float] = []
    to_gone: list[float] = []
    errors: list[BaseException] = []
    names = itertools.count()

    def worker() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            while time.monotonic() < stop and not errors:
                try:
                    t0 = time.monotonic()
                    sid = create_server(c, f"churn-{next(names)}", image_id)
                    wait_server(c, sid, "ACTIVE")
                    t1 = time.monotonic()
                    delete_server(c, sid)
                    wait_server(c, sid, "GONE")
                    t2 = time.monotonic()
                except (httpx.HTTPError, RuntimeError) as exc:
                    errors.append(exc)
                    return
                to_active.append(t1 - t0)
                to_gone.append(t2 - t1)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"churn failed: {errors[0]}")
    return Churn(len(to_active), time.monotonic() - started, to_active, to_gone)


# ---- (c) scheduler in-process ---------------------------------------------------------------

@dataclass
class Sched:
    hosts: int
    requests: int
    claim: list[float]  # seconds: one claim in its own write transaction, commit included
    claim_only: list[float]  # seconds: scheduler.claim() alone, inside the transaction
    empty: list[float]  # seconds: a write transaction with nothing in it
    begin_commit: list[float]  # seconds: BEGIN IMMEDIATE; SELECT 1; COMMIT
    resets: int


def host_rows(count: int, now: dt.datetime) -> list[dict[str, Any]]:
    """`count` hosts in the sites' proportion (48 of 24 vCPUs to 100 of 32), all up."""
    small = SITES[0][1]
    big = SITES[1][1]
    rows = []
    for n in range(count):
        vcpus = small if n % 148 < 48 else big
        rows.append({
            "id": uuid.uuid4().hex, "name": f"sched-{n:05d}", "availability_zone": "nova",
            "driver": "fake", "vcpus": vcpus, "ram_mb": RAM_MB, "disk_gb": DISK_GB,
            "reserved_vcpus": 0, "reserved_ram_mb": 0, "reserved_disk_gb": 0,
            "cpu_ratio": 1.0, "ram_ratio": 1.0, "disk_ratio": 1.0, "used_vcpus": 0,
            "used_ram_mb": 0, "used_disk_gb": 0, "enabled": True, "disabled_reason": None,
            "state": "up", "last_heartbeat": now, "down_since": None, "generation": 0,
            "created_at": now})
    return rows


def sched_bench(folder: Path, hosts: int, requests: int, warmup: int = 20) -> Sched:
    db = Database(f"sqlite:///{folder / f'sched-{hosts}.db'}", pool_size=2)
    try:
        db.migrate()
        with db.write() as s:
            s.execute(insert(Host), host_rows(hosts, utcnow()))
        out = Sched(hosts, requests, [], [], [], [], 0)
        reset = (update(Host).values(used_vcpus=0, used_ram_mb=0, used_disk_gb=0)
                 .execution_options(synchronize_session=False))
        done = -warmup
        while done < requests:
            # the baselines, interleaved with the claims so all see the same conditions
            t0 = time.perf_counter()
            with db.write():
                pass
            t1 = time.perf_counter()
            with db.write() as s:
                s.execute(text("SELECT 1"))
            t2 = time.perf_counter()
            with db.write() as s:
                t3 = time.perf_counter()
                host = scheduler.claim(s, CI_8G, now=utcnow(), down_after=DOWN_AFTER)
                t4 = time.perf_counter()
            t5 = time.perf_counter()
            if host is None:  # a small site is full: empty it (untimed) and go on
                out.resets += 1
                with db.write() as s:
                    s.execute(reset)
                continue
            if done >= 0:
                out.empty.append(t1 - t0)
                out.begin_commit.append(t2 - t1)
                out.claim.append(t5 - t2)
                out.claim_only.append(t4 - t3)
            done += 1
        return out
    finally:
        db.dispose()


# ---- the run --------------------------------------------------------------------------------

def upload_image(base: str, headers: dict[str, str]) -> str:
    r = httpx.post(base + "/image/v2/images", headers=headers, json={
        "name": "bench-compute", "disk_format": "raw", "container_format": "bare"})
    r.raise_for_status()
    image_id = str(r.json()["id"])
    r = httpx.put(f"{base}/image/v2/images/{image_id}/file", content=os.urandom(64 * 1024),
                  headers={**headers, "Content-Type": "application/octet-stream"})
    r.raise_for_status()
    image = httpx.get(f"{base}/image/v2/images/{image_id}", headers=headers).json()
    if image["status"] != "active":
        raise RuntimeError(f"the image is {image['status']}, not active")
    return image_id


def start_agents(base: str, token: str, folder: Path, infos: list[HostInfo],
                 poll_wait: float) -> AgentThreads:
    agents = AgentThreads()
    for info in infos:
        workdir = folder / "hosts" / info.name
        agent = Agent(base, token, make_driver("fake", workdir, boot_delay=0), info, workdir,
                      poll_wait=poll_wait)
        agents.start(agent)
    deadline = time.monotonic() + 120
    while any(a.host_id is None for a in agents.agents):
        if time.monotonic() > deadline:
            raise RuntimeError("the agents did not all register within 120 s")
        time.sleep(0.1)
    return agents


def stop_all(agents: AgentThreads | None, proc: subprocess.Popen[bytes] | None,
             grace: float) -> None:
    """Agents first (their long-polls end at the latest `poll_wait` later), the controller
    with them; no agent warnings about a controller that is going away."""
    logging.getLogger("infracloud").setLevel(logging.CRITICAL)
    if agents is not None:
        for a in agents.agents:
            a.stop()
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if agents is not None:
        agents.stop(timeout=5)


@dataclass
class Memory:
    rss_mib: float
    hwm_mib: float


def memory(pid: int) -> Memory:
    return Memory(status_kib(pid, "VmRSS") / 1024, status_kib(pid, "VmHWM") / 1024)


def run(args: argparse.Namespace) -> int:
    infos = [host_info(f"{site}-{n:03d}", vcpus, RAM_MB, DISK_GB)
             for site, vcpus in SITES for n in range(getattr(args, site))]
    warnings = WarningCounter()
    logging.getLogger("infracloud").addHandler(warnings)
    logging.getLogger("infracloud").setLevel(logging.WARNING)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-compute-") as tmp:
        folder = Path(tmp)
        token_file = folder / "agent-token"
        agent_token = secrets.token_urlsafe(32)
        token_file.write_text(agent_token + "\n")
        proc = None
        agents = None
        base = f"http://127.0.0.1:{args.port}"
        check_port_free(args.port)
        try:
            proc = start_controller(folder, args.port, compute={
                "agent_token_file": str(token_file),
                "network": {"cidr": "10.200.0.0/16"},
                "quota": {"instances": -1, "cores": -1, "ram_mb": -1, "ports": -1},
                "host_down_after": DOWN_AFTER, "instance_error_after": DOWN_AFTER})
            headers = {"X-Auth-Token": admin_token(base)}
            image_id = upload_image(base, headers)
            t0 = time.monotonic()
            agents = start_agents(base, agent_token, folder, infos, args.poll_wait)
            register_s = time.monotonic() - t0
            print(f"{len(infos)} agents registered in {register_s:.1f} s; filling ...",
                  flush=True)

            meter = CpuMeter(proc.pid)
            filled = fill(base, headers, image_id, args.clients)
            cpu_fill = meter.stop()
            check_bound(filled, f"sqlite:///{folder / 'bench.db'}", infos, base, headers)
            mem_fill = memory(proc.pid)

            # make room: the servers that failed, and all but `keep` of the others
            drop = filled.active_ids[:int(len(filled.active_ids) * (1 - args.keep))]
            if filled.bound_rows - (filled.active - len(drop)) < args.clients:
                raise SystemExit("the churn needs a free place per client thread: lower "
                                 "--keep or --clients, or add hosts")
            print(f"fill done in {filled.seconds:.1f} s; deleting {len(drop)} servers for the "
                  f"churn ...", flush=True)
            parallel(filled.error_ids + drop, args.clients, remove_server, base, headers)

            baseline = request_rate(base, args.baseline_seconds, args.clients, "/healthz")
            kept_ids = filled.active_ids[len(drop):]
            show = request_rate(base, args.baseline_seconds, args.clients,
                                f"{SERVERS}/{kept_ids[-1]}", headers) if kept_ids else 0.0
            print(f"churning for {args.churn_seconds:g} s ...", flush=True)
            meter.start()
            churned = churn(base, headers, image_id, args.clients, args.churn_seconds)
            cpu_churn = meter.stop()
            baseline_after = request_rate(base, args.baseline_seconds, args.clients,
                                          "/healthz")
            mem_churn = memory(proc.pid)
            bench_rss = status_kib(os.getpid(), "VmRSS") / 1024
        finally:
            t0 = time.monotonic()
            stop_all(agents, proc, args.poll_wait + 10)
            stop_s = time.monotonic() - t0
        agent_warnings = warnings.count
        print(f"controller and agents stopped in {stop_s:.1f} s; scheduler in-process ...",
              flush=True)
        scheds = [sched_bench(folder, n, args.sched_requests) for n in
                  dict.fromkeys((args.sched_hosts, len(infos)))]

    # ---- the report -----------------------------------------------------------------------
    ok = (not filled.other_errors and filled.no_host > 0 and filled.active ==
          filled.bound_rows == filled.bound_list and filled.hosts_at_bound == len(infos)
          and filled.bound_api in (-1, filled.active))
    cores = os.cpu_count()
    sizes = " + ".join(f"{getattr(args, site)} x {vcpus} vCPU ({site})" for site, vcpus in SITES)
    print()
    print(f"compute benchmark: {cores} cores, one controller (plain HTTP, SQLite), "
          f"{args.clients} client threads, flavor {FLAVOR} (8 vCPU, 8192 MiB, 80 GB)")
    print(f"hosts: {sizes}; each {RAM_MB} MiB, {DISK_GB} GiB; fake driver, agents on threads "
          f"of the client process (long-poll {args.poll_wait:g} s)")
    print()
    print("(a) fill until \"No valid host\"")
    print(f"  servers ACTIVE                               {filled.active:8d}")
    print(f"  bound: scheduler.capacity(controller's rows) {filled.bound_rows:8d}")
    print(f"  bound: from the agents' hardware             {filled.bound_list:8d}")
    if filled.bound_api >= 0:
        print(f"  bound: from GET os-hypervisors/detail        {filled.bound_api:8d} "
              f"(running_vms: {filled.running_api})")
    print(f"  hosts holding exactly their own bound        {filled.hosts_at_bound:4d}/"
          f"{filled.hosts} (over: {filled.hosts_over})")
    print(f"  creates answered ERROR \"No valid host\"       {filled.no_host:8d}")
    print(f"  fill: first create to all ACTIVE             {filled.seconds:8.1f} s "
          f"({filled.active / filled.seconds:.1f} servers/s)")
    print(f"  cores used: controller {cpu_fill[0]:.2f}, client process with the agents "
          f"{cpu_fill[1]:.2f}")
    print(f"  result: {'OK, the bound is reached exactly' if ok else 'MISMATCH'}")
    for e in filled.other_errors[:5]:
        print(f"  error: {e}")
    print()
    kept = filled.active - len(drop)
    print(f"(b) churn: create -> ACTIVE -> delete -> gone, {args.churn_seconds:g} s, "
          f"{kept} of {filled.active} servers kept")
    empty = (baseline + baseline_after) / 2
    print(f"  {'':40} {'per s':>10} {'ratio':>8}")
    print(f"  {'GET /healthz, mean (the baseline)':40} {empty:10.1f} {1:8.3f}")
    print(f"  {'  before the churn':40} {baseline:10.1f} {baseline / empty:8.3f}")
    print(f"  {'  after the churn':40} {baseline_after:10.1f} {baseline_after / empty:8.3f}")
    print(f"  {'GET /servers/{id} (admin, as a poller)':40} {show:10.1f} {show / empty:8.3f}")
    print(f"  {'servers through a full cycle':40} {churned.rate:10.2f} "
          f"{churned.rate / empty:8.4f}")
    print(f"  cycles: {churned.cycles}; create -> ACTIVE p50 {pct(churned.to_active, 50) * 1e3:.0f}"
          f" ms, p99 {pct(churned.to_active, 99) * 1e3:.0f} ms; delete -> gone p50 "
          f"{pct(churned.to_gone, 50) * 1e3:.0f} ms, p99 {pct(churned.to_gone, 99) * 1e3:.0f} ms")
    print(f"  cores used: controller {cpu_churn[0]:.2f}, client process with the agents "
          f"{cpu_churn[1]:.2f}")
    print()
    print(f"(c) scheduler.claim() in-process, SQLite file, {FLAVOR}, one write transaction "
          f"each; baseline: BEGIN IMMEDIATE; SELECT 1; COMMIT")
    print(f"  {'hosts':>6} {'claims':>7} {'claim+commit p50/p99 ms':>24} "
          f"{'claim alone p50/p99':>20} {'baseline p50/p99':>17} {'ratio p50/p99':>14}")
    for r in scheds:
        base50, base99 = pct(r.begin_commit, 50), pct(r.begin_commit, 99)
        c50, c99 = pct(r.claim, 50), pct(r.claim, 99)
        print(f"  {r.hosts:6d} {r.requests:7d} {c50 * 1e3:13.2f} /{c99 * 1e3:7.2f} "
              f"{pct(r.claim_only, 50) * 1e3:11.2f} /{pct(r.claim_only, 99) * 1e3:6.2f} "
              f"{base50 * 1e3:8.3f} /{base99 * 1e3:6.3f} {c50 / base50:7.1f} /{c99 / base99:5.1f}"
              + (f"  (site emptied {r.resets}x)" if r.resets else ""))
    r = scheds[0]
    print(f"  an empty db.write() with no statement never touches SQLite: p50 "
          f"{pct(r.empty, 50) * 1e3:.3f} ms")
    print()
    print("(d) controller memory (MiB)        VmRSS    VmHWM")
    print(f"  after the fill                {mem_fill.rss_mib:9.1f} {mem_fill.hwm_mib:8.1f}")
    print(f"  after the churn               {mem_churn.rss_mib:9.1f} {mem_churn.hwm_mib:8.1f}")
    print(f"  (the client process with its {len(infos)} agents: {bench_rss:.1f} MiB)")
    print()
    print(f"agent warnings: {agent_warnings}"
          + (f" (first: {warnings.first[0]})" if warnings.first else "")
          + f"; total run time {time.monotonic() - t_start:.0f} s")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: few hosts, seconds instead of minutes")
    parser.add_argument("--vanilla", type=int, help="24-vCPU hosts (default 48)")
    parser.add_argument("--chocolate", type=int, help="32-vCPU hosts (default 100)")
    parser.add_argument("--clients", type=int, help="client threads (default 8)")
    parser.add_argument("--churn-seconds", type=float, help="default 30")
    parser.add_argument("--baseline-seconds", type=float, help="default 5")
    parser.add_argument("--keep", type=float, default=0.5,
                        help="share of the filled servers kept during the churn (default 0.5)")
    parser.add_argument("--sched-hosts", type=int, help="default 10000")
    parser.add_argument("--sched-requests", type=int, help="claims timed (default 2000)")
    parser.add_argument("--poll-wait", type=float, help="the agents' long-poll (default 20 s)")
    parser.add_argument("--port", type=int, default=18970)
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
