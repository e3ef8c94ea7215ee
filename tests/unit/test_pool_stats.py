"""The pool's statsd metrics carry nodepool's names, so nodepool's dashboards work."""

from __future__ import annotations

import socket
from pathlib import Path

import statsd

from infracloud.pool.engine import META_NODE, META_POOL
from infracloud.pool.stats import Stats
from infracloud.store import Database
from tests.unit.pool_env import Harness, pool_config


def _received(sock: socket.socket) -> list[str]:
    lines: list[str] = []
    sock.settimeout(0.2)
    try:
        while True:
            lines += sock.recv(65536).decode().splitlines()
    except TimeoutError:
        return lines


def test_launches_nodes_and_leaks_use_nodepools_names(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    db = Database(f"sqlite:///{tmp_path / 'pool.db'}")
    db.migrate()
    stats = Stats(statsd.StatsClient("127.0.0.1", sock.getsockname()[1]))
    config = pool_config({"a": {"max-servers": 1}}, **{"cleanup-interval": 0.1})
    h = Harness(db, config, stats=stats)
    try:
        h.clouds["a"].add_server("leak", {META_POOL: "test-pool", META_NODE: "0000000777"})
        first, second = h.request(), h.request()
        h.until(lambda: h.state(first) == "fulfilled")
        h.pool.release(h.nodes("in-use")[0]["id"], None)
        h.until(lambda: h.state(second) == "fulfilled")
        h.until(lambda: len(h.clouds["a"].deleted_servers) >= 2, what="leak deleted")
        h.pool._last["gauges"] = -1e9  # the next tick sends the gauges
        h.tick()
        names = {line.split(":")[0]: line.split("|")[1] for line in _received(sock)}
    finally:
        h.close()
        db.dispose()
    for key in ("nodepool.launch.provider.a.ready", "nodepool.launch.ready",
                "nodepool.launch.requestor.zuul.ready"):
        assert names.get(key) in ("ms", "c"), key  # timer and counter, as nodepool's
    assert names["nodepool.nodes.in-use"] == "g"
    assert names["nodepool.provider.a.nodes.building"] == "g"
    assert names["nodepool.label.small.nodes.ready"] == "g"
    assert names["nodepool.provider.a.max_servers"] == "g"
    assert names["nodepool.provider.a.leaked.instances"] == "c"
