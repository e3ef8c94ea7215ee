"""One contract for every image store: the filesystem backend and the in-memory fake."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from infracloud.images.store import FilesystemStore, ImageStore, MemoryStore, put


@pytest.fixture(params=["filesystem", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ImageStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "images")
    return MemoryStore()


def key_of(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def test_put_then_read_back(store: ImageStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    put(store, "img-1", key_of(data), [data[:1000], data[1000:]])
    assert b"".join(store.read(key_of(data))) == data
    stat = store.stat(key_of(data))
    assert stat is not None and stat.size == len(data)


def test_read_a_range(store: ImageStore) -> None:
    data = bytes(range(256)) * 10000
    put(store, "img-1", key_of(data), [data])
    assert b"".join(store.read(key_of(data), 1000, 5000)) == data[1000:6000]
    assert b"".join(store.read(key_of(data), len(data) - 3)) == data[-3:]


def test_identical_data_is_stored_once(store: ImageStore) -> None:
    data = os.urandom(4096)
    put(store, "img-1", key_of(data), [data])
    put(store, "img-2", key_of(data), [data])
    assert [b.key for b in store.blobs()] == [key_of(data)]


def test_nothing_is_visible_before_commit_and_abort_leaves_nothing(store: ImageStore) -> None:
    w = store.writer("img-1")
    w.write([b"partial data"])
    assert list(store.blobs()) == []
    w.abort()
    assert list(store.blobs()) == []
    assert store.discard_partial("img-1") == 0


def test_discard_partial_removes_an_unfinished_write(store: ImageStore) -> None:
    w = store.writer("img-9")
    w.write([b"x" * 1000])
    assert store.discard_partial("img-9") == 1
    assert store.discard_partial("img-9") == 0


def test_delete_and_missing_keys(store: ImageStore) -> None:
    data = b"some image"
    put(store, "img-1", key_of(data), [data])
    store.delete(key_of(data))
    store.delete(key_of(data))  # twice is fine
    assert store.stat(key_of(data)) is None
    with pytest.raises(FileNotFoundError):
        b"".join(store.read(key_of(data)))


def test_keys_must_be_hex_digests(store: ImageStore) -> None:
    w = store.writer("img-1")
    w.write([b"x"])
    with pytest.raises(ValueError):
        w.commit("../../etc/passwd")
    w.abort()


def test_storing_existing_data_again_makes_it_young(store: ImageStore) -> None:
    data = b"aged image"
    put(store, "img-1", key_of(data), [data])
    first = store.stat(key_of(data))
    assert first is not None
    if isinstance(store, FilesystemStore):
        old = time.time() - 3600
        os.utime(store.path_of(key_of(data)), (old, old))
    else:
        store.mtimes[key_of(data)] -= 3600
    put(store, "img-2", key_of(data), [data])
    again = store.stat(key_of(data))
    assert again is not None and again.mtime > time.time() - 60


def test_filesystem_writes_go_to_a_temporary_file_first(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "images")
    w = store.writer("img-1")
    w.write([b"half an image"])
    assert [p.name.split(".")[0] for p in store.tmp.iterdir()] == ["img-1"]
    assert list(store.data.rglob("*.*")) == []
    w.abort()
    assert list(store.tmp.iterdir()) == []


def test_staged_data_waits_then_moves_under_its_key(store: ImageStore) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    w = store.writer("img-s")
    w.write([data[:100], data[100:]])
    assert store.staged("img-s") is None  # nothing staged before the stage is complete
    w.sync()
    w.commit_staged()
    assert store.staged("img-s") == len(data) and list(store.staged_ids()) == ["img-s"]
    assert b"".join(store.read_staged("img-s")) == data
    assert list(store.blobs()) == []  # staged data is no image data yet
    store.promote("img-s", key_of(data))
    assert store.staged("img-s") is None and list(store.staged_ids()) == []
    assert b"".join(store.read(key_of(data))) == data


def test_promoting_data_stored_already_keeps_one_blob(store: ImageStore) -> None:
    data = os.urandom(4096)
    put(store, "img-1", key_of(data), [data])
    w = store.writer("img-2")
    w.write([data])
    w.commit_staged()
    store.promote("img-2", key_of(data))
    assert [b.key for b in store.blobs()] == [key_of(data)]
    assert store.staged("img-2") is None


def test_discard_staged(store: ImageStore) -> None:
    w = store.writer("img-d")
    w.write([b"abc"])
    w.commit_staged()
    assert store.discard_staged("img-d") is True
    assert store.discard_staged("img-d") is False
    assert store.staged("img-d") is None
