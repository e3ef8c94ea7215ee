"""`GET /readyz`: 200 while the controller reaches its database, 503 with one line of why while
it does not (what HAProxy's health check in deploy/haproxy.cfg asks), and 200 again once the
database is back, with no restart of the controller."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from infracloud.api.app import create_app
from infracloud.site.services import Services, build_services
from infracloud.store.outage import database_unreachable
from tests import pgcluster
from tests.unit.api_env import quick_config


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[TestClient, Services]]:
    services = build_services(quick_config(tmp_path))
    try:
        with TestClient(create_app(services)) as client:
            yield client, services
    finally:
        services.close()


def test_ready_without_a_token_while_the_database_answers(
        controller: tuple[TestClient, Services]) -> None:
    client, _ = controller
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready"}


def test_sqlite_file_gone_is_not_ready(controller: tuple[TestClient, Services],
                                       tmp_path: Path) -> None:
    """The database file replaced by a folder (its disk lost): SQLite cannot open it."""
    client, services = controller
    services.db.dispose()  # no pooled connection keeps the old file open
    db_file = tmp_path / "controller.db"
    db_file.unlink()
    Path(f"{db_file}-wal").unlink(missing_ok=True)
    Path(f"{db_file}-shm").unlink(missing_ok=True)
    db_file.mkdir()
    r = client.get("/readyz")
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("database unreachable: ")
    assert "\n" not in body["reason"]
    assert client.get("/healthz").status_code == 200  # alive, only not ready


def test_a_database_that_does_not_answer_in_time_is_not_ready() -> None:
    release = threading.Event()

    def ping() -> None:  # a database that hangs until the check has given up
        release.wait(30)

    stub: Any = SimpleNamespace(ping=ping)

    async def check() -> str | None:
        try:
            return await database_unreachable(stub, 0.05)
        finally:
            release.set()  # before asyncio.run waits for the worker thread

    assert asyncio.run(check()) == "database did not answer within 0.05 s"


@pytest.mark.pg
def test_postgresql_stopped_then_started_again(tmp_path: Path) -> None:
    """A controller on its own PostgreSQL cluster: ready, the cluster stopped -> 503, the
    cluster started again -> ready, the same controller process throughout."""
    folder = Path(tempfile.mkdtemp(prefix="infracloud-readyz-pg-"))
    url = pgcluster.start(folder)
    running = True
    try:
        config = quick_config(tmp_path)
        config.database.url = url
        config.hardware.secret_key_file = tmp_path / "secret.key"
        services = build_services(config)
        try:
            with TestClient(create_app(services)) as client:
                assert client.get("/readyz").status_code == 200
                pgcluster.stop(folder)
                running = False
                r = client.get("/readyz")
                assert r.status_code == 503, r.text
                assert r.json()["reason"].startswith("database unreachable: ")
                pgcluster.resume(folder)
                running = True
                r = client.get("/readyz")
                assert r.status_code == 200, r.text
        finally:
            services.close()
    finally:
        if running:
            pgcluster.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)
