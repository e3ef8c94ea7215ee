"""Where image data lives. A small interface with a filesystem backend and an in-memory fake;
one contract test suite (tests/unit/test_image_store.py) runs against both.

Data is written to a temporary name and renamed into place under its key (the sha512 hex
digest), so a crash never leaves a partial blob under a key, and identical uploads share one
blob. Blobs are never deleted on the spot: `collect()` removes those no image refers to once
they are older than a grace period (a concurrent upload of the same data refreshes the age).

The import API's staging area (`PUT /v2/images/{id}/stage`) holds one file per image, written
the same way (temporary name, renamed when complete) and moved under its key by the import.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BlobStat:
    key: str
    size: int
    mtime: float


class BlobWriter(Protocol):
    def write(self, chunks: list[bytes]) -> None: ...
    def sync(self) -> None: ...
    def commit(self, key: str) -> None: ...
    def commit_staged(self) -> None: ...
    def abort(self) -> None: ...


class ImageStore(Protocol):
    def writer(self, image_id: str) -> BlobWriter: ...
    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]: ...
    def stat(self, key: str) -> BlobStat | None: ...
    def delete(self, key: str) -> None: ...
    def blobs(self) -> Iterator[BlobStat]: ...
    def discard_partial(self, image_id: str) -> int: ...
    # the staging area of the import API: one complete file per image until it is imported
    def staged(self, image_id: str) -> int | None: ...
    def read_staged(self, image_id: str) -> Iterator[bytes]: ...
    def promote(self, image_id: str, key: str) -> None: ...
    def discard_staged(self, image_id: str) -> bool: ...
    def staged_ids(self) -> Iterator[str]: ...


def put(store: ImageStore, image_id: str, key: str, chunks: Iterable[bytes]) -> None:
    """Write a whole stream under `key` (the caller computed the key)."""
    w = store.writer(image_id)
    try:
        for chunk in chunks:
            w.write([chunk])
        w.sync()
        w.commit(key)
    except BaseException:
        w.abort()
        raise


def _check_key(key: str) -> None:
    if not key or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"invalid blob key {key!r}")


class _FileWriter:
    def __init__(self, store: FilesystemStore, image_id: str) -> None:
        self.store = store
        self.image_id = image_id
        self.path = store.tmp / f"{image_id}.{os.urandom(4).hex()}.part"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.closed = False

    def write(self, chunks: list[bytes]) -> None:
        view = chunks
        while view:
            n = os.writev(self.fd, view)
            # a short write: drop what was written and go on with the rest
            while view and n >= len(view[0]):
                n -= len(view[0])
                view = view[1:]
            if view and n:
                view = [view[0][n:], *view[1:]]

    def sync(self) -> None:
        os.fsync(self.fd)

    def commit(self, key: str) -> None:
        _check_key(key)
        self._close()
        final = self.store.path_of(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            # the same data is stored already: keep that one, and make it young again so
            # that garbage collection cannot take it before the new image refers to it
            os.utime(final)
            self.path.unlink()
            return
        os.replace(self.path, final)
        _sync_dir(final.parent)

    def commit_staged(self) -> None:
        self._close()
        os.replace(self.path, self.store.staged_path(self.image_id))
        _sync_dir(self.store.staging)

    def abort(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        if not self.closed:
            os.close(self.fd)
            self.closed = True


def _sync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_file(path: Path, start: int, length: int | None) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


class FilesystemStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.data = root / "blobs"
        self.staging = root / "staging"
        for folder in (self.tmp, self.data, self.staging):
            folder.mkdir(parents=True, exist_ok=True)

    def path_of(self, key: str) -> Path:
        _check_key(key)
        return self.data / key[:2] / key

    def writer(self, image_id: str) -> BlobWriter:
        return _FileWriter(self, image_id)

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return _read_file(self.path_of(key), start, length)

    def stat(self, key: str) -> BlobStat | None:
        try:
            st = self.path_of(key).stat()
        except FileNotFoundError:
            return None
        return BlobStat(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    def blobs(self) -> Iterator[BlobStat]:
        for sub in self.data.iterdir():
            for f in sub.iterdir():
                try:
                    st = f.stat()
                except FileNotFoundError:
                    continue
                yield BlobStat(f.name, st.st_size, st.st_mtime)

    def discard_partial(self, image_id: str) -> int:
        count = 0
        for f in self.tmp.glob(f"{image_id}.*.part"):
            f.unlink(missing_ok=True)
            count += 1
        return count

    def staged_path(self, image_id: str) -> Path:
        if not image_id or "/" in image_id or image_id.startswith("."):
            raise ValueError(f"invalid image id {image_id!r}")
        return self.staging / image_id

    def staged(self, image_id: str) -> int | None:
        try:
            return self.staged_path(image_id).stat().st_size
        except FileNotFoundError:
            return None

    def read_staged(self, image_id: str) -> Iterator[bytes]:
        return _read_file(self.staged_path(image_id), 0, None)

    def promote(self, image_id: str, key: str) -> None:
        staged, final = self.staged_path(image_id), self.path_of(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # the same data is stored already (see _FileWriter.commit)
            os.utime(final)
            staged.unlink()
            return
        os.replace(staged, final)
        _sync_dir(final.parent)

    def staged_ids(self) -> Iterator[str]:
        return (f.name for f in self.staging.iterdir())

    def discard_staged(self, image_id: str) -> bool:
        path = self.staged_path(image_id)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed


class _MemoryWriter:
    def __init__(self, store: MemoryStore, image_id: str) -> None:
        self.store = store
        self.image_id = image_id
        self.buf = io.BytesIO()
        store.partial[image_id] = store.partial.get(image_id, 0) + 1

    def write(self, chunks: list[bytes]) -> None:
        for c in chunks:
            self.buf.write(c)

    def sync(self) -> None:
        pass

    def commit(self, key: str) -> None:
        _check_key(key)
        with self.store.lock:
            if key not in self.store.data:
                self.store.data[key] = self.buf.getvalue()
            self.store.mtimes[key] = time.time()
        self._done()

    def commit_staged(self) -> None:
        with self.store.lock:
            self.store.staging[self.image_id] = self.buf.getvalue()
        self._done()

    def abort(self) -> None:
        self._done()

    def _done(self) -> None:
        n = self.store.partial.get(self.image_id, 0) - 1
        if n > 0:
            self.store.partial[self.image_id] = n
        else:
            self.store.partial.pop(self.image_id, None)


class MemoryStore:
    """The fake: everything in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.mtimes: dict[str, float] = {}
        self.partial: dict[str, int] = {}
        self.staging: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def writer(self, image_id: str) -> BlobWriter:
        return _MemoryWriter(self, image_id)

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        blob = self.data.get(key)
        if blob is None:
            raise FileNotFoundError(key)
        end = len(blob) if length is None else min(len(blob), start + length)
        for i in range(start, end, CHUNK):
            yield blob[i:min(i + CHUNK, end)]

    def stat(self, key: str) -> BlobStat | None:
        if key not in self.data:
            return None
        return BlobStat(key, len(self.data[key]), self.mtimes[key])

    def delete(self, key: str) -> None:
        with self.lock:
            self.data.pop(key, None)
            self.mtimes.pop(key, None)

    def blobs(self) -> Iterator[BlobStat]:
        with self.lock:
            items = list(self.data)
        for key in items:
            found = self.stat(key)
            if found:
                yield found

    def discard_partial(self, image_id: str) -> int:
        return self.partial.pop(image_id, 0)

    def staged(self, image_id: str) -> int | None:
        blob = self.staging.get(image_id)
        return None if blob is None else len(blob)

    def read_staged(self, image_id: str) -> Iterator[bytes]:
        blob = self.staging.get(image_id)
        if blob is None:
            raise FileNotFoundError(image_id)
        for i in range(0, len(blob), CHUNK):
            yield blob[i:i + CHUNK]

    def promote(self, image_id: str, key: str) -> None:
        _check_key(key)
        with self.lock:
            blob = self.staging.pop(image_id)
            self.data.setdefault(key, blob)
            self.mtimes[key] = time.time()

    def staged_ids(self) -> Iterator[str]:
        with self.lock:
            return iter(list(self.staging))

    def discard_staged(self, image_id: str) -> bool:
        with self.lock:
            return self.staging.pop(image_id, None) is not None
