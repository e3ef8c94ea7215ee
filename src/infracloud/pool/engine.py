"""The pool's engine: one loop that, on every tick, advances each launch and deletion, hands
ready nodes to requests in fair order, launches what waiting requests need where there is room,
refills min-ready from the room left, and deletes what is done. It never waits on a provider:
calls run on each provider's own threads and the loop reads their results when they are in.

Counting room on a provider: its `max-servers` (and its pools'), minus every node of ours on it
that still exists (building to deleting), and the quota the cloud reports. A quota refusal
pauses the provider's launches for a while and puts the node back in the queue: a wait, not a
failure. Only real failures count against a launch's retries, and the retry goes to another
provider when there is one."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from infracloud.core.clock import utcnow
from infracloud.core.states import POOL_REQUEST
from infracloud.pool.cloud import Cloud, Flavor
from infracloud.pool.config import PoolConfig, PoolLabel, Provider, ProviderPool
from infracloud.pool.fairshare import FairQueue, Waiting
from infracloud.pool.launch import Launch, Outcome, Spec
from infracloud.pool.probe import Probe
from infracloud.pool.providers import ProviderRuntime
from infracloud.pool.records import Entry, NodeRec, PoolStore, RequestRec
from infracloud.pool.stats import Stats

log = logging.getLogger(__name__)

META_POOL = "infracloud_pool"
META_NODE = "infracloud_pool_node_id"
META_LABEL = "infracloud_pool_label"
DELETE_RETRY = 10.0  # seconds between delete attempts of one server
KEEP_FINAL = 3600.0  # seconds a finished request stays in memory for watchers
LIVE_ON_PROVIDER = ("building", "ready", "in-use", "used", "held", "failed", "deleting")


class Room:
    """Free launch slots per provider, and nodes per (provider, pool), for one tick."""

    def __init__(self) -> None:
        self.free: dict[str, int] = {}
        self.pool_used: Counter[tuple[str, str]] = Counter()

    def pool_has_room(self, provider: str, pool: ProviderPool) -> bool:
        return pool.max_servers is None or self.pool_used[(provider, pool.name)] < \
            pool.max_servers

    def take(self, provider: str, pool: str) -> None:
        self.free[provider] -= 1
        self.pool_used[(provider, pool)] += 1


class Engine:
    def __init__(self, config: PoolConfig, store: PoolStore, make_cloud: Callable[[Provider],
                 Cloud], prober: Probe, stats: Stats | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], dt.datetime] = utcnow) -> None:
        self.config = config
        self.store = store
        self.make_cloud = make_cloud
        self.prober = prober
        self.stats = stats or Stats(None)
        self.clock = clock
        self.now = now
        self.lock = threading.RLock()
        self.woken = threading.Event()
        self.nodes: dict[str, NodeRec] = {}
        self.requests: dict[str, RequestRec] = {}
        self.launches: dict[str, Launch] = {}
        self.deletes: dict[str, tuple[Future[None] | None, float]] = {}
        self.providers: dict[str, ProviderRuntime] = {}
        self.queue = FairQueue(config.shares(), config.default_share)
        self.loaded_uploads: list[Any] = []
        self.next_tick = 0.0  # seconds until a provider's server list is due
        # (clock, provider, ready?) of recent launches that ended (the launch failure alert)
        self.outcomes: deque[tuple[float, str, bool]] = deque(maxlen=10000)
        self._finished_at: dict[str, float] = {}
        self._next_node = 1
        self._next_request = 1
        for provider in config.providers:
            self.providers[provider.name] = ProviderRuntime(provider, make_cloud(provider),
                                                            self.wake, clock)

    def wake(self) -> None:
        self.woken.set()

    # ---- start --------------------------------------------------------------------------------

    def load(self) -> None:
        """Pick up where the last run stopped: launches with a server go on being watched,
        launches without one are withdrawn (a server made meanwhile is found as a leak)."""
        nodes, requests, self.loaded_uploads, drained, self._next_node, \
            self._next_request = self.store.load()
        now = self.now()
        for name, reason in drained.items():
            if name in self.providers:
                self.providers[name].drained_reason = reason or "drained"
        for node in nodes:
            self.nodes[node.id] = node
            if node.state == "building":
                provider = self.providers.get(node.provider)
                spec = self._spec(node) if provider else None
                if provider is None or spec is None or node.server_id is None:
                    node.move("withdraw", now)
                    self.store.changed(node)
                    continue
                self.launches[node.id] = Launch(provider, self.prober, spec, node.server_id,
                                                self.clock)
            elif node.state == "deleting":
                self.deletes[node.id] = (None, -1.0)
        self.nodes = {k: n for k, n in self.nodes.items() if n.live}
        for req in requests:
            self.requests[req.id] = req
            for entry in req.entries:
                if entry.node is not None and entry.node not in self.nodes:
                    entry.node = None
            unserved = sum(1 for e in req.entries if e.node is None)
            if unserved:
                self.queue.push(Waiting(req.id, req.requestor, unserved, req.priority,
                                        req.created_at.timestamp()))
        self.store.flush()

    # ---- ids and records --------------------------------------------------------------------

    def new_request_id(self) -> str:
        rid = f"req-{self._next_request:010d}"
        self._next_request += 1
        return rid

    def _new_node(self, label: str, provider: ProviderRuntime, pool: ProviderPool,
                  pl: PoolLabel, request: RequestRec | None) -> NodeRec:
        now = self.now()
        node = NodeRec(id=f"{self._next_node:010d}", label=label, provider=provider.name,
                       pool=pool.name, state="building", state_at=now, created_at=now,
                       request_id=request.id if request else None,
                       requestor=request.requestor if request else None,
                       ssh_port=pl.connection_port, username=pl.username,
                       key_name=pl.key_name)
        self._next_node += 1
        self.nodes[node.id] = node
        self.store.added(node)
        return node

    def _resolve(self, provider: ProviderRuntime, label: str
                 ) -> tuple[ProviderPool, PoolLabel, Flavor, str] | None:
        """Pool, label config, flavor and image id to launch `label` on `provider` now."""
        found = provider.config.pool_label(label)
        if found is None:
            return None
        pool, pl = found
        flavor = provider.flavors.get(pl.flavor)
        if flavor is None:
            return None
        if pl.diskimage is not None:
            image_id = self.current_upload(provider.name, pl.diskimage)
        else:
            assert pl.image is not None
            image = provider.find_image(pl.image)
            image_id = image.id if image else None
        if image_id is None:
            return None
        return pool, pl, flavor, image_id

    def current_upload(self, provider: str, diskimage: str) -> str | None:
        """Overridden by the image uploads (`PoolService`); none without diskimages."""
        return None

    def _spec(self, node: NodeRec, image_id: str | None = None) -> Spec | None:
        provider = self.providers[node.provider]
        found = provider.config.pool_label(node.label)
        if found is None:
            return None
        pool, pl = found
        flavor = provider.flavors.get(pl.flavor)
        return Spec(
            name=f"{node.label}-{provider.name}-{node.id}", image_id=image_id or node.image_id
            or "", flavor_id=flavor.id if flavor else "", network=pl.network,
            key_name=pl.key_name, port=pl.connection_port, check_ssh=pool.host_key_checking,
            boot_timeout=provider.config.boot_timeout,
            launch_timeout=provider.config.launch_timeout,
            metadata={META_POOL: self.config.name, META_NODE: node.id, META_LABEL: node.label})

    # ---- the tick ---------------------------------------------------------------------------

    def tick(self) -> None:
        with self.lock:
            now = self.now()
            busy: Counter[str] = Counter(n.provider for n in self.nodes.values()
                                         if n.state in ("building", "deleting"))
            for p in self.providers.values():
                p.poll(busy[p.name] > 0)
            self.next_tick = min((p.next_poll(busy[p.name] > 0)
                                  for p in self.providers.values()), default=1.0)
            self._advance_launches(now)
            self._advance_deletes(now)
            self._expire(now)
            self._check_impossible(now)
            room = self._room()
            waiting_labels = self._serve(now, room)
            self._min_ready(waiting_labels, room)
            self._fulfil(now)
            self.after_tick(now)
            self.store.flush()
            self._forget_finished()

    def after_tick(self, now: dt.datetime) -> None:
        """Hook for the uploads and the leak cleaner (`PoolService`)."""

    # ---- launches ---------------------------------------------------------------------------

    def _advance_launches(self, now: dt.datetime) -> None:
        for node_id, launch in list(self.launches.items()):
            node = self.nodes[node_id]
            if self.store.unwritten(node):
                continue  # no server before the database knows its node (launch.py)
            if launch.provider.down and launch.outcome is None:
                launch.outcome = Outcome("failed", f"provider {node.provider} is unreachable: "
                                         f"{launch.provider.last_error}")
            out = launch.advance()
            if node.server_id is None and launch.server_id is not None:
                node.server_id = launch.server_id
                self.store.changed(node)
            if out is None:
                continue
            del self.launches[node_id]
            self._landed(node, launch, out, now)

    def _landed(self, node: NodeRec, launch: Launch, out: Outcome, now: dt.datetime) -> None:
        provider = launch.provider
        took = self.clock() - launch.started
        if out.kind in ("ready", "failed"):
            self.outcomes.append((self.clock(), provider.name, out.kind == "ready"))
        if out.kind == "ready":
            node.interface_ip = launch.ip
            node.host_keys = list(out.host_keys)
            node.ready_at = now
            node.move("ready", now)
            provider.launch_failures = 0
            provider.launches += 1
            self.stats.launch(node, "ready", took)
            self.upload_used(node)
        elif out.kind == "withdrawn":
            node.failure = out.reason
            self.stats.launch(node, "error.quota", took)
            self._unserve(node, now, failed=False)
            node.move("withdraw", now)
            del self.nodes[node.id]
        elif out.kind == "capacity":
            node.failure = out.reason
            self.stats.launch(node, "error.quota", took)
            self._unserve(node, now, failed=False)
            self._delete(node, now)
        else:
            node.failure, node.console = out.reason, out.console
            node.move("fail", now)
            provider.launch_failures += 1
            provider.last_error = out.reason
            log.warning("launch of node %s on %s failed: %s", node.id, node.provider,
                        out.reason)
            self.stats.launch(node, "error.unknown", took)
            self._unserve(node, now, failed=True)
            self._delete(node, now)
        self.store.changed(node)

    def upload_used(self, node: NodeRec) -> None:
        """Hook: a node from this image became ready (the uploads keep track)."""

    def _unserve(self, node: NodeRec, now: dt.datetime, failed: bool) -> None:
        """The node will not serve its request: put the request's entry back in the queue,
        or fail the request once its launches have failed too often."""
        req = self.requests.get(node.request_id or "")
        node.request_id = None
        if req is None or req.final:
            return
        entry = next((e for e in req.entries if e.node == node.id), None)
        if entry is None:
            return
        entry.node = None
        if failed:
            entry.failures += 1
            if node.provider not in entry.avoid:
                entry.avoid.append(node.provider)
            retries = max((p.launch_retries for p in self.config.providers_for(entry.label)),
                          default=1)
            if entry.failures >= retries:
                self._finish(req, "fail", now, f"{entry.label}: {entry.failures} launches "
                             f"failed; the last: {node.failure}")
                return
        self.queue.give_back(Waiting(req.id, req.requestor, 1, req.priority,
                                     req.created_at.timestamp()))
        if req.state == "pending" and all(e.node is None for e in req.entries):
            req.move("requeue", now)  # back to waiting for capacity
        self.store.changed(req)

    def _finish(self, req: RequestRec, event: str, now: dt.datetime,
                reason: str | None = None) -> None:
        """A request ends (fulfilled, failed or cancelled); nodes it held but did not get
        become spares."""
        req.move(event, now)
        req.reason = reason or req.reason
        self.queue.remove(req.id)
        self._finished_at[req.id] = self.clock()
        if event != "fulfil":
            for entry in req.entries:
                node = self.nodes.get(entry.node or "")
                if node is not None and node.state in ("building", "ready"):
                    node.request_id = node.requestor = None
                    self.store.changed(node)
        self.stats.request(req)
        self.store.changed(req)

    def _forget_finished(self) -> None:
        cutoff = self.clock() - KEEP_FINAL
        for rid, at in list(self._finished_at.items()):
            if at < cutoff:
                del self._finished_at[rid]
                self.requests.pop(rid, None)

    # ---- deletes ----------------------------------------------------------------------------

    def _delete(self, node: NodeRec, now: dt.datetime) -> None:
        node.move("delete", now)
        self.deletes[node.id] = (None, -1.0)
        self.store.changed(node)

    def _advance_deletes(self, now: dt.datetime) -> None:
        for node in [n for n in self.nodes.values() if n.state in ("used", "failed")]:
            self._delete(node, now)
        timeout = dt.timedelta(seconds=900)
        for node_id, (future, asked) in list(self.deletes.items()):
            node = self.nodes[node_id]
            provider = self.providers.get(node.provider)
            if node.server_id is None or provider is None:
                self._gone(node, now)
                continue
            if future is None or (future.done() and future.exception() is not None):
                if future is not None and self.clock() - asked < DELETE_RETRY:
                    continue
                if now - node.state_at > timeout:
                    node.failure = f"delete of server {node.server_id} timed out"
                    node.move("timeout", now)
                    node.move("delete", now)
                    self.store.changed(node)
                self.deletes[node_id] = (provider.submit(provider.cloud.delete_server,
                                                         node.server_id), self.clock())
            elif future.done() and provider.servers_at > asked and \
                    node.server_id not in provider.servers:
                self._gone(node, now)

    def _gone(self, node: NodeRec, now: dt.datetime) -> None:
        node.move("deleted", now)
        self.deletes.pop(node.id, None)
        del self.nodes[node.id]
        self.store.changed(node)

    # ---- time limits ------------------------------------------------------------------------

    def _expire(self, now: dt.datetime) -> None:
        ages = {label.name: label.max_ready_age for label in self.config.labels}
        for node in list(self.nodes.values()):
            if node.state == "ready" and node.request_id is None and ages.get(node.label) and \
                    node.ready_at and (now - node.ready_at).total_seconds() > ages[node.label]:
                node.move("expire", now)
                self.store.changed(node)
        pending = POOL_REQUEST.states["pending"].timeout or 0
        for req in list(self.requests.values()):
            if req.state == "pending" and (now - req.state_at).total_seconds() > pending:
                self._finish(req, "timeout", now, f"not fulfilled within {pending:g} s")

    # ---- what can never be served -------------------------------------------------------------

    def why_impossible(self, label: str) -> str | None:
        """Why no provider can ever launch `label`, or None (can, or cannot tell yet)."""
        if self.config.label(label) is None:
            return f"label {label} is not in the pool's config"
        reasons = []
        for pc in self.config.providers_for(label):
            provider = self.providers[pc.name]
            found = pc.pool_label(label)
            if not provider.flavors or found is None:
                return None  # not heard from it yet
            _pool, pl = found
            flavor = provider.flavors.get(pl.flavor)
            if flavor is None:
                reasons.append(f"{pc.name}: flavor {pl.flavor} not found")
                continue
            if pl.image is not None and provider.images and pl.image not in provider.images:
                reasons.append(f"{pc.name}: image {pl.image} not found")
                continue
            limits = provider.limits
            if limits is not None and limits.room(flavor.vcpus, flavor.ram_mb) is not None:
                empty = type(limits)(limits.instances, limits.cores, limits.ram_mb, 0, 0, 0)
                if empty.room(flavor.vcpus, flavor.ram_mb) == 0:
                    reasons.append(f"{pc.name}: flavor {flavor.name} ({flavor.vcpus} vCPUs, "
                                   f"{flavor.ram_mb} MB) is bigger than the project's quota")
                    continue
            return None
        if not reasons:
            return f"no provider offers label {label}"
        return f"no provider can launch {label}: " + "; ".join(reasons)

    def _most(self, pc: Provider, label: str | None = None) -> int:
        """How many nodes (of `label`) provider `pc` can ever hold at once: its max-servers,
        its pool's, and what the project's quota holds of the label's flavor."""
        most = pc.max_servers
        found = pc.pool_label(label) if label else None
        if found is None:
            return most
        pool, pl = found
        if pool.max_servers is not None:
            most = min(most, pool.max_servers)
        provider = self.providers[pc.name]
        flavor = provider.flavors.get(pl.flavor)
        if provider.limits is not None and flavor is not None:
            lim = provider.limits
            quota = type(lim)(lim.instances, lim.cores, lim.ram_mb, 0, 0, 0).room(
                flavor.vcpus, flavor.ram_mb)
            most = most if quota is None else min(most, quota)
        return most

    def why_too_big(self, labels: list[str]) -> str | None:
        """Why a request for `labels` can never be served at once: it wants more nodes than
        the providers that offer them can hold together. None while every one of them is
        drained by `max-servers: 0` (a drain is a wait)."""
        providers = {pc.name: pc for label in set(labels)
                     for pc in self.config.providers_for(label)}
        if not any(pc.max_servers for pc in providers.values()):
            return None
        for label, wanted in Counter(labels).items():
            most = sum(self._most(pc, label) for pc in self.config.providers_for(label))
            if wanted > most:
                return (f"it wants {wanted} {label} nodes at once; the providers offering "
                        f"{label} can hold {most} (max-servers and quotas)")
        most = sum(pc.max_servers for pc in providers.values())
        if len(labels) > most:
            return (f"it wants {len(labels)} nodes at once; the providers offering its "
                    f"labels can hold {most} (max-servers)")
        return None

    def _check_impossible(self, now: dt.datetime) -> None:
        impossible = {}
        for label in {e.label for r in self.requests.values() if not r.final
                      for e in r.entries}:
            why = self.why_impossible(label)
            if why:
                impossible[label] = why
        too_big: dict[tuple[str, ...], str | None] = {}  # by the labels a request wants
        for req in list(self.requests.values()):
            if req.final:
                continue
            why = next((impossible[label] for label in req.labels if label in impossible),
                       None)
            if why is None:
                key = tuple(sorted(req.labels))
                if key not in too_big:
                    too_big[key] = self.why_too_big(req.labels)
                why = too_big[key] and f"no provider can serve it: {too_big[key]}"
            if why:
                self._finish(req, "fail", now, why)

    # ---- serving requests -------------------------------------------------------------------

    def _room(self) -> Room:
        live: Counter[str] = Counter()
        building: Counter[str] = Counter()
        room = Room()
        for n in self.nodes.values():
            if n.state in LIVE_ON_PROVIDER:
                live[n.provider] += 1
                room.pool_used[(n.provider, n.pool)] += 1
            if n.state == "building":
                building[n.provider] += 1
        for name, p in self.providers.items():
            if p.down or p.drained or self.clock() < p.quota_until:
                room.free[name] = 0
            else:
                room.free[name] = max(0, min(p.config.max_servers - live[name],
                                             p.config.max_concurrency * 4 - building[name]))
        return room

    def _pick(self, label: str, room: Room, avoid: list[str] | None = None,
              exclude: set[str] | None = None
              ) -> tuple[ProviderRuntime, ProviderPool, PoolLabel, Flavor, str] | None:
        best: tuple[tuple[bool, int], Any] | None = None
        for pc in self.config.providers_for(label):
            if room.free.get(pc.name, 0) <= 0 or (exclude and pc.name in exclude):
                continue
            provider = self.providers[pc.name]
            resolved = self._resolve(provider, label)
            if resolved is None or not room.pool_has_room(pc.name, resolved[0]):
                continue
            quota = provider.room(resolved[2])
            if quota is not None and quota <= 0:
                continue
            rank = (pc.name not in (avoid or ()), room.free[pc.name])
            if best is None or rank > best[0]:
                best = (rank, (provider, *resolved))
        return best[1] if best else None

    def _spares(self) -> dict[str, list[NodeRec]]:
        spares: dict[str, list[NodeRec]] = defaultdict(list)
        for node in self.nodes.values():
            if node.state == "ready" and node.request_id is None:
                spares[node.label].append(node)
        for nodes in spares.values():
            nodes.sort(key=lambda n: (n.ready_at or n.created_at, n.id))
        return spares

    def _serve(self, now: dt.datetime, room: Room) -> set[str]:
        """Hand out spare ready nodes and launch, request by request in fair order, while
        there is room (taken from `room`). Returns the labels still waiting."""
        spares = self._spares()

        def next_entry(w: Waiting) -> Entry | None:
            req = self.requests.get(w.id)
            return next((e for e in req.entries if e.node is None), None) if req else None

        def accept(w: Waiting) -> bool:
            entry = next_entry(w)
            if entry is None:
                return True  # stale: popping it clears it
            return bool(spares.get(entry.label)) or \
                self._pick(entry.label, room, entry.avoid) is not None

        while True:
            w = self.queue.pop(accept)
            if w is None:
                break
            entry = next_entry(w)
            if entry is None:
                continue
            req = self.requests[w.id]
            if spares.get(entry.label):
                node = spares[entry.label].pop(0)
                node.request_id, node.requestor = req.id, req.requestor
                self.store.changed(node)
            else:
                picked = self._pick(entry.label, room, entry.avoid)
                assert picked is not None
                node = self._launch(entry.label, picked, req)
                room.take(node.provider, node.pool)
            entry.node = node.id
            if req.state == "requested":
                req.move("launch", now)
            self.store.changed(req)
        return {e.label for r in self.requests.values() if not r.final
                for e in r.entries if e.node is None}

    def _launch(self, label: str, picked: tuple[ProviderRuntime, ProviderPool, PoolLabel,
                                                Flavor, str], req: RequestRec | None
                ) -> NodeRec:
        provider, pool, pl, _flavor, image_id = picked
        node = self._new_node(label, provider, pool, pl, req)
        node.image_id = image_id
        spec = self._spec(node, image_id)
        assert spec is not None
        # the create goes out at the next tick, once this one wrote the node (launch.py)
        self.launches[node.id] = Launch(provider, self.prober, spec, clock=self.clock)
        provider.launched_since_limits += 1
        self.wake()
        return node

    def _min_ready(self, waiting_labels: set[str], room: Room) -> None:
        """Refill min-ready, from the room `_serve` left, only on providers no waiting
        request could use; trim spares beyond min-ready that nothing waits for."""
        wanted = {pc.name for label in waiting_labels for pc in self.config.providers_for(label)}
        spare: Counter[str] = Counter(n.label for n in self.nodes.values()
                                      if n.state in ("building", "ready") and
                                      n.request_id is None)
        for label in self.config.labels:
            deficit = label.min_ready - spare[label.name]
            while deficit > 0:
                picked = self._pick(label.name, room, exclude=wanted)
                if picked is None:
                    break
                node = self._launch(label.name, picked, None)
                room.take(node.provider, node.pool)
                deficit -= 1
            if deficit < 0 and label.name not in waiting_labels:
                now = self.now()
                ready = self._spares().get(label.name, [])
                for node in ready[:min(-deficit, len(ready))]:
                    self._delete(node, now)

    def _fulfil(self, now: dt.datetime) -> None:
        for req in self.requests.values():
            if req.final or any(e.node is None for e in req.entries):
                continue
            nodes = [self.nodes.get(e.node or "") for e in req.entries]
            if all(n is not None and n.state == "ready" for n in nodes):
                for node in nodes:
                    assert node is not None
                    node.move("assign", now)
                    self.store.changed(node)
                self._finish(req, "fulfil", now)
