"""Who gets the next node when demand exceeds capacity: start-time fair queuing across
requestors, weighted by their shares, and priority (then age) within a requestor.

Every launch slot serves one node of one request. A requestor's next node gets the start tag
max(V, F) where V is the virtual time (the start tag of the last node served) and F the finish
tag of the requestor's previous node; the smallest start tag goes first, and the node's finish
tag is its start plus 1 / share. So a project that asked for 500 nodes gets its share of the
slots, not all of them: one that asked for 2 is served within the next few launches. A
requestor that was idle starts at V: it neither catches up on what it did not ask for nor
waits behind the history of the others.

min-ready is refilled only from slots no waiting request needs (`plan`)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class Waiting:
    """A request with nodes still to launch."""

    id: str
    requestor: str
    nodes: int
    priority: int = 0  # higher first, within the requestor
    created: float = 0.0


@dataclass
class _Requestor:
    share: float
    finish: float = 0.0
    heap: list[tuple[int, float, int, Waiting]] = field(default_factory=list)


class FairQueue:
    def __init__(self, shares: Mapping[str, float] | None = None,
                 default_share: float = 1.0) -> None:
        self.shares = dict(shares or {})
        self.default_share = default_share
        self.vtime = 0.0
        self._who: dict[str, _Requestor] = {}
        self._where: dict[str, str] = {}  # request id -> requestor
        self._seq = itertools.count()

    def push(self, w: Waiting) -> None:
        if w.nodes < 1:
            raise ValueError("a waiting request needs at least one node")
        if w.id in self._where:
            raise ValueError(f"request {w.id} is already queued")
        r = self._who.get(w.requestor)
        if r is None:
            share = self.shares.get(w.requestor, self.default_share)
            if share <= 0:
                raise ValueError(f"requestor {w.requestor} has no share")
            r = self._who[w.requestor] = _Requestor(share)
        heapq.heappush(r.heap, (-w.priority, w.created, next(self._seq), w))
        self._where[w.id] = w.requestor

    def give_back(self, w: Waiting) -> None:
        """One more node of `w` to launch (a launch of it failed or was withdrawn)."""
        name = self._where.get(w.id)
        if name is None:
            self.push(Waiting(w.id, w.requestor, 1, w.priority, w.created))
            return
        for item in self._who[name].heap:
            if item[3].id == w.id:
                item[3].nodes += 1
                return

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._where

    def remove(self, request_id: str) -> None:
        """A request cancelled or satisfied otherwise: it takes no more slots."""
        name = self._where.pop(request_id, None)
        if name is None:
            return
        r = self._who[name]
        r.heap = [item for item in r.heap if item[3].id != request_id]
        heapq.heapify(r.heap)

    def waiting(self) -> int:
        return sum(item[3].nodes for r in self._who.values() for item in r.heap)

    def _start(self, r: _Requestor) -> float:
        return max(self.vtime, r.finish)

    def pop(self, accept: Callable[[Waiting], bool] | None = None) -> Waiting | None:
        """The request the next launch slot serves (one node of it), or None. With `accept`,
        requestors whose first request it refuses (no capacity for that label now) are
        passed over this time, without losing their place."""
        best: tuple[float, str] | None = None
        for name, r in self._who.items():
            if not r.heap or (accept is not None and not accept(r.heap[0][3])):
                continue
            if best is None or (self._start(r), name) < best:
                best = (self._start(r), name)
        if best is None:
            return None
        start, name = best
        r = self._who[name]
        w = r.heap[0][3]
        self.vtime = start
        r.finish = start + 1.0 / r.share
        w.nodes -= 1
        if w.nodes == 0:
            heapq.heappop(r.heap)
            del self._where[w.id]
        return w


@dataclass(frozen=True)
class Launch:
    label: str
    request_id: str | None  # None: a min-ready node


def plan(slots: int, queue: FairQueue, labels: Mapping[str, str],
         min_ready_deficit: Mapping[str, int]) -> list[Launch]:
    """What to launch with `slots` free slots: waiting requests first, in fair order
    (`labels`: request id -> label); then min-ready deficits, only from what is left."""
    out: list[Launch] = []
    while len(out) < slots:
        w = queue.pop()
        if w is None:
            break
        out.append(Launch(labels[w.id], w.id))
    deficits = {k: v for k, v in min_ready_deficit.items() if v > 0}
    while len(out) < slots and deficits:  # round robin over the labels that are short
        for label in sorted(deficits):
            if len(out) >= slots:
                break
            out.append(Launch(label, None))
            deficits[label] -= 1
            if deficits[label] == 0:
                del deficits[label]
    return out
