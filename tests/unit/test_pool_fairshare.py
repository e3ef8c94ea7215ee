"""Fair share of launch slots across requestors (pure logic), and the pool's state tables."""

from __future__ import annotations

import pytest

from infracloud.core.errors import Conflict
from infracloud.core.states import POOL_NODE, POOL_REQUEST
from infracloud.pool.fairshare import FairQueue, Launch, Waiting, plan


def served(queue: FairQueue, n: int) -> list[str]:
    out = []
    for _ in range(n):
        w = queue.pop()
        assert w is not None
        out.append(w.requestor)
    return out


def test_a_small_requestor_is_served_within_the_next_launches_despite_a_big_one() -> None:
    q = FairQueue()
    for i in range(100):
        q.push(Waiting(f"a{i}", "A", 1, created=i))
    order = served(q, 3)  # A got going first
    q.push(Waiting("b0", "B", 2, created=200))
    order += served(q, 6)
    assert order[:3] == ["A", "A", "A"]
    assert order[3:7].count("B") == 2  # both of B's nodes within the next four launches
    assert q.waiting() == 100 - 7 + 2 - 2


def test_shares_weight_the_slots() -> None:
    q = FairQueue({"zuul": 3, "copr": 1})
    q.push(Waiting("z", "zuul", 100))
    q.push(Waiting("c", "copr", 100))
    order = served(q, 40)
    assert order.count("zuul") == 30 and order.count("copr") == 10


def test_an_idle_requestor_does_not_catch_up_on_what_it_never_asked_for() -> None:
    q = FairQueue()
    q.push(Waiting("a", "A", 50))
    served(q, 40)
    q.push(Waiting("b", "B", 50))
    order = served(q, 20)
    assert order.count("B") == 10  # an even split from now on, not 20 in a row


def test_priority_then_age_within_a_requestor() -> None:
    q = FairQueue()
    q.push(Waiting("old", "A", 1, priority=0, created=1))
    q.push(Waiting("new", "A", 1, priority=0, created=2))
    q.push(Waiting("urgent", "A", 1, priority=5, created=3))
    assert [q.pop().id for _ in range(3)] == ["urgent", "old", "new"]  # type: ignore[union-attr]
    assert q.pop() is None


def test_removed_requests_take_no_slots_and_bad_input_is_refused() -> None:
    q = FairQueue({"nobody": 0})
    q.push(Waiting("x", "A", 3))
    q.remove("x")
    assert q.pop() is None and q.waiting() == 0
    with pytest.raises(ValueError):
        q.push(Waiting("y", "A", 0))
    with pytest.raises(ValueError):
        q.push(Waiting("z", "nobody", 1))
    q.push(Waiting("w", "A", 1))
    with pytest.raises(ValueError):
        q.push(Waiting("w", "A", 1))


def test_min_ready_only_takes_slots_no_waiting_request_needs() -> None:
    q = FairQueue()
    q.push(Waiting("r1", "A", 2))
    labels = {"r1": "ubuntu-noble"}
    assert plan(2, q, labels, {"fedora": 3}) == [Launch("ubuntu-noble", "r1")] * 2
    assert plan(3, q, labels, {"fedora": 1, "centos": 5, "none": 0}) == [
        Launch("centos", None), Launch("fedora", None), Launch("centos", None)]


def test_pool_tables_walk() -> None:
    state = "building"
    for event in ("ready", "assign", "release", "delete", "deleted"):
        state = POOL_NODE.next(state, event)
    assert state == "deleted"
    with pytest.raises(Conflict):
        POOL_NODE.next("used", "assign")
    assert POOL_REQUEST.next(POOL_REQUEST.next("requested", "launch"), "fulfil") == "fulfilled"
    assert POOL_REQUEST.states["requested"].stable  # waiting for quota is not a failure
