"""Flavors. The configured ones (ci.8g: 8 GB / 8 vCPU / 80 GB, ...) exist on every start;
admins add more. A flavor that servers still use cannot be deleted (nodepool looks every
server's flavor up). Flavors are cached by id; a change through any controller empties every
controller's cache (store.generations)."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select

from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.settings import FlavorConfig
from infracloud.store import Database
from infracloud.store.generations import FLAVORS, Cache
from infracloud.store.models import Flavor, FlavorProject, Instance


class FlavorService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._cache: Cache[str, Flavor] = Cache(db.generations, FLAVORS)

    def ensure(self, flavors: list[FlavorConfig]) -> None:
        with self.db.write() as s:
            for f in flavors:
                if s.scalar(select(Flavor.id).where(Flavor.name == f.name)) is None:
                    self.db.generations.touch(s, FLAVORS)
                    s.add(Flavor(id=f.name,
                                 name=f.name, vcpus=f.vcpus, ram_mb=f.ram_mb,
                                 disk_gb=f.disk_gb, created_at=self.clock.now()))

    def list(self, *, public: bool | None = None) -> list[Flavor]:
        q = select(Flavor).order_by(Flavor.ram_mb, Flavor.name)
        if public is not None:
            q = q.where(Flavor.is_public == public)
        with self.db.read() as s:
            return list(s.scalars(q))

    def get(self, flavor_id: str) -> Flavor:
        found = self._cache.get(flavor_id, self._load)
        if found is None:
            raise NotFound(f"Flavor {flavor_id} could not be found.")
        return found

    def visible(self, caller: Caller, flavor: Flavor) -> bool:
        """Public flavors are everyone's; a private one is its access list's (and admins')."""
        if flavor.is_public or caller.is_admin:
            return True
        with self.db.read() as s:
            return s.get(FlavorProject, (flavor.id, caller.project_id or "")) is not None

    def get_visible(self, caller: Caller, flavor_id: str) -> Flavor:
        """The flavor if the caller may see it, else the 404 nova answers."""
        flavor = self.get(flavor_id)
        if not self.visible(caller, flavor):
            raise NotFound(f"Flavor {flavor_id} could not be found.")
        return flavor

    def _load(self, flavor_id: str) -> Flavor | None:
        with self.db.read() as s:
            return s.get(Flavor, flavor_id)

    def create(self, caller: Caller, *, name: str, vcpus: int, ram_mb: int, disk_gb: int,
               flavor_id: str | None = None, ephemeral_gb: int = 0, swap_mb: int = 0,
               is_public: bool = True, description: str | None = None) -> Flavor:
        if not caller.is_admin:
            raise Forbidden("Policy doesn't allow os_compute_api:os-flavor-manage:create to be "
                            "performed.")
        if vcpus < 1 or ram_mb < 1 or disk_gb < 0:
            raise BadRequest("Invalid flavor: vcpus and ram must be positive, disk at least 0.")
        flavor_id = str(flavor_id) if flavor_id not in (None, "", "auto") else str(uuid.uuid4())
        with self.db.write() as s:
            if s.scalar(select(Flavor.id).where(Flavor.name == name)) is not None:
                raise Conflict(f"Flavor with name {name} already exists.")
            if s.get(Flavor, flavor_id) is not None:
                raise Conflict(f"Flavor with ID {flavor_id} already exists.")
            self.db.generations.touch(s, FLAVORS)
            flavor = Flavor(id=flavor_id, name=name, vcpus=vcpus, ram_mb=ram_mb,
                            disk_gb=disk_gb, ephemeral_gb=ephemeral_gb, swap_mb=swap_mb,
                            is_public=is_public, description=description,
                            created_at=self.clock.now())
            s.add(flavor)
        return flavor

    def delete(self, caller: Caller, flavor_id: str) -> None:
        if not caller.is_admin:
            raise Forbidden("Policy doesn't allow os_compute_api:os-flavor-manage:delete to be "
                            "performed.")
        with self.db.write() as s:
            flavor = s.get(Flavor, flavor_id)
            if flavor is None:
                raise NotFound(f"Flavor {flavor_id} could not be found.")
            used = s.scalar(select(func.count()).select_from(Instance).where(
                Instance.flavor_id == flavor_id))
            if used:
                raise Conflict(f"Flavor {flavor.name} is used by {used} servers and cannot be "
                               f"deleted.")
            self.db.generations.touch(s, FLAVORS)
            s.execute(delete(FlavorProject).where(FlavorProject.flavor_id == flavor_id))
            s.delete(flavor)
