"""Compute quotas per project: instances, cores, RAM (and key pairs per user), and the network's
ports (Neutron's `port`: a server's port counts). Limits come from the configuration unless a
project has its own (os-quota-sets, Neutron's quotas), or the `default` quota class
(os-quota-class-sets/default) sets another default; -1 means unlimited. The keys Nova 2.1 shows
that this cloud does not enforce (SHOWN_ONLY) are kept and shown as set, nothing more."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Forbidden
from infracloud.core.settings import ComputeQuotaConfig
from infracloud.store import Database
from infracloud.store.models import Instance, Port, QuotaLimit

RESOURCES = ("instances", "cores", "ram", "key_pairs", "port", "server_groups",
             "server_group_members")
# Nova 2.1's other quota keys and their defaults: stored and shown (metadata_items is
# enforced by compute/servers.py; the others are not enforced here)
SHOWN_ONLY = {"metadata_items": 128, "injected_files": 5, "injected_file_content_bytes": 10240,
              "injected_file_path_bytes": 255, "fixed_ips": -1, "floating_ips": -1,
              "security_groups": -1, "security_group_rules": -1}
STORED = (*RESOURCES, *SHOWN_ONLY)
CLASS_PREFIX = "class:"  # a quota class's rows, beside the projects' (project ids are hex)


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
                "server_group_members": d.server_group_members, **SHOWN_ONLY}

    def limits(self, s: Session, project_id: str) -> dict[str, int]:
        """The configuration's defaults, then the default class's, then the project's."""
        limits = self._defaults()
        rows = s.scalars(select(QuotaLimit).where(QuotaLimit.project_id.in_(
            (CLASS_PREFIX + "default", project_id))))
        for row in sorted(rows, key=lambda r: r.project_id != CLASS_PREFIX + "default"):
            limits[row.resource] = row.hard_limit
        return limits

    def class_limits(self, name: str) -> dict[str, int]:
        """A quota class's limits; only `default` means anything (Nova's classes)."""
        with self.db.read() as s:
            return self.limits(s, CLASS_PREFIX + name)

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

    def set(self, caller: Caller, project_id: str, values: dict[str, int], *,
            force: bool = True) -> None:
        """Without `force`, a limit below what the project uses now is refused (Nova's 400)."""
        if not caller.is_admin:
            raise Forbidden("Policy doesn't allow os_compute_api:os-quota-sets:update to be "
                            "performed.")
        with self.db.write() as s:
            if not force:
                self.lock(s, project_id)
                used = self.usage(s, project_id)
                for resource, have in (("instances", used.instances), ("cores", used.cores),
                                       ("ram", used.ram)):
                    value = values.get(resource)
                    if value is not None and -1 < value < have:
                        raise BadRequest(f"Quota limit {value} for {resource} must be greater "
                                         f"than or equal to already used and reserved {have}.")
            for resource, value in values.items():
                if resource not in STORED:
                    continue
                if not isinstance(value, int) or value < -1:
                    raise BadRequest(f"Quota limit {value!r} for {resource} must be an integer "
                                     f"of at least -1.")
                put_limit(s, project_id, resource, value)

    def set_class(self, caller: Caller, name: str, values: dict[str, int]) -> None:
        """The default quota class: new defaults for every project without its own value."""
        if name != "default":
            raise BadRequest("Only the quota class 'default' can be set.")
        self.set(caller, CLASS_PREFIX + name, values)

    def reset(self, caller: Caller, project_id: str) -> None:
        """The project's own limits go: it has the defaults again (os-quota-sets DELETE)."""
        if not caller.is_admin:
            raise Forbidden("Policy doesn't allow os_compute_api:os-quota-sets:delete to be "
                            "performed.")
        if project_id.startswith(CLASS_PREFIX):  # not a project: the class's rows stay
            raise BadRequest(f"Project ID {project_id} is not a valid project.")
        with self.db.write() as s:
            s.execute(delete(QuotaLimit).where(QuotaLimit.project_id == project_id))


def put_limit(s: Session, project_id: str, resource: str, value: int) -> None:
    """Store a project's (or a quota class's) limit of one resource, new or changed."""
    row = s.get(QuotaLimit, (project_id, resource))
    if row is None:
        s.add(QuotaLimit(project_id=project_id, resource=resource, hard_limit=value))
    else:
        row.hard_limit = value
