"""The compute hosts as Nova's hypervisors and compute services (os-hypervisors, os-services):
integer ids (microversion 2.1 has no uuids), their servers, and the site's totals. Every view
reads the hosts in one query and their servers in one more, whatever their number."""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select

from infracloud.store import Database
from infracloud.store.models import Host, Instance

MAX_PATTERN = 255  # a hostname pattern longer than a host's name matches nothing


def int_id(host_id: str) -> int:
    """A host's integer id for 2.1's hypervisors and services: a stable hash of its id (the
    same on every controller and after a restore)."""
    return zlib.crc32(host_id.encode())


@dataclass(frozen=True)
class HostServer:
    uuid: str
    name: str


class Hypervisors:
    def __init__(self, db: Database) -> None:
        self.db = db

    def hosts(self, pattern: str | None = None) -> list[Host]:
        """The hosts by name; with `pattern`, those whose name contains it (Nova's search)."""
        stmt = select(Host).order_by(Host.name)
        if pattern is not None:
            if len(pattern) > MAX_PATTERN:
                return []
            stmt = stmt.where(Host.name.contains(pattern, autoescape=True))
        with self.db.read() as s:
            return list(s.scalars(stmt))

    def by_int_id(self, value: str) -> Host | None:
        """The host whose integer id is `value` (a string from the URL), else None."""
        try:
            wanted = int(value)
        except ValueError:
            return None
        return next((h for h in self.hosts() if int_id(h.id) == wanted), None)

    def running(self, host_ids: list[str] | None = None) -> dict[str, int]:
        """How many servers each host holds, in one GROUP BY."""
        stmt = (select(Instance.host_id, func.count()).where(Instance.host_id.is_not(None))
                .group_by(Instance.host_id))
        if host_ids is not None:
            stmt = stmt.where(Instance.host_id.in_(host_ids))
        with self.db.read() as s:
            return {str(h): int(n) for h, n in s.execute(stmt)}

    def servers(self, host_ids: list[str]) -> dict[str, list[HostServer]]:
        """The servers placed on each of the hosts, in one query."""
        out: dict[str, list[HostServer]] = defaultdict(list)
        if not host_ids:
            return out
        with self.db.read() as s:
            for host, ident, name in s.execute(
                    select(Instance.host_id, Instance.id, Instance.name)
                    .where(Instance.host_id.in_(host_ids))
                    .order_by(Instance.created_at, Instance.id)):
                out[str(host)].append(HostServer(str(ident), str(name)))
        return out
