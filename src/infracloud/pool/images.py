"""Image uploads: each `diskimages` file goes to every provider whose labels use it, through
the provider's image API, one upload per provider at a time (on its own thread, so launches go
on). An upload is recorded per provider and version (the file's sha256); launches use the
newest ready one. Older uploads are deleted once a node from the newer one has become ready
and no live node still runs from them."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from infracloud.core.digests import file_digest
from infracloud.pool.records import NodeRec, UploadRec

if TYPE_CHECKING:
    from infracloud.pool.engine import Engine

log = logging.getLogger(__name__)
RETRY_FAILED = 300.0  # seconds before a failed upload is tried again


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


class Versions:
    """The sha256 of each image file, computed on a thread once per (size, mtime)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self._known: dict[Path, tuple[tuple[int, int], str | None]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> str | None:
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._known.get(path)
            if known is not None and known[0] == stamp:
                return known[1]
            self._known[path] = (stamp, None)

        def compute() -> None:
            try:
                digest: str | None = file_sha256(path)
            except OSError:
                digest = None
            with self._lock:
                if self._known.get(path, ((0, 0), None))[0] == stamp:
                    self._known[path] = (stamp, digest)
            self.wake()

        threading.Thread(target=compute, name="pool-image-sha", daemon=True).start()
        return None


class Uploads:
    def __init__(self, engine: Engine, uploads: list[UploadRec]) -> None:
        self.engine = engine
        self.records = {u.id: u for u in uploads}
        self.versions = Versions(engine.wake)
        self.futures: dict[str, Future[str | None]] = {}

    def current(self, provider: str, diskimage: str) -> str | None:
        ready = [u for u in self.records.values() if u.provider == provider and
                 u.diskimage == diskimage and u.state == "ready"]
        return max(ready, key=lambda u: u.state_at).external_id if ready else None

    def used(self, node: NodeRec) -> None:
        for u in self.records.values():
            if u.external_id == node.image_id and u.provider == node.provider and \
                    not u.in_use:
                u.in_use = True
                self.engine.store.changed(u)

    def tick(self) -> None:
        e = self.engine
        now = e.now()
        self._collect(now)
        for name, provider in e.providers.items():
            if provider.down or provider.removed:
                continue
            wanted = {pl.diskimage for pool in provider.config.pools for pl in pool.labels
                      if pl.diskimage}
            for dname in sorted(wanted):
                d = e.config.diskimage(dname)
                version = self.versions.get(d.file)
                if version is None:
                    continue
                mine = [u for u in self.records.values() if u.provider == name and
                        u.diskimage == dname and u.version == version]
                if any(u.state in ("uploading", "ready") for u in mine) or any(
                        (now - u.state_at).total_seconds() < RETRY_FAILED for u in mine):
                    continue
                rec = UploadRec(id=uuid.uuid4().hex, provider=name, diskimage=dname,
                                version=version, external_name=f"{dname}-{version[:12]}",
                                state="uploading", state_at=now)
                self.records[rec.id] = rec
                e.store.added(rec)
                log.info("uploading %s to %s as %s", d.file, name, rec.external_name)
                self.futures[rec.id] = provider.submit(
                    provider.cloud.upload_image, rec.external_name, d.file, d.disk_format,
                    d.container_format, {"infracloud_pool": e.config.name,
                                         "infracloud_pool_diskimage": dname,
                                         "infracloud_pool_version": version}, upload=True)
            self._retire(name, now)

    def _collect(self, now: object) -> None:
        e = self.engine
        for uid, future in list(self.futures.items()):
            if not future.done():
                continue
            del self.futures[uid]
            rec = self.records[uid]
            exc = future.exception()
            if rec.state == "uploading":
                if exc is None:
                    rec.external_id, rec.state = future.result(), "ready"
                else:
                    log.warning("upload of %s to %s failed: %s", rec.diskimage, rec.provider,
                                exc)
                    rec.state = "failed"
            elif rec.state == "deleting":
                rec.state = "deleted" if exc is None else "ready"
            rec.state_at = e.now()
            e.store.changed(rec)
        self.records = {k: u for k, u in self.records.items() if u.state != "deleted"}

    def _retire(self, provider: str, now: object) -> None:
        """Delete uploads older than the newest one in use that no live node runs from."""
        e = self.engine
        running = {n.image_id for n in e.nodes.values() if n.provider == provider}
        by_image: dict[str, list[UploadRec]] = {}
        for u in self.records.values():
            if u.provider == provider and u.state == "ready":
                by_image.setdefault(u.diskimage, []).append(u)
        for uploads in by_image.values():
            in_use = [u for u in uploads if u.in_use]
            if not in_use:
                continue
            newest = max(in_use, key=lambda u: u.state_at)
            for u in uploads:
                if u.state_at < newest.state_at and u.external_id not in running and \
                        u.id not in self.futures:
                    u.state, u.state_at = "deleting", e.now()
                    e.store.changed(u)
                    p = e.providers[provider]
                    log.info("deleting old upload %s from %s", u.external_name, provider)
                    self.futures[u.id] = p.submit(p.cloud.delete_image, u.external_id)
