"""How many servers of a flavor the site's hardware gives: on the compute hosts that are up and
enabled (empty, and free now), which resource binds, how many are in use, and what the
enrolled machines not yet deployed would add."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

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


def fits(sizes: dict[str, float], flavor: Flavor) -> dict[str, int]:
    """How many servers of `flavor` fit in `sizes` (vcpus, ram in MB, disk in GB), counting
    each resource alone."""
    need = {"vcpus": flavor.vcpus, "ram": flavor.ram_mb, "disk": flavor.disk_gb}
    return {r: int(max(sizes[r], 0) // need[r]) for r in RESOURCES if need[r] > 0}


def _binding(counts: dict[str, int]) -> str:
    return min(counts, key=lambda r: (counts[r], RESOURCES.index(r)))


@dataclass
class _Site:
    """What the site's hardware is, read once for any number of flavors."""

    hosts: list[Host]
    counts: dict[str, int]  # servers on these hosts by flavor id
    machines: list[Node]  # enrolled compute machines not yet deployed


def _read_site(s: Session) -> _Site:
    hosts = list(s.scalars(select(Host).where(Host.takes_servers)))
    ids = [h.id for h in hosts]
    counts = dict(s.execute(select(Instance.flavor_id, func.count())
                            .where(Instance.host_id.in_(ids))
                            .group_by(Instance.flavor_id)).all()) if ids else {}
    machines = list(s.scalars(select(Node).where(Node.role == "compute",
                                                 Node.provision_state.in_(UNDEPLOYED),
                                                 Node.maintenance.is_(False))))
    return _Site(hosts, counts, machines)


def _capacity(site: str, read: _Site, flavor: Flavor) -> Capacity:
    total = free = 0
    by_resource: Counter[str] = Counter()
    binds: Counter[str] = Counter()
    for h in read.hosts:
        empty = fits({"vcpus": h.size_vcpus, "ram": h.size_ram_mb, "disk": h.size_disk_gb},
                     flavor)
        now = fits({"vcpus": h.free_vcpus, "ram": h.free_ram_mb, "disk": h.free_disk_gb},
                   flavor)
        total += min(empty.values())
        free += min(now.values())
        by_resource.update(empty)
        binds[_binding(empty)] += 1
    would_add = 0
    for m in read.machines:
        p = m.properties or {}
        if all(p.get(k) for k in ("cpus", "memory_mb", "local_gb")):
            would_add += min(fits({"vcpus": float(p["cpus"]), "ram": float(p["memory_mb"]),
                                   "disk": float(p["local_gb"])}, flavor).values())
    return Capacity(site=site, flavor=flavor.name, hosts=len(read.hosts), total=total,
                    free=free, in_use=int(read.counts.get(flavor.id, 0)),
                    servers=sum(read.counts.values()),
                    binding=binds.most_common(1)[0][0] if binds else None,
                    by_resource=dict(by_resource), undeployed_machines=len(read.machines),
                    undeployed_would_add=would_add)


def capacity(db: Database, site: str, flavor_name: str) -> Capacity:
    with db.read() as s:
        flavor = s.scalar(select(Flavor).where((Flavor.name == flavor_name) |
                                               (Flavor.id == flavor_name)))
        if flavor is None:
            raise NotFound(f"Flavor {flavor_name} could not be found.")
        read = _read_site(s)
    return _capacity(site, read, flavor)


def capacities(db: Database, site: str) -> list[Capacity]:
    """Every flavor's capacity, smallest flavor first, from one read of the site."""
    with db.read() as s:
        flavors = list(s.scalars(select(Flavor).order_by(Flavor.vcpus, Flavor.ram_mb,
                                                         Flavor.name)))
        read = _read_site(s)
    return [_capacity(site, read, f) for f in flavors]
