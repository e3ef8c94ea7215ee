"""A compute host's image copies (`Downloads`): one download per image however many servers
ask at once, nothing left by a download that fails its checksum, and `retain` dropping the
files of images no server uses any more. Fakes only: no network."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from infracloud.agent import image_fetch
from infracloud.agent.image_fetch import Downloads, ImageFetchError
from tests.servers import wait_for

URL = "http://controller/agent/v1/hosts/h1/images/img-1"


class TracingLock:
    """A lock that counts the acquires that had to wait (another thread held it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waited = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        self.waited += 1
        return self._lock.acquire(timeout=timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_two_servers_of_one_image_download_it_once(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    locks: list[TracingLock] = []

    def new_lock() -> TracingLock:
        locks.append(TracingLock())
        return locks[-1]

    monkeypatch.setattr(image_fetch, "threading", SimpleNamespace(Lock=new_lock))
    calls: list[Path] = []
    go = threading.Event()

    def fake_fetch(client: Any, image_url: str, dest: Path, **_: Any) -> None:
        calls.append(dest)
        part = dest.with_name(dest.name + ".part")
        part.write_bytes(b"half")
        assert go.wait(30), "the test never let the download finish"
        part.write_bytes(b"image data")
        part.replace(dest)

    monkeypatch.setattr(image_fetch, "fetch", fake_fetch)
    downloads = Downloads(tmp_path / "images")
    got: list[Path] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(599)))

    def boot() -> None:
        got.append(downloads.get(client, URL, "img-1"))

    first = threading.Thread(target=boot)
    first.start()
    try:
        wait_for("the first download to start", lambda: len(calls) == 1)
        second = threading.Thread(target=boot)
        second.start()
        # the second asks while the first downloads: it waits for that download (or, wrongly,
        # starts its own)
        wait_for("the second request to wait or to download",
                 lambda: len(calls) > 1 or any(lock.waited for lock in locks))
        # a download under way survives a cleanup that keeps nothing
        downloads.retain(set())
        assert (tmp_path / "images" / "img-1.part").read_bytes() == b"half"
    finally:
        go.set()
        first.join(30)
    second.join(30)
    assert len(calls) == 1
    assert got == [tmp_path / "images" / "img-1"] * 2
    assert got[0].read_bytes() == b"image data"
    assert downloads.get(client, URL, "img-1") == got[0] and len(calls) == 1
    client.close()


def _controller(data: bytes, recorded: bytes) -> httpx.MockTransport:
    """The image endpoint: `data` as the file, the sha512 of `recorded` in its record."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/file"):
            return httpx.Response(200, content=data)
        return httpx.Response(200, json={
            "id": "img-1", "status": "active", "size": len(data), "os_hash_algo": "sha512",
            "os_hash_value": hashlib.sha512(recorded).hexdigest()})

    return httpx.MockTransport(answer)


def test_a_failed_checksum_leaves_nothing(tmp_path: Path) -> None:
    downloads = Downloads(tmp_path / "images")
    with httpx.Client(transport=_controller(b"corrupted!", b"the image")) as client, \
            pytest.raises(ImageFetchError, match="sha512 mismatch"):
        downloads.get(client, URL, "img-1")
    assert list((tmp_path / "images").iterdir()) == []
    # and the next try downloads it again, verified
    with httpx.Client(transport=_controller(b"the image", b"the image")) as client:
        path = downloads.get(client, URL, "img-1")
    assert path.read_bytes() == b"the image"


def test_retain_drops_the_files_of_images_no_server_uses(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    for name in ("used", "unused", "used-2", "gone.part", "used-2.part"):
        (root / name).write_bytes(b"x")
    downloads = Downloads(root)
    downloads.retain({"used", "used-2"})
    assert sorted(p.name for p in root.iterdir()) == ["used", "used-2", "used-2.part"]
    downloads.retain(set())
    assert list(root.iterdir()) == []
    Downloads(tmp_path / "never-made").retain(set())  # no folder yet: nothing to do
