"""Writes that reach a standby pool process go to the active one through the database.

Only the active process (the holder of the pool's lease) changes the pool's records: its
engine keeps them in memory and writes them through. A standby that is asked to create,
cancel, release, hold or drain writes a *command* row instead (`submit`) and waits for its
answer (`wait`). The active process, before each engine tick (at least every 0.5 s), takes the
queued commands (`take`: queued -> taken, stamped with its lease's generation, in a transaction
fenced by that lease), applies each with the same code as its own API, and writes the answer
in the same transaction as the records the command changed (`PoolStore.answered`): a command
is done exactly when its effects are written.

A command taken by a process that died before answering is queued again by the next active
process when it takes the lease (`requeue`), and applied then: its effects were never written.
A standby that waited `WAIT` seconds withdraws a command no one took (queued -> withdrawn, so it
never happens) and answers 503 with Retry-After."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from infracloud.core import errors
from infracloud.core.clock import Clock
from infracloud.core.errors import InfracloudError, ServiceUnavailable
from infracloud.pool.records import RETRY_AFTER, Fence
from infracloud.store import Database
from infracloud.store.models import PoolCommand

KINDS = ("create", "cancel", "release", "hold", "drain")
WAIT = 20.0  # seconds a standby's API call waits for the active process's answer
POLL = 0.05  # seconds between a waiting standby's looks at its command
TAKE_AT_MOST = 100  # commands one engine tick applies
ERRORS: dict[int, type[InfracloudError]] = {
    400: errors.BadRequest, 403: errors.Forbidden, 404: errors.NotFound, 409: errors.Conflict,
    503: errors.ServiceUnavailable}


@dataclass(frozen=True)
class Command:
    id: int
    kind: str
    args: dict[str, Any]
    actor: str | None


def error_for(status: int, message: str) -> InfracloudError:
    """The error an answer carries, raised again on the standby that waited for it."""
    cls = ERRORS.get(status)
    if cls is not None:
        return cls(message)
    exc = InfracloudError(message)
    exc.status = status
    return exc


class Inbox:
    """The pool's command rows (`pool_commands`) over one database."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or Clock()

    # ---- the standby's side -------------------------------------------------------------

    def submit(self, kind: str, args: dict[str, Any], actor: str | None) -> int:
        if kind not in KINDS:
            raise ValueError(f"no pool command {kind!r}")
        with self.db.write() as s:
            row = PoolCommand(kind=kind, args=args, actor=actor, state="queued",
                              created_at=self.clock.now())
            s.add(row)
            s.flush()
            return int(row.id)

    def wait(self, command_id: int, timeout: float = WAIT,
             stopping: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """The answer's result once the command is done; the error it was answered with is
        raised. No answer within `timeout` (or while the process stops): 503, with the command
        withdrawn when no active process took it (it will not happen)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.db.read() as s:
                row = s.get(PoolCommand, command_id)
                assert row is not None, f"pool command {command_id} vanished"
                state, status = row.state, row.status
                result, message = row.result, row.message
            if state == "done":
                if status is not None and status >= 400:
                    raise error_for(status, message or f"HTTP {status}")
                return dict(result or {})
            if time.monotonic() >= deadline or stopping():
                break
            time.sleep(POLL)
        if self._withdraw(command_id):
            raise ServiceUnavailable(
                f"No active pool process took this within {timeout:g} s; nothing was done. "
                f"Try again.", headers={"Retry-After": RETRY_AFTER})
        raise ServiceUnavailable(
            f"The active pool process took this but has not answered within {timeout:g} s; "
            f"it may yet be done (pool command {command_id}).",
            headers={"Retry-After": RETRY_AFTER})

    def _withdraw(self, command_id: int) -> bool:
        with self.db.write() as s:
            done = s.execute(update(PoolCommand).where(PoolCommand.id == command_id,
                                                       PoolCommand.state == "queued")
                             .values(state="withdrawn", done_at=self.clock.now())
                             .execution_options(synchronize_session=False))
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def waiting(self) -> int:
        """Commands queued or taken and not answered yet."""
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(PoolCommand).where(
                PoolCommand.state.in_(("queued", "taken")))) or 0)

    # ---- the active process's side --------------------------------------------------------

    def take(self, generation: int, fence: Fence | None = None,
             limit: int = TAKE_AT_MOST) -> list[Command]:
        """The oldest queued commands, now taken by the holder of lease `generation`."""
        with self.db.read() as s:
            ids = list(s.scalars(select(PoolCommand.id).where(PoolCommand.state == "queued")
                                 .order_by(PoolCommand.id).limit(limit)))
        if not ids:
            return []
        taken: list[Command] = []
        with self.db.write() as s:
            if fence is not None:
                fence(s)
            for command_id in ids:
                got = s.execute(update(PoolCommand).where(PoolCommand.id == command_id,
                                                          PoolCommand.state == "queued")
                                .values(state="taken", generation=generation)
                                .execution_options(synchronize_session=False))
                if not got.rowcount:  # type: ignore[attr-defined]
                    continue  # withdrawn meanwhile
                row = s.get(PoolCommand, command_id)
                assert row is not None
                taken.append(Command(int(row.id), row.kind, dict(row.args or {}), row.actor))
        return taken

    def requeue(self, generation: int, fence: Fence | None = None) -> int:
        """Commands taken under an older holding of the lease and never answered: queued
        again (their effects were never written; the answer and the effects commit together)."""
        with self.db.write() as s:
            if fence is not None:
                fence(s)
            done = s.execute(update(PoolCommand).where(PoolCommand.state == "taken",
                                                       PoolCommand.generation != generation)
                             .values(state="queued", generation=None)
                             .execution_options(synchronize_session=False))
        return int(done.rowcount or 0)  # type: ignore[attr-defined]


def answer(status: int, *, result: dict[str, Any] | None = None, message: str | None = None,
           now: dt.datetime) -> dict[str, Any]:
    """The values of a command's answer row (`PoolStore.answered`)."""
    return {"status": status, "result": result, "message": message, "done_at": now}
