"""The pool service: the engine on its own thread, plus what the API asks of it (requests,
nodes, release, hold, drain) and the views the API and the CLI print. Every API change is
written to the database before the call returns. With several pool processes (pool/seat.py)
this is the active one's face: it also applies the writes the standby processes received
(pool/commands.py), before each tick, and runs only while `may_work` says it holds the lease."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from infracloud.core.clock import Clock
from infracloud.core.errors import BadRequest, Conflict, Forbidden, InfracloudError, NotFound
from infracloud.core.settings import validate_file
from infracloud.ops import context
from infracloud.ops.events import EventLog
from infracloud.pool.alerts import PoolAlerts
from infracloud.pool.cleanup import LeakCleaner
from infracloud.pool.cloud import Cloud
from infracloud.pool.commands import Command, Inbox, answer
from infracloud.pool.config import PoolConfig, Provider
from infracloud.pool.engine import Engine
from infracloud.pool.fairshare import FairQueue, Waiting
from infracloud.pool.images import Uploads
from infracloud.pool.probe import Probe
from infracloud.pool.providers import ProviderRuntime
from infracloud.pool.records import Entry, LeaseLost, NodeRec, PoolStore, RequestRec
from infracloud.pool.stats import Stats, nodepool_state

log = logging.getLogger(__name__)

MAX_NODES_PER_REQUEST = 100
GAUGES_EVERY = 10.0
PRUNE_EVERY = 3600.0
KEEP_HISTORY = dt.timedelta(days=7)
RELOAD_EVERY = 5.0
TICK_AT_LEAST = 0.5  # seconds: the engine runs at least this often


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def node_view(node: NodeRec) -> dict[str, Any]:
    return {"id": node.id, "label": node.label, "provider": node.provider, "pool": node.pool,
            "state": node.state, "interface_ip": node.interface_ip, "ssh_port": node.ssh_port,
            "username": node.username, "key_name": node.key_name,
            "host_keys": list(node.host_keys), "server_id": node.server_id,
            "request_id": node.request_id, "requestor": node.requestor,
            "hold_reason": node.hold_reason, "failure": node.failure,
            "created_at": _iso(node.created_at), "state_at": _iso(node.state_at),
            "ready_at": _iso(node.ready_at)}


class PoolService(Engine):
    role = "active"  # what /readyz and `pool status` say of this face (StandbyPool: standby)

    def __init__(self, config: PoolConfig, store: PoolStore,
                 make_cloud: Callable[[Provider], Cloud], prober: Probe,
                 stats: Stats | None = None, config_file: Path | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], dt.datetime] | None = None,
                 webhook_transport: httpx.BaseTransport | None = None) -> None:
        kwargs: dict[str, Any] = {"now": now} if now else {}
        super().__init__(config, store, make_cloud, prober, stats, clock, **kwargs)
        self.config_file = config_file
        self._config_stamp = self._stamp()
        self.uploads = Uploads(self, [])
        self.cleaner = LeakCleaner(self)
        self.alerts = PoolAlerts(self, webhook_transport)
        self.events = EventLog(store.db, config.name, Clock())  # what the store records
        self._thread: threading.Thread | None = None
        self._loaded = False
        self._stop = threading.Event()
        self._last = {"gauges": 0.0, "prune": 0.0, "reload": clock()}
        # set by the seat (several pool processes): the standbys' writes, this holding's
        # lease generation, and whether the lease is still held now
        self.inbox: Inbox | None = None
        self.generation: int | None = None
        self.may_work: Callable[[], bool] = lambda: True

    # ---- running ----------------------------------------------------------------------------

    def load(self) -> None:
        super().load()
        self.uploads = Uploads(self, self.loaded_uploads)
        self._loaded = True

    def start(self) -> None:
        """Run the engine on its own thread (loading the saved state first if need be)."""
        if not self._loaded:
            self.load()
        self._thread = threading.Thread(target=self._run, name="pool-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with context.acting("system:pool"):
            self._loop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.woken.wait(max(0.01, min(TICK_AT_LEAST, self.next_tick)))
            self.woken.clear()
            if self._stop.is_set():
                break
            if not self.may_work():
                continue  # the lease is not held now: the seat stops this engine
            try:
                self.tick()
            except LeaseLost as exc:  # another process took over: do nothing more
                log.warning("pool engine stops: %s", exc.message)
                break
            except Exception:  # the loop must go on; the next tick tries again
                log.exception("pool engine tick failed")
                time.sleep(1)

    def stop(self) -> None:
        self._stop.set()
        self.woken.set()
        if self._thread is not None:
            self._thread.join(30)
        for p in self.providers.values():
            p.close()
        self.prober.close()
        self.alerts.close()

    def tick(self) -> None:
        self.apply_commands()
        super().tick()

    def version(self, request_id: str) -> int:
        """How often a request changed (long-polls compare it without taking the lock)."""
        return self.store.version(request_id)

    # ---- the standbys' writes -----------------------------------------------------------

    def apply_commands(self) -> None:
        """Apply the writes standby processes received, oldest first: each one's records
        and its answer in one transaction."""
        if self.inbox is None or self.generation is None:
            return
        for command in self.inbox.take(self.generation, self.store.fence):
            with context.acting(command.actor or "system:pool"), self.store.batch():
                try:
                    values = answer(200, result=self._command(command), now=self.now())
                except InfracloudError as exc:
                    values = answer(exc.status, message=exc.message, now=self.now())
                except Exception as exc:  # answered, so the standby does not wait in vain
                    log.exception("pool command %s (%s) failed", command.id, command.kind)
                    values = answer(500, message=f"{type(exc).__name__}: {exc}"[:500],
                                    now=self.now())
            self.store.answered(command.id, values)
            self.store.flush()

    def _command(self, command: Command) -> dict[str, Any]:
        a = command.args
        if command.kind == "create":
            return self.create_request(list(a["labels"]), a["requestor"], a.get("priority", 0),
                                       a.get("key"))
        if command.kind == "cancel":
            return self.cancel_request(a["request_id"], a.get("requestor"))
        if command.kind == "release":
            return self.release(a["node_id"], a.get("requestor"))
        if command.kind == "hold":
            return self.hold(a["node_id"], a["reason"], a.get("requestor"))
        assert command.kind == "drain", command.kind
        return self.drain(a["name"], a.get("reason"), bool(a.get("drained", True)))

    def current_upload(self, provider: str, diskimage: str) -> str | None:
        return self.uploads.current(provider, diskimage)

    def upload_used(self, node: NodeRec) -> None:
        self.uploads.used(node)

    def after_tick(self, now: dt.datetime) -> None:
        self.uploads.tick()
        self.cleaner.tick()
        self.alerts.tick()
        t = self.clock()
        if t - self._last["gauges"] >= GAUGES_EVERY:
            self._last["gauges"] = t
            self.stats.gauges(self.nodes.values(), self.providers.values(),
                              [label.name for label in self.config.labels],
                              self.queue.waiting())
        if t - self._last["prune"] >= PRUNE_EVERY:
            self._last["prune"] = t
            self.store.prune(now - KEEP_HISTORY)
        if t - self._last["reload"] >= RELOAD_EVERY:
            self._last["reload"] = t
            self._maybe_reload()
        for name, p in list(self.providers.items()):
            if p.removed and not any(n.provider == name for n in self.nodes.values()):
                p.close()
                del self.providers[name]

    # ---- config reload ------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.config_file.stat() if self.config_file else None
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns) if st else None

    def _maybe_reload(self) -> None:
        stamp = self._stamp()
        if stamp is None or stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        assert self.config_file is not None
        config, errors = validate_file(self.config_file, PoolConfig)
        if not isinstance(config, PoolConfig):
            log.error("pool config not reloaded: %s", "; ".join(errors))
            return
        self.reload(config)

    def reload(self, config: PoolConfig) -> None:
        """Take a changed config (max-servers, labels, shares, providers) without a restart.
        A provider removed from the file drains, then goes."""
        with self.lock:
            for pc in config.providers:
                if pc.name in self.providers:
                    self.providers[pc.name].config = pc
                    self.providers[pc.name].removed = False
                else:
                    self.providers[pc.name] = ProviderRuntime(pc, self.make_cloud(pc),
                                                              self.wake, self.clock)
            names = {pc.name for pc in config.providers}
            for name, p in self.providers.items():
                p.removed = name not in names
            self.config = config
            queue = FairQueue(config.shares(), config.default_share)
            for req in sorted(self.requests.values(), key=lambda r: r.created_at):
                unserved = sum(1 for e in req.entries if e.node is None)
                if not req.final and unserved:
                    queue.push(Waiting(req.id, req.requestor, unserved, req.priority,
                                       req.created_at.timestamp()))
            self.queue = queue
            log.info("pool config reloaded: %d providers, %d labels", len(config.providers),
                     len(config.labels))
        self.wake()

    # ---- requests -----------------------------------------------------------------------------

    def check_labels(self, labels: list[str]) -> None:
        if not labels:
            raise BadRequest("A request needs at least one label.")
        if len(labels) > MAX_NODES_PER_REQUEST:
            raise BadRequest(f"A request asks for at most {MAX_NODES_PER_REQUEST} nodes.")
        unknown = sorted({label for label in labels if self.config.label(label) is None})
        if unknown:
            raise BadRequest(f"Unknown label {', '.join(unknown)}; this pool has "
                             f"{', '.join(label.name for label in self.config.labels)}.")

    def _same(self, requestor: str, key: str) -> RequestRec | None:
        """The request made before with this idempotency key, if any."""
        found = next((r for r in self.requests.values()
                      if r.idempotency_key == key and r.requestor == requestor), None)
        return found or self.store.find_request(requestor, key)

    def create_request(self, labels: list[str], requestor: str, priority: int = 0,
                       key: str | None = None) -> dict[str, Any]:
        """`key`: the client's idempotency key; asked again with the same one (a retry
        whose first answer was lost), the request made the first time is the answer."""
        self.check_labels(labels)
        with self.lock:
            same = self._same(requestor, key) if key else None
            if same is not None:
                return self.request_view(same)
            now = self.now()
            req = RequestRec(id=self.new_request_id(), requestor=requestor, priority=priority,
                             entries=[Entry(label) for label in labels], state="requested",
                             state_at=now, created_at=now, idempotency_key=key)
            self.requests[req.id] = req
            self.store.added(req)
            why = next((w for w in map(self.why_impossible, labels) if w), None)
            if why:
                self._finish(req, "fail", now, why)
            else:
                self.queue.push(Waiting(req.id, requestor, len(labels), priority,
                                        now.timestamp()))
            self.store.flush()
            view = self.request_view(req)
        self.wake()
        return view

    def _request(self, request_id: str, owner: str | None = None) -> RequestRec:
        """`owner`: only that requestor's (another's is not found, as in OpenStack)."""
        req = self.requests.get(request_id)
        if req is None:
            req = self.store.get_request(request_id)
        if req is None or owner not in (None, req.requestor):
            raise NotFound(f"Request {request_id} could not be found.")
        return req

    def request_view(self, req: RequestRec) -> dict[str, Any]:
        nodes = [self.nodes.get(e.node or "") for e in req.entries]
        return {"id": req.id, "requestor": req.requestor, "priority": req.priority,
                "labels": req.labels, "state": req.state, "reason": req.reason,
                "created_at": _iso(req.created_at), "state_at": _iso(req.state_at),
                "node_ids": [e.node for e in req.entries if e.node],
                "nodes": [node_view(n) for n in nodes if n is not None and
                          req.state == "fulfilled"]}

    def get_request(self, request_id: str, owner: str | None = None) -> dict[str, Any]:
        with self.lock:
            return self.request_view(self._request(request_id, owner))

    def cancel_request(self, request_id: str, requestor: str | None) -> dict[str, Any]:
        with self.lock:
            req = self._request(request_id)
            self._own(req.requestor, requestor, f"request {req.id}")
            if req.final:
                raise Conflict(f"Request {req.id} is {req.state}; it cannot be cancelled.")
            self._finish(req, "cancel", self.now(), "cancelled by the requestor")
            self.store.flush()
            view = self.request_view(req)
        self.wake()
        return view

    def list_requests(self, history: bool = False, owner: str | None = None
                      ) -> list[dict[str, Any]]:
        """`owner`: only that requestor's requests (None: everyone's)."""
        with self.lock:
            reqs = list(self.requests.values())
        if history:
            _, finished = self.store.finished()
            known = {r.id for r in reqs}
            reqs += [r for r in finished if r.id not in known]
        return [self.request_view(r) for r in sorted(reqs, key=lambda r: r.id)
                if owner in (None, r.requestor)]

    # ---- nodes ------------------------------------------------------------------------------

    @staticmethod
    def _own(owner: str | None, requestor: str | None, what: str) -> None:
        """`requestor` None is an admin (or the static token): anything goes."""
        if requestor is not None and owner not in (None, requestor):
            raise Forbidden(f"{what} belongs to {owner}, not {requestor}.")

    def _node(self, node_id: str, owner: str | None = None) -> NodeRec:
        node = self.nodes.get(node_id)
        if node is None or owner not in (None, node.requestor):
            raise NotFound(f"Node {node_id} could not be found (or is deleted).")
        return node

    def _nodes(self, owner: str | None) -> list[NodeRec]:
        """The nodes in id order; `owner`: only that requestor's (None: all)."""
        return [n for n in sorted(self.nodes.values(), key=lambda n: n.id)
                if owner in (None, n.requestor)]

    def list_nodes(self, label: str | None = None, state: str | None = None,
                   owner: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [node_view(n) for n in self._nodes(owner)
                    if label in (None, n.label) and state in (None, n.state)]

    def get_node(self, node_id: str, owner: str | None = None) -> dict[str, Any]:
        with self.lock:
            return node_view(self._node(node_id, owner))

    def release(self, node_id: str, requestor: str | None) -> dict[str, Any]:
        """Done with it: the node is deleted."""
        with self.lock:
            node = self._node(node_id)
            self._own(node.requestor, requestor, f"node {node.id}")
            now = self.now()
            if node.state in ("in-use", "held"):
                node.move("release", now)
            elif node.state == "ready":
                self._unserve(node, now, failed=False)
                self._delete(node, now)
            elif node.state not in ("used", "deleting", "failed"):
                raise Conflict(f"Node {node.id} is {node.state}; only ready, in-use or held "
                               f"nodes can be released.")
            self.store.changed(node)
            self.store.flush()
            view = node_view(node)
        self.wake()
        return view

    def hold(self, node_id: str, reason: str, requestor: str | None) -> dict[str, Any]:
        """Keep a node (to look at a failed job): not deleted until released."""
        if not reason.strip():
            raise BadRequest("A hold needs a reason.")
        with self.lock:
            node = self._node(node_id)
            self._own(node.requestor, requestor, f"node {node.id}")
            if node.state not in ("ready", "in-use"):
                raise Conflict(f"Node {node.id} is {node.state}; only ready or in-use nodes "
                               f"can be held.")
            if node.state == "ready" and node.request_id:
                self._unserve(node, self.now(), failed=False)
            node.move("hold", self.now())
            node.hold_reason = reason.strip()
            self.store.changed(node)
            self.store.flush()
            return node_view(node)

    # ---- providers and labels -----------------------------------------------------------------

    def drain(self, name: str, reason: str | None, drained: bool = True) -> dict[str, Any]:
        """Stop (or resume) new launches on a provider; its nodes finish as usual."""
        with self.lock:
            p = self.providers.get(name)
            if p is None:
                raise NotFound(f"Provider {name} could not be found.")
            p.drained_reason = (reason or "drained by an operator") if drained else None
            self.store.set_drained(name, drained, p.drained_reason)
            view = self.provider_view(p)
        self.wake()
        return view

    def provider_view(self, p: ProviderRuntime) -> dict[str, Any]:
        counts: Counter[str] = Counter(n.state for n in self.nodes.values()
                                       if n.provider == p.name)
        limits = p.limits
        return {"name": p.name, "cloud": p.config.cloud, "region": p.config.region,
                "state": p.state, "max_servers": p.config.max_servers,
                "drained_reason": p.drained_reason, "nodes": sum(counts.values()),
                "building": counts["building"], "ready": counts["ready"],
                "in_use": counts["in-use"], "deleting": counts["deleting"],
                "launches": p.launches, "launch_failures": p.launch_failures,
                "quota": None if limits is None else {
                    "instances": limits.instances, "instances_used": limits.instances_used,
                    "cores": limits.cores, "cores_used": limits.cores_used,
                    "ram_mb": limits.ram_mb, "ram_mb_used": limits.ram_mb_used},
                "last_error": p.last_error}

    def list_providers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.provider_view(p) for p in self.providers.values()]

    def list_labels(self) -> list[dict[str, Any]]:
        with self.lock:
            counts: Counter[tuple[str, str]] = Counter((n.label, n.state)
                                                       for n in self.nodes.values())
            waiting: Counter[str] = Counter(e.label for r in self.requests.values()
                                            if not r.final for e in r.entries
                                            if e.node is None)
            return [{"name": label.name, "min_ready": label.min_ready,
                     "max_ready_age": label.max_ready_age,
                     "providers": [p.name for p in self.config.providers_for(label.name)],
                     "ready": counts[(label.name, "ready")],
                     "building": counts[(label.name, "building")],
                     "in_use": counts[(label.name, "in-use")], "waiting": waiting[label.name]}
                    for label in self.config.labels]

    # ---- nodepool's read-only lists ---------------------------------------------------------

    def nodepool_nodes(self, owner: str | None = None) -> list[dict[str, Any]]:
        now = self.now()
        with self.lock:
            return [{"id": n.id, "provider": n.provider, "label": [n.label],
                     "server_id": n.server_id, "public_ipv4": n.interface_ip
                     if n.interface_ip and ":" not in n.interface_ip else None,
                     "ipv6": n.interface_ip if n.interface_ip and ":" in n.interface_ip
                     else None, "state": nodepool_state(n.state),
                     "age": int((now - n.state_at).total_seconds()), "locked": "unlocked",
                     "pool": n.pool, "hostname": n.server_id and
                     f"{n.label}-{n.provider}-{n.id}", "private_ipv4": None, "AZ": None,
                     "username": n.username, "connection_port": n.ssh_port,
                     "launcher": self.config.name, "allocated_to": n.request_id,
                     "hold_job": None, "comment": n.hold_reason, "user_data": None,
                     "driver_data": None} for n in self._nodes(owner)]

    def nodepool_requests(self, owner: str | None = None) -> list[dict[str, Any]]:
        state = {"requested": "requested", "pending": "pending", "fulfilled": "fulfilled",
                 "failed": "failed", "cancelled": "failed"}
        with self.lock:
            return [{"id": r.id, "relative_priority": r.priority, "state": state[r.state],
                     "requestor": r.requestor, "node_types": r.labels,
                     "nodes": [e.node for e in r.entries if e.node], "declined_by": [],
                     "event_id": None} for r in sorted(self.requests.values(),
                                                       key=lambda r: r.id)
                    if owner in (None, r.requestor)]

    def nodepool_images(self) -> list[dict[str, Any]]:
        now = self.now()
        with self.lock:
            return [{"id": u.version[:12], "upload_id": u.id, "provider": u.provider,
                     "image": u.diskimage, "external_name": u.external_name,
                     "external_id": u.external_id, "state": u.state,
                     "age": int((now - u.state_at).total_seconds())}
                    for u in sorted(self.uploads.records.values(),
                                    key=lambda u: (u.provider, u.diskimage, u.state_at))]
