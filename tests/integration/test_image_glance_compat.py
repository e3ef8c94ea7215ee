"""Image v2 as Glance answers by default, driven by openstacksdk, the `openstack` CLI and raw
HTTP through the sdk's session, against real controllers on 127.0.0.1: the glance-direct
import, list filters, deactivation by the owner, the v2.0 JSON patch, reserved attributes,
empty ids and the member schemas."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import openstack.exceptions
import pytest
import yaml

from tests.integration.partial_upload import kill_mid_put
from tests.servers import Running, free_port, openstack_cli, sdk, start_controller, wait_for

MiB = 1024 * 1024
V20 = "application/openstack-images-v2.0-json-patch"


def cli(demo: Running, cloud: str, *args: str) -> subprocess.CompletedProcess[str]:
    return openstack_cli(demo.clouds_yaml, "--os-cloud", cloud, *args)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_sdk_creates_an_image_through_the_import_api(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    assert conn.image.get_import_info().import_methods["value"] == ["glance-direct"]
    data = os.urandom(3 * MiB + 5)
    image = conn.image.create_image(name=unique("imported"), data=data, disk_format="raw",
                                    container_format="bare", use_import=True,
                                    allow_duplicates=True)
    done = wait_for("the import to end",
                    lambda: (i := conn.image.get_image(image.id)).status == "active" and i)
    assert done.size == len(data) and done.checksum == hashlib.md5(data).hexdigest()
    assert done.hash_algo == "sha512" and done.hash_value == hashlib.sha512(data).hexdigest()
    assert b"".join(conn.image.download_image(done, stream=True).iter_content(MiB)) == data
    assert demo.state_dir is not None
    assert list((demo.state_dir / "images" / "staging").iterdir()) == []  # moved, not copied


def test_cli_image_create_import(demo: Running, tmp_path: Path) -> None:
    src = tmp_path / "disk.qcow2"
    src.write_bytes(os.urandom(MiB + 3))
    name = unique("cli-import")
    r = cli(demo, "infracloud", "image", "create", "--import", "--disk-format", "qcow2",
            "--container-format", "bare", "--file", str(src), name, "-f", "json")
    assert r.returncode == 0, r.stderr
    image_id = json.loads(r.stdout)["id"]

    def shown(image_id: str) -> dict[str, object]:
        out = cli(demo, "infracloud", "image", "show", image_id, "-f", "json")
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    image = wait_for("the import to end", lambda: (i := shown(image_id))["status"] == "active"
                     and i)
    md5 = subprocess.run(["md5sum", str(src)], capture_output=True, text=True).stdout.split()[0]
    assert image["checksum"] == md5 and image["size"] == src.stat().st_size
    # the same in steps: image stage, then image import
    # (made with the sdk: `image create` without --file would read our stdin as the data)
    steps = sdk(demo.clouds_yaml, "infracloud").image.create_image(
        name=unique("cli-steps"), disk_format="raw", container_format="bare",
        allow_duplicates=True).id
    r = cli(demo, "infracloud", "image", "stage", "--file", str(src), steps)
    assert r.returncode == 0, r.stderr
    assert shown(steps)["status"] == "uploading"
    r = cli(demo, "infracloud", "image", "import", "--method", "glance-direct", steps)
    assert r.returncode == 0, r.stderr
    image = wait_for("the import to end", lambda: (i := shown(steps))["status"] == "active"
                     and i)
    assert image["checksum"] == md5


def test_stage_and_import_answer_as_glance(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    session = conn.image
    image = conn.image.create_image(name=unique("staged"), disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    created = session.post("/images", json={"name": unique("probe")})
    assert created.headers["OpenStack-image-import-methods"] == "glance-direct"
    method = {"method": {"name": "glance-direct"}}
    r = session.post(f"/images/{image.id}/import", json=method, raise_exc=False)
    assert r.status_code == 409  # nothing staged yet
    r = session.put(f"/images/{image.id}/stage", data=b"{}", raise_exc=False,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 415 and conn.image.get_image(image.id).status == "queued"
    conn.image.stage_image(image, data=b"a staged disk")
    assert conn.image.get_image(image.id).status == "uploading"
    assert conn.image.get_image(image.id).size == len(b"a staged disk")
    r = session.put(f"/images/{image.id}/stage", data=b"again", raise_exc=False,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 409
    web = {"method": {"name": "web-download", "uri": "https://example.org/disk.img"}}
    r = session.post(f"/images/{image.id}/import", json=web, raise_exc=False)
    assert r.status_code == 400 and "is not supported" in r.json()["error"]["message"]
    other = sdk(demo.clouds_yaml, "infracloud-ci")
    r = other.image.post(f"/images/{image.id}/import", json=method, raise_exc=False)
    assert r.status_code == 404  # another project's private image
    r = session.post(f"/images/{image.id}/import", json=method)
    assert r.status_code == 202
    wait_for("the import to end", lambda: conn.image.get_image(image.id).status == "active")
    r = session.post(f"/images/{image.id}/import", json=method, raise_exc=False)
    assert r.status_code == 409 and "status active" in r.json()["error"]["message"]
    r = cli(demo, "infracloud", "image", "import", "--method", "web-download", "--uri",
            "https://example.org/x.img", image.id)
    assert r.returncode != 0 and "glance-direct" in r.stderr


def test_list_filters_with_sdk_and_cli(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    tag = unique("tag")
    small = conn.image.create_image(name=unique("small"), data=b"s" * 1000, disk_format="raw",
                                    container_format="bare", tags=[tag, "x86"],
                                    allow_duplicates=True, wait=True)
    big = conn.image.create_image(name=unique("big"), data=b"b" * 50_000, disk_format="qcow2",
                                  container_format="bare", tags=[tag],
                                  allow_duplicates=True, wait=True)
    hidden = conn.image.create_image(name=unique("hidden"), disk_format="raw",
                                     container_format="bare", tags=[tag],
                                     allow_duplicates=True)
    conn.image.update_image(hidden, is_hidden=True)

    def ids(**query: object) -> set[str]:
        return {i.id for i in conn.image.images(tag=[tag], **query)}

    assert ids() == {small.id, big.id}  # hidden images are not listed by default
    assert ids(is_hidden=True) == {hidden.id}
    assert ids(size_min=1000, size_max=49_999) == {small.id}
    assert ids(size_min=1001) == {big.id}
    assert {i.id for i in conn.image.images(tag=[tag, "x86"])} == {small.id}
    assert ids(disk_format="qcow2") == {big.id}
    assert ids(container_format="ovf") == set()
    assert ids(protected=False) == {small.id, big.id}
    assert ids(name=f"in:{small.name},{big.name}") == {small.id, big.id}
    assert ids(created_at=f"gte:{big.created_at}") >= {big.id}
    assert ids(owner=conn.current_project_id) == {small.id, big.id}
    with pytest.raises(openstack.exceptions.BadRequestException):
        list(conn.image.images(size_min="many"))
    with pytest.raises(openstack.exceptions.BadRequestException):
        list(conn.image.images(created_at="gt:yesterday"))
    r = cli(demo, "infracloud", "image", "list", "--tag", tag, "--hidden", "-f", "json")
    assert r.returncode == 0, r.stderr
    assert {i["ID"] for i in json.loads(r.stdout)} == {hidden.id}
    r = cli(demo, "infracloud", "image", "list", "--tag", tag, "--tag", "x86", "-f", "json")
    assert {i["ID"] for i in json.loads(r.stdout)} == {small.id}
    conn.image.update_image(big, ci_label="noble")
    r = cli(demo, "infracloud", "image", "list", "--tag", tag, "--property", "ci_label=noble",
            "-f", "json")
    assert r.returncode == 0 and {i["ID"] for i in json.loads(r.stdout)} == {big.id}
    listed = conn.image.get(f"/images?tag={tag}&ci_label=noble").json()["images"]
    assert [i["id"] for i in listed] == [big.id]  # extra properties filter as in Glance


def test_member_status_filter_for_shared_images(demo: Running) -> None:
    owner, ci = sdk(demo.clouds_yaml, "infracloud"), sdk(demo.clouds_yaml, "infracloud-ci")
    image = owner.image.create_image(name=unique("shared"), disk_format="raw",
                                     container_format="bare", visibility="shared",
                                     allow_duplicates=True)
    owner.image.add_member(image, member_id=ci.current_project_id)

    def seen(status: str) -> bool:
        return image.id in {i.id for i in ci.image.images(visibility="shared",
                                                          member_status=status)}

    assert seen("pending") and seen("all") and not seen("accepted")
    ci.image.update_member(ci.current_project_id, image, status="accepted")
    assert seen("accepted") and not seen("pending")
    r = cli(demo, "infracloud-ci", "image", "list", "--shared", "--member-status", "rejected",
            "-f", "json")
    assert r.returncode == 0 and image.id not in {i["ID"] for i in json.loads(r.stdout)}
    r = ci.image.get("/images?member_status=bored", raise_exc=False)
    assert r.status_code == 400


def test_the_owner_deactivates_its_image(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")  # a member, not an admin
    image = conn.image.create_image(name=unique("deact"), data=b"disk", disk_format="raw",
                                    container_format="bare", allow_duplicates=True, wait=True)
    conn.image.deactivate_image(image)
    assert conn.image.get_image(image.id).status == "deactivated"
    r = conn.image.get(f"/images/{image.id}/file", raise_exc=False)
    assert r.status_code == 403  # downloads refused while deactivated
    r = cli(demo, "infracloud-ci", "image", "set", "--activate", image.id)
    assert r.returncode != 0  # not its image
    r = cli(demo, "infracloud", "image", "set", "--activate", image.id)
    assert r.returncode == 0, r.stderr
    assert conn.image.get_image(image.id).status == "active"
    r = cli(demo, "infracloud", "image", "set", "--deactivate", image.id)
    assert r.returncode == 0, r.stderr
    assert conn.image.get_image(image.id).status == "deactivated"
    queued = conn.image.create_image(name=unique("queued"), allow_duplicates=True)
    r = conn.image.post(f"/images/{queued.id}/actions/deactivate", raise_exc=False)
    assert r.status_code == 403 and "status 'queued'" in r.json()["error"]["message"]


def test_v20_patch_reserved_attributes_empty_ids_and_member_schemas(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    image = conn.image.create_image(name=unique("patch"), allow_duplicates=True)
    ops = [{"replace": "/name", "value": "patched-v20"}, {"add": "/ci_label", "value": "x"}]
    r = conn.image.patch(f"/images/{image.id}", data=json.dumps(ops),
                         headers={"Content-Type": V20})
    assert r.status_code == 200 and r.json()["name"] == "patched-v20"
    assert r.json()["ci_label"] == "x"
    r = conn.image.patch(f"/images/{image.id}", data=json.dumps([{"remove": "/ci_label"}]),
                         headers={"Content-Type": V20})
    assert r.status_code == 200 and "ci_label" not in r.json()
    r = conn.image.patch(f"/images/{image.id}", data=json.dumps(
        [{"op": "replace", "path": "/name", "value": "v21 form"}]),
        headers={"Content-Type": V20}, raise_exc=False)
    assert r.status_code == 400  # v2.0 names the op by its key
    r = conn.image.patch(f"/images/{image.id}", data=json.dumps(ops),
                         headers={"Content-Type": "application/json"}, raise_exc=False)
    assert r.status_code == 415 and V20 in r.headers["Accept-Patch"]
    r = conn.image.patch(f"/images/{image.id}", data=json.dumps(
        [{"add": "/os_glance_import_task", "value": "x"}]), headers={"Content-Type": V20},
        raise_exc=False)
    assert r.status_code == 403 and "is reserved" in r.json()["error"]["message"]
    with pytest.raises(openstack.exceptions.ForbiddenException, match="is reserved"):
        conn.image.create_image(name=unique("reserved"), os_glance_foo="bar",
                                allow_duplicates=True)
    assert conn.image.get("/images/", raise_exc=False).status_code == 404
    assert conn.image.delete("/images/", raise_exc=False).status_code == 404
    member = conn.image.get("/schemas/member").json()
    assert member["name"] == "member" and member["properties"]["status"]["enum"] == [
        "pending", "accepted", "rejected"]
    members = conn.image.get("/schemas/members").json()
    assert members["properties"]["members"]["items"]["name"] == "member"


def test_controller_killed_mid_stage_leaves_a_killed_image_after_restart(
        tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "pw").write_text("admin-secret")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port}, "controller_id": "ctl-a",
        "database": {"url": "sqlite:///c.db"}, "bootstrap": {"admin_password_file": "pw"}}))
    base = f"http://127.0.0.1:{port}"
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"c": {
        "auth": {"auth_url": base + "/identity", "username": "admin",
                 "password": "admin-secret", "project_name": "admin",
                 "user_domain_name": "Default", "project_domain_name": "Default"}}}}))
    first = start_controller(config, base)
    try:
        conn = sdk(clouds, "c")
        complete = conn.image.create_image(name="complete", disk_format="raw",
                                           container_format="bare", allow_duplicates=True)
        conn.image.stage_image(complete, data=b"staged whole")
        image = conn.image.create_image(name="crash", disk_format="raw",
                                        container_format="bare", allow_duplicates=True)
        kill_mid_put(first, port, conn, image.id, "stage", "uploading")  # dies mid-stage
        assert list((tmp_path / "images" / "tmp").glob(f"{image.id}.*")), "partial data"
    finally:
        first.stop()
    second = start_controller(config, base)
    try:
        conn = sdk(clouds, "c")
        assert conn.image.get_image(image.id).status == "killed"
        assert list((tmp_path / "images" / "tmp").glob(f"{image.id}.*")) == []
        # a stage that had ended waits for its import, which still works
        assert conn.image.get_image(complete.id).status == "uploading"
        conn.image.import_image(complete, method="glance-direct")
        done = wait_for("the import to end", lambda: (
            i := conn.image.get_image(complete.id)).status == "active" and i)
        assert done.checksum == hashlib.md5(b"staged whole").hexdigest()
    finally:
        assert second.stop() == 0
