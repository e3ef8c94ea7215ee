"""Fixtures shared by all tests: databases on both backends and a fast identity service."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from infracloud.core.clock import FakeClock
from infracloud.core.secrets import SecretBox
from infracloud.core.settings import IdentityConfig, PasswordHashConfig
from infracloud.identity.service import IdentityService
from infracloud.store import Database
from tests import pgcluster

BACKENDS = ["sqlite", "postgresql"]

# argon2 at its cheapest: the tests check behaviour, not hashing cost
FAST_HASH = PasswordHashConfig(time_cost=1, memory_cost_kib=64, parallelism=1)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("INFRACLOUD_TEST_PG_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="infracloud-pg-"))
    url = pgcluster.start(folder)
    try:
        yield url
    finally:
        pgcluster.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def create_pg_database(admin_url: str, template: str | None = None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' +
                          (f' TEMPLATE "{template}"' if template else "")))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> str:
    """A migrated database that per-test databases are copied from (fast)."""
    url = create_pg_database(pg_admin_url)
    db = Database(url)
    db.migrate()
    db.dispose()
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return create_pg_database(request.getfixturevalue("pg_admin_url"),
                              template=request.getfixturevalue("pg_template"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def identity_config() -> IdentityConfig:
    return IdentityConfig(password_hash=FAST_HASH)


@pytest.fixture
def secret_box(tmp_path: Path) -> SecretBox:
    """The site's secret key file (in the test's folder)."""
    return SecretBox(tmp_path / "secret.key")


@pytest.fixture
def identity(db: Database, identity_config: IdentityConfig, clock: FakeClock,
             secret_box: SecretBox) -> IdentityService:
    service = IdentityService(db, identity_config, clock, box=secret_box)
    service.start()
    return service


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec and callspec.params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.pg)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite file (the pool's tests, which need no PostgreSQL run)."""
    db = Database(f"sqlite:///{tmp_path / 'pool.db'}")
    db.migrate()
    yield db
    db.dispose()
