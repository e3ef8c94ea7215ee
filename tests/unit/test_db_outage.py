"""The database out of reach for a while (README: "PostgreSQL: restarts, a standby,
promotion"): which errors say so, a 503 with Retry-After for a request that meets one, one log
line for a background duty, API events kept until the database is back, libpq's several-host
URLs, and /readyz while a controller drains before it stops. The real outages (a PostgreSQL
restart, a promotion) are in tests/ha/."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import psycopg.errors
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event
from sqlalchemy.exc import (
    IntegrityError,
    OperationalError,
    PendingRollbackError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from infracloud.api.app import create_app
from infracloud.api.middleware import RequestIdMiddleware
from infracloud.core import lifecycle
from infracloud.core.clock import FakeClock
from infracloud.ops import context
from infracloud.ops.events import EventLog, Query
from infracloud.site.services import build_services
from infracloud.store import Database
from infracloud.store.db import CONNECT_TIMEOUT, normalise_url
from infracloud.store.outage import Outage, unavailable
from tests.unit.api_env import quick_config


def wrapped(orig: Exception, cls: type[OperationalError] = OperationalError) -> Exception:
    """`orig` as SQLAlchemy raises it."""
    return cls("SELECT 1", {}, orig)


@pytest.mark.parametrize("orig", [
    psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port '
                             '5432 failed: Connection refused\n\tIs the server running?'),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CannotConnectNow("the database system is shutting down"),
    psycopg.errors.ConnectionFailure("server closed the connection unexpectedly"),
    psycopg.errors.TooManyConnections("sorry, too many clients already"),
])
def test_a_database_out_of_reach_is_unavailable_in_one_line(orig: Exception) -> None:
    reason = unavailable(wrapped(orig))
    assert reason is not None and reason.startswith("database unavailable: ")
    assert "\n" not in reason and len(reason) <= 300


def test_a_standby_and_a_pool_that_never_frees_are_unavailable_too() -> None:
    standby = psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only "
                                                    "transaction")
    assert unavailable(wrapped(standby, ProgrammingError)) == \
        "the database is read-only (a standby, not the primary)"
    assert unavailable(PoolTimeout("QueuePool limit of size 5 overflow 5 reached")) == (
        "no database connection came free in time (the database is slow or unreachable)")
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    assert unavailable(wrapped(deadlock)) == ("the database broke a deadlock by ending this "
                                              "transaction; try again")


def test_an_error_raised_while_handling_an_outage_is_the_outage() -> None:
    """A rollback on the connection the outage broke raises an error of its own: the
    request still met the outage (503), not a bug; an error raised from a bug stays one."""
    lost = wrapped(psycopg.OperationalError("server closed the connection unexpectedly"))
    try:
        try:
            raise lost
        except OperationalError:
            raise PendingRollbackError("Can't reconnect until invalid transaction is rolled "
                                       "back") from None
    except PendingRollbackError as during:
        assert during.__cause__ is None and during.__context__ is lost
        assert unavailable(during) == "database unavailable: server closed the connection " \
                                      "unexpectedly"
    bug = ValueError("a bug")
    bug.__context__ = ValueError("another")
    assert unavailable(bug) is None


@pytest.mark.parametrize("error", [
    wrapped(psycopg.errors.UniqueViolation("duplicate key"), IntegrityError),
    wrapped(psycopg.errors.UndefinedColumn("column x does not exist"), ProgrammingError),
    wrapped(psycopg.errors.SerializationFailure("could not serialize access")),
    wrapped(sqlite3.OperationalError("database is locked")),
    ValueError("not a database error"),
])
def test_other_errors_stay_errors(error: Exception) -> None:
    assert unavailable(error) is None


def test_a_duty_logs_one_line_when_the_outage_begins_and_one_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.duty")
    outage = Outage(log, "reaper")
    down = wrapped(psycopg.OperationalError("connection failed: refused"))
    with caplog.at_level(logging.INFO, logger="test.duty"):
        outage.ok()
        assert [outage.failed(down) for _ in range(5)] == [True] * 5
        outage.ok()
        outage.ok()
        assert outage.failed(RuntimeError("a bug")) is False
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "reaper: database unavailable: connection failed: refused; trying again "
                    "each round"),
        ("INFO", "reaper: the database answers again"),
        ("ERROR", "reaper failed")]
    assert caplog.records[-1].exc_info is not None  # a bug keeps its traceback


def test_api_events_wait_for_the_database_instead_of_being_lost(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'events.db'}")
    db.migrate()
    events = EventLog(db, "vanilla", FakeClock())
    events.retry_pause = 0.01
    real_write, refused = db.write, [2]

    @contextmanager
    def write() -> Iterator[Session]:  # the first two transactions meet a restart
        if refused[0]:
            refused[0] -= 1
            raise wrapped(psycopg.OperationalError("connection failed: refused"))
        with real_write() as s:
            yield s

    db.write = write  # type: ignore[method-assign]
    actor = context.Actor(name="zuul", user_id="u1", project_id="p1", request_id="req-1")
    events.api_write("POST", "/compute/v2.1/servers", "/compute/v2.1/servers", 202, actor,
                     None)
    events.drain(timeout=10)
    assert refused == [0]
    assert [e.action for e in events.query(Query(kind="api"))] == ["POST /compute/v2.1/servers"]
    db.dispose()


def test_libpq_urls_with_several_hosts_become_sqlalchemy_s() -> None:
    assert normalise_url("postgresql://ic:pw@db1:5432,db2:5433/infracloud"
                         "?target_session_attrs=read-write") == (
        "postgresql+psycopg://ic:pw@/infracloud?host=db1:5432&host=db2:5433"
        "&target_session_attrs=read-write")
    assert normalise_url("postgres://ic@db1,db2/infracloud") == \
        "postgresql+psycopg://ic@/infracloud?host=db1&host=db2"
    assert normalise_url("postgresql://ic@db1:5432/infracloud") == \
        "postgresql+psycopg://ic@db1:5432/infracloud"
    assert normalise_url("sqlite:///a,b.db") == "sqlite:///a,b.db"
    engine = create_engine(normalise_url("postgresql://ic@db1:5432,db2:5433/infracloud"
                                         "?target_session_attrs=read-write"))
    _, params = engine.dialect.create_connect_args(engine.url)
    assert (params["host"], params["port"], params["target_session_attrs"]) == (
        "db1,db2", "5432,5433", "read-write")


def connect_params(url: str) -> dict[str, object]:
    """What the engine of Database(url) hands psycopg when it connects (caught before it
    does)."""
    db = Database(url)
    seen: dict[str, object] = {}

    def capture(dialect: object, record: object, cargs: object, cparams: dict[str, object]
                ) -> None:
        seen.update(cparams)
        raise RuntimeError("captured")

    event.listen(db.engine, "do_connect", capture)
    with pytest.raises(RuntimeError, match="captured"):
        db.engine.connect()
    db.dispose()
    return seen


def test_postgresql_connections_time_out_unless_the_url_says_otherwise() -> None:
    assert connect_params("postgresql://ic@127.0.0.1:1/infracloud")["connect_timeout"] == \
        CONNECT_TIMEOUT == 5
    assert connect_params("postgresql://ic@127.0.0.1:1/infracloud?connect_timeout=2"
                          )["connect_timeout"] == "2"


def test_readyz_answers_404_while_the_controller_drains(tmp_path: Path) -> None:
    services = build_services(quick_config(tmp_path))
    try:
        with TestClient(create_app(services)) as client:
            assert client.get("/readyz").status_code == 200
            lifecycle.draining.set()
            try:
                r = client.get("/readyz")
                assert (r.status_code, r.json()) == (404, {
                    "status": "stopping", "reason": "the controller is stopping"})
                # it still serves everything else meanwhile
                assert client.get("/healthz").status_code == 200
            finally:
                lifecycle.draining.clear()
            assert client.get("/readyz").status_code == 200
    finally:
        services.close()


def test_a_request_that_meets_an_outage_answers_503_and_a_bug_still_500(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = build_services(quick_config(tmp_path))
    services.identity.ensure_account("admin", "admin-password", "admin", "admin")
    try:
        with TestClient(create_app(services), raise_server_exceptions=False) as client:
            r = client.post("/identity/v3/auth/tokens", json={"auth": {"identity": {
                "methods": ["password"], "password": {"user": {
                    "name": "admin", "domain": {"id": "default"},
                    "password": "admin-password"}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
            token = {"X-Auth-Token": r.headers["x-subject-token"]}
            failure: list[Exception] = [wrapped(psycopg.errors.AdminShutdown(
                "terminating connection due to administrator command"))]

            def flavors(*_: object, **__: object) -> None:
                raise failure[0]

            monkeypatch.setattr(services.flavor_access, "listing", flavors)
            r = client.get("/compute/v2.1/flavors", headers=token)
            assert (r.status_code, r.headers["Retry-After"], r.json()) == (
                503, "5", {"serviceUnavailable": {
                    "code": 503, "message": "The database is unavailable; retry later."}})
            failure[0] = wrapped(psycopg.errors.UndefinedColumn("no such column"),
                                 ProgrammingError)
            r = client.get("/compute/v2.1/flavors", headers=token)
            assert r.status_code == 500 and "Retry-After" not in r.headers
            assert r.json()["computeFault"]["code"] == 500
    finally:
        services.close()


def test_an_outage_outside_the_routes_answers_503_too() -> None:
    """The request id middleware's last resort (an answer streamed, another middleware)."""
    async def broken(scope: dict[str, object], receive: object, send: object) -> None:
        raise wrapped(psycopg.OperationalError("connection failed: refused"))

    client = TestClient(RequestIdMiddleware(broken, access_log=False))  # no lifespan
    r = client.get("/network/v2.0/ports")
    assert (r.status_code, r.headers["retry-after"]) == (503, "5")
    assert r.json()["NeutronError"]["type"] == "ServiceUnavailable"
