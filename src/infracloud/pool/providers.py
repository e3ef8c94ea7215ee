"""One provider as the engine sees it: its own pool of API threads (so a slow cloud never
stalls another), and snapshots of what it has (servers, flavors, images, quota), refreshed in
the background and read by the engine without waiting. Only `CloudUnreachable` counts against
its health; quota errors never do."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from infracloud.pool.cloud import Cloud, CloudError, CloudUnreachable, Flavor, Image, Limits, Server
from infracloud.pool.config import Provider

log = logging.getLogger(__name__)
T = TypeVar("T")

DOWN_AFTER = 3  # consecutive unreachable answers before the provider counts as down
IDLE_POLL = 10.0  # seconds between server lists when nothing is launching or deleting
CATALOG_EVERY = 300.0
LIMITS_EVERY = 30.0
QUOTA_PAUSE = 30.0  # seconds a provider that refused for quota gets no new launch


class ProviderRuntime:
    def __init__(self, config: Provider, cloud: Cloud, wake: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.name = config.name
        self.cloud = cloud
        self.wake = wake
        self.clock = clock
        self.executor = ThreadPoolExecutor(config.max_concurrency,
                                           thread_name_prefix=f"pool-{config.name}")
        self.uploads = ThreadPoolExecutor(1, thread_name_prefix=f"pool-{config.name}-upload")
        self.servers: dict[str, Server] = {}
        self.servers_at = -1.0  # when the list in `servers` was asked for
        self.flavors: dict[str, Flavor] = {}
        self.images: dict[str, Image] = {}  # by name and by id
        self.catalog_at = -1.0
        self.limits: Limits | None = None
        self.limits_at = -1.0
        self.launched_since_limits = 0
        self.drained_reason: str | None = None
        self.removed = False  # no longer in the config: drains, then goes
        self.unreachable = 0
        self.last_error: str | None = None
        self.quota_until = 0.0
        self.launch_failures = 0  # consecutive, real failures only
        self.launches = 0
        self._pending: dict[str, tuple[Future[Any], float]] = {}
        self.due: set[str] = set()  # snapshots asked for now
        self.servers_soon: float | None = None  # a server list asked for at this time

    # ---- health ----------------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return self.unreachable >= DOWN_AFTER

    @property
    def drained(self) -> bool:
        return self.removed or self.drained_reason is not None or self.config.max_servers == 0

    @property
    def state(self) -> str:
        if self.down:
            return "down"
        if self.drained:
            return "draining"
        if self.clock() < self.quota_until:
            return "at-quota"
        return "up"

    def heard(self, exc: BaseException | None) -> None:
        """Every API answer passes here: unreachable counts, anything else resets."""
        if isinstance(exc, CloudUnreachable):
            self.unreachable += 1
            self.last_error = exc.message
            if self.unreachable == DOWN_AFTER:
                log.warning("provider %s is down: %s", self.name, exc.message)
        else:
            if self.down:
                log.warning("provider %s answers again", self.name)
            self.unreachable = 0

    def at_quota(self, why: str) -> None:
        self.quota_until = self.clock() + QUOTA_PAUSE
        self.limits_at = -1.0  # ask again
        self.last_error = why

    def freed(self) -> None:
        """One of its servers went away: quota may allow a launch again."""
        self.quota_until = 0.0
        self.limits_at = -1.0

    # ---- calls -------------------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any, upload: bool = False) -> Future[T]:
        def call() -> T:
            try:
                result = fn(*args)
            except BaseException as exc:
                self.heard(exc)
                raise
            self.heard(None)
            return result

        future = (self.uploads if upload else self.executor).submit(call)
        future.add_done_callback(lambda _f: self.wake())
        return future

    def _background(self, key: str, every: float, fn: Callable[[], Any]) -> Any:
        """Start `fn` when it is due; return its result once, when it has finished."""
        now = self.clock()
        pending = self._pending.get(key)
        if pending is not None:
            future, started = pending
            if not future.done():
                return None
            del self._pending[key]
            try:
                return future.result(), started
            except CloudError as exc:
                self.last_error = exc.message
                return None
            except Exception as exc:  # a bug in an adapter must not stop the engine
                log.exception("provider %s: %s failed", self.name, key)
                self.last_error = str(exc)
                return None
        last = getattr(self, f"{key}_at")
        soon = key == "servers" and self.servers_soon is not None and now >= self.servers_soon
        if now - last >= every or last < 0 or key in self.due or soon:
            self.due.discard(key)
            if key == "servers":
                self.servers_soon = None
            setattr(self, f"{key}_at", now)
            self._pending[key] = (self.submit(fn), now)
        return None

    def poll(self, busy: bool) -> bool:
        """Refresh the snapshots that are due. True when the server list changed."""
        got = self._background("servers", self.config.status_interval if busy else IDLE_POLL,
                               self.cloud.list_servers)
        if got is not None:
            servers, started = got
            before = set(self.servers)
            self.servers = {s.id: s for s in servers}
            self.servers_at = started
            if before - set(self.servers):
                self.freed()
        catalog = self._background("catalog", CATALOG_EVERY if self.flavors else 10.0,
                                   lambda: (self.cloud.flavors(), self.cloud.images()))
        if catalog is not None:
            (flavors, images), _ = catalog
            self.flavors = {f.name: f for f in flavors} | {f.id: f for f in flavors}
            self.images = {i.name: i for i in images} | {i.id: i for i in images}
        limits = self._background("limits", LIMITS_EVERY, self.cloud.limits)
        if limits is not None:
            self.limits, _ = limits
            self.launched_since_limits = 0
        return got is not None

    def soon(self, delay: float) -> None:
        """A server list `delay` seconds from now (a create has just been answered: the
        server may be ACTIVE before the next regular list)."""
        at = self.clock() + min(delay, self.config.status_interval)
        if self.servers_soon is None or at < self.servers_soon:
            self.servers_soon = at

    def next_poll(self, busy: bool) -> float:
        """Seconds until the server list is due (the engine sleeps no longer than that)."""
        if "servers" in self._pending:
            return IDLE_POLL  # its answer wakes the engine
        every = self.config.status_interval if busy else IDLE_POLL
        due = self.servers_at + every
        if self.servers_soon is not None:
            due = min(due, self.servers_soon)
        return max(0.0, due - self.clock())

    def room(self, flavor: Flavor) -> int | None:
        """Servers of this flavor the quota still allows (None: no limit known)."""
        if self.limits is None:
            return None
        room = self.limits.room(flavor.vcpus, flavor.ram_mb)
        return None if room is None else max(0, room - self.launched_since_limits)

    def find_image(self, name_or_id: str) -> Image | None:
        image = self.images.get(name_or_id)
        return image if image is not None and image.status == "active" else None

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.uploads.shutdown(wait=False, cancel_futures=True)
        self.cloud.close()
