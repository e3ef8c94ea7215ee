"""The service catalog: exactly the services this controller serves, each on all three
interfaces, with ids that are the same on every controller of a site."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infracloud.core.ids import stable_id

INTERFACES = ("public", "internal", "admin")


@dataclass(frozen=True)
class ServiceEntry:
    type: str
    name: str
    path: str  # below the base URL; may hold {project_id}
    description: str = ""


class Catalog:
    def __init__(self, base_url: str, region: str, entries: list[ServiceEntry]) -> None:
        self.base_url = base_url.rstrip("/")
        self.region = region
        self.entries = list(entries)

    def service_id(self, entry: ServiceEntry) -> str:
        return stable_id("service", entry.type)

    def endpoint_id(self, entry: ServiceEntry, interface: str) -> str:
        return stable_id("endpoint", entry.type, interface, self.region)

    def url(self, entry: ServiceEntry, project_id: str | None) -> str:
        path = entry.path
        if "{project_id}" in path:
            path = path.replace("{project_id}", project_id or "$(project_id)s")
        return self.base_url + path

    def for_token(self, project_id: str | None) -> list[dict[str, Any]]:
        out = []
        for entry in self.entries:
            url = self.url(entry, project_id)
            out.append({
                "type": entry.type, "name": entry.name, "id": self.service_id(entry),
                "endpoints": [{"id": self.endpoint_id(entry, i), "interface": i,
                               "region": self.region, "region_id": self.region, "url": url}
                              for i in INTERFACES]})
        return out

    def services(self) -> list[dict[str, Any]]:
        return [{"id": self.service_id(e), "type": e.type, "name": e.name,
                 "description": e.description, "enabled": True} for e in self.entries]

    def endpoints(self) -> list[dict[str, Any]]:
        return [{"id": self.endpoint_id(e, i), "interface": i, "region": self.region,
                 "region_id": self.region, "service_id": self.service_id(e),
                 "url": self.url(e, None), "enabled": True}
                for e in self.entries for i in INTERFACES]
