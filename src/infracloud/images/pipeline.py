"""Fan one stream of blocks out to several consumers running on their own threads.

Each consumer (md5, sha512, the disk writer) has its own queue and takes blocks as fast as it
can: nobody waits at a barrier for the slowest. hashlib and file writes release the GIL, so
the consumers run on separate cores while the event loop keeps receiving. At most `limit`
bytes wait for the slowest consumer; the producer pauses (awaits) beyond that, which in turn
stops reading from the socket, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable

_END = object()


class Fanout:
    def __init__(self, consumers: list[Callable[[bytes], None]], limit: int,
                 name: str = "fanout") -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.sent = 0
        self.done = [0] * len(consumers)
        self.error: BaseException | None = None
        self._waiting = False
        self._room = asyncio.Event()
        self._queues: list[queue.SimpleQueue[object]] = [queue.SimpleQueue() for _ in consumers]
        self._finished = [asyncio.Event() for _ in consumers]
        self._threads = [threading.Thread(target=self._run, args=(i, fn), daemon=True,
                                          name=f"{name}-{i}")
                         for i, fn in enumerate(consumers)]
        for t in self._threads:
            t.start()

    def _run(self, i: int, fn: Callable[[bytes], None]) -> None:
        q = self._queues[i]
        while True:
            item = q.get()
            if item is _END:
                break
            if self.error is None:
                try:
                    assert isinstance(item, bytes)
                    fn(item)
                except BaseException as exc:
                    self.error = exc
                self.done[i] += len(item)  # type: ignore[arg-type]
            if self._waiting:
                self._notify(self._room)
        self._notify(self._finished[i])

    def _notify(self, event: asyncio.Event) -> None:
        # a closed loop (RuntimeError) means nobody is waiting any more
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(event.set)

    def _behind(self) -> int:
        return self.sent - min(self.done)

    async def put(self, block: bytes) -> None:
        if self.error is not None:
            raise self.error
        for q in self._queues:
            q.put(block)
        self.sent += len(block)
        while self._behind() > self.limit and self.error is None:
            self._room.clear()
            self._waiting = True
            if self._behind() > self.limit:
                await self._room.wait()
            self._waiting = False
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Wait until every consumer has taken every block; re-raise a consumer's error."""
        for q in self._queues:
            q.put(_END)
        for event in self._finished:
            await event.wait()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Stop the consumers without waiting for them (the upload failed)."""
        if self.error is None:
            self.error = RuntimeError("abandoned")
        for q in self._queues:
            q.put(_END)
