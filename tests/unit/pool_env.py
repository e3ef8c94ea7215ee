"""A pool service on fake clouds for the engine's unit tests: real engine, real database,
in-memory providers (pool.fakecloud) and a fake SSH prober. `Harness.until` ticks the engine
until a condition holds."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from infracloud.pool.config import PoolConfig, Provider
from infracloud.pool.fakecloud import FakeCloud
from infracloud.pool.probe import FakeProber
from infracloud.pool.records import PoolStore
from infracloud.pool.service import PoolService
from infracloud.pool.stats import Stats
from infracloud.store import Database
from tests.servers import wait_for


def pool_config(providers: dict[str, dict[str, Any]] | None = None, **top: Any) -> PoolConfig:
    """Providers a and b serving label `small` (ci.small on image demo) unless given."""
    providers = providers if providers is not None else {"a": {}, "b": {}}
    data: dict[str, Any] = {
        "name": "test-pool", "cleanup-interval": 0.2,
        "labels": [{"name": "small"}],
        "providers": [{"name": name, "cloud": name, "max-servers": 10, "status-interval": 0.01,
                       "boot-timeout": 5, "launch-retries": 2,
                       "pools": [{"name": "main", "labels": [
                           {"name": "small", "image": "demo", "flavor-name": "ci.small",
                            "key-name": "pool", "username": "zuul"}]}], **extra}
                      for name, extra in providers.items()],
    }
    data.update(top)
    return PoolConfig.model_validate(data)


class Harness:
    def __init__(self, db: Database, config: PoolConfig, clouds: dict[str, FakeCloud] | None
                 = None, config_file: Path | None = None, stats: Stats | None = None,
                 now: Callable[[], dt.datetime] | None = None,
                 webhook_transport: httpx.BaseTransport | None = None) -> None:
        """`now`: the engine's wall clock (request and node times), e.g. a FakeClock's."""
        self.db = db
        self.clouds = clouds or {p.name: FakeCloud(p.name, ip_prefix=f"127.{200 + i}.0.")
                                 for i, p in enumerate(config.providers)}
        self.prober = FakeProber()
        self.pool = PoolService(config, PoolStore(db, config.name), self._cloud, self.prober,
                                stats, config_file=config_file, now=now,
                                webhook_transport=webhook_transport)
        self.pool.load()

    def _cloud(self, provider: Provider) -> FakeCloud:
        return self.clouds.setdefault(provider.name, FakeCloud(provider.name))

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.pool.tick()
            time.sleep(0.005)

    def until(self, cond: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
        """Tick the engine until `cond()` holds."""
        def ticked() -> bool:
            self.pool.tick()
            return cond()

        try:
            wait_for(what or str(cond), ticked, timeout, every=0.005)
        except AssertionError as exc:
            nodes = [(n["id"], n["provider"], n["state"], n["failure"])
                     for n in self.pool.list_nodes()]
            requests = [(r["id"], r["state"], r["reason"]) for r in self.pool.list_requests()]
            raise AssertionError(f"{exc}\nnodes: {nodes}\nrequests: {requests}") from None

    def request(self, count: int = 1, requestor: str = "zuul", label: str = "small",
                priority: int = 0) -> str:
        return str(self.pool.create_request([label] * count, requestor, priority)["id"])

    def state(self, request_id: str) -> str:
        return str(self.pool.get_request(request_id)["state"])

    def nodes(self, state: str | None = None) -> list[dict[str, Any]]:
        return self.pool.list_nodes(state=state)

    def close(self) -> None:
        self.pool.stop()


def write_config(path: Path, config: PoolConfig) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(by_alias=True, mode="json",
                                                     exclude_none=True)))
