"""The database is unreachable for now (PostgreSQL restarting, a standby being promoted, the
network between): which errors say so, and one line in the log for a background duty that
meets one, instead of a traceback each round.

A request that meets such an error answers 503 with `Retry-After` (api/errors.py); a duty
logs one line when its first round fails and one when a round succeeds again, and carries on.
The engine's pool (``pool_pre_ping``) throws away connections the restart broke, so nothing
has to be restarted once the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Protocol

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLSTATEs of a server that cannot serve now: class 08 (connection exception), shutting down
# (57P01 admin, 57P02 crash, 57P03 cannot connect now: starting up or shutting down), too many
# connections (53300), and a read-only transaction (25006: a standby, not the primary)
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "25006"})
# a deadlock PostgreSQL broke by ending one of the transactions (40P01): the work was not
# done, and trying again succeeds; answered 503 with Retry-After, as Nova's API retries these
_DEADLOCK = "40P01"


def unavailable(exc: BaseException) -> str | None:
    """One line saying why the database cannot be used now, when `exc` or what it was raised
    from or while handling says that (a rollback that fails on the connection the outage
    broke raises its own error); None for any other error (a bug, a constraint, SQLite's own
    errors: those stay 500s)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        reason = _unavailable(e)
        if reason is not None:
            return reason
        todo += [e.__cause__, e.__context__]
    return None


def _unavailable(exc: BaseException) -> str | None:
    if isinstance(exc, PoolTimeout):
        return "no database connection came free in time (the database is slow or unreachable)"
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    if not type(orig).__module__.startswith("psycopg"):
        return _line(orig) if exc.connection_invalidated else None
    import psycopg

    state = getattr(orig, "sqlstate", None)
    # no SQLSTATE: the client's side of a connection (refused, closed, timed out)
    client_side = state is None and isinstance(orig, psycopg.OperationalError)
    if not (exc.connection_invalidated or client_side or (state or "").startswith("08")
            or state in _UNAVAILABLE_STATES or state == _DEADLOCK):
        return None
    if state == "25006":
        return "the database is read-only (a standby, not the primary)"
    if state == _DEADLOCK:
        return "the database broke a deadlock by ending this transaction; try again"
    return _line(orig)


def _line(orig: BaseException | None) -> str:
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"database unavailable: {first}"[:300]


class Outage:
    """One duty's view of the database being unreachable: `failed(exc)` logs one line when
    the outage begins (any other error: its traceback, every time); `ok()` one line when the
    duty works again. Returns whether `exc` was an outage."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.log = logger
        self.what = what
        self._lock = threading.Lock()
        self._down = False

    def failed(self, exc: BaseException) -> bool:
        reason = unavailable(exc)
        if reason is None:
            self.log.error("%s failed", self.what, exc_info=exc)
            return False
        with self._lock:
            first, self._down = not self._down, True
        if first:
            self.log.warning("%s: %s; trying again each round", self.what, reason)
        return True

    def ok(self) -> None:
        with self._lock:
            was, self._down = self._down, False
        if was:
            self.log.info("%s: the database answers again", self.what)


class _Pingable(Protocol):
    def ping(self) -> None: ...


async def database_unreachable(db: _Pingable, timeout: float) -> str | None:
    """None when `db.ping()` (a `SELECT 1`) comes back within `timeout` seconds (run in a
    worker thread, not on the event loop), else one line saying why not (readiness checks:
    the load balancer needs one line)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(db.ping), timeout)
    except TimeoutError:
        return f"database did not answer within {timeout:g} s"
    except Exception as exc:  # whatever the driver raises
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"database unreachable: {first}"[:300]
    return None
