"""Two pool processes' seats on one database (SQLite and PostgreSQL; tests/ha runs real
processes): one works, the other stands by and takes over with every request and node; a
process whose lease was taken writes nothing more; a standby's writes are applied by the
active one, once; a clean stop hands over at once; /readyz tells the role. The lease's clock
is a FakeClock the tests move (a lease that runs out); the clouds are in memory and shared,
as two processes share a real cloud."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import httpx
import pytest

from infracloud.core.clock import FakeClock
from infracloud.core.errors import Conflict, NotFound, ServiceUnavailable
from infracloud.pool.auth import Open
from infracloud.pool.commands import Inbox
from infracloud.pool.config import PoolConfig, Provider
from infracloud.pool.fakecloud import FakeCloud
from infracloud.pool.probe import FakeProber
from infracloud.pool.records import Fence, LeaseLost, PoolStore
from infracloud.pool.seat import LEASE_TTL, Seat
from infracloud.pool.service import PoolService
from infracloud.pool.standby import StandbyPool
from infracloud.processes.pool_server import create_pool_app
from infracloud.store import Database
from infracloud.store.models import PoolNode, PoolRequest
from tests.servers import free_port, wait_for
from tests.unit.pool_env import pool_config


class Site:
    """The shared world: one database, one lease clock, the clouds."""

    def __init__(self, db: Database, config: PoolConfig) -> None:
        self.db, self.config = db, config
        self.clock = FakeClock()
        self.clouds = {p.name: FakeCloud(p.name, ip_prefix=f"127.{210 + i}.0.")
                       for i, p in enumerate(config.providers)}
        self.seats: list[Seat] = []

    def cloud(self, provider: Provider) -> FakeCloud:
        return self.clouds[provider.name]

    def seat(self, where: str) -> Seat:
        def active(fence: Fence) -> PoolService:
            return PoolService(self.config, PoolStore(self.db, self.config.name, fence),
                               self.cloud, FakeProber())

        def standby() -> StandbyPool:
            face = StandbyPool(self.config, PoolStore(self.db, self.config.name), self.cloud,
                               FakeProber())
            face.wait_for = 5.0
            return face

        s = Seat(self.db, self.config.name, f"{where}/1", where, active, standby,
                 clock=self.clock)
        self.seats.append(s)
        return s

    def servers(self) -> dict[str, Any]:
        return {sid: s for c in self.clouds.values() for sid, s in c.servers_by_id().items()}

    def launches(self) -> int:
        return sum(c.calls["create_server"] for c in self.clouds.values())

    def expire(self) -> None:
        """The lease's ttl passes with no renewal (its holder died or was cut off)."""
        self.clock.advance(LEASE_TTL + 1)


@pytest.fixture
def site(db: Database) -> Iterator[Site]:
    s = Site(db, pool_config({"a": {"max-servers": 3}}))
    yield s
    for seat in s.seats:
        seat.face.stop()


def state(face: PoolService, request_id: str) -> str:
    return str(face.get_request(request_id)["state"])


def until(what: str, cond: Callable[[], Any], timeout: float = 20) -> Any:
    return wait_for(what, cond, timeout, every=0.02)


def in_thread(fn: Callable[[], Any]) -> Future[Any]:
    """Run a standby's write (it waits for the active one's answer) beside the test."""
    done: Future[Any] = Future()

    def run() -> None:
        try:
            done.set_result(fn())
        except BaseException as exc:  # the test reads it from the future
            done.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return done


