"""Wakes agents that long-poll for their host's desired state. `notify` may be called from
any thread (after this controller's own writes, and by the listener that hears of other
controllers' writes on PostgreSQL: store.wakeups); waiting happens on the controller's event
loop. Work is bounded: a host nobody long-polls here is dropped with one look-up, and the
hosts notified before the loop gets round to them are woken by one callback, each once. The
long-poll also re-reads the generation every few seconds, for a change no one signalled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator


class HostSignals:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}  # touched on the loop only
        self._waiters: dict[str, int] = {}  # long-polls waiting per host (the loop writes)
        self._pending: set[str] = set()  # notified, not yet woken (any thread)
        self._lock = threading.Lock()
        self.closed = False
        self.callbacks = 0  # loop callbacks scheduled (tests)

    def close(self) -> None:
        """The controller is stopping: every waiting long-poll answers now (call it on the
        loop)."""
        self.closed = True
        for event in self._events.values():
            event.set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def watched(self, host_id: str) -> bool:
        """Whether a long-poll for `host_id` waits on this controller now (any thread)."""
        return host_id in self._waiters

    def notify(self, host_id: str) -> None:
        self.notify_many((host_id,))

    def notify_many(self, host_ids: Iterable[str]) -> None:
        """Wake the long-polls of these hosts (any thread); hosts nobody waits on are
        dropped here."""
        wanted = {h for h in host_ids if h in self._waiters}
        if not wanted:
            return
        with self._lock:
            first = not self._pending
            self._pending |= wanted
        if first:  # else the callback already scheduled takes these too
            self._schedule(self._flush)

    def wake_all(self) -> None:
        """Every waiting long-poll re-reads its generation (any thread): what a listener
        may have missed while it was not listening."""
        self._schedule(self._set_all)

    def _schedule(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            with self._lock:
                self._pending.clear()
            return
        try:
            loop.call_soon_threadsafe(callback)
            self.callbacks += 1
        except RuntimeError:  # the loop closed meanwhile
            with self._lock:
                self._pending.clear()

    def _flush(self) -> None:
        with self._lock:
            hosts, self._pending = self._pending, set()
        for host_id in hosts:
            event = self._events.get(host_id)
            if event is not None:
                event.set()

    def _set_all(self) -> None:
        for event in self._events.values():
            event.set()

    @contextlib.contextmanager
    def waiting(self, host_id: str) -> Iterator[asyncio.Event]:
        """A long-poll for `host_id` waits here while inside (on the loop). Clear the event
        before reading the generation, then wait on it: no wake-up is lost."""
        event = self._events.get(host_id)
        if event is None:
            event = self._events[host_id] = asyncio.Event()
        self._waiters[host_id] = self._waiters.get(host_id, 0) + 1
        try:
            yield event
        finally:
            left = self._waiters[host_id] - 1
            if left:
                self._waiters[host_id] = left
            else:
                del self._waiters[host_id]
                del self._events[host_id]
