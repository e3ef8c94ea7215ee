"""What the benchmarks share: a real controller process on 127.0.0.1 and an admin token."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

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
