"""The pool's records in memory (the engine's working state) and their rows in the database.
The engine owns them; every change is written through (`PoolStore.flush`) in one
transaction per engine tick or API call. With several pool processes on one database, each of
those transactions first checks that this process still holds the pool's lease (`fence`), and
writes nothing when it does not (`LeaseLost`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from infracloud.core.errors import ServiceUnavailable
from infracloud.core.states import POOL_NODE, POOL_REQUEST, Machine
from infracloud.ops import context
from infracloud.ops.events import transition_name
from infracloud.store import Database
from infracloud.store.models import (
    Event,
    PoolCommand,
    PoolNode,
    PoolProvider,
    PoolRequest,
    PoolUpload,
)

FINAL_REQUEST = ("fulfilled", "failed", "cancelled")
RETRY_AFTER = "2"  # seconds a client waits before it asks again (another pool process)


class LeaseLost(ServiceUnavailable):
    """This process no longer holds the pool's lease: it wrote nothing, and another process
    (the new active one) answers instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": RETRY_AFTER})


Fence = Callable[[Session], None]  # raises LeaseLost inside a write transaction


@dataclass
class NodeRec:
    id: str
    label: str
    provider: str
    pool: str
    state: str
    state_at: dt.datetime
    created_at: dt.datetime
    ready_at: dt.datetime | None = None
    request_id: str | None = None
    requestor: str | None = None
    server_id: str | None = None
    image_id: str | None = None
    interface_ip: str | None = None
    ssh_port: int = 22
    username: str = "root"
    key_name: str | None = None
    host_keys: list[str] = field(default_factory=list)
    hold_reason: str | None = None
    failure: str | None = None
    console: str | None = None

    def move(self, event: str, now: dt.datetime) -> None:
        self.state = POOL_NODE.next(self.state, event)
        self.state_at = now

    @property
    def live(self) -> bool:
        return self.state != "deleted"


@dataclass
class Entry:
    """One node a request wants."""

    label: str
    node: str | None = None
    failures: int = 0
    avoid: list[str] = field(default_factory=list)  # providers where its launches failed


@dataclass
class RequestRec:
    id: str
    requestor: str
    priority: int
    entries: list[Entry]
    state: str
    state_at: dt.datetime
    created_at: dt.datetime
    reason: str | None = None
    idempotency_key: str | None = None

    def move(self, event: str, now: dt.datetime) -> None:
        self.state = POOL_REQUEST.next(self.state, event)
        self.state_at = now

    @property
    def final(self) -> bool:
        return self.state in FINAL_REQUEST

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]


@dataclass
class UploadRec:
    id: str
    provider: str
    diskimage: str
    version: str
    external_name: str
    state: str  # uploading, ready, deleting, failed
    state_at: dt.datetime
    external_id: str | None = None
    in_use: bool = False


def _row(rec: Any) -> dict[str, Any]:
    out = asdict(rec)
    if isinstance(rec, RequestRec):
        out["entries"] = [asdict(e) for e in rec.entries]
    return out


def _names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _request(row: PoolRequest) -> RequestRec:
    values = {n: getattr(row, n) for n in _names(RequestRec)}
    values["entries"] = [Entry(**e) for e in row.entries]
    return RequestRec(**values)


def _node(row: PoolNode) -> NodeRec:
    return NodeRec(**{n: getattr(row, n) for n in _names(NodeRec)})


_KINDS: dict[type, tuple[str, Machine]] = {NodeRec: ("pool-node", POOL_NODE),
                                           RequestRec: ("pool-request", POOL_REQUEST)}


def _live(s: Session) -> tuple[list[NodeRec], list[RequestRec], list[UploadRec],
                              dict[str, str | None]]:
    """Live nodes, open requests, uploads and drained providers (name -> reason)."""
    nodes = [_node(row) for row in s.scalars(
        select(PoolNode).where(PoolNode.state != "deleted"))]
    requests = [_request(row) for row in s.scalars(select(PoolRequest).where(
        PoolRequest.state.not_in(FINAL_REQUEST)))]
    uploads = [UploadRec(**{n: getattr(row, n) for n in _names(UploadRec)})
               for row in s.scalars(select(PoolUpload).where(PoolUpload.state != "deleted"))]
    drained = {row.name: row.reason for row in s.scalars(
        select(PoolProvider).where(PoolProvider.drained.is_(True)))}
    return nodes, requests, uploads, drained