def test_the_standby_takes_over_with_every_request_and_node(site: Site) -> None:
    one, two = site.seat("one:1"), site.seat("two:2")
    one.step()
    two.step()
    assert (one.role, two.role) == ("active", "standby")
    first = one.face
    fulfilled = [first.create_request(["small"], "zuul")["id"] for _ in range(2)]
    until("two fulfilled", lambda: all(state(first, r) == "fulfilled" for r in fulfilled))
    site.clouds["a"].build_polls = 10**6  # the next launch stays building
    building = first.create_request(["small"], "zuul")["id"]
    waiting = [first.create_request(["small"], "zuul")["id"] for _ in range(2)]  # no room
    until("a server for the third", lambda: any(
        n["state"] == "building" and n["server_id"] for n in first.list_nodes()))
    known_nodes = {n["id"]: n for n in first.list_nodes()}
    first.stop()  # dies: its engine stops, its lease stays until it runs out
    assert two.face.list_nodes() == list(known_nodes.values())  # the standby reads it all
    two.step()
    assert two.role == "standby"  # the lease has not run out yet
    site.expire()
    two.step()
    assert two.role == "active" and two.generation == 2
    taken = two.face
    assert {n["id"] for n in taken.list_nodes()} == set(known_nodes)
    assert [state(taken, r) for r in [*fulfilled, building, *waiting]] == \
        ["fulfilled"] * 2 + ["pending"] + ["requested"] * 2
    site.clouds["a"].build_polls = 1
    site.clouds["a"].build_now()
    for node in taken.list_nodes("small", "in-use"):
        taken.release(node["id"], None)
    until("all fulfilled", lambda: all(state(taken, r) == "fulfilled"
                                       for r in [building, *waiting]))
    # the building server was watched to the end, not launched again
    assert site.launches() == 5
    live = {n["server_id"] for n in taken.list_nodes()}
    assert live == set(site.servers())


def test_a_process_whose_lease_was_taken_writes_nothing_more(site: Site) -> None:
    one, two = site.seat("one:1"), site.seat("two:2")
    one.step()
    stale = one.face
    site.expire()  # one is paused, say: its lease runs out and two takes it
    two.step()
    assert two.role == "active"
    with pytest.raises(LeaseLost) as lost:
        stale.create_request(["small"], "zuul")
    assert lost.value.status == 503 and lost.value.headers["Retry-After"]
    assert two.face.list_requests() == []  # nothing of it was written
    one.step()  # it sees it lost the lease: it stands by
    assert one.role == "standby"
    assert stale._thread is not None and not stale._thread.is_alive()


def test_writes_to_a_standby_are_applied_by_the_active_process_once(site: Site) -> None:
    one, two = site.seat("one:1"), site.seat("two:2")
    one.step()
    two.step()
    standby = two.face
    made = in_thread(lambda: standby.create_request(["small"], "zuul", key="k1")).result(10)
    again = in_thread(lambda: standby.create_request(["small"], "zuul", key="k1")).result(10)
    assert again["id"] == made["id"]  # the same key: the same request
    assert [r["id"] for r in one.face.list_requests()] == [made["id"]]
    until("fulfilled", lambda: standby.get_request(made["id"])["state"] == "fulfilled")
    node = standby.get_request(made["id"])["node_ids"][0]
    held = in_thread(lambda: standby.hold(node, "look at it", "zuul")).result(10)
    assert held["state"] == "held" and one.face.get_node(node)["state"] == "held"
    with pytest.raises(Conflict, match="only ready or in-use nodes can be held"):
        in_thread(lambda: standby.hold(node, "again", "zuul")).result(10)
    with pytest.raises(NotFound):
        in_thread(lambda: standby.release("0000009999", None)).result(10)
    assert in_thread(lambda: standby.release(node, "zuul")).result(10)["state"] in (
        "used", "deleting")
    drained = in_thread(lambda: standby.drain("a", "maintenance")).result(10)
    assert drained["drained_reason"] == "maintenance"
    assert one.face.providers["a"].drained_reason == "maintenance"
    waiting = in_thread(lambda: standby.create_request(["small"], "zuul")).result(10)
    cancelled = in_thread(lambda: standby.cancel_request(waiting["id"], "zuul")).result(10)
    assert cancelled["state"] == "cancelled"
    assert Inbox(site.db).waiting() == 0


def test_a_write_no_active_process_takes_is_withdrawn(site: Site) -> None:
    one, two = site.seat("one:1"), site.seat("two:2")
    one.step()
    two.step()
    one.face.stop()  # dead; its lease runs on
    standby = two.face
    assert isinstance(standby, StandbyPool)
    standby.wait_for = 0.3
    with pytest.raises(ServiceUnavailable, match="nothing was done") as refused:
        standby.create_request(["small"], "zuul")
    assert refused.value.headers["Retry-After"]
    site.expire()
    two.step()
    assert two.role == "active"
    two.face.tick()
    assert two.face.list_requests() == []  # withdrawn: it never happens


