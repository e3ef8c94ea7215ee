"""Hashing a file's bytes in chunks, for the image paths (checksums of images and uploads)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1024 * 1024


def update_from_file(digest: hashlib._Hash, path: Path) -> int:
    """Feed `path`'s bytes to `digest` a chunk at a time; the number of bytes read."""
    size = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of `path`'s bytes (`algorithm`: a hashlib name, e.g. sha512)."""
    digest = hashlib.new(algorithm)
    update_from_file(digest, path)
    return digest.hexdigest()
