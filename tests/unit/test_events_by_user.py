"""`events --user`: what one user did, through an index of the acting user's id."""

from __future__ import annotations

from sqlalchemy import text

from infracloud.core.clock import FakeClock
from infracloud.ops import context
from infracloud.ops.events import EventLog, Query, statement
from infracloud.store import Database

ALICE, BOB = "a" * 32, "b" * 32


def test_events_filter_by_the_acting_user(db: Database, clock: FakeClock) -> None:
    log = EventLog(db, "vanilla", clock)
    for name, user_id in (("alice", ALICE), ("bob", BOB), ("alice", ALICE)):
        actor = context.Actor(name=name, user_id=user_id, project_id="p" * 32,
                              request_id=f"req-{name}")
        log.api_write("POST", "/compute/v2.1/os-keypairs", "/compute/v2.1/os-keypairs",
                      200, actor, None)
    with context.acting("system:reaper"):  # no user: never one user's
        log.record(kind="alert", resource_type="host", action="firing")
    log.drain()
    assert [e.actor for e in log.query(Query(user_id=ALICE))] == ["alice", "alice"]
    assert [e.actor for e in log.query(Query(user_id=BOB, kind="api"))] == ["bob"]
    assert log.query(Query(user_id="c" * 32)) == []
    newest = log.query(Query(user_id=ALICE, newest_first=True, limit=1))
    assert len(newest) == 1 and newest[0].id == max(e.id for e in log.query(
        Query(user_id=ALICE)))


def test_the_user_filter_reads_through_its_index(db: Database) -> None:
    stmt = statement(Query(user_id=ALICE, newest_first=True, limit=100))
    sql = str(stmt.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        if db.engine.dialect.name == "sqlite":
            plan = " ".join(str(row[-1]) for row in conn.execute(
                text(f"EXPLAIN QUERY PLAN {sql}")))
        else:  # on an almost empty table PostgreSQL would rather scan it: ask for the index
            conn.execute(text("SET enable_seqscan = off"))
            plan = " ".join(str(row[0]) for row in conn.execute(text(f"EXPLAIN {sql}")))
    assert "ix_events_actor_id" in plan, plan
    assert "TEMP B-TREE" not in plan.upper() and "Sort" not in plan, plan  # id order: no sort
