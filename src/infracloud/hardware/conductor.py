"""The conductor: carries out what the node API asked for, by talking to the BMCs.

One loop thread picks work each tick and hands it to a worker pool per BMC protocol (so 100
slow IPMI BMCs never hold up Redfish ones, and no protocol gets more than its configured
concurrency). Each piece of work holds the node's reservation (hardware/reservations.py),
renewed while it runs and checked before every BMC call, so several controllers never work on
one node at once; a dead controller's nodes are taken over once its heartbeat stops. With
several controllers the conductor runs on one of them at a time (its `gate` is the lease of
the conductor duty, site/duties.py); the reservations also cover the hand-over. Every BMC
call is bounded by its timeout and retried with exponential backoff and jitter on transient
errors; a BMC that keeps failing is **fenced**: its node goes into maintenance with the fault
"power failure", its compute host is disabled and its servers are marked lost, and the rest of
the site goes on. Fenced BMCs are probed now and then; when they answer again the fault clears
by itself.

Power states are synced in the background at a steady rate (every node once per
`power_sync_interval`, spread evenly over it), never in bursts."""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import func, or_, select

from infracloud.core.clock import Clock
from infracloud.core.settings import HardwareConfig
from infracloud.core.states import PROVISION
from infracloud.hardware.bmc import Bmc, BmcAccess, BmcError, make_bmc
from infracloud.hardware.drain import Drainer
from infracloud.hardware.nodes import (
    HEADING,
    NodeService,
    expired,
    move,
    timeouts,
    token_hash,
)
from infracloud.hardware.reservations import Hold, Interrupted, Reservations
from infracloud.ops import context, metrics
from infracloud.store import Database
from infracloud.store.models import Node
from infracloud.store.outage import Outage

log = logging.getLogger(__name__)
T = TypeVar("T")
TICK = 1.0
STABLE_SYNCED = ("manageable", "available", "active", "inspect failed", "clean failed",
                 "deploy failed", "error")
WORKING = tuple(HEADING)  # in-progress states; "wait call-back" only waits for the agent
JOBS = ("verifying", "inspecting", "cleaning", "deploying", "deleting")
POWER_POLL = 0.5
RECHECK_DRAIN = 5.0
FENCE_FAULT = "power failure"


def ironic_power(state: str) -> str:
    """The API's words for a BMC's 'on' / 'off'."""
    return f"power {state}"


class NotYet(Exception):
    """The step is waiting for something outside the BMC (a drain); try again later."""


def _unguarded() -> None:
    pass


@dataclass
class Calls:
    """BMC calls of one piece of work: retries, backoff, and the counts that decide fencing."""

    bmc: Bmc
    config: HardwareConfig
    stop: threading.Event
    made: int = 0
    failed_in_row: int = 0
    recorded: bool = False
    pending: dict[str, Any] = field(default_factory=dict)  # written when the step succeeds
    errors: list[str] = field(default_factory=list)
    # before every attempt: raises Interrupted when the node is no longer ours (or stopping)
    guard: Callable[[], None] = _unguarded

    def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        c = self.config
        for attempt in range(c.retries):
            self.guard()
            self.made += 1
            try:
                result = metrics.bmc_call(self.bmc.name, fn, *args)
            except BmcError as exc:
                self.failed_in_row += 1
                self.errors.append(str(exc))
                if not exc.transient or attempt + 1 == c.retries:
                    raise
                delay = min(c.backoff * 2 ** attempt, c.backoff_max)
                self.stop.wait(delay * random.uniform(0.5, 1.0))
                continue
            self.failed_in_row = 0
            return result
        raise AssertionError("unreachable")

    def wait_power(self, state: str, limit: float) -> None:
        deadline = time.monotonic() + limit
        while self(self.bmc.get_power) != state:
            if time.monotonic() > deadline:
                raise BmcError(f"the power did not turn {state} within {limit:g} s")
            self.stop.wait(POWER_POLL)

    def power(self, state: str, limit: float) -> None:
        if self(self.bmc.get_power) != state:
            self(self.bmc.set_power, state)
            self.wait_power(state, limit)

    def powered(self, state: str, now: dt.datetime, **more: Any) -> None:
        """Record, when the step succeeds, the power state the step left the machine in."""
        self.pending.update(power_state=ironic_power(state), power_checked_at=now, **more)

    def off_and_empty(self, limit: float) -> None:
        """Power off and take out any deploy media (cleaning, undeploy)."""
        self.power("off", limit)
        if self.bmc.virtual_media:
            self(self.bmc.eject_media)


