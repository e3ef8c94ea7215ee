"""Metrics read at scrape time: the site's state from the database (a few GROUP BY queries,
cached for a few seconds so many scrapers cost one read), the pool's from its engine's
memory, an agent's from the agent. Each is a prometheus_client custom collector; `/metrics`
puts them in a per-app registry beside the process's own metrics (ops/metrics.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import case, func, literal_column, select

from infracloud import __version__
from infracloud.core.states import INSTANCE, POOL_NODE, PROVISION
from infracloud.hardware.drain import FENCED
from infracloud.ops.metrics import REGISTRY
from infracloud.store import Database
from infracloud.store.models import Host, Instance, Node

if TYPE_CHECKING:
    from infracloud.agent.runner import Agent
    from infracloud.pool.service import PoolService

HOST_STATES = ("up", "down", "disabled", "fenced")
RESOURCES = ("vcpus", "ram_mb", "disk_gb")
# the states a record can be seen in (a deleted server or pool node has no record)
INSTANCE_STATES = tuple(s for s in INSTANCE.states if s != "deleted")
POOL_NODE_STATES = tuple(s for s in POOL_NODE.states if s != "deleted")
PROVIDER_STATES = ("up", "down", "draining", "at-quota")
CACHE_SECONDS = 5.0


def _gauge(name: str, doc: str, labels: list[str], values: Iterable[tuple[tuple[str, ...],
                                                                         float]]
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


class Include:
    """Another registry's metrics, collected with this one's (no name checks)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


