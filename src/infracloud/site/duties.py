"""The background duties of a site, each done by one controller at a time: the holder of the
duty's lease (store/leases.py).

Every controller runs a `Duties` runner. Every `renew_every` seconds (3) it renews its own
heartbeat (`controller:<owner>`, which the hardware conductor's node reservations rely on) and
tries to take or renew the lease of each duty (`duty:<name>`, for `lease_ttl` seconds, 10):
the first controller up takes them all, and when its holder dies a survivor takes each one
within lease_ttl + renew_every seconds (13 by default). A duty runs its rounds only while its
holder knows it holds the lease: until `renew_every` seconds before the lease, as last renewed,
runs out. So a controller that cannot renew (its database is unreachable, or it was paused
and resumed past the expiry) stops starting rounds before anyone else can take the lease; a
round already running finishes (each duty's work is an idempotent loop over the database).
On a clean stop the leases are released, and a survivor takes them at its next renewal.

One lease per duty, not one for all: each duty moves on its own (a hand-over only waits for
that duty: the conductor hands over at once, a long backup round keeps only maintenance),
survivors may share the duties of a dead one, and the status says where each duty is. The
cost is a few more statements per renewal (one per duty, every 3 s).

A SQLite site runs the same code with one owner. Duties that are not singletons (picking up
the token keys another controller made) run on every controller."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from infracloud.core.clock import Clock, isoformat
from infracloud.core.settings import DutiesConfig
from infracloud.store.leases import HEARTBEAT, Leases, LeaseView, heartbeat_name
from infracloud.store.outage import Outage

log = logging.getLogger(__name__)
PREFIX = "duty:"
JOIN_SECONDS = 10.0  # how long a clean stop waits for a running round


@dataclass(eq=False)
class Duty:
    """`every`: seconds between rounds of `job`; 0 for a duty that runs continuously
    elsewhere and asks `Duties.holds` (the hardware conductor). `on_gain` runs when this
    controller takes the duty. `singleton=False`: every controller runs it, no lease."""

    name: str
    every: float = 0.0
    job: Callable[[], object] | None = None
    on_gain: Callable[[], None] | None = None
    singleton: bool = True
    held_until: dt.datetime | None = None  # rounds may start until then
    thread: threading.Thread | None = None
    outage: Outage = field(init=False)

    def __post_init__(self) -> None:
        self.outage = Outage(log, self.name)  # the database unreachable: one line

    @property
    def lease(self) -> str:
        return PREFIX + self.name


class Duties:
    def __init__(self, leases: Leases, clock: Clock, config: DutiesConfig,
                 duties: list[Duty]) -> None:
        self.leases = leases
        self.clock = clock
        self.ttl = config.lease_ttl
        self.renew_every = config.renew_every
        self.duties = {d.name: d for d in duties}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def owner(self) -> str:
        return self.leases.owner

    # ---- holding ---------------------------------------------------------------------------

    def holds(self, name: str) -> bool:
        """Whether this controller may do (more of) the duty now."""
        duty = self.duties[name]
        if not duty.singleton:
            return not self._stop.is_set()
        with self._lock:
            until = duty.held_until
        return until is not None and self.clock.now() < until and not self._stop.is_set()

    def renew(self) -> None:
        """One round of renewals: this controller's heartbeat, then every duty's lease."""
        if self._stop.is_set():
            return
        try:
            self.leases.acquire(heartbeat_name(self.owner), self.ttl)
        except SQLAlchemyError as exc:
            log.warning("cannot renew this controller's heartbeat: %s", exc)
        for duty in self.duties.values():
            if duty.singleton:
                self._renew(duty)

    def _renew(self, duty: Duty) -> None:
        started = self.clock.now()
        try:
            got = self.leases.acquire(duty.lease, self.ttl)
        except SQLAlchemyError as exc:  # not renewed: the duty stops when its time is up
            log.warning("cannot renew the lease of duty %s: %s", duty.name, exc)
            return
        with self._lock:
            had = duty.held_until is not None and started < duty.held_until
            # rounds may start until a renewal is overdue, well before anyone may take over
            duty.held_until = started + dt.timedelta(seconds=self.ttl - self.renew_every) \
                if got else None
        if got and not had:
            log.info("took duty %s", duty.name, extra={"event": "duty.taken",
                                                       "duty": duty.name, "owner": self.owner})
            if duty.on_gain is not None:
                duty.on_gain()
        elif had and not got:
            log.warning("lost duty %s to another controller", duty.name,
                        extra={"event": "duty.lost", "duty": duty.name, "owner": self.owner})

    def run(self, name: str) -> bool:
        """One round of the duty if this controller holds it (whether it ran)."""
        duty = self.duties[name]
        if duty.job is None or not self.holds(name):
            return False
        try:
            duty.job()
        except Exception as exc:  # keep going; the next round tries again
            duty.outage.failed(exc)  # the database unreachable: one line, not one a round
        else:
            duty.outage.ok()
        return True

    # ---- the threads -----------------------------------------------------------------------

    def start(self) -> None:
        """Renew now (so a controller that starts alone holds its duties before it serves),
        then in the background; and a thread per periodic duty."""
        self.renew()
        self._renewer = threading.Thread(target=self._every, args=(self.renew_every,
                                                                   self.renew),
                                         name="duties-renew", daemon=True)
        self._renewer.start()
        for duty in self.duties.values():
            if duty.job is not None and duty.every > 0:
                duty.thread = threading.Thread(
                    target=self._every, args=(duty.every, lambda d=duty: self.run(d.name)),
                    name=f"duty-{duty.name}", daemon=True)
                duty.thread.start()

    def _every(self, seconds: float, fn: Callable[[], object]) -> None:
        while not self._stop.wait(seconds):
            try:
                fn()
            except Exception:
                log.exception("background round failed")

    def stop(self) -> None:
        """Start no more rounds; release the lease of every duty whose round is not running
        (a running one keeps its lease until it ends or runs out). The heartbeat stays until
        `release_heartbeat` (the conductor's last work still relies on it)."""
        self._stop.set()
        if self._renewer is None:  # never started (a command, not a controller)
            return
        self._renewer.join(JOIN_SECONDS)
        for duty in self.duties.values():
            if duty.thread is not None:
                duty.thread.join(JOIN_SECONDS)
            if duty.singleton and (duty.thread is None or not duty.thread.is_alive()):
                with self._lock:
                    duty.held_until = None
                self._release(duty.lease)

    def release_heartbeat(self) -> None:
        if self._renewer is not None:
            self._release(heartbeat_name(self.owner))

    def _release(self, name: str) -> None:
        try:
            self.leases.release(name)
        except SQLAlchemyError as exc:
            log.warning("cannot release lease %s (it runs out by itself): %s", name, exc)

    # ---- what the status shows -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return view(self.leases.all(), self.clock.now(),
                    [d.name for d in self.duties.values() if d.singleton])


def view(leases: list[LeaseView], now: dt.datetime, duties: list[str]) -> dict[str, Any]:
    """`duties`: each duty, its holder (None while nobody holds it), since when, for how long
    still unless renewed, and how many times it changed hands; `controllers`: the controllers
    whose heartbeat is live."""
    by_name = {v.name: v for v in leases}
    rows = []
    for name in duties:
        v = by_name.get(PREFIX + name)
        held = v is not None and v.held
        rows.append({"name": name, "holder": v.owner if v and held else None,
                     "since": isoformat(v.acquired_at) if v and held else None,
                     "expires_in": round((v.expires_at - now).total_seconds(), 1)
                     if v and held else None,
                     "generation": v.generation if v else 0})
    controllers = [{"owner": v.owner, "since": isoformat(v.acquired_at),
                    "last_heartbeat": isoformat(v.renewed_at)}
                   for v in leases if v.name.startswith(HEARTBEAT) and v.held]
    return {"duties": rows, "controllers": controllers}
