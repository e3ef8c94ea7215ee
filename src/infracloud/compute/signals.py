"""Wakes agents that long-poll for their host's desired state. `notify` may be called from
any thread; waiting happens on the controller's event loop. Changes made by another
controller are not signalled here: the long-poll also re-reads the generation every few
seconds."""

from __future__ import annotations

import asyncio
import contextlib


class HostSignals:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self.closed = False

    def close(self) -> None:
        """The controller is stopping: every waiting long-poll answers now (call it on the
        loop)."""
        self.closed = True
        for event in self._events.values():
            event.set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, host_id: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._set, host_id)

    def _set(self, host_id: str) -> None:
        event = self._events.get(host_id)
        if event is not None:
            event.set()

    def event(self, host_id: str) -> asyncio.Event:
        """Clear it before reading the generation, then wait on it: no wake-up is lost."""
        event = self._events.get(host_id)
        if event is None:
            event = self._events[host_id] = asyncio.Event()
        return event
