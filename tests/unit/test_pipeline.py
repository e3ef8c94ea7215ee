"""The fan-out that feeds md5, sha512 and the disk writer during an upload."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

import pytest

from infracloud.images.pipeline import Fanout
from tests.servers import async_wait_for


def test_every_consumer_sees_every_block_in_order() -> None:
    blocks = [os.urandom(1000 + n) for n in range(200)]
    seen: list[bytes] = []
    md5 = hashlib.md5()

    async def run() -> None:
        fan = Fanout([md5.update, seen.append], limit=10_000)
        for b in blocks:
            await fan.put(b)
        await fan.close()

    asyncio.run(run())
    assert seen == blocks
    assert md5.hexdigest() == hashlib.md5(b"".join(blocks)).hexdigest()


def test_a_slow_consumer_holds_the_producer_back() -> None:
    gate = threading.Event()
    max_behind = 0

    def slow(block: bytes) -> None:
        gate.wait()

    async def run() -> None:
        nonlocal max_behind
        fan = Fanout([slow, lambda b: None], limit=4096)
        producer = asyncio.create_task(_produce(fan))
        await async_wait_for("the producer to run into the limit",
                             lambda: fan.sent - min(fan.done) > fan.limit or producer.done())
        max_behind = fan.sent - min(fan.done)
        assert not producer.done()  # blocked: the slow consumer has taken nothing
        gate.set()
        await producer
        await fan.close()

    async def _produce(fan: Fanout) -> None:
        for _ in range(100):
            await fan.put(b"x" * 1024)

    asyncio.run(run())
    assert max_behind <= 4096 + 1024


def test_a_consumer_error_reaches_the_producer() -> None:
    def broken(block: bytes) -> None:
        raise OSError("disk full")

    async def run() -> None:
        fan = Fanout([broken, lambda b: None], limit=1 << 20)
        with pytest.raises(OSError, match="disk full"):
            for _ in range(1000):
                await fan.put(b"y" * 1000)
                await asyncio.sleep(0)
            await fan.close()
        fan.abandon()

    asyncio.run(run())
