"""Events: who did what, when and where. Every state change of a server, host, bare-metal node
or image is recorded in the transaction that makes it (a flush hook, so no code path can change
a state without its event); every API write is recorded after its answer, in batches, with the
caller as actor. Queries page by id, which is also the cursor of `events --follow`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, insert, inspect, select, update
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock, isoformat
from infracloud.core.states import HOST, IMAGE, INSTANCE, PROVISION, UNKNOWN_SERVER, Machine
from infracloud.ops import context, creations, metrics
from infracloud.store import Database
from infracloud.store.generations import FLAVORS, Cache
from infracloud.store.models import (
    Event,
    Flavor,
    Host,
    Image,
    Instance,
    Node,
    UnknownServer,
    UsageRecord,
)
from infracloud.store.outage import Outage

log = logging.getLogger(__name__)

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Not recorded as API writes: logins (every CLI call makes one), and the agents' channel,
# whose effects are recorded as the state changes they cause.
QUIET_PATHS = ("/identity/v3/auth/tokens", "/agent/", "/dashboard/")  # logins, agents
MAX_PAGE = 1000


@dataclass(frozen=True)
class _Tracked:
    resource_type: str
    attr: str
    machine: Machine
    # the row's own time of its last transition, when its code sets it with the time it
    # decided on (else the event takes the flush's time, a little later)
    changed_at: str | None = None


_TRACKED: dict[type, _Tracked] = {
    Instance: _Tracked("server", "state", INSTANCE),
    Host: _Tracked("host", "state", HOST),
    Node: _Tracked("node", "provision_state", PROVISION),
    Image: _Tracked("image", "status", IMAGE),
    UnknownServer: _Tracked("unknown-server", "state", UNKNOWN_SERVER, "state_changed_at"),
}
# Other changes worth an event: (model, attribute) → action name
_FLAGS: dict[tuple[type, str], str] = {
    (Host, "enabled"): "enabled",
    (Node, "power_state"): "power",
    (Node, "maintenance"): "maintenance",
    (Node, "fault"): "fault",
}


@dataclass(frozen=True)
class Query:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    after: int | None = None  # id cursor
    project_id: str | None = None
    host: str | None = None
    resource_id: str | None = None
    resource_type: str | None = None
    kind: str | None = None
    actor: str | None = None
    user_id: str | None = None  # the acting user's id
    site: str | None = None
    requestor: str | None = None  # detail["requestor"]: the pool's events of one requestor
    limit: int = 100
    newest_first: bool = False


def to_dict(e: Event, *, client: bool = False) -> dict[str, Any]:
    """`client`: keep the client address of an API event (admins only)."""
    detail = e.detail
    if not client and isinstance(detail, dict) and "client" in detail:
        detail = {k: v for k, v in detail.items() if k != "client"}
    return {"id": e.id, "at": isoformat(e.at, micro=True), "kind": e.kind, "site": e.site,
            "host": e.host, "actor": e.actor, "actor_id": e.actor_id,
            "project_id": e.project_id, "request_id": e.request_id,
            "resource_type": e.resource_type, "resource_id": e.resource_id,
            "resource_name": e.resource_name, "action": e.action, "source": e.source,
            "target": e.target, "reason": e.reason, "detail": detail}


def transition_name(machine: Machine, source: str | None, target: str) -> str:
    """The transition's event name (the first one of the table that goes source → target)."""
    for t in machine.transitions:
        if t.source == source and t.target == target:
            return t.event
    return "set"


