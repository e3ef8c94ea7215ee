"""What the conductor does to a compute host when its machine is undeployed or fenced: drain
it (no new servers; wait for, or evict, the ones it runs), forget it, or mark its servers lost."""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import func, select, update

from infracloud.compute.credentials import HostCredentials
from infracloud.compute.hosts import HostService, lose_servers
from infracloud.compute.servers import ServerService
from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.errors import NotFound
from infracloud.store import Database
from infracloud.store.models import Host, Instance
from infracloud.store.wakeups import wake

log = logging.getLogger(__name__)
FENCED = "fenced: "
CONDUCTOR = Caller("conductor", None, frozenset({"admin"}))


class Drainer:
    def __init__(self, db: Database, clock: Clock, hosts: HostService,
                 servers: ServerService) -> None:
        self.db = db
        self.clock = clock
        self.hosts = hosts
        self.servers = servers

    def _host(self, name: str) -> Host | None:
        with self.db.read() as s:
            return s.scalar(select(Host).where(Host.name == name))

    def drain(self, host_name: str, *, evict: bool) -> bool:
        """True once the host runs nothing. Disables it first; with `evict`, deletes its
        servers (their users see them go), else waits for their owners to delete them."""
        host = self._host(host_name)
        if host is None:
            return True
        if host.enabled:
            self.hosts.set_enabled(CONDUCTOR, host.id, False, "undeploying")
        with self.db.read() as s:
            ids = list(s.scalars(select(Instance.id).where(Instance.host_id == host.id)))
        if evict:
            for server_id in ids:
                with contextlib.suppress(NotFound):
                    self.servers.delete(CONDUCTOR, server_id)
            log.warning("evicting servers", extra={"host": host_name, "count": len(ids),
                                                   "event": "host.evict"})
        return not ids

    def forget(self, host_name: str) -> None:
        """The host's credentials go; the host too unless servers are still placed on it."""
        with self.db.write() as s:
            host = s.scalar(select(Host).where(Host.name == host_name).with_for_update())
            if host is None:
                return
            HostCredentials.revoke(s, host.id)  # even if it must stay for its servers
            left = s.scalar(select(func.count()).select_from(Instance)
                            .where(Instance.host_id == host.id))
            if left:
                return
            s.delete(host)
        log.info("host removed", extra={"host": host_name, "event": "host.remove"})

    def unfence(self, host_name: str) -> None:
        """The BMC answers again: the host takes servers again, unless someone else
        disabled it."""
        with self.db.write() as s:
            host = s.scalar(select(Host).where(Host.name == host_name).with_for_update())
            if host is not None and (host.disabled_reason or "").startswith(FENCED):
                host.enabled, host.disabled_reason = True, None

    def fence(self, host_name: str, reason: str) -> int:
        """Disable the host and mark its servers lost. Returns how many were lost."""
        now = self.clock.now()
        with self.db.write() as s:
            host = s.scalar(select(Host).where(Host.name == host_name).with_for_update())
            if host is None:
                return 0
            host.enabled = False
            host.disabled_reason = f"{FENCED}{reason}"[:255]
            lost = lose_servers(s, host.id, f"Lost: compute host {host_name} was fenced "
                                            f"({reason}).", now)
            s.execute(update(Host).where(Host.id == host.id)
                      .values(generation=Host.generation + 1)
                      .execution_options(synchronize_session=False))
            wake(s, host.id, self.hosts.notify)
        log.error("host fenced", extra={"host": host_name, "lost": lost, "event": "host.fence"})
        return lost
