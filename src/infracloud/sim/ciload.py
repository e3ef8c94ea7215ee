"""A synthetic CI workload for the demo (`infracloud demo --ci-load JOBS_PER_MIN`): jobs
arrive at a steady rate; each asks the pool for a node, logs in over SSH (pinning the host
keys the pool recorded), runs a command, holds the node a few seconds and releases it. A live
line shows the throughput and how long jobs waited for their node."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infracloud.clients.http import client

log = logging.getLogger(__name__)
MAX_JOBS = 200  # jobs in flight at once; more arrivals are counted as dropped


@dataclass
class Tally:
    started: int = 0
    done: int = 0
    failed: int = 0
    dropped: int = 0
    running: int = 0
    waiting: int = 0
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    finished_at: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    last_error: str = ""


class CiLoad:
    def __init__(self, pool_url: str, token: Callable[[], str], label: str, jobs_per_min: float,
                 *, verify: Any = True, key: Path | None = None, command: str = "uname -a",
                 hold: float = 5.0) -> None:
        if jobs_per_min <= 0:
            raise ValueError("jobs per minute must be more than 0")
        self.url = pool_url.rstrip("/") + "/pool/v1"
        self.token = token
        self.label = label
        self.interval = 60.0 / jobs_per_min
        self.jobs_per_min = jobs_per_min
        self.verify = verify
        self.key = key
        self.command = command
        self.hold = hold
        self.tally = Tally()
        self.began = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.Semaphore(MAX_JOBS)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._arrivals, name="ci-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _arrivals(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self._slots.acquire(blocking=False):
                threading.Thread(target=self._job, name="ci-job", daemon=True).start()
            else:
                with self._lock:
                    self.tally.dropped += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _count(self, **changes: int) -> None:
        with self._lock:
            for key, delta in changes.items():
                setattr(self.tally, key, getattr(self.tally, key) + delta)

    def _job(self) -> None:
        self._count(started=1, running=1, waiting=1)
        t0 = time.monotonic()
        waiting = True
        try:
            with client("ciload", verify=self.verify, timeout=90,
                        headers={"X-Auth-Token": self.token()}) as http:
                r = http.post(f"{self.url}/requests", json={"labels": [self.label]})
                r.raise_for_status()
                req = r.json()["request"]
                while req["state"] not in ("fulfilled", "failed", "cancelled"):
                    if self._stop.is_set():
                        http.delete(f"{self.url}/requests/{req['id']}")
                        return
                    r = http.get(f"{self.url}/requests/{req['id']}", params={"wait": 30})
                    r.raise_for_status()
                    req = r.json()["request"]
                self._count(waiting=-1)
                waiting = False
                if req["state"] != "fulfilled":
                    raise RuntimeError(f"request {req['id']} {req['state']}: {req['reason']}")
                with self._lock:
                    self.tally.waits.append(time.monotonic() - t0)
                node = req["nodes"][0]
                try:
                    if self.key is not None:
                        self._ssh(node)
                    self._stop.wait(self.hold)
                finally:
                    http.post(f"{self.url}/nodes/{node['id']}/release")
            with self._lock:
                self.tally.done += 1
                self.tally.finished_at.append(time.monotonic())
        except Exception as exc:  # a job that fails is counted, the load goes on
            with self._lock:
                self.tally.failed += 1
                self.tally.last_error = str(exc)[:200]
            log.warning("ci-load job failed: %s", exc)
        finally:
            self._count(running=-1, **({"waiting": -1} if waiting else {}))
            self._slots.release()

    def _ssh(self, node: dict[str, Any]) -> None:
        from infracloud.pool.client import run_on_node

        if not run_on_node(node, self.key, self.command).strip():
            raise RuntimeError(f"{self.command!r} printed nothing")

    def line(self) -> str:
        """One status line (no word a log reader might take for the demo's own status)."""
        with self._lock:
            t = self.tally
            now = time.monotonic()
            minute = sum(1 for at in t.finished_at if now - at <= 60)
            span = min(60.0, max(1.0, now - self.began))
            waits = sorted(t.waits)
        rate = minute * 60.0 / span
        p50 = f"{statistics.median(waits):.1f}" if waits else "-"
        p95 = f"{waits[int(0.95 * (len(waits) - 1))]:.1f}" if waits else "-"
        text = (f"ci-load: {self.jobs_per_min:g} jobs/min asked, {rate:.1f}/min done | "
                f"running {t.running} (waiting for a node {t.waiting}) | wait p50 {p50} s, "
                f"p95 {p95} s | done {t.done}, failed {t.failed}")
        if t.dropped:
            text += f", dropped {t.dropped}"
        if t.failed and t.last_error:
            text += f" | last error: {t.last_error}"
        return text


def show(load: CiLoad, stop: threading.Event, terminal: bool,
         echo: Callable[[str], None]) -> None:
    """A live status line on a terminal (rich), else a line every 10 s."""
    if terminal:
        from rich.console import Console
        from rich.live import Live

        with Live(load.line(), console=Console(), refresh_per_second=2,
                  transient=False) as live:
            while not stop.wait(1.0):
                live.update(load.line())
        return
    while not stop.wait(10.0):
        echo(load.line())
