"""Private flavors' access lists and flavors' extra specs, as nova keeps them.

A private flavor (`os-flavor-access:is_public: false`) is seen and used only by the projects on
its access list (and by admins). Listing: a project sees the public flavors and the private
ones it has access to; an admin sees the public ones (and those its project has access to) by
default, the private ones only with `is_public=false`, all with `is_public=None`.

Extra specs are kept on the flavor's row, so they travel with the flavor through every
controller's flavor cache: each write touches the flavors' generation (store.generations),
which empties the other controllers' caches."""

from __future__ import annotations

import re

from sqlalchemy import or_, select

from infracloud.compute.flavors import FlavorService
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict, NotFound
from infracloud.store.generations import FLAVORS
from infracloud.store.models import Flavor, FlavorProject

SPEC_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")


def spec_value(key: str, value: object) -> str:
    """Nova's extra-spec schema: a key of 1..255 of [a-zA-Z0-9-_:. ], a string (or number)
    value of at most 255 characters."""
    if not isinstance(key, str) or not SPEC_KEY.match(key):
        raise BadRequest(f"Invalid input for field/attribute extra_specs. Value: {key!r}. "
                         f"Additional properties are not allowed ({key!r} was unexpected)")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value!r}. "
                         f"{value!r} is not of type 'string', 'number'")
    text = str(value)
    if len(text) > 255:
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {text}. "
                         f"{text!r} is too long")
    return text


class FlavorAccess:
    def __init__(self, flavors: FlavorService) -> None:
        self.flavors = flavors
        self.db = flavors.db

    # ---- listing ------------------------------------------------------------------------

    def listing(self, caller: Caller, is_public: str | None) -> list[Flavor]:
        """Nova's `is_public` filter: absent means public (plus the caller's private ones),
        `None` all (admins), otherwise a boolean; non-admins always get public + theirs."""
        public: bool | None = True
        if caller.is_admin and is_public is not None:
            raw = is_public.strip().lower()
            if raw == "none":
                public = None
            elif raw in ("1", "t", "true", "on", "y", "yes"):
                public = True
            elif raw in ("0", "f", "false", "off", "n", "no"):
                public = False
            else:
                raise BadRequest(f"Invalid is_public filter [{is_public}]")
        q = select(Flavor).order_by(Flavor.ram_mb, Flavor.name)
        if public is not None:
            mine = select(FlavorProject.flavor_id).where(
                FlavorProject.project_id == (caller.project_id or ""))
            cond = Flavor.is_public == public
            q = q.where(or_(cond, Flavor.id.in_(mine)) if public else cond)
        with self.db.read() as s:
            return list(s.scalars(q))

    # ---- access lists ---------------------------------------------------------------------

    def projects(self, flavor_id: str) -> list[str]:
        with self.db.read() as s:
            return list(s.scalars(select(FlavorProject.project_id).where(
                FlavorProject.flavor_id == flavor_id).order_by(FlavorProject.project_id)))

    def access(self, caller: Caller, flavor_id: str) -> list[str]:
        flavor = self.flavors.get_visible(caller, flavor_id)
        if flavor.is_public:
            raise NotFound("Access list not available for public flavors.")
        return self.projects(flavor.id)

    def add(self, caller: Caller, flavor_id: str, project_id: str) -> list[str]:
        flavor = self.flavors.get_visible(caller, flavor_id)
        with self.db.write() as s:
            if s.get(FlavorProject, (flavor.id, project_id)) is not None:
                raise Conflict(f"Flavor access already exists for flavor {flavor_id} and "
                               f"project {project_id} combination.")
            self.db.generations.touch(s, FLAVORS)
            s.add(FlavorProject(flavor_id=flavor.id, project_id=project_id))
        return self.projects(flavor.id)

    def remove(self, caller: Caller, flavor_id: str, project_id: str) -> list[str]:
        flavor = self.flavors.get_visible(caller, flavor_id)
        with self.db.write() as s:
            row = s.get(FlavorProject, (flavor.id, project_id))
            if row is None:
                raise NotFound(f"Flavor access not found for {flavor_id} / {project_id} "
                               f"combination.")
            self.db.generations.touch(s, FLAVORS)
            s.delete(row)
        return self.projects(flavor.id)

    # ---- extra specs ------------------------------------------------------------------------

    def specs(self, caller: Caller, flavor_id: str) -> dict[str, str]:
        return dict(self.flavors.get_visible(caller, flavor_id).extra_specs or {})

    def spec(self, caller: Caller, flavor_id: str, key: str) -> str:
        specs = self.specs(caller, flavor_id)
        if key not in specs:
            raise NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")
        return specs[key]

    def set_specs(self, caller: Caller, flavor_id: str, specs: dict[str, object]
                  ) -> dict[str, str]:
        clean = {k: spec_value(k, v) for k, v in specs.items()}
        self.flavors.get_visible(caller, flavor_id)
        with self.db.write() as s:
            flavor = s.get(Flavor, flavor_id, with_for_update=True)
            if flavor is None:
                raise NotFound(f"Flavor {flavor_id} could not be found.")
            self.db.generations.touch(s, FLAVORS)
            flavor.extra_specs = {**(flavor.extra_specs or {}), **clean}
        return clean

    def delete_spec(self, caller: Caller, flavor_id: str, key: str) -> None:
        self.flavors.get_visible(caller, flavor_id)
        with self.db.write() as s:
            flavor = s.get(Flavor, flavor_id, with_for_update=True)
            if flavor is None:
                raise NotFound(f"Flavor {flavor_id} could not be found.")
            specs = dict(flavor.extra_specs or {})
            if key not in specs:
                raise NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")
            del specs[key]
            self.db.generations.touch(s, FLAVORS)
            flavor.extra_specs = specs
