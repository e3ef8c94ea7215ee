"""Who works on a bare-metal node: a conductor's reservation, held as Ironic's conductors hold
theirs.

A conductor reserves a node (`reservation`: its owner id, unique to the controller process;
`reserved_until`) before it talks to the node's BMC, and renews the reservation while the work
runs (every third of `hardware.lease`, all its nodes in one statement). Another conductor takes
a reserved node over only when the reservation has run out AND the holder's controller
heartbeat (the `controller:<owner>` lease, store/leases.py) is stale: a long deploy step on a
live controller keeps its node however long it runs, and a dead controller's nodes are taken
over about `lease` seconds after it died.

The work's thread checks its hold before every BMC call (`check`): a hold renewed less than
`lease` seconds ago is trusted; an older one is renewed there and then, and the work stops
(`Interrupted`) when the node is no longer its own (taken over while this controller was
paused, or freed by an operator's abort). The renewal and the takeover are both conditional
updates of the node's row, so the database puts them in an order: either the renewal comes
first and the takeover finds the reservation fresh, or the takeover comes first and the
renewal finds the node taken."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from infracloud.core.clock import Clock
from infracloud.store import Database
from infracloud.store.leases import alive
from infracloud.store.models import Node

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """The work stops before its next BMC call: the node is no longer this conductor's, or
    the conductor is stopping. The node's state is left for whoever holds it next."""


@dataclass(eq=False)
class Hold:
    """One piece of work's reservation of one node, as this conductor last saw it."""

    node_id: str
    until: dt.datetime  # renewed up to here (by this controller's clock)
    lost: bool = False
    took_from: str | None = None  # the dead conductor it was taken over from


class Reservations:
    def __init__(self, db: Database, clock: Clock, holder: str, lease: float) -> None:
        self.db = db
        self.clock = clock
        self.holder = holder
        self.lease = dt.timedelta(seconds=lease)

    def free(self, now: dt.datetime) -> ColumnElement[bool]:
        """SQL: this conductor may claim the node now. Free, or free again after a pause
        (`reserved_until` without a `reservation`); its own (work that ended without freeing
        it: the caller checks that no work of its own is running there); or reserved by a
        conductor whose reservation ran out and whose controller no longer heartbeats."""
        over = or_(Node.reserved_until.is_(None), Node.reserved_until < now)
        return or_(and_(Node.reservation.is_(None), over),
                   Node.reservation == self.holder,
                   and_(Node.reservation.is_not(None), over,
                        not_(alive(Node.reservation, now))))

    def claim(self, node_id: str, seen: str | None = None, *still: ColumnElement[bool]
              ) -> Hold | None:
        """Reserve the node if it is free (one statement: of two conductors, one gets it).
        `seen`: the reservation the caller saw on it (to say whose work is taken over);
        `still`: what the caller saw of it that must still hold (work that ended between the
        caller's read and this claim may have moved it on, e.g. to `available`)."""
        now = self.clock.now()
        until = now + self.lease
        with self.db.write() as s:
            done = s.execute(update(Node).where(Node.id == node_id, self.free(now), *still)
                             .values(reservation=self.holder, reserved_until=until)
                             .execution_options(synchronize_session=False))
        if not done.rowcount:  # type: ignore[attr-defined]
            return None
        taken = seen if seen and seen != self.holder else None
        if taken:
            log.warning("took over node %s from conductor %s, whose controller stopped "
                        "heartbeating", node_id, taken,
                        extra={"node": node_id, "event": "node.takeover", "reason": taken})
        return Hold(node_id, until, took_from=taken)

    def renew(self, holds: list[Hold]) -> None:
        """The heartbeat of the work in progress: renew every hold still ours (one statement),
        mark lost the ones that are not. A database error leaves them as they are: their
        work renews them itself before its next BMC call, or stops."""
        if not holds:
            return
        ids = [h.node_id for h in holds]
        now = self.clock.now()
        until = now + self.lease
        try:
            with self.db.write() as s:
                s.execute(update(Node).where(Node.id.in_(ids), Node.reservation == self.holder)
                          .values(reserved_until=until)
                          .execution_options(synchronize_session=False))
                ours = set(s.scalars(select(Node.id).where(
                    Node.id.in_(ids), Node.reservation == self.holder)))
        except SQLAlchemyError as exc:
            log.warning("cannot renew the reservations of nodes %s: %s", ", ".join(ids), exc)
            return
        for hold in holds:
            if hold.node_id in ours:
                hold.until = until
            else:  # the work says so if it had more to do (it may have just ended)
                hold.lost = True

    def check(self, hold: Hold, stop: threading.Event) -> None:
        """Before a BMC call: raise Interrupted unless the node is still this conductor's
        (renewing the hold now when it is due)."""
        if stop.is_set():
            raise Interrupted("the conductor is stopping")
        if not hold.lost and self.clock.now() >= hold.until:
            self.renew([hold])  # overdue (a pause, a slow database): ask the database
            if self.clock.now() >= hold.until and not hold.lost:
                raise Interrupted(f"cannot renew the reservation of node {hold.node_id}")
        if hold.lost:
            raise Interrupted(f"node {hold.node_id} is no longer this conductor's")

    def note(self, hold: Hold, **values: Any) -> None:
        """Write to the node while it is this conductor's (else Interrupted)."""
        with self.db.write() as s:
            done = s.execute(update(Node).where(Node.id == hold.node_id,
                                                Node.reservation == self.holder)
                             .values(**values).execution_options(synchronize_session=False))
        if not done.rowcount:  # type: ignore[attr-defined]
            hold.lost = True
            raise Interrupted(f"node {hold.node_id} is no longer this conductor's")
