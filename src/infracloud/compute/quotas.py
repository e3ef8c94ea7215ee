"""Compute quotas per project: instances, cores, RAM (and key pairs per user), and the network's
ports (Neutron's `port`: a server's port counts). Limits come from the configuration unless a
project has its own (os-quota-sets, Neutron's quotas); -1 means unlimited."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Forbidden
from infracloud.core.settings import ComputeQuotaConfig
from infracloud.store import Database
from infracloud.store.models import Instance, Port, QuotaLimit

RESOURCES = ("instances", "cores", "ram", "key_pairs", "port", "server_groups",
             "server_group_members")


@dataclass(frozen=True)
class Usage:
    instances: int
    cores: int
    ram: int


class Quotas:
    def __init__(self, db: Database, defaults: ComputeQuotaConfig) -> None:
        self.db = db
        self.defaults = defaults

    def _defaults(self) -> dict[str, int]:
        d = self.defaults
        return {"instances": d.instances, "cores": d.cores, "ram": d.ram_mb,
                "key_pairs": d.key_pairs, "port": d.ports, "server_groups": d.server_groups,
                "server_group_members": d.server_group_members}

    def limits(self, s: Session, project_id: str) -> dict[str, int]:
        limits = self._defaults()
        for row in s.scalars(select(QuotaLimit).where(QuotaLimit.project_id == project_id)):
            limits[row.resource] = row.hard_limit
        return limits

    @staticmethod
    def usage(s: Session, project_id: str) -> Usage:
        n, cores, ram = s.execute(
            select(func.count(), func.coalesce(func.sum(Instance.vcpus), 0),
                   func.coalesce(func.sum(Instance.ram_mb), 0))
            .where(Instance.project_id == project_id)).one()
        return Usage(int(n), int(cores), int(ram))

    def port_limit(self, s: Session, project_id: str) -> int:
        """The project's port limit (the network service checks it as it allocates)."""
        return self.limits(s, project_id)["port"]

    def lock(self, s: Session, project_id: str) -> None:
        """Serialise quota checks of one project for the rest of the transaction (PostgreSQL;
        SQLite write transactions are serial already)."""
        if not self.db.is_sqlite:
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                      {"k": zlib.crc32(project_id.encode())})

    def check(self, s: Session, project_id: str, *, count: int, cores: int, ram: int) -> None:
        """Raise the 403 nova answers (nodepool looks for 'Quota exceeded')."""
        limits = self.limits(s, project_id)
        used = self.usage(s, project_id)
        for resource, want, have in (("instances", count, used.instances),
                                     ("cores", cores, used.cores), ("ram", ram, used.ram)):
            limit = limits[resource]
            if limit >= 0 and have + want > limit:
                raise Forbidden(f"Quota exceeded for {resource}: Requested {want}, but already "
                                f"used {have} of {limit} {resource}")

    def headroom(self, s: Session, project_id: str, *, cores: int, ram: int) -> int | None:
        """How many more servers of this size the project's quota allows, its ports' included
        (each server has one; None: no bound)."""
        limits = self.limits(s, project_id)
        used = self.usage(s, project_id)
        ports = int(s.scalar(select(func.count()).select_from(Port).where(
            Port.project_id == project_id)) or 0) if limits["port"] >= 0 else 0
        room: list[int] = []
        for resource, each, have in (("instances", 1, used.instances),
                                     ("cores", cores, used.cores), ("ram", ram, used.ram),
                                     ("port", 1, ports)):
            if limits[resource] >= 0:
                room.append(max(limits[resource] - have, 0) // max(each, 1))
        return min(room) if room else None

    def show(self, project_id: str) -> tuple[dict[str, int], Usage]:
        with self.db.read() as s:
            return self.limits(s, project_id), self.usage(s, project_id)

    def set(self, caller: Caller, project_id: str, values: dict[str, int]) -> None:
        if not caller.is_admin:
            raise Forbidden("Policy doesn't allow os_compute_api:os-quota-sets:update to be "
                            "performed.")
        with self.db.write() as s:
            for resource, value in values.items():
                if resource not in RESOURCES:
                    continue
                if not isinstance(value, int) or value < -1:
                    raise BadRequest(f"Quota limit {value!r} for {resource} must be an integer "
                                     f"of at least -1.")
                row = s.get(QuotaLimit, (project_id, resource))
                if row is None:
                    s.add(QuotaLimit(project_id=project_id, resource=resource,
                                     hard_limit=value))
                else:
                    row.hard_limit = value
