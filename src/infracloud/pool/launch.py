"""One node's launch as a non-blocking state machine (nodepool's `advance()` model): each call
looks at what has finished (an API call on the provider's threads, the provider's latest
server list, an SSH scan) and starts the next step, never waiting. The engine advances every
launch on every tick, so a slow provider only slows its own launches.

    create   --created-->   boot      (create_server answered with an id)
    create   --quota-->     done      withdrawn: the cloud said quota; nothing to delete
    boot     --active-->    scan      ACTIVE with an address (or done, when not checking SSH)
    boot     --capacity-->  done      ERROR for lack of capacity: delete it, not a failure
    boot     --error-->     console   ERROR, or launch-timeout passed
    scan     --keys-->      done      port open and host keys read within boot-timeout
    scan     --no-ssh-->    console   the console log is fetched for the failure record
    console  --fetched-->   done

The create call goes out at the first `advance`, not when the launch is made: the engine
writes the node's record at the end of the tick that made it, so a server never exists whose
node the database does not know (a process killed mid-tick leaves, at worst, a node with no
server id: withdrawn by the next process, and its server, if the call got through, deleted as
a leak). Node ids are therefore never handed out twice, even across processes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from infracloud.pool.cloud import CloudError, QuotaExceeded, is_capacity_fault
from infracloud.pool.probe import Probe, ProbeFailed
from infracloud.pool.providers import ProviderRuntime

SOON = 0.2  # seconds after a create is answered to look for the server in a list

STEPS = {
    ("create", "created"): "boot", ("create", "quota"): "done", ("create", "error"): "done",
    ("boot", "active"): "scan", ("boot", "ready"): "done", ("boot", "capacity"): "done",
    ("boot", "error"): "console", ("scan", "keys"): "done", ("scan", "no-ssh"): "console",
    ("console", "fetched"): "done",
}


@dataclass(frozen=True)
class Outcome:
    kind: str  # ready | withdrawn (no server) | capacity (delete, no failure) | failed
    reason: str = ""
    host_keys: tuple[str, ...] = ()
    console: str | None = None


@dataclass(frozen=True)
class Spec:
    """What to launch, resolved from the config and the provider's catalog."""

    name: str
    image_id: str
    flavor_id: str
    network: str | None
    key_name: str | None
    port: int
    check_ssh: bool
    boot_timeout: float
    launch_timeout: float
    metadata: Mapping[str, str]


class Launch:
    def __init__(self, provider: ProviderRuntime, prober: Probe, spec: Spec,
                 server_id: str | None = None, clock: Any = time.monotonic) -> None:
        self.provider = provider
        self.prober = prober
        self.spec = spec
        self.clock = clock
        self.started = clock()
        self.server_id = server_id
        self.ip: str | None = None
        self.step = "boot" if server_id else "create"
        self.outcome: Outcome | None = None
        self._future: Future[Any] | None = None
        self._failure = ""
        self._boot_started = 0.0

    def _go(self, event: str) -> None:
        self.step = STEPS[(self.step, event)]

    def _finish(self, event: str, outcome: Outcome) -> Outcome:
        self._go(event)
        self.outcome = outcome
        return outcome

    def advance(self) -> Outcome | None:
        """Move on if something finished; the outcome once the launch is over."""
        if self.outcome is not None:
            return self.outcome
        return getattr(self, "_" + self.step)()

    def _create(self) -> Outcome | None:
        if self._future is None:  # the node's record is written: ask for the server
            spec = self.spec
            self._future = self.provider.submit(
                self.provider.cloud.create_server, spec.name, spec.image_id, spec.flavor_id,
                spec.network, spec.key_name, spec.metadata)
            return None
        if not self._future.done():
            return None
        try:
            self.server_id = self._future.result()
        except QuotaExceeded as exc:
            self.provider.at_quota(exc.message)
            return self._finish("quota", Outcome("withdrawn", exc.message))
        except CloudError as exc:
            return self._finish("error", Outcome("failed", f"create: {exc.message}"))
        self._future = None
        self.provider.soon(SOON)
        self._go("created")
        return None

    def _boot(self) -> Outcome | None:
        server = self.provider.servers.get(self.server_id or "")
        waited = self.clock() - self.started
        if server is None or server.status not in ("ACTIVE", "ERROR") or (
                server.status == "ACTIVE" and not server.ip):
            if waited > self.spec.launch_timeout:
                return self._fail("error", f"not ACTIVE after {self.spec.launch_timeout:g} s")
            return None
        if server.status == "ERROR":
            if is_capacity_fault(server.fault):
                self.provider.at_quota(server.fault)
                return self._finish("capacity", Outcome("capacity", server.fault))
            return self._fail("error", f"server ERROR: {server.fault or 'no fault given'}")
        self.ip = server.ip
        if not self.spec.check_ssh:
            return self._finish("ready", Outcome("ready"))
        assert self.ip is not None
        self._boot_started = self.clock()
        self._future = self.prober.scan(self.ip, self.spec.port, self.spec.boot_timeout)
        self._go("active")
        return None

    def _scan(self) -> Outcome | None:
        assert self._future is not None
        if not self._future.done():
            return None
        try:
            keys = self._future.result()
        except ProbeFailed as exc:
            return self._fail("no-ssh", str(exc))
        return self._finish("keys", Outcome("ready", host_keys=tuple(keys)))

    def _fail(self, event: str, reason: str) -> Outcome | None:
        """Keep the console log of a server that booted wrong, then report the failure."""
        self._failure = reason
        self._go(event)
        self._future = self.provider.submit(self.provider.cloud.console_log, self.server_id)
        return None

    def _console(self) -> Outcome | None:
        assert self._future is not None
        if not self._future.done():
            return None
        try:
            console: str | None = self._future.result()
        except CloudError as exc:
            console = f"(console log unavailable: {exc.message})"
        return self._finish("fetched", Outcome("failed", self._failure, console=console))
