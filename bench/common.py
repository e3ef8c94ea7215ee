"""What the benchmarks share: a real controller process on 127.0.0.1 and an admin token."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests/
from tests.servers import free_port, stop_process

__all__ = ["free_port", "stop_process"]

BIN = Path(sys.executable).parent
PASSWORD = "bench-admin-password"


def start_controller(folder: Path, port: int, **settings: Any) -> subprocess.Popen[bytes]:
    """Plain HTTP, SQLite in `folder`, bootstrapped admin; extra settings merged in."""
    (folder / "pw").write_text(PASSWORD)
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "database": {"url": f"sqlite:///{folder / 'bench.db'}"},
        "images": {"store_path": str(folder / "images")},
        "bootstrap": {"admin_password_file": str(folder / "pw")},
        "logging": {"access_log": False, "level": "warning"},
    }
    config.update(settings)
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([str(BIN / "infracloud"), "controller", "--config",
                             str(folder / "c.yaml")], stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("controller did not start")


def auth_body(method: str = "password", token: str = "") -> dict[str, Any]:
    identity: dict[str, Any] = {"methods": [method]}
    if method == "password":
        identity["password"] = {"user": {"name": "admin", "domain": {"id": "default"},
                                         "password": PASSWORD}}
    else:
        identity["token"] = {"id": token}
    return {"auth": {"identity": identity,
                     "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}


def admin_token(base: str) -> str:
    r = httpx.post(base + "/identity/v3/auth/tokens", json=auth_body())
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def measure(base: str, seconds: float, clients: int,
            request: Callable[[httpx.Client, int], httpx.Response], expect: int = 200,
            headers: dict[str, str] | None = None) -> float:
    """Requests per second from `clients` threads, each with its own keep-alive client;
    every answer must have the status `expect`."""
    stop = time.monotonic() + seconds
    counts = [0] * clients
    errors: list[str] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            for i in itertools.count():
                if time.monotonic() >= stop:
                    return
                r = request(c, i)
                if r.status_code != expect:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return
                counts[n] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"unexpected answer: {errors[0]}")
    return sum(counts) / (time.monotonic() - started)
