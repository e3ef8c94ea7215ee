"""How many servers of a flavor the site's hardware gives: on the compute hosts that are up and
enabled (empty, and free now), which resource binds, how many are in use, and what the
enrolled machines not yet deployed would add."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select

from infracloud.core.errors import NotFound
from infracloud.store import Database
from infracloud.store.models import Flavor, Host, Instance, Node

RESOURCES = ("vcpus", "ram", "disk")
UNDEPLOYED = ("manageable", "available")


@dataclass
class Capacity:
    site: str
    flavor: str
    hosts: int
    total: int  # servers the hosts hold when empty (no overcommit beyond the ratios)
    free: int  # servers that fit now
    in_use: int  # servers of this flavor on these hosts
    servers: int  # servers of any flavor on these hosts
    binding: str | None  # the resource that runs out first on most hosts
    by_resource: dict[str, int] = field(default_factory=dict)  # total if only it counted
    undeployed_machines: int = 0
    undeployed_would_add: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fits(sizes: dict[str, float], flavor: Flavor) -> dict[str, int]:
    need = {"vcpus": flavor.vcpus, "ram": flavor.ram_mb, "disk": flavor.disk_gb}
    return {r: int(max(sizes[r], 0) // need[r]) for r in RESOURCES if need[r] > 0}


def _binding(fits: dict[str, int]) -> str:
    return min(fits, key=lambda r: (fits[r], RESOURCES.index(r)))


def capacity(db: Database, site: str, flavor_name: str) -> Capacity:
    with db.read() as s:
        flavor = s.scalar(select(Flavor).where((Flavor.name == flavor_name) |
                                               (Flavor.id == flavor_name)))
        if flavor is None:
            raise NotFound(f"Flavor {flavor_name} could not be found.")
        hosts = list(s.scalars(select(Host).where(Host.state == "up", Host.enabled.is_(True))))
        ids = [h.id for h in hosts]
        counts = dict(s.execute(select(Instance.flavor_id, func.count())
                                .where(Instance.host_id.in_(ids))
                                .group_by(Instance.flavor_id)).all()) if ids else {}
        machines = list(s.scalars(select(Node).where(Node.role == "compute",
                                                     Node.provision_state.in_(UNDEPLOYED),
                                                     Node.maintenance.is_(False))))
    total = free = 0
    by_resource: Counter[str] = Counter()
    binds: Counter[str] = Counter()
    for h in hosts:
        size = {"vcpus": h.vcpus * h.cpu_ratio - h.reserved_vcpus,
                "ram": h.ram_mb * h.ram_ratio - h.reserved_ram_mb,
                "disk": h.disk_gb * h.disk_ratio - h.reserved_disk_gb}
        empty = _fits(size, flavor)
        now = _fits({"vcpus": size["vcpus"] - h.used_vcpus, "ram": size["ram"] - h.used_ram_mb,
                     "disk": size["disk"] - h.used_disk_gb}, flavor)
        total += min(empty.values())
        free += min(now.values())
        by_resource.update(empty)
        binds[_binding(empty)] += 1
    would_add = 0
    for m in machines:
        p = m.properties or {}
        if all(p.get(k) for k in ("cpus", "memory_mb", "local_gb")):
            would_add += min(_fits({"vcpus": float(p["cpus"]), "ram": float(p["memory_mb"]),
                                    "disk": float(p["local_gb"])}, flavor).values())
    return Capacity(site=site, flavor=flavor.name, hosts=len(hosts), total=total, free=free,
                    in_use=int(counts.get(flavor.id, 0)), servers=sum(counts.values()),
                    binding=binds.most_common(1)[0][0] if binds else None,
                    by_resource=dict(by_resource), undeployed_machines=len(machines),
                    undeployed_would_add=would_add)
