"""Several `infracloud pool` processes on one database: one works, the others stand by.

The work (the engine: launches, deletes, min-ready, leak cleaning, uploads) belongs to the
holder of the lease `pool:<name>` (store/leases.py), taken for `ttl` seconds (10) and renewed
every `renew_every` (3). A standby tries to take it every `try_every` (1) seconds; it gets it
when the holder released it (a clean stop: at once) or let it expire (a process killed, or cut
off from the database: within ttl + try_every seconds). On taking it, a process builds a fresh
active face, loads the state from the database (Engine.load: requests waiting, nodes building,
ready, in use, launches with a server watched again, launches without one withdrawn and their
server, if any, deleted as a leak) and runs the engine.

A holder stops counting on its lease `MARGIN` seconds before the ttl it last renewed is up
(measured from before the renewal was sent): its engine skips ticks from then on and the seat
turns it into a standby. Every write of the active face checks, in its own transaction, that
this process still holds the lease under the generation it took (`fence`); a write that finds
otherwise writes nothing (LeaseLost) and stops the engine. Clocks of the pool machines must
agree (NTP) to well within a second for expiry to mean the same to all of them.

Each process also renews `pool-process:<name>:<where>` (its heartbeat) so `pool status` can
list the processes standing by."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock
from infracloud.pool.commands import Inbox
from infracloud.pool.records import Fence, LeaseLost
from infracloud.pool.service import PoolService
from infracloud.pool.standby import StandbyPool
from infracloud.store import Database
from infracloud.store.leases import Leases, LeaseView
from infracloud.store.models import Lease

log = logging.getLogger(__name__)

LEASE_TTL = 10.0  # seconds a holding lasts unless renewed
RENEW_EVERY = 3.0  # seconds between the active process's renewals
TRY_EVERY = 1.0  # seconds between a standby's tries
MARGIN = 1.0  # seconds before its lease runs out that a holder stops working


def lease_name(pool: str) -> str:
    return f"pool:{pool}"


def process_prefix(pool: str) -> str:
    return f"pool-process:{pool}:"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


class Seat:
    """The pool's seat in one process: which face (active or standby) the API talks to, and
    the thread that keeps or takes the lease. `make_active(fence)` builds an active face whose
    writes go through `fence`; `make_standby()` a standby face; `on_change(face)` is told each
    new face before the old one stops."""

    def __init__(self, db: Database, pool: str, owner: str, where: str,
                 make_active: Callable[[Fence], PoolService],
                 make_standby: Callable[[], StandbyPool], *,
                 on_change: Callable[[PoolService], None] = lambda face: None,
                 clock: Clock | None = None, ttl: float = LEASE_TTL,
                 renew_every: float = RENEW_EVERY, try_every: float = TRY_EVERY) -> None:
        self.db = db
        self.pool = pool
        self.owner = owner
        self.where = where
        self.clock = clock or Clock()
        self.leases = Leases(db, self.clock, owner)
        self.inbox = Inbox(db)  # stamps rows with the wall clock, as the records are
        self.lease = lease_name(pool)
        self.heartbeat = process_prefix(pool) + where
        self.make_active = make_active
        self.make_standby = make_standby
        self.on_change = on_change
        self.ttl, self.renew_every, self.try_every = ttl, renew_every, try_every
        self._stop = threading.Event()
        self.face: PoolService = self._standby()
        self.since = self.clock.now()  # when this process took its present role
        self.generation: int | None = None
        self._valid_until = -math.inf
        self._lost = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._steps = threading.Lock()

    @property
    def role(self) -> str:
        return self.face.role

    def holding(self) -> bool:
        """Whether this process may still count on the lease now."""
        return not self._lost.is_set() and time.monotonic() < self._valid_until

    # ---- running ----------------------------------------------------------------------------

    def start(self) -> None:
        """One try at once (a pool alone is active before it serves), then the thread."""
        self.step()
        self._thread = threading.Thread(target=self._loop, name="pool-seat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            every = self.renew_every if self.role == "active" else self.try_every
            self._wake.wait(every)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.step()
            except Exception:  # the seat must go on trying
                log.exception("pool seat: step failed")

    def step(self) -> None:
        """Renew or take the lease; change face when that changed what this process is."""
        with self._steps:
            sent = time.monotonic()
            try:
                got = self.leases.acquire(self.lease, self.ttl)
                self.leases.acquire(self.heartbeat, self.ttl)
            except Exception as exc:  # the database is away: the lease runs out by itself
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning("pool seat: cannot renew the pool's lease: %s", first[:300])
                got = False
            if got:
                self._valid_until = sent + self.ttl - MARGIN
            if self.role == "active" and not self.holding():
                self._demote()
            if got and self.role == "standby" and not self._stop.is_set():
                self._promote()

    def stop(self) -> None:
        """Stop the engine (its last tick written), then give the lease up so a standby takes
        over at once."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._steps:
            face = self.face
            face.stop()
            try:
                if face.role == "active":
                    self.leases.release(self.lease)
                self.leases.release(self.heartbeat)
            except Exception as exc:  # it expires by itself
                log.warning("pool seat: lease not released: %s", exc)

    # ---- changing face ----------------------------------------------------------------------

    def _promote(self) -> None:
        view = self.leases.holder(self.lease)
        if view is None or view.owner != self.owner:
            return
        fence = self.fence(view.generation)
        self._lost.clear()
        try:
            requeued = self.inbox.requeue(view.generation, fence)
            active = self.make_active(fence)
            active.inbox, active.generation = self.inbox, view.generation
            active.may_work = self.holding
            active.load()
            active.start()
        except LeaseLost as exc:
            log.warning("pool seat: lost the lease while taking over: %s", exc.message)
            return
        except Exception:
            log.exception("pool seat: could not take over; giving the lease back")
            self._release()
            return
        self.generation = view.generation
        self._change(active)
        log.info("pool process %s is active (lease %s, generation %d): %d requests, %d nodes "
                 "loaded, %d commands queued again", self.owner, self.lease, view.generation,
                 len(active.requests), len(active.nodes), requeued)

    def _demote(self) -> None:
        log.warning("pool process %s no longer holds the pool's lease: standing by",
                    self.owner)
        self._change(self._standby())
        self.generation = None
        self._release()

    def _standby(self) -> StandbyPool:
        face = self.make_standby()
        face.inbox, face.stopping = self.inbox, self._stop.is_set
        return face

    def _change(self, face: PoolService) -> None:
        old, self.face = self.face, face
        self.since = self.clock.now()
        self.on_change(face)
        old.stop()

    def _release(self) -> None:
        try:
            self.leases.release(self.lease)  # nothing if another holds it now
        except Exception as exc:
            log.warning("pool seat: lease not released: %s", exc)

    def fence(self, generation: int) -> Fence:
        """The check every write of an active face makes in its transaction: the lease row,
        locked, still names this process, `generation` and a time to come."""
        def check(s: Session) -> None:
            row = s.execute(select(Lease.owner, Lease.generation, Lease.expires_at)
                            .where(Lease.name == self.lease).with_for_update()).first()
            if row is not None and row.owner == self.owner and row.generation == generation \
                    and row.expires_at >= self.clock.now():
                return
            self._lost.set()
            self._wake.set()
            holder = row.owner if row is not None else None
            raise LeaseLost(f"This pool process ({self.owner}) no longer holds the pool's "
                            f"lease (now {holder or 'nobody'}'s); ask again.")
        return check

    # ---- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Which process is active, which stand by, and this one's role."""
        views = self.leases.all()
        active = next((v for v in views if v.name == self.lease and v.held), None)
        prefix = process_prefix(self.pool)

        def process(v: LeaseView) -> dict[str, Any]:
            return {"owner": v.owner, "where": v.name[len(prefix):],
                    "role": "active" if active and v.owner == active.owner else "standby",
                    "seen_at": _iso(v.renewed_at), "since": _iso(v.acquired_at)}

        return {
            "pool": self.pool,
            "this": {"owner": self.owner, "where": self.where, "role": self.role,
                     "since": _iso(self.since)},
            "active": None if active is None else {
                "owner": active.owner, "since": _iso(active.acquired_at),
                "renewed_at": _iso(active.renewed_at), "expires_at": _iso(active.expires_at),
                "generation": active.generation},
            "processes": [process(v) for v in views if v.name.startswith(prefix) and v.held],
            "commands_waiting": self.inbox.waiting(),
        }