def test_a_write_taken_by_a_process_that_died_is_applied_by_the_next(site: Site) -> None:
    one, two = site.seat("one:1"), site.seat("two:2")
    one.step()
    two.step()
    one.face.stop()
    inbox = Inbox(site.db, site.clock)
    command = inbox.submit("create", {"labels": ["small"], "requestor": "zuul"}, "zuul")
    assert one.generation is not None
    assert [c.id for c in inbox.take(one.generation, one.fence(one.generation))] == [command]
    # ... and one dies before it answers: nothing of it was written
    site.expire()
    two.step()
    assert two.role == "active"
    answer = inbox.wait(command, timeout=10)
    assert answer["state"] in ("requested", "pending")
    assert [r["id"] for r in two.face.list_requests()] == [answer["id"]]


def test_a_clean_stop_hands_over_at_once(site: Site) -> None:
    one, two = site.seat("one:1"), site.seat("two:2")
    one.step()
    two.step()
    rid = one.face.create_request(["small"], "zuul")["id"]
    status = two.status()
    assert status["active"]["owner"] == "one:1/1" and status["this"]["role"] == "standby"
    assert {(p["where"], p["role"]) for p in status["processes"]} == {
        ("one:1", "active"), ("two:2", "standby")}
    one.stop()  # released: no need to wait for it to run out (the lease clock stands still)
    two.step()
    assert two.role == "active"
    assert two.face.get_request(rid)["id"] == rid
    status = two.status()
    assert status["active"]["owner"] == "two:2/1" and status["active"]["generation"] == 2
    assert [p["where"] for p in status["processes"]] == ["two:2"]


def test_no_server_is_asked_for_before_its_node_is_written(site: Site) -> None:
    """A process killed between asking a cloud for a server and writing its node would leave
    a server the next process cannot know, under a node id it hands out again. So the create
    waits for the write; and a write the database refused is made by the next flush."""
    one = site.seat("one:1")
    one.step()
    one.face.stop()  # a face of the same holding, ticked by hand:
    assert one.generation is not None
    fence = one.fence(one.generation)
    face = PoolService(site.config, PoolStore(site.db, site.config.name, fence), site.cloud,
                       FakeProber())
    face.load()
    refusals: list[Exception] = []

    def flaky(s: Any) -> None:
        if refusals:
            raise refusals.pop()
        assert fence is not None
        fence(s)

    face.store.fence = flaky
    until("the provider's catalog", lambda: (face.tick(), face.providers["a"].flavors)[1])
    refusals.append(RuntimeError("the database went away"))
    with pytest.raises(RuntimeError):
        face.create_request(["small"], "zuul")  # the request's own write is refused...
    face.store.flush()  # ...and made by the next flush
    (req,) = face.list_requests()
    with site.db.read() as s:
        assert s.get(PoolRequest, req["id"]) is not None
    assert not face.nodes
    refusals.append(RuntimeError("away again"))
    with pytest.raises(RuntimeError):
        face.tick()  # a node is made, its write refused
    (node,) = face.nodes.values()
    assert face.store.unwritten(node)
    face.tick()  # the create must wait: this tick writes the node first
    assert site.launches() == 0 and not face.store.unwritten(node)
    with site.db.read() as s:
        assert s.get(PoolNode, node.id) is not None
    until("fulfilled", lambda: (face.tick(), state(face, req["id"]))[1] == "fulfilled")
    assert site.launches() == 1


def test_readiness_says_the_role_and_whether_the_database_answers(site: Site) -> None:
    """What HAProxy checks: 200 with the role while the process reaches the database (both
    roles serve), 503 with why when it does not."""
    one, two = site.seat("one:1"), site.seat("two:2")
    one.step()
    two.step()
    away = StandbyPool(site.config, PoolStore(Database(
        f"postgresql+psycopg://pool@127.0.0.1:{free_port()}/pool"), site.config.name),
        site.cloud, FakeProber())

    async def ready(face: PoolService, seat: Seat | None) -> httpx.Response:
        app = create_pool_app(face, Open(), seat)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://pool") as client:
            return await client.get("/readyz")

    for seat, role in ((one, "active"), (two, "standby")):
        r = asyncio.run(ready(seat.face, seat))
        assert (r.status_code, r.json()) == (200, {"status": "ready", "role": role})
    r = asyncio.run(ready(away, None))
    assert r.status_code == 503
    assert r.json()["role"] == "standby" and r.json()["reason"].startswith(
        "database unreachable")
    away.stop()