class EventLog:
    def __init__(self, db: Database, site: str, clock: Clock, *,
                 retention_days: float = 90, queue_size: int = 10000) -> None:
        self.db = db
        self.site = site
        self.clock = clock
        self.retention = dt.timedelta(days=retention_days)
        self._hosts: dict[str, str] = {}
        self._flavors: Cache[str, str] = Cache(db.generations, FLAVORS)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(queue_size)
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.retry_pause = 0.5  # seconds before a batch is tried again; doubles up to 5
        self._outage = Outage(log, "recording API events")
        self.listeners: list[Callable[[], None]] = []

    def install(self) -> None:
        """Record state changes in every write transaction of the database."""
        self.db.on_flush(self._before_flush)

    # ---- recording -----------------------------------------------------------------------

    def _values(self, *, kind: str, resource_type: str, action: str, **values: Any
                ) -> dict[str, Any]:
        actor = context.current()
        values.setdefault("actor", actor.name)
        values.setdefault("actor_id", actor.user_id)
        values.setdefault("request_id", actor.request_id)
        values["at"] = values.get("at") or self.clock.now()
        return {"kind": kind, "site": self.site, "resource_type": resource_type,
                "action": action, **values}

    def record(self, *, kind: str, resource_type: str, action: str, **values: Any) -> None:
        """One event now, in its own transaction (alerts, operator actions)."""
        with self.db.write() as s:
            s.add(Event(**self._values(kind=kind, resource_type=resource_type, action=action,
                                       **values)))
        self._notify()

    def api_write(self, method: str, path: str, route: str | None, status: int,
                  actor: context.Actor, client: str | None) -> None:
        """An API write of an authenticated caller was answered: queued (dropped and counted
        when the queue is full), written by a background thread in batches."""
        if method not in WRITES or path.startswith(QUIET_PATHS) or "/auth/tokens" in path:
            return
        if actor.user_id is None:  # refused (401), or a caller with no token: counted only
            metrics.API_WRITES_UNAUTHENTICATED.inc()
            return
        first = creations.main_resource(actor.touched, route, status)
        made = creations.listed(actor.touched, status)
        segments = [p for p in (route or path).split("/") if p and not p.startswith("{")]
        self._enqueue({
            "at": self.clock.now(), "kind": "api", "actor": actor.name,
            "actor_id": actor.user_id, "request_id": actor.request_id,
            "project_id": first.project_id if first and first.project_id else actor.project_id,
            "host": first.host if first else None,
            "resource_type": first.resource_type if first else (segments[-1] if segments
                                                                else "api"),
            "resource_id": first.resource_id if first else None,
            "resource_name": first.name if first else None,
            "action": f"{method} {route or path}"[:64], "source": None, "target": str(status),
            "reason": None, "detail": {"method": method, "path": path, "status": status,
                                       "client": client, **actor.notes,
                                       **({"created": made} if made else {})}})

    def _enqueue(self, row: dict[str, Any]) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                                name="events-writer")
                self._writer.start()
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            metrics.API_EVENTS_DROPPED.inc()

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 500:
                try:
                    row = self._queue.get(timeout=0.05)
                except queue.Empty:
                    break
                if row is None:
                    self._flush(batch)
                    return
                batch.append(row)
            self._flush(batch)

    def _flush(self, batch: list[dict[str, Any]]) -> None:
        """Write `batch`; while the database is unreachable (a restart, a failover), again
        and again (the queue fills meanwhile, and beyond its size new events are dropped
        and counted); until the process stops."""
        pause = self.retry_pause
        while True:
            try:
                with self.db.write() as s:
                    s.add_all(Event(site=self.site, **row) for row in batch)
            except Exception as exc:
                if self._outage.failed(exc) and not self._closing.is_set():
                    self._closing.wait(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                # the events are lost, the API answered already; say so loudly
                log.error("could not record %d API events", len(batch))
                return
            self._outage.ok()
            self._notify()
            return

    def drain(self, timeout: float = 5) -> None:
        """Write what is queued (tests, shutdown)."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None, timeout=timeout)  # the writer is emptying it
            writer.join(timeout)

    def close(self) -> None:
        self._closing.set()  # a batch waiting for the database is given up
        self.drain()

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()

    # ---- the flush hook ------------------------------------------------------------------

    def _host_name(self, s: Session, host_id: str | None) -> str | None:
        if host_id is None:
            return None
        name = self._hosts.get(host_id)
        if name is None:
            name = s.connection().execute(select(Host.name).where(Host.id == host_id)
                                          ).scalar()
            if name is not None:
                self._hosts[host_id] = name
        return name

    def _flavor_name(self, s: Session, flavor_id: str) -> str:
        """Its name (cached: an id deleted and made again may name another flavor)."""
        conn = s.connection()
        name = self._flavors.get(flavor_id, lambda i: conn.execute(
            select(Flavor.name).where(Flavor.id == i)).scalar(), conn)
        return name or flavor_id

    def _where(self, s: Session, obj: Any) -> tuple[str | None, str | None, str | None, str]:
        """(project, host, name, id) of a tracked object."""
        if isinstance(obj, Instance):
            return obj.project_id, self._host_name(s, obj.host_id), obj.name, obj.id
        if isinstance(obj, Host):
            return None, obj.name, obj.name, obj.id
        if isinstance(obj, Node):
            return None, obj.host_name, obj.name, obj.id
        if isinstance(obj, UnknownServer):
            return obj.project_id, self._host_name(s, obj.host_id), obj.name, obj.id
        assert isinstance(obj, Image)
        return obj.owner, None, obj.name, obj.id

    @staticmethod
    def _reason(obj: Any) -> str | None:
        if isinstance(obj, Instance) and obj.fault:
            return str(obj.fault.get("message"))
        if isinstance(obj, Host):
            return obj.disabled_reason
        if isinstance(obj, Node):
            return obj.last_error
        if isinstance(obj, UnknownServer):
            return obj.reason
        return None

    def _before_flush(self, s: Session, flush_context: Any, instances: Any) -> None:
        rows: list[dict[str, Any]] = []
        actor = context.current()
        now = self.clock.now()

        def add(obj: Any, action: str, source: str | None, target: str | None,
                reason: str | None) -> None:
            tracked = _TRACKED[type(obj)]
            project, host, name, rid = self._where(s, obj)
            at = (getattr(obj, tracked.changed_at, None) if tracked.changed_at else None) or now
            rows.append(self._values(kind="state", resource_type=tracked.resource_type,
                                     action=action, source=source, target=target,
                                     reason=reason, project_id=project, host=host,
                                     resource_id=rid, resource_name=name, at=at,
                                     detail=None))
            if actor is not context.SYSTEM:
                actor.touched.append(context.Touched(tracked.resource_type, rid, name,
                                                     project, host,
                                                     created=action == "create"))

        for obj in s.new:
            tracked = _TRACKED.get(type(obj))
            if tracked is None:
                made = creations.created(obj) if actor is not context.SYSTEM else None
                if made is not None:
                    actor.touched.append(made)
                continue
            state = getattr(obj, tracked.attr)
            add(obj, "create", None, state, self._reason(obj))
            if isinstance(obj, Instance) and obj.host_id:
                s.connection().execute(insert(UsageRecord).values(
                    instance_id=obj.id, name=obj.name, project_id=obj.project_id,
                    user_id=obj.user_id, flavor=self._flavor_name(s, obj.flavor_id),
                    host=self._host_name(s, obj.host_id), vcpus=obj.vcpus, ram_mb=obj.ram_mb,
                    disk_gb=obj.disk_gb, started_at=now, ended_at=None))
        for obj in s.dirty:
            tracked = _TRACKED.get(type(obj))
            if tracked is None:
                continue
            attrs = inspect(obj).attrs
            hist = attrs[tracked.attr].history
            if hist.added and hist.deleted and hist.added[0] != hist.deleted[0]:
                source, target = hist.deleted[0], hist.added[0]
                add(obj, transition_name(tracked.machine, source, target), source, target,
                    self._reason(obj))
            for (model, attr), action in _FLAGS.items():
                if isinstance(obj, model):
                    h = attrs[attr].history
                    if h.added and h.deleted and h.added[0] != h.deleted[0]:
                        add(obj, action, _text(h.deleted[0]), _text(h.added[0]),
                            self._reason(obj))
        for obj in s.deleted:
            tracked = _TRACKED.get(type(obj))
            if tracked is None:
                continue
            state = getattr(obj, tracked.attr)
            if not tracked.machine.final(state):  # else its way there was the event
                add(obj, "delete", state, "deleted", self._reason(obj))
            if isinstance(obj, Instance):
                s.connection().execute(update(UsageRecord).where(
                    UsageRecord.instance_id == obj.id, UsageRecord.ended_at.is_(None))
                    .values(ended_at=now))
        if rows:  # Core inserts in the flush's transaction: no unit-of-work bookkeeping
            s.connection().execute(insert(Event), rows)

    # ---- reading -------------------------------------------------------------------------

    def query(self, q: Query) -> list[Event]:
        with self.db.read() as s:
            return list(s.scalars(statement(q)))

    def latest_id(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0)

    def export(self, q: Query, *, client: bool = False) -> Iterator[str]:
        """JSON lines of every matching event, one chunk per page (bounded memory)."""
        after = q.after
        while True:
            page = self.query(Query(**{**q.__dict__, "after": after, "limit": MAX_PAGE,
                                       "newest_first": False}))
            if page:
                yield "".join(json.dumps(to_dict(e, client=client), separators=(",", ":"))
                              + "\n"
                              for e in page)
            if len(page) < MAX_PAGE:
                return
            after = page[-1].id

    def prune(self) -> int:
        cutoff = self.clock.now() - self.retention
        with self.db.write() as s:
            result = s.execute(delete(Event).where(Event.at < cutoff)
                               .execution_options(synchronize_session=False))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def statement(q: Query) -> Select[Event]:
    """The SELECT of one page of the query (the project, host, resource and user filters
    each have an index with the id, so a page of them reads no other rows)."""
    stmt = select(Event)
    if q.since is not None:
        stmt = stmt.where(Event.at >= q.since)
    if q.until is not None:
        stmt = stmt.where(Event.at < q.until)
    if q.after is not None:
        stmt = stmt.where(Event.id > q.after)
    for column, value in ((Event.project_id, q.project_id), (Event.host, q.host),
                          (Event.resource_id, q.resource_id),
                          (Event.resource_type, q.resource_type), (Event.kind, q.kind),
                          (Event.actor, q.actor), (Event.actor_id, q.user_id),
                          (Event.site, q.site)):
        if value is not None:
            stmt = stmt.where(column == value)
    if q.requestor is not None:
        stmt = stmt.where(Event.detail["requestor"].as_string() == q.requestor)
    limit = max(1, min(q.limit, MAX_PAGE))
    order = Event.id.desc() if q.newest_first else Event.id
    return stmt.order_by(order).limit(limit)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)[:32]
