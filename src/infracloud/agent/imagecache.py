"""A compute host's cache of image bases: one read-only copy per image, shared by every
server booted from it, each server writing to a qcow2 overlay of its own.

Layout under the cache's root:
  bases/<sha512>       the image's bytes, named by their sha512 (so a copy is verified by
                       hashing it again), mode 0444; raw or qcow2 (no backing file, no
                       external data file: an image must not reach other files of the host)
  refs/<holder>/<ref>  one file per server using a base, holding the base's sha512; the
                       reference count of a base is the number of refs naming it. `holder`
                       is the agent (its instance directory), so agents may share a cache
                       and each prunes only its own references
  .lock                flock'd while the cache changes (several agents may share a cache)

`acquire(ref, source)` copies `source` in unless its base exists (hashing while copying),
`release(ref)` drops the reference and deletes bases nobody uses any more, `prune(keep)`
drops this holder's references other than `keep` (after an agent crash). A base is
hashed again the first time this process uses it, so a corrupted copy is never used."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infracloud.core.digests import file_digest

FORMATS = ("raw", "qcow2")
CHUNK = 1024 * 1024
GiB = 1024**3
_SHA512 = re.compile(r"^[0-9a-f]{128}$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ImageCacheError(Exception):
    pass


@dataclass(frozen=True)
class Base:
    path: Path
    sha512: str
    format: str  # one of FORMATS
    virtual_size: int  # bytes


def qemu_img(*args: str, timeout: float = 120) -> str:
    try:
        out = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                             timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise ImageCacheError("qemu-img is missing: apt-get install qemu-utils") from e
    if out.returncode != 0:
        raise ImageCacheError(f"qemu-img {args[0]} failed: "
                              f"{' '.join((out.stderr or out.stdout).split())}")
    return out.stdout


def probe(path: Path) -> tuple[str, int]:
    """(format, virtual size) of an image, refusing what a base must not be."""
    info = json.loads(qemu_img("info", "-U", "--output=json", str(path)))
    fmt = info.get("format")
    if fmt not in FORMATS:
        raise ImageCacheError(f"image format {fmt!r} is not supported (only "
                              f"{' and '.join(FORMATS)})")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename") or info.get("full-backing-filename") or \
            specific.get("data-file"):
        raise ImageCacheError("a qcow2 image with a backing or data file is refused: it "
                              "would read other files of the host")
    return fmt, int(info["virtual-size"])


def make_overlay(base: Base, dest: Path, disk_gb: int) -> int:
    """A qcow2 overlay of `base` at `dest`, sized to a flavor's root disk (`disk_gb` 0: the
    image's own size). Returns the size in bytes."""
    size = disk_gb * GiB if disk_gb > 0 else base.virtual_size
    if base.virtual_size > size:
        raise ImageCacheError(f"the image needs a {_gib(base.virtual_size)} GiB disk, the "
                              f"flavor's root disk is {disk_gb} GB")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base.path), "-F", base.format,
             str(dest), str(size))
    return size


def _gib(size: int) -> str:
    return f"{size / GiB:.3g}"


class ImageCache:
    def __init__(self, root: Path, holder: str = "") -> None:
        self.root = Path(root).resolve()
        self.holder = hashlib.sha256(holder.encode()).hexdigest()[:16]
        self._lock = threading.Lock()
        self._verified: set[str] = set()  # bases hashed by this process
        self._hashes: dict[tuple[int, int, int, int], str] = {}  # source stat -> sha512

    @property
    def _bases(self) -> Path:
        return self.root / "bases"

    @property
    def _refs(self) -> Path:
        return self.root / "refs" / self.holder

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self._bases.mkdir(parents=True, exist_ok=True)
            self._refs.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

    # -- the interface -----------------------------------------------------------------------

    def acquire(self, ref: str, source: Path) -> Base:
        """The base for the image in `source`, referenced by `ref` (idempotent)."""
        if not _REF.match(ref):
            raise ImageCacheError(f"invalid reference {ref!r}")
        with self._locked():
            sha = self._source_hash(source)
            path = self._bases / sha
            if path.exists() and sha not in self._verified:
                if _hash_file(path) != sha:
                    if self._count(sha):
                        raise ImageCacheError(f"cached base {sha[:16]}… is corrupt and in use")
                    path.unlink()
                else:
                    self._verified.add(sha)
            if not path.exists():
                self._import(source, sha)
            fmt, size = probe(path)
            _write(self._refs / ref, sha)
            self._collect()  # the base `ref` used before, if it changed
            return Base(path=path, sha512=sha, format=fmt, virtual_size=size)

    def release(self, ref: str) -> None:
        """Drop a reference; delete the bases nobody references (unknown: fine)."""
        if not _REF.match(ref):
            return
        with self._locked():
            (self._refs / ref).unlink(missing_ok=True)
            self._collect()

    def refs(self) -> list[str]:
        """This holder's references."""
        try:
            return sorted(p.name for p in self._refs.iterdir() if _REF.match(p.name))
        except FileNotFoundError:
            return []

    def prune(self, keep: set[str]) -> None:
        """Drop this holder's references other than `keep`, then collect."""
        with self._locked():
            for path in self._refs.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)
            self._collect()

    def usage(self) -> dict[str, int]:
        """Reference counts by base (sha512)."""
        with self._locked():
            return {p.name: self._count(p.name) for p in self._bases.iterdir()
                    if _SHA512.match(p.name)}

    def collect(self) -> None:
        """Delete unreferenced bases and what interrupted imports left."""
        with self._locked():
            self._collect()

    # -- helpers -----------------------------------------------------------------------------

    def _all_refs(self) -> list[Path]:
        return [ref for holder in (self.root / "refs").iterdir() if holder.is_dir()
                for ref in holder.iterdir()]

    def _count(self, sha: str) -> int:
        return sum(1 for ref in self._all_refs() if _read(ref) == sha)

    def _collect(self) -> None:
        used = {_read(ref) for ref in self._all_refs()}
        for path in self._bases.iterdir():
            if path.name not in used:
                path.unlink(missing_ok=True)
                self._verified.discard(path.name)

    def _source_hash(self, source: Path) -> str:
        try:
            st = source.stat()
        except OSError as e:
            raise ImageCacheError(f"image {source}: {e.strerror}") from e
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = _hash_file(source)
        return self._hashes[key]

    def _import(self, source: Path, sha: str) -> None:
        """Copy `source` in, hashing the bytes written; refused unless they hash to `sha`
        and the image is one a base may be."""
        tmp = self._bases / f".import-{os.getpid()}-{threading.get_ident()}"
        digest = hashlib.sha512()
        try:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                while block := src.read(CHUNK):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha:
                raise ImageCacheError(f"image {source} changed while it was copied")
            probe(tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, self._bases / sha)
            self._verified.add(sha)
        finally:
            tmp.unlink(missing_ok=True)


def _hash_file(path: Path) -> str:
    return file_digest(path, "sha512")


def _read(ref: Path) -> str:
    try:
        return ref.read_text().strip()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
