"""The face of a pool process that stands by (another holds the pool's lease): the same API
as the active one, read from the database and written through it.

Reads (requests, nodes, labels, providers, nodepool's lists) come from what the active process
wrote, re-read at most every `REFRESH_EVERY` seconds; a long-poll on a request wakes when a
re-read shows the request changed. Writes (create, cancel, release, hold, drain) become
commands the active process applies (pool/commands.py); the answer is the active one's. This
face runs no engine and calls no cloud: a provider's health, quota and launch counts live in
the active process's memory, so the standby shows a provider as `standby` (or `draining`)
and has no alerts of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from infracloud.core.errors import NotFound
from infracloud.ops import context
from infracloud.pool.commands import WAIT
from infracloud.pool.images import Uploads
from infracloud.pool.providers import ProviderRuntime
from infracloud.pool.service import RELOAD_EVERY, PoolService

REFRESH_EVERY = 0.25  # seconds: how stale a standby's reads may be (plus one engine tick)


class StandbyPool(PoolService):
    role = "standby"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping: Callable[[], bool] = lambda: False  # the process stops (the seat's)
        self.wait_for = WAIT  # seconds a write waits for the active process's answer
        self._refreshed = -1.0e9
        self._refresh_lock = threading.Lock()
        self._seen: dict[str, tuple[str, tuple[str | None, ...]]] = {}
        self._loaded = True  # nothing to load: refresh() reads

    def start(self) -> None:
        """A standby runs no engine."""

    def tick(self) -> None:
        raise AssertionError("a standby pool process runs no engine")

    # ---- reads --------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Re-read the live nodes, open requests, uploads and drains the active one wrote."""
        with self._refresh_lock:
            if not force and self.clock() - self._refreshed < REFRESH_EVERY:
                return
            nodes, requests, uploads, drained = self.store.snapshot()
            with self.lock:
                seen = {r.id: (r.state, tuple(e.node for e in r.entries)) for r in requests}
                for rid in {*seen, *self._seen}:
                    if seen.get(rid) != self._seen.get(rid):  # changed, new, or now final
                        self.store.versions[rid] = self.store.versions.get(rid, 0) + 1
                self._seen = seen
                self.nodes = {n.id: n for n in nodes}
                self.requests = {r.id: r for r in requests}
                self.uploads = Uploads(self, uploads)
                for name, p in self.providers.items():
                    p.drained_reason = (drained[name] or "drained") if name in drained else None
            self._refreshed = self.clock()
            if self._refreshed - self._last["reload"] >= RELOAD_EVERY:
                self._last["reload"] = self._refreshed
                self._maybe_reload()  # the labels a new request may name

    def version(self, request_id: str) -> int:
        self.refresh()
        return self.store.version(request_id)

    def get_request(self, request_id: str, owner: str | None = None) -> dict[str, Any]:
        self.refresh()
        return super().get_request(request_id, owner)

    def list_requests(self, history: bool = False, owner: str | None = None
                      ) -> list[dict[str, Any]]:
        self.refresh()
        return super().list_requests(history, owner)

    def list_nodes(self, label: str | None = None, state: str | None = None,
                   owner: str | None = None) -> list[dict[str, Any]]:
        self.refresh()
        return super().list_nodes(label, state, owner)

    def get_node(self, node_id: str, owner: str | None = None) -> dict[str, Any]:
        self.refresh()
        return super().get_node(node_id, owner)

    def list_labels(self) -> list[dict[str, Any]]:
        self.refresh()
        return super().list_labels()

    def list_providers(self) -> list[dict[str, Any]]:
        self.refresh()
        return super().list_providers()

    def provider_view(self, p: ProviderRuntime) -> dict[str, Any]:
        view = super().provider_view(p)
        view["state"] = "draining" if p.drained else "standby"
        return view

    def nodepool_nodes(self, owner: str | None = None) -> list[dict[str, Any]]:
        self.refresh()
        return super().nodepool_nodes(owner)

    def nodepool_requests(self, owner: str | None = None) -> list[dict[str, Any]]:
        self.refresh()
        return super().nodepool_requests(owner)

    def nodepool_images(self) -> list[dict[str, Any]]:
        self.refresh()
        return super().nodepool_images()

    # ---- writes: to the active process, through the database ----------------------------

    def _ask(self, kind: str, **args: Any) -> dict[str, Any]:
        assert self.inbox is not None, "a standby face needs the seat's inbox"
        command = self.inbox.submit(kind, args, context.current().name)
        try:
            # not this face's own stop: a standby that becomes active goes on waiting for the
            # answer, which its new face gives
            return self.inbox.wait(command, self.wait_for, stopping=self.stopping)
        finally:
            self.refresh(force=True)  # the caller reads its own write next

    def create_request(self, labels: list[str], requestor: str, priority: int = 0,
                       key: str | None = None) -> dict[str, Any]:
        self.check_labels(labels)  # the cheap checks here; the rest on the active one
        return self._ask("create", labels=labels, requestor=requestor, priority=priority,
                         key=key)

    def cancel_request(self, request_id: str, requestor: str | None) -> dict[str, Any]:
        return self._ask("cancel", request_id=request_id, requestor=requestor)

    def release(self, node_id: str, requestor: str | None) -> dict[str, Any]:
        return self._ask("release", node_id=node_id, requestor=requestor)

    def hold(self, node_id: str, reason: str, requestor: str | None) -> dict[str, Any]:
        return self._ask("hold", node_id=node_id, reason=reason, requestor=requestor)

    def drain(self, name: str, reason: str | None, drained: bool = True) -> dict[str, Any]:
        if name not in self.providers:
            raise NotFound(f"Provider {name} could not be found.")
        return self._ask("drain", name=name, reason=reason, drained=drained)
