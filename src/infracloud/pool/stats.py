"""statsd metrics with nodepool's names, so nodepool's Grafana dashboards work unchanged.
Enabled like nodepool's: STATSD_HOST (and STATSD_PORT) in the environment. Launches and
requests are observed in the Prometheus metrics too (ops/metrics.py), statsd or not."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

from infracloud.ops import metrics

# nodepool's node states; the pool's "held" is nodepool's "hold"
NODEPOOL_STATE = {"held": "hold"}
STATES = ("building", "ready", "in-use", "used", "hold", "failed", "deleting")


def nodepool_state(state: str) -> str:
    return NODEPOOL_STATE.get(state, state)


def _name(part: str) -> str:
    """nodepool's normalize_statsd_name: '.' is graphite's separator, ':' statsd's."""
    return part.replace(".", "_").replace(":", "_")


def client_from_env() -> Any:
    host = os.environ.get("STATSD_HOST")
    if not host:
        return None
    import statsd

    return statsd.StatsClient(host, int(os.environ.get("STATSD_PORT", "8125")))


class Stats:
    def __init__(self, client: Any) -> None:
        self.client = client

    def launch(self, node: Any, subkey: str, seconds: float) -> None:
        """nodepool's recordLaunchStats: timer and counter per provider, overall and per
        requestor (subkey: ready, error.quota, error.unknown, ...)."""
        metrics.pool_launch(node.provider, subkey, seconds)
        if self.client is None:
            return
        keys = [f"nodepool.launch.provider.{_name(node.provider)}.{subkey}",
                f"nodepool.launch.{subkey}"]
        if node.requestor:
            keys.append(f"nodepool.launch.requestor.{_name(node.requestor)}.{subkey}")
        pipe = self.client.pipeline()
        for key in keys:
            pipe.timing(key, int(seconds * 1000))
            pipe.incr(key)
        pipe.send()

    def request(self, req: Any) -> None:
        seconds = (req.state_at - req.created_at).total_seconds()
        metrics.pool_request(req.state, seconds)
        if self.client is None:
            return
        key = f"nodepool.requests.{_name(req.state)}"  # not a nodepool name: ours
        pipe = self.client.pipeline()
        pipe.timing(key, int(seconds * 1000))
        pipe.incr(key)
        pipe.send()

    def gauges(self, nodes: Iterable[Any], providers: Iterable[Any], labels: Iterable[str],
               waiting: int) -> None:
        """nodepool's updateNodeStats and updateProviderLimits, every known key sent (zeros
        too) so graphs drop to zero."""
        if self.client is None:
            return
        providers = list(providers)
        counts: Counter[str] = Counter()
        for state in STATES:
            counts[f"nodepool.nodes.{state}"] += 0
            for p in providers:
                counts[f"nodepool.provider.{_name(p.name)}.nodes.{state}"] += 0
            for label in labels:
                counts[f"nodepool.label.{_name(label)}.nodes.{state}"] += 0
        for n in nodes:
            state = nodepool_state(n.state)
            counts[f"nodepool.nodes.{state}"] += 1
            counts[f"nodepool.provider.{_name(n.provider)}.nodes.{state}"] += 1
            counts[f"nodepool.label.{_name(n.label)}.nodes.{state}"] += 1
        pipe = self.client.pipeline()
        for key, value in counts.items():
            pipe.gauge(key, value)
        for p in providers:
            pipe.gauge(f"nodepool.provider.{_name(p.name)}.max_servers",
                       0 if p.drained else p.config.max_servers)
        pipe.gauge("infracloud.pool.requests.waiting", waiting)
        pipe.send()

    def leaked(self, provider: str, kind: str) -> None:
        """nodepool's nodepool.provider.PROVIDER.leaked.{instances,ports} counters."""
        if self.client is not None:
            self.client.incr(f"nodepool.provider.{_name(provider)}.leaked.{kind}")