class Conductor:
    def __init__(self, db: Database, config: HardwareConfig, clock: Clock, nodes: NodeService,
                 drainer: Drainer, base_url: str, holder: str,
                 make: Callable[[BmcAccess], Bmc] = make_bmc) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.nodes = nodes
        self.drainer = drainer
        self.base_url = base_url.rstrip("/")
        self.holder = holder
        self.make = make
        self.limits = timeouts(config)
        self.pools = {p: ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"bmc-{p}")
                      for p, n in config.workers.items()}
        self.in_flight = dict.fromkeys(config.workers, 0)
        self.reservations = Reservations(db, clock, holder, config.lease)
        # whether this conductor picks work now (the conductor duty's lease with several
        # controllers); work already running goes on under its nodes' reservations
        self.gate: Callable[[], bool] = lambda: True
        self._holds: dict[str, Hold] = {}  # node id -> the reservation of the work on it
        self._renewed = 0.0  # time.monotonic() of the last renewal
        self._bmcs: dict[str, tuple[BmcAccess, Bmc]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="conductor", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        for _, bmc in self._bmcs.values():
            bmc.close()

    def _loop(self) -> None:
        with context.acting("system:conductor"):
            self._loop_body()

    def _loop_body(self) -> None:
        outage = Outage(log, "conductor tick")  # the database unreachable: one line
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._renewed >= self.config.lease / 3:
                    self.renew()
                if self.gate():
                    self.tick()
            except Exception as exc:
                outage.failed(exc)
            else:
                outage.ok()
            self._wake.wait(TICK)
            self._wake.clear()

    def renew(self) -> None:
        """Renew the reservations of the work in progress (the loop does, every third of
        `hardware.lease`, whether this conductor picks new work or not)."""
        self._renewed = time.monotonic()
        with self._lock:
            holds = list(self._holds.values())
        self.reservations.renew(holds)

    def tick(self) -> None:
        self._timeouts()
        self._dispatch()
        self._sync()

    def idle(self) -> bool:
        with self._lock:
            return not self._holds

    # ---- picking work --------------------------------------------------------------------------

    def _submit(self, node: Node, kind: str) -> bool:
        if not self.gate():  # lost the conductor duty in the middle of a tick (a pause)
            return False
        protocol = node.driver if node.driver in self.pools else "fake"
        with self._lock:
            if node.id in self._holds or self.in_flight[protocol] >= \
                    self.config.workers[protocol]:
                return False
        hold = self.reservations.claim(  # as it was read: no other work moved it on since
            node.id, node.reservation, Node.provision_state == node.provision_state,
            Node.target_power_state.is_(None) if node.target_power_state is None
            else Node.target_power_state == node.target_power_state)
        if hold is None:
            return False
        with self._lock:
            self._holds[node.id] = hold
            self.in_flight[protocol] += 1
        self.pools[protocol].submit(self._run, hold, kind, protocol)
        return True

    def _candidates(self, *where: Any, order: Any = None, limit: int | None = None
                    ) -> list[Node]:
        """Nodes this conductor may reserve now (free, or a dead conductor's) that match."""
        now = self.clock.now()
        q = select(Node).where(self.reservations.free(now), *where)
        if order is not None:
            q = q.order_by(order)
        if limit is not None:
            q = q.limit(limit)
        with self.db.read() as s:
            return list(s.scalars(q))

    def _dispatch(self) -> None:
        for node in self._candidates(or_(Node.target_power_state.is_not(None),
                                         (Node.provision_state.in_(JOBS)) &
                                         (Node.maintenance.is_(False)))):
            kind = "power" if node.target_power_state else "provision"
            self._submit(node, kind)

    def _sync(self) -> None:
        """A steady trickle of power checks: each node once per interval, never a burst."""
        c = self.config
        now = self.clock.now()
        with self.db.read() as s:
            total = s.scalar(select(func.count()).select_from(Node).where(
                Node.provision_state.in_(STABLE_SYNCED))) or 0
        if not total:
            return
        budget = math.ceil(total * TICK / c.power_sync_interval)
        due = now - dt.timedelta(seconds=c.power_sync_interval)
        recover = now - dt.timedelta(seconds=c.fault_recovery_interval)
        checked = func.coalesce(Node.power_checked_at, dt.datetime(1970, 1, 1))
        rows = self._candidates(
            Node.provision_state.in_(STABLE_SYNCED), Node.target_power_state.is_(None),
            or_((Node.maintenance.is_(False)) & (checked < due),
                (Node.fault == FENCE_FAULT) & (checked < recover)),
            order=checked, limit=budget)
        for node in rows:
            if not self._submit(node, "sync"):
                break

    def _timeouts(self) -> None:
        now = self.clock.now()
        for node in self._candidates(Node.provision_state.in_(WORKING)):
            with self._lock:
                if node.id in self._holds:  # its work is running here
                    continue
            if expired(node, self.limits, now):
                limit = self.limits[node.provision_state]
                self._settle(node.id, None, event="timeout", own=False,
                             error=f"Timed out after {limit:g} s in {node.provision_state}.")

    # ---- doing work ----------------------------------------------------------------------------

    def _bmc(self, node: Node) -> Bmc:
        access = self.nodes.access(node)
        with self._lock:
            cached = self._bmcs.get(node.id)
            if cached and cached[0] == access:
                return cached[1]
        bmc = self.make(access)
        with self._lock:
            old = self._bmcs.get(node.id)
            self._bmcs[node.id] = (access, bmc)
        if old:
            old[1].close()
        return bmc

    def _run(self, hold: Hold, kind: str, protocol: str) -> None:
        with context.acting("system:conductor"):
            self._run_work(hold, kind, protocol)

    def _run_work(self, hold: Hold, kind: str, protocol: str) -> None:
        node_id = hold.node_id
        calls: Calls | None = None
        try:
            with self.db.read() as s:
                node = s.get(Node, node_id)
            if node is None:
                return
            calls = Calls(self._bmc(node), self.config, self._stop,
                          guard=lambda: self.reservations.check(hold, self._stop))
            if kind == "power":
                self._power(node, calls)
            elif kind == "sync":
                self._sync_one(node, calls)
            else:
                self._provision(node, calls)
        except Interrupted as exc:  # the node is left as it is for its next holder
            log.warning("work on node %s stopped: %s", node_id, exc,
                        extra={"node": node_id, "event": "node.interrupted",
                               "reason": str(exc)})
        except Exception:
            log.exception("conductor work on node %s failed", node_id)
        finally:
            if calls is None or not calls.recorded:
                self._settle(node_id, calls)  # frees the node if still ours, whatever happened
            with self._lock:
                if self._holds.get(node_id) is hold:
                    del self._holds[node_id]
                self.in_flight[protocol] -= 1
            self._wake.set()

    def _provision(self, node: Node, calls: Calls) -> None:
        state = node.provision_state
        step = getattr(self, "_step_" + state.replace(" ", "_"), None)
        if step is None:  # not provisioning work (any more): nothing to do, it is freed
            log.warning("node %s is %s: no provisioning step to take", node.id, state,
                        extra={"node": node.id, "event": "node.no_step"})
            return
        try:
            event = step(node, calls) or "done"
        except NotYet:
            self._settle(node.id, calls, later=RECHECK_DRAIN)
            return
        except BmcError as exc:
            self._settle(node.id, calls, event="fail", error=f"{state} failed: {exc}")
            return
        self._settle(node.id, calls, event=event, **calls.pending)

    def _settle(self, node_id: str, calls: Calls | None, *, event: str | None = None,
                error: str | None = None, own: bool = True, later: float = 0,
                **values: Any) -> None:
        """In one transaction: move the node on (if it is still where the work found it),
        record the BMC calls made (fencing or unfencing it), and free it (for `later`
        seconds, none by default)."""
        now = self.clock.now()
        fence: str | None = None
        unfence = False
        with self.db.write() as s:
            node = s.get(Node, node_id, with_for_update=True)
            if node is None or (own and node.reservation != self.holder):
                return
            if event and PROVISION.allows(node.provision_state, event):
                before = move(node, event, now)
                log.log(logging.WARNING if error else logging.INFO, "node %s -> %s",
                        before, node.provision_state,
                        extra={"node": node.id, "node_name": node.name, "event": "node." + event,
                               "reason": error})
            for key, value in values.items():
                setattr(node, key, value)
            if error:
                node.last_error = error
            if calls is not None:
                fence, unfence = self._count(node, calls)
            node.updated_at = now
            if own:
                node.reservation = None
                node.reserved_until = now + dt.timedelta(seconds=later) if later else None
            host_name = node.host_name
        if fence:
            log.error("node fenced", extra={"node": node_id, "event": "node.fence",
                                            "reason": fence})
            if host_name:
                self.drainer.fence(host_name, fence)
        if unfence:
            log.warning("node unfenced", extra={"node": node_id, "event": "node.unfence"})
            if host_name:
                self.drainer.unfence(host_name)
        self._wake.set()

    def _count(self, node: Node, calls: Calls) -> tuple[str | None, bool]:
        """Record the calls made; fence the node if its BMC keeps failing, clear the fault if
        a fenced one answers again. Returns (fence reason, unfenced)."""
        calls.recorded = True
        node.bmc_calls = (node.bmc_calls or 0) + calls.made
        if calls.failed_in_row == 0:
            node.bmc_failures = 0
            if node.fault == FENCE_FAULT:
                node.maintenance, node.fault, node.maintenance_reason = False, None, None
                node.last_error = "The BMC answers again: fault cleared."
                return None, True
            return None, False
        node.bmc_failures = (node.bmc_failures or 0) + calls.failed_in_row
        if node.bmc_failures < self.config.fence_after or node.maintenance:
            return None, False
        reason = (f"BMC unreachable: {node.bmc_failures} failed calls in a row; last: "
                  f"{calls.errors[-1] if calls.errors else '?'}")
        node.maintenance, node.fault = True, FENCE_FAULT
        node.maintenance_reason = node.last_error = reason
        return reason, False

    # ---- power ---------------------------------------------------------------------------------

    def _power(self, node: Node, calls: Calls) -> None:
        target = node.target_power_state or ""
        error = None
        state: str | None
        try:  # each path ends only once the BMC reports the wanted state
            if target in ("rebooting", "soft rebooting"):
                calls(calls.bmc.reboot)
                calls.wait_power("on", self.config.power_wait)
                state = ironic_power("on")
            else:
                wanted = "on" if target == "power on" else "off"
                calls.power(wanted, self.config.power_wait)
                state = ironic_power(wanted)
        except BmcError as exc:
            error = f"Failed to change the power to {target}: {exc}"
            state = node.power_state
        self._settle(node.id, calls, error=error, power_state=state, target_power_state=None,
                     power_checked_at=self.clock.now())

    def _sync_one(self, node: Node, calls: Calls) -> None:
        try:
            state: str | None = ironic_power(calls(calls.bmc.get_power))
        except BmcError:
            state = node.power_state
        if state != node.power_state:
            log.info("power state of %s is %s (was %s)", node.name or node.id, state,
                     node.power_state, extra={"node": node.id, "event": "node.power_sync"})
        self._settle(node.id, calls, power_state=state, power_checked_at=self.clock.now())

    # ---- provisioning steps (one per in-progress state) -----------------------------------------

    def _step_verifying(self, node: Node, calls: Calls) -> None:
        calls(calls.bmc.validate)
        calls.powered(calls(calls.bmc.get_power), self.clock.now())

    def _step_inspecting(self, node: Node, calls: Calls) -> None:
        started = self.clock.now()
        found = calls(calls.bmc.inspect).as_properties()
        expected = node.properties or {}
        mismatch = [f"{k}: expected {expected[k]}, found {found[k]}"
                    for k in ("cpus", "memory_mb", "local_gb")
                    if k in found and k in expected and expected[k] != found[k]]
        calls.pending.update(
            properties={**expected, **found}, inspection_started_at=started,
            inspection_finished_at=self.clock.now(),
            last_error=("Inspection found other hardware than the inventory says: " +
                        "; ".join(mismatch)) if mismatch else None)

    def _step_cleaning(self, node: Node, calls: Calls) -> None:
        calls.off_and_empty(self.config.power_wait)
        calls.powered("off", self.clock.now())

    def _step_deploying(self, node: Node, calls: Calls) -> str:
        token, media = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self._note(node.id, join_token_hash=token_hash(token), media_id=media,
                   join_secret=self.nodes.box.encrypt(token), host_name=None)
        calls.power("off", self.config.power_wait)
        if calls.bmc.virtual_media:
            calls(calls.bmc.insert_media, f"{self.base_url}/hardware/v1/media/{media}.iso")
            calls(calls.bmc.set_boot_device, "cd")
        else:
            calls(calls.bmc.set_boot_device, "pxe")
        calls(calls.bmc.set_power, "on")
        calls.wait_power("on", self.config.power_wait)
        calls.powered("on", self.clock.now())
        return "wait"

    def _step_deleting(self, node: Node, calls: Calls) -> None:
        if node.host_name and node.role == "compute":
            evict = bool((node.instance_info or {}).get("evict"))
            if not self.drainer.drain(node.host_name, evict=evict):
                raise NotYet
        calls.off_and_empty(self.config.power_wait)
        if node.host_name:
            self.drainer.forget(node.host_name)
        calls.powered("off", self.clock.now(), host_name=None, join_token_hash=None,
                      join_secret=None, media_id=None)

    def _note(self, node_id: str, **values: Any) -> None:
        """Write to the node in the middle of a step (only while it is still ours)."""
        with self._lock:
            hold = self._holds.get(node_id)
        if hold is None:
            raise Interrupted(f"node {node_id} is no longer this conductor's")
        self.reservations.note(hold, updated_at=self.clock.now(), **values)
