"""How a compute host gets an image: stream GET /image/v2/images/{id}/file to a local file,
hashing while writing, resuming with a Range request when the connection drops, and renaming
into place only when the sha512 matches what the controller recorded. Never more than one
chunk in memory. See docs/api.md, "Image data for compute hosts". An agent fetches with
its host's credential (`Downloads`, from /agent/v1/hosts/{host}/images/{id})."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from infracloud.clients import http
from infracloud.core.digests import update_from_file

CHUNK = 1024 * 1024
_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


class ImageFetchError(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha512: str
    resumed_from: int


def fetch_image(image_url: str, token: str, dest: Path, *, cacert: str | bool = True,
                attempts: int = 4, timeout: float = 60) -> Fetched:
    """`image_url` is the image endpoint from the catalog plus /v2/images/<id>, read with a
    user's token. See `fetch`."""
    with http.client("agent", verify=cacert, timeout=timeout,
                     headers={"X-Auth-Token": token}) as client:
        return fetch(client, image_url, dest, attempts=attempts)


def fetch(client: httpx.Client, image_url: str, dest: Path, *, attempts: int = 4) -> Fetched:
    """`GET image_url` (the image: active, with its size and sha512) then `image_url/file`
    with `client` (its credential), into `dest`.

    A `dest.part` left by an earlier try is continued where it stopped (its bytes are hashed
    again first). On a hash mismatch nothing is left behind."""
    part = dest.with_name(dest.name + ".part")
    meta = client.get(image_url)
    if meta.status_code != 200:
        raise ImageFetchError(f"image lookup failed: HTTP {meta.status_code} {meta.text}")
    image = meta.json()
    if image.get("status") != "active" or image.get("os_hash_algo") != "sha512":
        raise ImageFetchError(f"image {image.get('id')} is {image.get('status')}, "
                              f"not active with a sha512 hash")
    expected, size = image["os_hash_value"], int(image["size"])
    sha = hashlib.sha512()
    have = update_from_file(sha, part) if part.exists() else 0
    if have > size:
        part.unlink()
        sha, have = hashlib.sha512(), 0
    resumed_from = have
    last_error: Exception | None = None
    for _ in range(attempts):
        if have >= size:
            break
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with client.stream("GET", image_url + "/file", headers=headers) as r, \
                    open(part, "ab") as out:
                if r.status_code not in (200, 206) or (have and r.status_code != 206):
                    raise ImageFetchError(f"download failed: HTTP {r.status_code}")
                for block in r.iter_bytes(CHUNK):
                    out.write(block)
                    sha.update(block)
                    have += len(block)
                out.flush()
                os.fsync(out.fileno())
        except (httpx.TransportError, OSError) as exc:  # dropped: continue from `have`
            last_error = exc
    if have != size:
        raise ImageFetchError(f"download incomplete after {attempts} attempts: {have} of "
                              f"{size} bytes ({last_error})")
    if sha.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise ImageFetchError(f"sha512 mismatch for {dest.name}: the data is not the image")
    os.replace(part, dest)
    return Fetched(dest, size, expected, resumed_from)


class Downloads:
    """A compute host's verified copies of images, one file per image id in `root`: fetched
    once (a second server of the image uses the same file), dropped by `retain` when no
    server of this host boots the image any more. Image data never changes once active, so a
    file renamed into place (verified) stays right."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Lock] = {}

    def get(self, client: httpx.Client, image_url: str, image_id: str) -> Path:
        """The image's file, fetched with `client` from `image_url` unless it is here."""
        if not _IMAGE_ID.match(image_id):
            raise ImageFetchError(f"invalid image id {image_id!r}")
        with self._lock:
            lock = self._busy.setdefault(image_id, threading.Lock())
        with lock:
            dest = self.root / image_id
            if not dest.is_file():
                self.root.mkdir(parents=True, exist_ok=True)
                fetch(client, image_url, dest)
            return dest

    def retain(self, image_ids: set[str]) -> None:
        """Delete the files (and partial downloads) of images other than `image_ids`; a
        download under way is left alone."""
        with self._lock:
            busy = {i for i, lock in self._busy.items() if lock.locked()}
        try:
            files = list(self.root.iterdir())
        except FileNotFoundError:
            return
        for path in files:
            if path.name.removesuffix(".part") not in image_ids | busy:
                path.unlink(missing_ok=True)
