"""Image upload benchmark: a 2 GiB file uploaded through the API by a real HTTP client
(curl, or httpx where curl is missing) against `cp` of the same file on the same disk, in the
same run, plus the controller's peak RSS growth during the upload.

    .venv/bin/python bench/images.py [--size-mib 2048] [--dir DIR]

It also measures, in the same run, how fast one core computes md5 and sha512: the upload must
compute both over every byte, so on a machine whose disk copies faster than one core hashes,
that hash rate (not the disk) is the ceiling, and the report says so.

And the same file through the import API (glance-direct): `PUT .../stage` (streamed, no
hashing), then `POST .../import` (the staged data read once for md5 and sha512 on one I/O
thread, then moved into the store), timed to `active`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from common import admin_token, start_controller

MiB = 1024 * 1024


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory (VmRSS), or its high-water mark (VmHWM), of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_file(path: Path, size: int) -> None:
    block = os.urandom(8 * MiB)
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block[:-1] + os.urandom(1))  # not identical blocks
        f.write(os.urandom(size % len(block)))


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def hash_rate(name: str, path: Path, limit: int = 512 * MiB) -> float:
    h = hashlib.new(name)
    with open(path, "rb") as f:
        data = f.read(limit)
    seconds = timed(lambda: [h.update(data[i:i + MiB]) for i in range(0, len(data), MiB)])
    return len(data) / seconds / 1e6


def upload(base: str, token: str, image_id: str, src: Path, target: str = "file") -> None:
    url = f"{base}/image/v2/images/{image_id}/{target}"
    if shutil.which("curl"):
        subprocess.run(["curl", "-sS", "--fail", "-X", "PUT", "-T", str(src), "-H",
                        f"X-Auth-Token: {token}", "-H", "Content-Type: application/octet-stream",
                        "-H", "Expect:", url], check=True)
        return

    def body():  # type: ignore[no-untyped-def]
        with open(src, "rb") as f:
            while block := f.read(MiB):
                yield block

    r = httpx.put(url, content=body(), timeout=600, headers={
        "X-Auth-Token": token, "Content-Type": "application/octet-stream",
        "Content-Length": str(src.stat().st_size)})
    r.raise_for_status()


def wait_imported(base: str, headers: dict[str, str], image_id: str) -> None:
    r = httpx.post(f"{base}/image/v2/images/{image_id}/import", headers=headers,
                   json={"method": {"name": "glance-direct"}})
    assert r.status_code == 202, r.text
    while (status := httpx.get(f"{base}/image/v2/images/{image_id}",
                               headers=headers).json()["status"]) != "active":
        assert status == "importing", status
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--port", type=int, default=18960)
    parser.add_argument("--dir", type=Path, default=None,
                        help="working folder (default: a temporary one under ./var)")
    args = parser.parse_args()
    size = args.size_mib * MiB
    Path("var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-images-", dir=args.dir or "var")).resolve()
    try:
        src = work / "source.img"
        print(f"writing a {args.size_mib} MiB test file in {work} ...", flush=True)
        make_file(src, size)
        os.sync()

        cp_s = timed(lambda: subprocess.run(["cp", str(src), str(work / "copy.img")],
                                            check=True))
        os.unlink(work / "copy.img")
        cp_sync_s = timed(lambda: (subprocess.run(["cp", str(src), str(work / "copy.img")],
                                                  check=True), os.sync()))
        os.unlink(work / "copy.img")
        md5_rate, sha_rate = hash_rate("md5", src), hash_rate("sha512", src)

        port = args.port
        proc = start_controller(work, port)
        base = f"http://127.0.0.1:{port}"
        try:
            token = admin_token(base)
            headers = {"X-Auth-Token": token}
            image = httpx.post(base + "/image/v2/images", headers=headers, json={
                "name": "bench", "disk_format": "raw", "container_format": "bare"}).json()
            # reset the high-water mark so VmHWM measures the upload alone
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            before = rss_kib(proc.pid)
            up_s = timed(lambda: upload(base, token, image["id"], src))
            peak = rss_kib(proc.pid, "VmHWM")
            final = httpx.get(f"{base}/image/v2/images/{image['id']}", headers=headers).json()
            assert final["status"] == "active" and final["size"] == size, final
            staged = httpx.post(base + "/image/v2/images", headers=headers, json={
                "name": "bench-import", "disk_format": "raw", "container_format": "bare"}).json()
            stage_s = timed(lambda: upload(base, token, staged["id"], src, "stage"))
            import_s = timed(lambda: wait_imported(base, headers, staged["id"]))
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def mbs(seconds: float) -> float:
        return size / seconds / 1e6

    ceiling = min(md5_rate, sha_rate)
    print(f"image upload benchmark: {args.size_mib} MiB, {os.cpu_count()} cores, "
          f"client {'curl' if shutil.which('curl') else 'httpx'}, plain HTTP")
    print(f"{'':36} {'MB/s':>9} {'upload ratio':>13}")
    print(f"{'cp (page cache)':36} {mbs(cp_s):9.0f} {mbs(up_s) / mbs(cp_s):13.2f}")
    print(f"{'cp + sync (durable, as the upload)':36} {mbs(cp_sync_s):9.0f} "
          f"{mbs(up_s) / mbs(cp_sync_s):13.2f}")
    print(f"{'one core: md5 / sha512':36} {md5_rate:4.0f}/{sha_rate:4.0f} "
          f"{mbs(up_s) / ceiling:13.2f}  (vs the slower hash)")
    print(f"{'upload through the API':36} {mbs(up_s):9.0f}")
    print(f"{'import API: stage':36} {mbs(stage_s):9.0f}")
    print(f"{'import API: import (hash + move)':36} {mbs(import_s):9.0f}")
    print(f"{'import API: stage + import':36} {mbs(stage_s + import_s):9.0f} "
          f"{(stage_s + import_s) / up_s:13.2f}  (time vs the upload)")
    print(f"controller peak RSS growth during the upload: {(peak - before) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