class SiteCollector:
    """Hosts, capacity, servers and bare-metal nodes of one site, from its database."""

    def __init__(self, db: Database, site: str, region: str, ttl: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.site = site
        self.region = region
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> list[Metric]:
        with self._lock:  # concurrent scrapes wait for one read
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= self.ttl:
                self._cached = (now, self._read())
            return self._cached[1]

    def _read(self) -> list[Metric]:
        caps = (Host.size_vcpus, Host.size_ram_mb, Host.size_disk_gb)
        used = (Host.used_vcpus, Host.used_ram_mb, Host.used_disk_gb)
        # inline text, not bound parameters: PostgreSQL matches the GROUP BY expression to
        # the selected one only when they are written the same
        fenced = func.coalesce(Host.disabled_reason, literal_column("''")).like(
            literal_column(f"'{FENCED}%'"))
        host_q = (select(Host.state, Host.enabled, fenced, func.count(),
                         *[func.sum(c) for c in caps], *[func.sum(u) for u in used],
                         *[func.sum(case((c - u > 0, c - u), else_=0))
                           for c, u in zip(caps, used, strict=True)])
                  .group_by(Host.state, Host.enabled, fenced))
        with self.db.read() as s:
            host_rows = list(s.execute(host_q))
            instances = {state: n for state, n in s.execute(
                select(Instance.state, func.count()).group_by(Instance.state))}
            node_rows = list(s.execute(select(Node.provision_state, Node.maintenance,
                                              func.count())
                                       .group_by(Node.provision_state, Node.maintenance)))
        hosts: Counter[str] = Counter()
        cap = dict.fromkeys(RESOURCES, 0.0)
        use = dict.fromkeys(RESOURCES, 0.0)
        free = dict.fromkeys(RESOURCES, 0.0)
        for state, enabled, is_fenced, count, *sums in host_rows:
            label = ("fenced" if is_fenced else "disabled") if not enabled else state
            hosts[label] += count
            for i, resource in enumerate(RESOURCES):
                cap[resource] += float(sums[i] or 0)
                use[resource] += float(sums[3 + i] or 0)
                if enabled and state == "up":  # where the scheduler can place servers
                    free[resource] += float(sums[6 + i] or 0)
        nodes: Counter[str] = Counter()
        maintenance = 0
        for provision_state, in_maintenance, count in node_rows:
            nodes[provision_state] += count
            maintenance += count if in_maintenance else 0
        return [
            _gauge("infracloud_site_info", "The site this controller serves (value 1).",
                   ["site", "region", "version"],
                   [((self.site, self.region, __version__), 1)]),
            _gauge("infracloud_hosts", "Compute hosts by state (disabled and fenced hosts "
                   "take no new servers, whatever their heartbeat).", ["state"],
                   [((s,), hosts[s]) for s in HOST_STATES]),
            _gauge("infracloud_capacity", "Room for servers on all compute hosts, after the "
                   "allocation ratios and the hosts' reservations.", ["resource"],
                   [((r,), cap[r]) for r in RESOURCES]),
            _gauge("infracloud_used", "Room claimed by servers on all compute hosts.",
                   ["resource"], [((r,), use[r]) for r in RESOURCES]),
            _gauge("infracloud_free", "Room left on the hosts that take new servers (up and "
                   "enabled).", ["resource"], [((r,), free[r]) for r in RESOURCES]),
            _gauge("infracloud_instances", "Servers by state.", ["state"],
                   [((s,), instances.get(s, 0)) for s in INSTANCE_STATES]),
            _gauge("infracloud_nodes", "Bare-metal nodes by provision state.",
                   ["provision_state"], [((s,), nodes[s]) for s in PROVISION.states]),
            _gauge("infracloud_nodes_maintenance", "Bare-metal nodes in maintenance (fenced "
                   "BMCs among them).", [], [((), maintenance)]),
        ]


class PoolCollector:
    """The node pool's requests, nodes and providers, from its engine's memory."""

    def __init__(self, pool: PoolService) -> None:
        self.pool = pool

    def collect(self) -> list[Metric]:
        pool = self.pool
        with pool.lock:
            now = pool.now()
            labels = [label.name for label in pool.config.labels]
            pairs = {(pc.name, label) for label in labels
                     for pc in pool.config.providers_for(label)}
            nodes = Counter((n.provider, n.label, n.state) for n in pool.nodes.values())
            open_requests = [r for r in pool.requests.values() if not r.final]
            waiting = Counter(label for r in open_requests for label in set(r.labels))
            oldest = min((r.created_at for r in open_requests), default=None)
            providers = [(p.name, p.state, 0 if p.drained else p.config.max_servers)
                         for p in pool.providers.values()]
        pairs |= {(provider, label) for provider, label, _ in nodes}
        return [
            _gauge("infracloud_pool_requests_waiting", "Open node requests (requested or "
                   "pending) by the label they ask for.", ["label"],
                   [((label,), waiting[label]) for label in sorted(set(labels) |
                                                                   set(waiting))]),
            _gauge("infracloud_pool_request_oldest_wait_seconds", "Age of the oldest open node "
                   "request (0 when none is open).", [],
                   [((), (now - oldest).total_seconds() if oldest else 0.0)]),
            _gauge("infracloud_pool_nodes", "Pool nodes by provider, label and state.",
                   ["provider", "label", "state"],
                   [((p, label, s), nodes[(p, label, s)]) for p, label in sorted(pairs)
                    for s in POOL_NODE_STATES]),
            _gauge("infracloud_pool_provider_max_servers", "A provider's max-servers (0 while "
                   "it drains).", ["provider"], [((name,), m) for name, _, m in providers]),
            _gauge("infracloud_pool_provider_state", "1 for a provider's current state (up, "
                   "down, draining, at-quota).", ["provider", "state"],
                   [((name, s), 1 if s == state else 0) for name, state, _ in providers
                    for s in PROVIDER_STATES]),
        ]


class AgentCollector:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> list[Metric]:
        counts = self.agent.instance_counts()
        return [
            _gauge("infracloud_agent_controller_up", "1 when the agent's last call reached "
                   "the controller, else 0.", [], [((), 1 if self.agent.controller_up else 0)]),
            _gauge("infracloud_agent_instances", "Instances this agent runs (running) and "
                   "spawns or destroys now (busy).", ["state"],
                   [((state,), n) for state, n in sorted(counts.items())]),
        ]


def agent_registry(agent: Agent) -> CollectorRegistry:
    """An agent process's metrics (its own registry: `infracloud agent --metrics-port`)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    poll = Histogram("infracloud_agent_poll_seconds", "The agent's long-polls of the "
                     "controller (they return early when there is work).", registry=registry,
                     buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60))
    registry.register(AgentCollector(agent))
    agent.on_poll = poll.observe
    return registry


def app_registry(db: Database | None = None, site: str = "", region: str = "",
                 pool: PoolService | None = None) -> CollectorRegistry:
    """What a `/metrics` shows: the process's metrics, the site's (with its database) and
    the pool's (when it runs here)."""
    registry = CollectorRegistry()
    registry.register(Include(REGISTRY))
    if db is not None:
        registry.register(SiteCollector(db, site, region))
    if pool is not None:
        registry.register(PoolCollector(pool))
    return registry