class PoolStore:
    """Loads the pool's live records at start and writes changed ones back, in batches.
    Every state change of a node or request is an event (the `events` table of the pool's
    database), written in the same transaction as the record."""

    def __init__(self, db: Database, site: str = "pool", fence: Fence | None = None) -> None:
        self.db = db
        self.site = site
        self.fence = fence
        self._held = 0  # inside `batch`: flushes wait for its end
        self._done: list[tuple[int, dict[str, Any]]] = []  # commands answered, by id
        self._new: dict[type, dict[str, Any]] = {NodeRec: {}, RequestRec: {}, UploadRec: {}}
        self._dirty: dict[type, dict[str, Any]] = {NodeRec: {}, RequestRec: {}, UploadRec: {}}
        self.versions: dict[str, int] = {}
        self._states: dict[str, str] = {}  # the last state an event told, by record id
        self._events: list[dict[str, Any]] = []

    def load(self) -> tuple[list[NodeRec], list[RequestRec], list[UploadRec],
                            dict[str, str | None], int, int]:
        """Live nodes, open requests, uploads, drained providers (name -> reason) and the
        next node and request numbers."""
        with self.db.read() as s:
            nodes, requests, uploads, drained = _live(s)
            self._states.update({n.id: n.state for n in nodes})
            self._states.update({r.id: r.state for r in requests})
            node_ids = [int(i) for i in s.scalars(select(PoolNode.id)) if i.isdigit()]
            req_ids = [int(i[4:]) for i in s.scalars(select(PoolRequest.id))
                       if i.startswith("req-") and i[4:].isdigit()]
        return (nodes, requests, uploads, drained, max(node_ids, default=0) + 1,
                max(req_ids, default=0) + 1)

    def added(self, rec: NodeRec | RequestRec | UploadRec) -> None:
        self._new[type(rec)][rec.id] = rec
        self._bump(rec)
        self._told(rec)

    def changed(self, rec: NodeRec | RequestRec | UploadRec) -> None:
        if rec.id not in self._new[type(rec)]:
            self._dirty[type(rec)][rec.id] = rec
        self._bump(rec)
        self._told(rec)

    def _told(self, rec: NodeRec | RequestRec | UploadRec) -> None:
        kind = _KINDS.get(type(rec))
        source = self._states.get(rec.id)
        if kind is None or source == rec.state:
            return
        resource_type, machine = kind
        actor = context.current()
        detail: dict[str, Any] = {}
        if isinstance(rec, NodeRec):
            where, project, reason = rec.provider, rec.requestor, rec.failure or rec.hold_reason
            name = rec.label
            if rec.request_id:
                detail["request"] = rec.request_id  # which request a launch was for
        else:
            assert isinstance(rec, RequestRec)
            where, project, reason = None, rec.requestor, rec.reason
            name = ",".join(rec.labels)[:255]
        if project:
            detail["requestor"] = project
        self._events.append({
            "at": rec.state_at, "kind": "state", "site": self.site, "host": where,
            "actor": actor.name, "actor_id": actor.user_id, "project_id": None,
            "request_id": actor.request_id, "resource_type": resource_type,
            "resource_id": rec.id, "resource_name": name,
            "action": "create" if source is None else transition_name(machine, source,
                                                                      rec.state),
            "source": source, "target": rec.state, "reason": reason,
            "detail": detail or None})
        if rec.state in ("deleted", *FINAL_REQUEST):
            self._states.pop(rec.id, None)
        else:
            self._states[rec.id] = rec.state

    def _bump(self, rec: NodeRec | RequestRec | UploadRec) -> None:
        if isinstance(rec, RequestRec):
            self.versions[rec.id] = self.versions.get(rec.id, 0) + 1

    def version(self, request_id: str) -> int:
        """How often a request has changed: watchers compare it without taking any lock."""
        return self.versions.get(request_id, 0)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Flushes inside the block write nothing yet: the caller's next flush writes all of
        it in one transaction (a command's changes with its answer)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    def answered(self, command_id: int, values: dict[str, Any]) -> None:
        """A command taken by this process is answered in the next flush, with its records."""
        self._done.append((command_id, values))

    def _fenced(self, s: Session) -> None:
        if self.fence is not None:
            self.fence(s)

    def flush(self) -> None:
        """Write every added and changed record in one transaction."""
        if self._held or (not any(self._new.values()) and not any(self._dirty.values())
                          and not self._done):
            return
        new, dirty, events, done = self._new, self._dirty, self._events, self._done
        self._new = {NodeRec: {}, RequestRec: {}, UploadRec: {}}
        self._dirty = {NodeRec: {}, RequestRec: {}, UploadRec: {}}
        self._events, self._done = [], []
        try:
            with self.db.write() as s:
                self._fenced(s)
                for command_id, values in done:
                    s.execute(update(PoolCommand).where(PoolCommand.id == command_id,
                                                        PoolCommand.state == "taken")
                              .values(state="done", **values)
                              .execution_options(synchronize_session=False))
                if events:
                    s.execute(insert(Event), events)
                for cls, model in ((NodeRec, PoolNode), (RequestRec, PoolRequest),
                                   (UploadRec, PoolUpload)):
                    if new[cls]:
                        s.execute(insert(model), [_row(r) for r in new[cls].values()])
                    if dirty[cls]:
                        s.execute(update(model), [_row(r) for r in dirty[cls].values()])
        except BaseException:  # nothing written (the database went away): the next flush
            for kind in new:    # writes it all, with what changed meanwhile
                self._new[kind] = {**new[kind], **self._new[kind]}
                self._dirty[kind] = {k: r for k, r in {**dirty[kind], **self._dirty[kind]}.items()
                                     if k not in self._new[kind]}
            self._events, self._done = events + self._events, done + self._done
            raise

    def unwritten(self, rec: NodeRec | RequestRec | UploadRec) -> bool:
        """Whether `rec` was added and is not in the database yet."""
        return rec.id in self._new[type(rec)]

    def set_drained(self, name: str, drained: bool, reason: str | None) -> None:
        with self.db.write() as s:
            self._fenced(s)
            row = s.get(PoolProvider, name)
            if row is None:
                s.add(PoolProvider(name=name, drained=drained, reason=reason))
            else:
                row.drained, row.reason = drained, reason

    def finished(self, limit: int = 200) -> tuple[list[NodeRec], list[RequestRec]]:
        """The most recent deleted nodes and finished requests (for the lists' history)."""
        with self.db.read() as s:
            nodes = [_node(row) for row in s.scalars(
                select(PoolNode).where(PoolNode.state == "deleted")
                .order_by(PoolNode.state_at.desc()).limit(limit))]
            requests = [_request(row) for row in s.scalars(
                select(PoolRequest).where(PoolRequest.state.in_(FINAL_REQUEST))
                .order_by(PoolRequest.state_at.desc()).limit(limit))]
        return nodes, requests

    def get_request(self, request_id: str) -> RequestRec | None:
        with self.db.read() as s:
            row = s.get(PoolRequest, request_id)
            return None if row is None else _request(row)

    def find_request(self, requestor: str, key: str) -> RequestRec | None:
        """The request `requestor` made with idempotency key `key`, if any."""
        with self.db.read() as s:
            row = s.scalars(select(PoolRequest).where(PoolRequest.requestor == requestor,
                                                      PoolRequest.idempotency_key == key)
                            .order_by(PoolRequest.created_at).limit(1)).first()
            return None if row is None else _request(row)

    def snapshot(self) -> tuple[list[NodeRec], list[RequestRec], list[UploadRec],
                                dict[str, str | None]]:
        """What another process wrote, read only: live nodes, open requests, uploads and
        drained providers (name -> reason; a standby's view)."""
        with self.db.read() as s:
            return _live(s)

    def prune(self, before: dt.datetime) -> int:
        """Forget deleted nodes and finished requests older than `before`."""
        with self.db.write() as s:
            self._fenced(s)
            nodes = s.execute(delete(PoolNode).where(PoolNode.state == "deleted",
                                                     PoolNode.state_at < before))
            reqs = s.execute(delete(PoolRequest).where(PoolRequest.state.in_(FINAL_REQUEST),
                                                       PoolRequest.state_at < before))
            s.execute(delete(PoolCommand).where(PoolCommand.state.in_(("done", "withdrawn")),
                                                PoolCommand.done_at < before))
        return sum(int(getattr(r, "rowcount", 0) or 0) for r in (nodes, reqs))
