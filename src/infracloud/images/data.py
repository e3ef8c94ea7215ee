"""Image data: the streamed upload, downloads with ranges, recovery after a restart, and
garbage collection of data no image refers to.

The upload never holds an image in memory: chunks are gathered into blocks of BLOCK bytes and
fanned out to three consumers on their own threads (md5, sha512, the disk writer; see
images/pipeline.py) while the next blocks are received. At most IN_FLIGHT bytes wait for the
slowest consumer; beyond that the upload stops reading from the socket until they catch up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    OverLimit,
    RangeNotSatisfiable,
    ServiceUnavailable,
)
from infracloud.core.settings import ImagesConfig
from infracloud.core.states import IMAGE
from infracloud.images.pipeline import Fanout
from infracloud.images.service import ImageService
from infracloud.images.store import BlobWriter, ImageStore
from infracloud.store import Database
from infracloud.store.models import Image

log = logging.getLogger(__name__)

BLOCK = 1024 * 1024  # chunks from the socket are gathered into blocks of this size
IN_FLIGHT = 16 * 1024 * 1024  # at most this much waits for the slowest consumer
HEARTBEAT_SECONDS = 10.0
HASH_ALGO = "sha512"
IN_TRANSFER = ("saving", "uploading", "importing")  # a controller works on the data


@dataclass(frozen=True)
class Ticket:
    """An upload this controller has taken on."""

    image_id: str
    project_id: str
    limit: int  # the most bytes this upload may bring (size limit and quota)
    quota_left: int | None
    expected: int | None
    holder: str
    state: str = "saving"  # "uploading": the import API's stage (the data stays staged)


@dataclass(frozen=True)
class Download:
    image: Image
    start: int
    length: int
    total: int
    chunks: Iterator[bytes]

    @property
    def partial(self) -> bool:
        return self.length != self.total


class TooLarge(OverLimit):
    pass


class ImageData:
    def __init__(self, db: Database, images: ImageService, store: ImageStore,
                 config: ImagesConfig, clock: Clock, holder: str, workers: int = 12) -> None:
        self.db = db
        self.images = images
        self.store = store
        self.config = config
        self.clock = clock
        self.holder = holder
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-io")
        self.closed = threading.Event()  # long work (an import) stops; recover() ends it

    def close(self) -> None:
        self.closed.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- upload --------------------------------------------------------------------------

    def begin(self, caller: Caller, image_id: str, expected: int | None,
              stage: bool = False) -> Ticket:
        """queued -> saving (or uploading, to `stage` the data for an import), after the size
        limit and quota allow the declared size."""
        state, event = ("uploading", "stage") if stage else ("saving", "upload")
        max_size = self.config.max_image_size
        if expected is not None and expected > max_size:
            raise TooLarge(f"Image size {expected} exceeds the maximum image size of "
                           f"{max_size} bytes.")
        now = self.clock.now()
        with self.db.write() as s:
            image = self.images.modifiable(s, caller, image_id)
            if image.status != "queued":
                raise Conflict(f"Image status transition from {image.status} to {state} is "
                               f"not allowed: data can only be uploaded to a queued image.")
            quota_left = None
            if self.config.quota.bytes >= 0:
                quota_left = self.config.quota.bytes - self.images.stored_bytes(s, image.owner)
                if expected is not None and expected > quota_left:
                    raise TooLarge(self._quota_message(image.owner, expected, quota_left))
            image.status = IMAGE.next(image.status, event)
            image.upload_owner = self.holder
            image.upload_heartbeat = now
            image.updated_at = now
            owner = image.owner
        limit = max_size if quota_left is None else min(max_size, max(quota_left, 0))
        return Ticket(image_id, owner, limit, quota_left, expected, self.holder, state)

    async def receive(self, ticket: Ticket, chunks: AsyncIterator[bytes]) -> Image:
        loop = asyncio.get_running_loop()
        writer: BlobWriter = await loop.run_in_executor(self.executor, self.store.writer,
                                                        ticket.image_id)
        md5, sha = hashlib.md5(), hashlib.sha512()
        consumers = [md5.update, sha.update, lambda block: writer.write([block])]
        if ticket.state == "uploading":  # a stage: the import computes the checksums
            consumers = consumers[2:]
        fan = Fanout(consumers, limit=IN_FLIGHT, name=f"upload-{ticket.image_id[:8]}")
        batch: list[bytes] = []
        batched = size = 0
        beat = time.monotonic()
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > ticket.limit:
                    raise self._too_large(ticket, size)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BLOCK:
                    await fan.put(b"".join(batch) if len(batch) > 1 else batch[0])
                    batch, batched = [], 0
                    if time.monotonic() - beat > HEARTBEAT_SECONDS:
                        beat = time.monotonic()
                        await loop.run_in_executor(self.executor, self._heartbeat, ticket)
            if batch:
                await fan.put(b"".join(batch))
            await fan.close()
            await loop.run_in_executor(self.executor, writer.sync)
        except BaseException as exc:
            fan.abandon()
            writer.abort()
            event = "refuse" if isinstance(exc, TooLarge) else "fail"
            self.end_upload(ticket, event)
            log.info("image upload stopped", extra={"image_id": ticket.image_id, "bytes": size,
                                                    "event": f"image.upload.{event}",
                                                    "reason": type(exc).__name__})
            raise
        return await loop.run_in_executor(self.executor, self._finish, ticket, writer, size,
                                          md5.hexdigest(), sha.hexdigest())

    def _finish(self, ticket: Ticket, writer: BlobWriter, size: int, md5: str,
                sha512: str) -> Image:
        if ticket.expected is not None and size != ticket.expected:
            writer.abort()
            self.end_upload(ticket, "fail")
            raise BadRequest(f"Image size mismatch: {ticket.expected} bytes were announced, "
                             f"{size} arrived.")
        if ticket.state == "uploading":
            return self._staged(ticket, writer, size)
        writer.commit(sha512)
        refused = None
        with self.db.write() as s:
            image = s.get(Image, ticket.image_id)
            if image is None:
                raise Gone(f"Image {ticket.image_id} was deleted during the upload.")
            if image.status != "saving" or image.upload_owner != ticket.holder:
                raise Conflict(f"Image {ticket.image_id} is no longer being uploaded here "
                               f"(status {image.status}).")
            if self.config.quota.bytes >= 0:
                left = self.config.quota.bytes - self.images.stored_bytes(s, image.owner)
                if size > left:
                    refused = self._quota_message(image.owner, size, left)
            now = self.clock.now()
            image.status = IMAGE.next("saving", "refuse" if refused else "stored")
            image.upload_owner = None
            image.updated_at = now
            if not refused:
                image.size = size
                image.virtual_size = size if image.disk_format == "raw" else None
                image.checksum = md5
                image.os_hash_algo = HASH_ALGO
                image.os_hash_value = sha512
        if refused:
            raise TooLarge(refused)
        log.info("image uploaded", extra={"image_id": ticket.image_id, "bytes": size,
                                          "event": "image.upload.stored"})
        return image

    def _staged(self, ticket: Ticket, writer: BlobWriter, size: int) -> Image:
        """The stage is complete: the data waits in the staging area for the import, the
        image stays `uploading` (with its size, as Glance shows it) and nobody holds it."""
        writer.commit_staged()
        with self.db.write() as s:
            image = s.get(Image, ticket.image_id)
            if image is None or image.status != "uploading" or (
                    image.upload_owner != ticket.holder):
                self.store.discard_staged(ticket.image_id)
                raise Conflict(f"Image {ticket.image_id} is no longer being staged here.")
            refused = None
            if self.config.quota.bytes >= 0:  # another upload may have used it meanwhile
                left = self.config.quota.bytes - self.images.stored_bytes(s, image.owner)
                if size > left:
                    refused = self._quota_message(image.owner, size, left)
            now = self.clock.now()
            if refused:
                image.status = IMAGE.next("uploading", "refuse")
            else:
                image.size = size
                image.upload_heartbeat = now  # a staged image waits this long for its import
            image.upload_owner = None
            image.updated_at = now
        if refused:
            self.store.discard_staged(ticket.image_id)
            raise TooLarge(refused)
        log.info("image staged", extra={"image_id": ticket.image_id, "bytes": size,
                                        "event": "image.stage.stored"})
        return image

    def end_upload(self, ticket: Ticket, event: str) -> None:
        """saving (uploading) -> killed ("fail") or back to queued ("refuse"); partial data
        removed."""
        self.store.discard_partial(ticket.image_id)
        with self.db.write() as s:
            image = s.get(Image, ticket.image_id)
            if image is not None and image.status == ticket.state and (
                    image.upload_owner == ticket.holder):
                image.status = IMAGE.next(ticket.state, event)
                image.upload_owner = None
                image.updated_at = self.clock.now()

    def _heartbeat(self, ticket: Ticket) -> None:
        with self.db.write() as s:
            image = s.get(Image, ticket.image_id)
            if image is not None and image.upload_owner == ticket.holder:
                image.upload_heartbeat = self.clock.now()

    def _too_large(self, ticket: Ticket, size: int) -> TooLarge:
        if ticket.quota_left is not None and size > ticket.quota_left:
            return TooLarge(self._quota_message(ticket.project_id, size, ticket.quota_left))
        return TooLarge(f"Image exceeds the maximum image size of "
                        f"{self.config.max_image_size} bytes.")

    def _quota_message(self, project: str, size: int, left: int) -> str:
        limit = self.config.quota.bytes
        return (f"Attempted upload would exceed image storage quota of project {project}: "
                f"{limit - left} of {limit} bytes used, the image brings at least {size}.")

    # ---- download ------------------------------------------------------------------------

    def download(self, caller: Caller, image_id: str, range_header: str | None
                 ) -> Download | None:
        """The image's data (or a range of it); None when the image has no data yet."""
        image = self.images.get(caller, image_id)
        if image.status == "deactivated" and not caller.is_admin:
            raise Forbidden("The requested image has been deactivated. Image data download "
                            "is forbidden.")
        if image.status not in ("active", "deactivated") or not image.os_hash_value:
            return None
        found = self.store.stat(image.os_hash_value)
        if found is None:
            raise ServiceUnavailable(f"The data of image {image_id} is missing from the store.")
        total = found.size
        start, end = parse_range(range_header, total)
        length = end - start
        return Download(image, start, length, total,
                        self.store.read(image.os_hash_value, start, length))

    # ---- housekeeping --------------------------------------------------------------------

    def recover(self) -> int:
        """At start-up: uploads, stages and imports this controller was working on when it
        stopped are dead (a complete stage, which nobody holds, waits for its import)."""
        return self._kill(select(Image).where(Image.status.in_(IN_TRANSFER),
                                              Image.upload_owner == self.holder))

    def reap(self) -> int:
        """Uploads, stages and imports (on any controller) with no progress, and staged data
        not imported, for `stale_upload_seconds`."""
        import datetime as dt

        cutoff = self.clock.now() - dt.timedelta(seconds=self.config.stale_upload_seconds)
        return self._kill(select(Image).where(Image.status.in_(IN_TRANSFER),
                                              Image.upload_heartbeat < cutoff))

    def _kill(self, query: Any) -> int:
        with self.db.write() as s:
            dead = list(s.scalars(query))
            for image in dead:
                image.status = IMAGE.next(image.status, "fail")
                image.upload_owner = None
                image.size = None  # a stage's size counted against the quota: no more
                image.updated_at = self.clock.now()
        for image in dead:
            self.store.discard_partial(image.id)
            self.store.discard_staged(image.id)
            log.warning("image upload killed", extra={"image_id": image.id,
                                                      "event": "image.upload.killed"})
        return len(dead)

    def collect(self) -> int:
        """Delete data no image refers to, once older than the grace period."""
        with self.db.read() as s:
            used = set(s.scalars(select(Image.os_hash_value).where(
                Image.os_hash_value.is_not(None)).distinct()))
            staging = set(s.scalars(select(Image.id).where(
                Image.status.in_(("uploading", "importing")))))
        cutoff = time.time() - self.config.gc_grace_seconds
        removed = 0
        for image_id in self.store.staged_ids():  # staged data of deleted images
            if image_id not in staging and not self._staging(image_id) and (
                    self.store.discard_staged(image_id)):
                removed += 1
        for blob in self.store.blobs():
            if blob.key not in used and blob.mtime <= cutoff:
                self.store.delete(blob.key)
                removed += 1
        return removed

    def _staging(self, image_id: str) -> bool:
        """Is the image (still, or by now) staging or importing? (checked again just before
        its staged data goes: a stage may have begun since the list was read)"""
        with self.db.read() as s:
            return s.scalar(select(Image.status).where(Image.id == image_id)) in (
                "uploading", "importing")

    def maintenance(self) -> None:
        self.reap()
        self.collect()


def parse_range(header: str | None, total: int) -> tuple[int, int]:
    """(start, end) with end exclusive, from a single-range `Range: bytes=...` header.
    Several ranges, or another unit, are ignored (the whole image is sent)."""
    if not header or not header.strip().startswith("bytes=") or "," in header:
        return 0, total
    spec = header.strip()[len("bytes="):].strip()
    first, sep, last = spec.partition("-")
    try:
        if not sep:
            raise ValueError
        if first == "":
            n = int(last)
            if n <= 0:
                raise ValueError
            return max(total - n, 0), total
        start = int(first)
        end = total if last == "" else min(int(last) + 1, total)
    except ValueError:
        raise RangeNotSatisfiable(f"Invalid Range header: {header}") from None
    if start >= total or start < 0 or end <= start:
        raise RangeNotSatisfiable(f"Range {header} is not satisfiable for {total} bytes.")
    return start, end

