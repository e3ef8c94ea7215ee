"""The controller's HTTP application in this process, on a SQLite file, with an admin's and a
member's token: for the tests of what the routes answer to odd input (no servers started)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from infracloud.api.app import create_app
from infracloud.core.settings import ControllerConfig
from infracloud.site.services import Services, build_services


@dataclass
class Api:
    app: FastAPI
    client: TestClient
    services: Services
    admin: dict[str, str]
    member: dict[str, str]


def quick_config(tmp: Path, **identity: Any) -> ControllerConfig:
    """An in-process controller's config in `tmp`, with cheap password hashing (tests only);
    `identity` adds identity settings."""
    return ControllerConfig.model_validate({
        "database": {"url": f"sqlite:///{tmp / 'controller.db'}"},
        "images": {"store_path": str(tmp / "images")},
        "identity": {"password_hash": {"time_cost": 1, "memory_cost_kib": 64,
                                       "parallelism": 1}, **identity}})


def _token(client: TestClient, user: str, password: str, project: str) -> dict[str, str]:
    r = client.post("/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
    assert r.status_code == 201, r.text
    return {"X-Auth-Token": r.headers["x-subject-token"]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp: Path = tmp_path_factory.mktemp("api")
    services = build_services(quick_config(tmp))
    services.identity.ensure_account("admin", "admin-password", "admin", "admin")
    services.identity.ensure_account("alice", "alice-password", "zuul", "member")
    app = create_app(services)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Api(app, client, services,
                      _token(client, "admin", "admin-password", "admin"),
                      _token(client, "alice", "alice-password", "zuul"))
    finally:
        services.close()
