"""Image v2 through the `openstack` CLI, openstacksdk, nodepool's adapter and raw HTTP,
against real controllers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.partial_upload import kill_mid_put
from tests.nodepool_peer import adapter
from tests.servers import Running, free_port, openstack_cli, sdk, start_controller, wait_for

MiB = 1024 * 1024


def cli(demo: Running, cloud: str, *args: str) -> subprocess.CompletedProcess[str]:
    return openstack_cli(demo.clouds_yaml, "--os-cloud", cloud, *args)


def token(demo: Running, cloud: str = "infracloud") -> str:
    return str(sdk(demo.clouds_yaml, cloud).auth_token)


def random_file(folder: Path, size: int) -> Path:
    path = folder / f"{uuid.uuid4().hex[:8]}.qcow2"
    path.write_bytes(os.urandom(size))
    return path


def test_cli_upload_checksums_match_coreutils(demo: Running, tmp_path: Path) -> None:
    src = random_file(tmp_path, 5 * MiB + 11)
    name = f"noble-{uuid.uuid4().hex[:6]}"
    r = cli(demo, "infracloud", "image", "create", "--disk-format", "qcow2",
            "--container-format", "bare", "--file", str(src), name, "-f", "json")
    assert r.returncode == 0, r.stderr
    image = json.loads(r.stdout)
    md5 = subprocess.run(["md5sum", str(src)], capture_output=True, text=True).stdout.split()[0]
    sha = subprocess.run(["sha512sum", str(src)], capture_output=True,
                         text=True).stdout.split()[0]
    assert image["status"] == "active" and image["size"] == src.stat().st_size
    assert image["checksum"] == md5
    props = image.get("properties", image)
    assert props["os_hash_algo"] == "sha512" and props["os_hash_value"] == sha
    out = tmp_path / "saved"
    r = cli(demo, "infracloud", "image", "save", "--file", str(out), name)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == src.read_bytes()


def test_cli_list_show_set_delete(demo: Running, tmp_path: Path) -> None:
    name = f"set-{uuid.uuid4().hex[:6]}"
    src = random_file(tmp_path, 100_000)
    assert cli(demo, "infracloud", "image", "create", "--file", str(src), "--disk-format",
               "raw", name).returncode == 0
    assert name in {i["Name"] for i in json.loads(
        cli(demo, "infracloud", "image", "list", "-f", "json").stdout)}
    r = cli(demo, "infracloud", "image", "set", "--property", "ci_label=ubuntu-noble",
            "--tag", "nightly", "--min-ram", "512", name)
    assert r.returncode == 0, r.stderr
    shown = json.loads(cli(demo, "infracloud", "image", "show", name, "-f", "json").stdout)
    props = shown.get("properties", shown)
    assert props["ci_label"] == "ubuntu-noble" and shown["tags"] == ["nightly"]
    assert shown["min_ram"] == 512
    assert cli(demo, "infracloud", "image", "delete", name).returncode == 0
    assert cli(demo, "infracloud", "image", "show", name).returncode != 0


def test_admin_publishes_and_other_projects_see_it(demo: Running, tmp_path: Path) -> None:
    name = f"public-{uuid.uuid4().hex[:6]}"
    src = random_file(tmp_path, 64_000)
    r = cli(demo, "infracloud", "image", "create", "--public", "--file", str(src), name)
    assert r.returncode != 0 and "403" in r.stderr  # members cannot publish
    r = cli(demo, "infracloud-admin", "image", "create", "--public", "--disk-format", "raw",
            "--file", str(src), name, "-f", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["visibility"] == "public"
    assert name in {i["Name"] for i in json.loads(
        cli(demo, "infracloud-ci", "image", "list", "-f", "json").stdout)}


def test_a_project_cannot_see_another_projects_private_image(demo: Running,
                                                             tmp_path: Path) -> None:
    name = f"private-{uuid.uuid4().hex[:6]}"
    r = cli(demo, "infracloud", "image", "create", "--private", "--disk-format", "raw",
            "--file", str(random_file(tmp_path, 1000)), name, "-f", "json")
    assert r.returncode == 0, r.stderr
    image_id = json.loads(r.stdout)["id"]
    listed = json.loads(cli(demo, "infracloud-ci", "image", "list", "-f", "json").stdout)
    assert image_id not in {i["ID"] for i in listed}
    assert cli(demo, "infracloud-ci", "image", "show", image_id).returncode != 0
    with demo.http() as c:
        other = {"X-Auth-Token": token(demo, "infracloud-ci")}
        assert c.get(f"/image/v2/images/{image_id}", headers=other).status_code == 404
        assert c.get(f"/image/v2/images/{image_id}/file", headers=other).status_code == 404
        assert c.delete(f"/image/v2/images/{image_id}", headers=other).status_code == 404


def test_nodepool_uploads_and_deletes_images(demo: Running, tmp_path: Path) -> None:
    src = random_file(tmp_path, 3 * MiB)
    data = src.read_bytes()
    np = adapter(demo.clouds_yaml, "infracloud", tmp_path)
    try:
        meta = {"nodepool_build_id": "0000000042", "nodepool_upload_id": "0000000001",
                "nodepool_provider_name": "infracloud"}
        image_id = np.uploadImage(None, "ubuntu-noble-1700000000", str(src), "qcow2", meta,
                                  hashlib.md5(data).hexdigest(),
                                  hashlib.sha256(data).hexdigest())
        image = sdk(demo.clouds_yaml, "infracloud").image.get_image(image_id)
        assert image.status == "active" and image.visibility == "private"
        assert image.checksum == hashlib.md5(data).hexdigest()
        assert image.properties["nodepool_build_id"] == "0000000042"
        np.deleteImage(image_id)
        assert sdk(demo.clouds_yaml, "infracloud").image.find_image(image_id) is None
    finally:
        np.stop()


def _raw_put(demo: Running, image_id: str, declared: int, sent: bytes) -> None:
    """Start an upload and vanish half-way, as a client that crashes does."""
    host, port = demo.base_url.split("://")[1].split(":")
    ctx = ssl.create_default_context(cafile=str(demo.cacert))
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    conn.putrequest("PUT", f"/image/v2/images/{image_id}/file")
    conn.putheader("X-Auth-Token", token(demo))
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(declared))
    conn.endheaders()
    conn.send(sent)
    assert conn.sock is not None
    conn.sock.close()


def test_interrupted_upload_ends_killed_with_no_file_left(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    image = conn.image.create_image(name=f"cut-{uuid.uuid4().hex[:6]}", disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    _raw_put(demo, image.id, 20 * MiB, os.urandom(6 * MiB))
    wait_for("the upload to end killed",
             lambda: conn.image.get_image(image.id).status == "killed")
    assert demo.state_dir is not None
    assert list((demo.state_dir / "images" / "tmp").glob(f"{image.id}.*")) == []
    with demo.http() as c:
        r = c.put(f"/image/v2/images/{image.id}/file", content=b"again",
                  headers={"X-Auth-Token": token(demo),
                           "Content-Type": "application/octet-stream"})
    assert r.status_code == 409


def test_download_headers_and_ranges(demo: Running) -> None:
    data = os.urandom(2 * MiB)
    conn = sdk(demo.clouds_yaml, "infracloud")
    image = conn.image.create_image(name=f"dl-{uuid.uuid4().hex[:6]}", data=data,
                                    disk_format="raw", container_format="bare",
                                    allow_duplicates=True, wait=True)
    headers = {"X-Auth-Token": token(demo)}
    with demo.http() as c:
        full = c.get(f"/image/v2/images/{image.id}/file", headers=headers)
        assert full.status_code == 200 and full.content == data
        assert full.headers["Content-MD5"] == hashlib.md5(data).hexdigest()
        assert full.headers["X-Image-Meta-Os-Hash-Value"] == hashlib.sha512(data).hexdigest()
        part = c.get(f"/image/v2/images/{image.id}/file",
                     headers={**headers, "Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == data[1000:2000]
        assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        bad = c.get(f"/image/v2/images/{image.id}/file",
                    headers={**headers, "Range": f"bytes={len(data)}-"})
        assert bad.status_code == 416
        queued = conn.image.create_image(name="empty", allow_duplicates=True)
        assert c.get(f"/image/v2/images/{queued.id}/file", headers=headers).status_code == 204


def test_discovery_patch_rules_and_listing(demo: Running) -> None:
    headers = {"X-Auth-Token": token(demo)}
    with demo.http() as c:
        r = c.get("/image")
        assert r.status_code == 300
        assert r.json()["versions"][0]["links"][0]["href"] == f"{demo.base_url}/image/v2/"
        made = [c.post("/image/v2/images", json={"name": f"page-{n}"}, headers=headers).json()
                for n in range(5)]
        patch_url = f"/image/v2/images/{made[0]['id']}"
        body = [{"op": "replace", "path": "/name", "value": "renamed"}]
        assert c.patch(patch_url, json=body, headers=headers).status_code == 415
        ptype = {**headers, "Content-Type": "application/openstack-images-v2.1-json-patch"}
        r = c.patch(patch_url, content=json.dumps(body), headers=ptype)
        assert r.status_code == 200 and r.json()["name"] == "renamed"
        r = c.patch(patch_url, content=json.dumps(
            [{"op": "replace", "path": "/status", "value": "active"}]), headers=ptype)
        assert r.status_code == 403
        ids = ",".join(m["id"] for m in made[1:3])
        r = c.get(f"/image/v2/images?id=in:{ids}&os_hidden=False", headers=headers)
        assert {i["id"] for i in r.json()["images"]} == {m["id"] for m in made[1:3]}
        r = c.get("/image/v2/images?limit=2", headers=headers)
        assert len(r.json()["images"]) == 2 and r.json()["next"].startswith("/v2/images?")
    names = {i.name for i in sdk(demo.clouds_yaml, "infracloud").image.images(limit=2)}
    assert {"renamed", "page-1", "page-4"} <= names


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("limited")
    port = free_port()
    (folder / "pw").write_text("admin-secret")
    (folder / "c.yaml").write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port},
        "database": {"url": "sqlite:///c.db"},
        "images": {"max_image_size": 2 * MiB, "quota": {"images": 3, "bytes": 3 * MiB}},
        "bootstrap": {"admin_password_file": "pw"}}))
    running = start_controller(folder / "c.yaml", f"http://127.0.0.1:{port}")
    running.state_dir = folder
    (folder / "clouds.yaml").write_text(yaml.safe_dump({"clouds": {"c": {
        "auth": {"auth_url": running.base_url + "/identity", "username": "admin",
                 "password": "admin-secret", "project_name": "admin",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionOne"}}}))
    yield running
    assert running.stop() == 0


def test_size_and_quota_limits_answer_413(limited: Running, tmp_path: Path) -> None:
    assert limited.state_dir is not None
    clouds = limited.state_dir / "clouds.yaml"
    big = random_file(tmp_path, 2 * MiB + 1)
    r = openstack_cli(clouds, "--os-cloud", "c", "image", "create", "--disk-format", "raw",
                      "--file", str(big), "too-big")
    assert r.returncode != 0 and "413" in r.stderr and "maximum image size" in r.stderr
    conn = sdk(clouds, "c")
    first = conn.image.create_image(name="one", data=os.urandom(2 * MiB), disk_format="raw",
                                    container_format="bare", allow_duplicates=True, wait=True)
    assert conn.image.get_image(first.id).status == "active"
    with limited.http() as c:
        headers = {"X-Auth-Token": conn.auth_token}
        second = c.post("/image/v2/images", json={"name": "two"}, headers=headers).json()
        r = c.put(f"/image/v2/images/{second['id']}/file", content=os.urandom(2 * MiB),
                  headers={**headers, "Content-Type": "application/octet-stream"})
        assert r.status_code == 413 and "quota" in r.json()["error"]["message"]
        assert c.get(f"/image/v2/images/{second['id']}",
                     headers=headers).json()["status"] == "queued"
        count = len(c.get("/image/v2/images", headers=headers).json()["images"])
        for n in range(3 - count):  # up to the quota of 3 images
            assert c.post("/image/v2/images", json={"name": f"fill-{n}"},
                          headers=headers).status_code == 201
        r = c.post("/image/v2/images", json={"name": "four"}, headers=headers)
        assert r.status_code == 413 and "Quota exceeded for images" in r.json()["error"][
            "message"]


def test_controller_killed_mid_upload_leaves_a_killed_image_after_restart(
        tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "pw").write_text("admin-secret")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port}, "controller_id": "ctl-a",
        "database": {"url": "sqlite:///c.db"}, "bootstrap": {"admin_password_file": "pw"}}))
    base = f"http://127.0.0.1:{port}"
    first = start_controller(config, base)
    try:
        clouds = tmp_path / "clouds.yaml"
        clouds.write_text(yaml.safe_dump({"clouds": {"c": {
            "auth": {"auth_url": base + "/identity", "username": "admin",
                     "password": "admin-secret", "project_name": "admin",
                     "user_domain_name": "Default", "project_domain_name": "Default"}}}}))
        conn = sdk(clouds, "c")
        image = conn.image.create_image(name="crash", disk_format="raw",
                                        container_format="bare", allow_duplicates=True)
        kill_mid_put(first, port, conn, image.id, "file", "saving")  # dies mid-upload
        assert list((tmp_path / "images" / "tmp").glob(f"{image.id}.*")), "partial data"
    finally:
        first.stop()
    second = start_controller(config, base)
    try:
        assert sdk(clouds, "c").image.get_image(image.id).status == "killed"
        assert list((tmp_path / "images" / "tmp").glob(f"{image.id}.*")) == []
    finally:
        assert second.stop() == 0
