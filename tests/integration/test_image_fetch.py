"""The compute-host download path: streamed, verified, resumable."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from infracloud.agent.image_fetch import ImageFetchError, fetch_image
from tests.servers import Running, sdk

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def image(demo: Running) -> tuple[str, bytes]:
    data = os.urandom(3 * MiB + 5)
    conn = sdk(demo.clouds_yaml, "infracloud")
    made = conn.image.create_image(name="agent-image", data=data, disk_format="qcow2",
                                   container_format="bare", allow_duplicates=True)
    return f"{demo.base_url}/image/v2/images/{made.id}", data


def test_fetch_writes_the_verified_image(demo: Running, image: tuple[str, bytes],
                                         tmp_path: Path) -> None:
    url, data = image
    token = sdk(demo.clouds_yaml, "infracloud").auth_token
    got = fetch_image(url, token, tmp_path / "disk.qcow2", cacert=str(demo.cacert))
    assert got.size == len(data) and got.sha512 == hashlib.sha512(data).hexdigest()
    assert (tmp_path / "disk.qcow2").read_bytes() == data
    assert not (tmp_path / "disk.qcow2.part").exists() and got.resumed_from == 0


def test_fetch_resumes_a_partial_download(demo: Running, image: tuple[str, bytes],
                                          tmp_path: Path) -> None:
    url, data = image
    (tmp_path / "disk.qcow2.part").write_bytes(data[:MiB + 7])
    token = sdk(demo.clouds_yaml, "infracloud").auth_token
    got = fetch_image(url, token, tmp_path / "disk.qcow2", cacert=str(demo.cacert))
    assert got.resumed_from == MiB + 7
    assert (tmp_path / "disk.qcow2").read_bytes() == data


def test_corrupt_partial_data_is_caught_and_removed(demo: Running, image: tuple[str, bytes],
                                                    tmp_path: Path) -> None:
    url, _ = image
    (tmp_path / "disk.qcow2.part").write_bytes(b"\0" * 1000)
    token = sdk(demo.clouds_yaml, "infracloud").auth_token
    with pytest.raises(ImageFetchError, match="sha512 mismatch"):
        fetch_image(url, token, tmp_path / "disk.qcow2", cacert=str(demo.cacert))
    assert list(tmp_path.iterdir()) == []
