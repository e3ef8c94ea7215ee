"""Leases: one owner at a time for a named piece of work, the same on SQLite and PostgreSQL.

A lease is a row of `leases` (name, owner, expires_at, generation). `acquire` takes it when it
is free (no row yet, released, or expired) and renews it when it is already ours, in one
conditional UPDATE:

    UPDATE leases SET owner = :me, expires_at = :now + ttl, ...
     WHERE name = :name AND (owner = :me OR owner IS NULL OR expires_at < :now)

Both databases run it atomically: SQLite has one writer at a time, and PostgreSQL makes a
second writer of the row wait for the first and re-check the condition on the row the first
committed, so of two controllers racing for a free lease exactly one gets it. A lease with no
row yet is inserted; of two inserts at once the primary key lets one through and the other is
told it did not get the lease.

Times come from the injected Clock, so tests move time by hand. Controllers compare their own
clocks with the expiry another wrote: keep them in step (NTP) to well within a lease's ttl.
A holder renews well before the ttl passes (a third of it is this project's rule) and stops the
work as soon as it cannot be sure it still holds the lease.

`generation` counts the changes of owner (a release and a new acquire is one): a fencing number
that tells work done under one holding from work done under the next.

`controller:<owner>` is, by convention, the heartbeat of one controller process
(`heartbeat_name`); `alive()` is the SQL test, for rows of other tables that name an owner (a
bare-metal node's reservation), that this owner still heartbeats."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, exists, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from infracloud.core.clock import Clock
from infracloud.store.db import Database
from infracloud.store.models import Lease

HEARTBEAT = "controller:"


def heartbeat_name(owner: str) -> str:
    """The lease a controller process renews while it lives."""
    return HEARTBEAT + owner


def alive(owner: ColumnElement[str | None], now: dt.datetime) -> ColumnElement[bool]:
    """SQL: the owner named in `owner` (a column) holds its heartbeat lease at `now`."""
    return exists().where(Lease.name == literal(HEARTBEAT).concat(owner),
                          Lease.owner == owner, Lease.expires_at >= now)


@dataclass(frozen=True)
class LeaseView:
    """A lease as read: `owner` is None once released; `held` whether someone held it at the
    moment of reading (an owner, and not expired)."""

    name: str
    owner: str | None
    expires_at: dt.datetime
    acquired_at: dt.datetime
    renewed_at: dt.datetime
    generation: int
    held: bool


class Leases:
    """The leases of one owner (a controller process, a pool process) over one database."""

    def __init__(self, db: Database, clock: Clock, owner: str) -> None:
        if not owner:
            raise ValueError("a lease owner needs a name")
        self.db = db
        self.clock = clock
        self.owner = owner

    def acquire(self, name: str, ttl: float) -> bool:
        """Take the lease when it is free or expired, renew it when it is ours: for `ttl`
        seconds from now either way. False when someone else holds it."""
        if ttl <= 0:
            raise ValueError(f"a lease's ttl must be positive, not {ttl!r}")
        now = self.clock.now()
        until = now + dt.timedelta(seconds=ttl)
        ours = Lease.owner == self.owner  # NULL (released) is not ours: a new holding
        stamp = literal(now, Lease.acquired_at.type)
        with self.db.write() as s:
            done = s.execute(
                update(Lease)
                .where(Lease.name == name,
                       or_(ours, Lease.owner.is_(None), Lease.expires_at < now))
                .values(owner=self.owner, expires_at=until, renewed_at=now,
                        acquired_at=case((ours, Lease.acquired_at), else_=stamp),
                        generation=case((ours, Lease.generation),
                                        else_=Lease.generation + 1))
                .execution_options(synchronize_session=False))
            if done.rowcount:  # type: ignore[attr-defined]
                return True
            if s.scalar(select(Lease.name).where(Lease.name == name)) is not None:
                return False  # someone else's, and live
        try:
            with self.db.write() as s:
                s.add(Lease(name=name, owner=self.owner, expires_at=until, acquired_at=now,
                            renewed_at=now, generation=1))
        except IntegrityError:
            return False  # another owner inserted it first
        return True

    def release(self, name: str) -> None:
        """Give the lease up now (the next owner need not wait for it to expire); nothing
        when it is not ours."""
        now = self.clock.now()
        with self.db.write() as s:
            s.execute(update(Lease).where(Lease.name == name, Lease.owner == self.owner)
                      .values(owner=None, expires_at=now, renewed_at=now)
                      .execution_options(synchronize_session=False))

    def holder(self, name: str) -> LeaseView | None:
        """Who holds the lease now; None when nobody does (never taken, released, expired)."""
        with self.db.read() as s:
            row = s.get(Lease, name)
        if row is None:
            return None
        view = self._view(row, self.clock.now())
        return view if view.held else None

    def all(self) -> list[LeaseView]:
        """Every lease, held or not, by name."""
        now = self.clock.now()
        with self.db.read() as s:
            rows = list(s.scalars(select(Lease).order_by(Lease.name)))
        return [self._view(r, now) for r in rows]

    @staticmethod
    def _view(row: Lease, now: dt.datetime) -> LeaseView:
        return LeaseView(name=row.name, owner=row.owner, expires_at=row.expires_at,
                         acquired_at=row.acquired_at, renewed_at=row.renewed_at,
                         generation=row.generation,
                         held=row.owner is not None and row.expires_at >= now)
