"""Leak cleanup (nodepool's rule: delete only after two sightings). Every server the pool
creates carries metadata naming the pool and the node; a server with this pool's name that no
live node of the pool owns is deleted when two scans in a row, `cleanup-interval` apart, have
seen it. Ports likewise: a DOWN port of a compute device that is not among the provider's
servers (a port its server left behind) is deleted on its second sighting."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING

from infracloud.pool.cloud import Port

if TYPE_CHECKING:
    from infracloud.pool.engine import Engine

log = logging.getLogger(__name__)


class LeakCleaner:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.servers_seen: dict[tuple[str, str], int] = {}
        self.ports_seen: dict[tuple[str, str], int] = {}
        self.last: dict[str, float] = {}  # provider -> when its last scan began
        self.ports: dict[str, tuple[Future[list[Port]], float]] = {}
        self.deleted = {"servers": 0, "ports": 0}

    def tick(self) -> None:
        e = self.engine
        interval = e.config.cleanup_interval
        now = e.clock()
        for name, provider in e.providers.items():
            if provider.down:
                continue
            pending = self.ports.get(name)
            if pending is not None and pending[0].done():
                if provider.servers_at <= pending[1]:
                    provider.due.add("servers")  # judge ports against a newer server list
                else:
                    del self.ports[name]
                    if pending[0].exception() is None:
                        self._ports(name, pending[0].result())
            last = self.last.get(name)
            if last is None:
                self.last[name] = now  # the first scan waits one interval after start
                continue
            if now - last < interval or name in self.ports:
                continue
            if provider.servers_at <= last:
                provider.due.add("servers")  # scan a list newer than the last scan's
                continue
            self.last[name] = now
            self._servers(name)
            self.ports[name] = (provider.submit(provider.cloud.list_ports), now)

    def _servers(self, provider_name: str) -> None:
        from infracloud.pool.engine import META_NODE, META_POOL

        e = self.engine
        provider = e.providers[provider_name]
        seen: dict[tuple[str, str], int] = {}
        for server in provider.servers.values():
            if server.metadata.get(META_POOL) != e.config.name or server.status == "DELETED":
                continue
            node = e.nodes.get(server.metadata.get(META_NODE, ""))
            if node is not None and node.server_id in (None, server.id):
                continue
            key = (provider_name, server.id)
            count = self.servers_seen.get(key, 0) + 1
            if count < 2:
                seen[key] = count
                log.info("provider %s: server %s (%s) is not the pool's: will delete it if "
                         "seen again", provider_name, server.id, server.name)
                continue
            log.warning("provider %s: deleting leaked server %s (%s)", provider_name,
                        server.id, server.name)
            provider.submit(provider.cloud.delete_server, server.id)
            self.deleted["servers"] += 1
            e.stats.leaked(provider_name, "instances")
        self.servers_seen = {k: v for k, v in self.servers_seen.items()
                             if k[0] != provider_name} | seen

    def _ports(self, provider_name: str, ports: list[Port]) -> None:
        e = self.engine
        provider = e.providers[provider_name]
        seen: dict[tuple[str, str], int] = {}
        for port in ports:
            if port.status != "DOWN" or not port.device_owner.startswith("compute:") or \
                    port.device_id in provider.servers:
                continue
            key = (provider_name, port.id)
            count = self.ports_seen.get(key, 0) + 1
            if count < 2:
                seen[key] = count
                continue
            log.warning("provider %s: deleting leaked port %s (device %s)", provider_name,
                        port.id, port.device_id or "-")
            provider.submit(provider.cloud.delete_port, port.id)
            self.deleted["ports"] += 1
            e.stats.leaked(provider_name, "ports")
        self.ports_seen = {k: v for k, v in self.ports_seen.items()
                           if k[0] != provider_name} | seen
