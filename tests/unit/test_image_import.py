"""The import API's service side (stage, import, recovery, collection), Glance's list filters,
the v2.0 JSON patch, reserved attributes and deactivation by the owner, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infracloud.core.clock import FakeClock, isoformat
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound, OverLimit
from infracloud.core.states import IMAGE
from infracloud.images import patch
from infracloud.images.data import ImageData
from infracloud.images.imports import ImageImports, check_body
from infracloud.store import Database
from infracloud.store.models import Image
from tests.servers import wait_for
from tests.unit.test_images import CI, ZUUL, Env, MiB, new, query

GLANCE_DIRECT = {"method": {"name": "glance-direct"}}


@pytest.fixture
def env(db: Database, tmp_path: Path, clock: FakeClock) -> Env:
    return Env(db, tmp_path / "store", clock)


def stage(env: Env, image_id: str, data: bytes, fail_after: int | None = None) -> Image:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 256 * 1024):
            if fail_after is not None and i >= fail_after:
                raise ConnectionResetError("client went away")
            yield data[i:i + 256 * 1024]

    ticket = env.data.begin(ZUUL, image_id, len(data), stage=True)
    return asyncio.run(env.data.receive(ticket, chunks()))


def status(env: Env, image_id: str) -> str:
    return env.images.get(ZUUL, image_id).status


def test_stage_then_import_checksums_and_stores_the_data(env: Env) -> None:
    data = os.urandom(5 * MiB + 7)
    image = new(env)
    staged = stage(env, image.id, data)
    assert staged.status == "uploading" and staged.size == len(data)
    assert staged.checksum is None and list(env.store.blobs()) == []
    assert env.store.staged(image.id) == len(data)
    ImageImports(env.data).start(ZUUL, image.id, GLANCE_DIRECT)
    wait_for("the import to end", lambda: status(env, image.id) == "active")
    done = env.images.get(ZUUL, image.id)
    assert done.checksum == hashlib.md5(data).hexdigest()
    assert done.os_hash_algo == "sha512"
    assert done.os_hash_value == hashlib.sha512(data).hexdigest()
    assert env.store.staged(image.id) is None  # moved, not copied
    got = env.data.download(ZUUL, image.id, None)
    assert got is not None and b"".join(got.chunks) == data


def test_import_refuses_images_in_the_wrong_state(env: Env) -> None:
    imports = ImageImports(env.data)
    image = new(env)
    with pytest.raises(Conflict, match="staged before"):
        imports.start(ZUUL, image.id, GLANCE_DIRECT)  # queued: nothing staged
    stage(env, image.id, b"disk")
    with pytest.raises(Conflict):
        stage(env, image.id, b"again")  # staged already
    with pytest.raises(NotFound):  # another project's private image
        imports.start(CI, image.id, GLANCE_DIRECT)
    imports.start(ZUUL, image.id, GLANCE_DIRECT)
    wait_for("the import to end", lambda: status(env, image.id) == "active")
    with pytest.raises(Conflict, match="status active"):
        imports.start(ZUUL, image.id, GLANCE_DIRECT)
    bare = new(env, disk_format=None, container_format=None)
    stage(env, bare.id, b"disk")
    with pytest.raises(Conflict, match="container_format"):
        imports.start(ZUUL, bare.id, GLANCE_DIRECT)


@pytest.mark.parametrize("body,message", [
    ({}, "'method' field"), ({"method": {}}, "'name' field"), (None, "JSON object"),
    ({"method": {"name": "web-download", "uri": "http://x"}}, "not supported"),
    ({"method": {"name": "copy-image"}}, "not supported"),
    ({"method": {"name": "nonsense"}}, "Unknown import method"),
    ({"method": {"name": "glance-direct"}, "all_stores": "yes"}, "boolean"),
    ({"method": {"name": "glance-direct"}, "stores": ["fast"]}, "Multi backend")])
def test_import_bodies_glance_refuses(body: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        check_body(body)


def test_stage_has_the_uploads_limits(db: Database, tmp_path: Path, clock: FakeClock) -> None:
    env = Env(db, tmp_path, clock, bytes=3 * MiB, max_size=2 * MiB)
    image = new(env)
    with pytest.raises(OverLimit, match="maximum image size"):
        stage(env, image.id, os.urandom(2 * MiB + 1))
    assert status(env, image.id) == "queued" and env.store.staged(image.id) is None
    stage(env, image.id, os.urandom(2 * MiB))
    other = new(env)  # staged data counts against the quota, as Glance counts it
    with pytest.raises(OverLimit, match="quota"):
        stage(env, other.id, os.urandom(2 * MiB))
    assert status(env, other.id) == "queued"


def test_interrupted_stage_is_killed_and_leaves_nothing(env: Env) -> None:
    image = new(env)
    with pytest.raises(ConnectionResetError):
        stage(env, image.id, os.urandom(4 * MiB), fail_after=2 * MiB)
    assert status(env, image.id) == "killed"
    assert list(env.store.tmp.iterdir()) == [] and env.store.staged(image.id) is None


def test_restart_kills_half_done_stages_and_imports_but_keeps_complete_stages(
        env: Env, db: Database) -> None:
    half = new(env, name="half")
    env.data.begin(ZUUL, half.id, None, stage=True)
    env.store.writer(half.id).write([b"half"])
    complete = new(env, name="complete")
    stage(env, complete.id, b"whole")
    importing = new(env, name="importing")
    stage(env, importing.id, b"being imported")
    with db.write() as s:  # as a controller that died mid-import leaves it
        row = s.get(Image, importing.id)
        assert row is not None
        row.status, row.upload_owner = IMAGE.next("uploading", "import"), "ctl-1"
    restarted = ImageData(db, env.images, env.store, env.config, env.data.clock, "ctl-1")
    assert restarted.recover() == 2
    assert status(env, half.id) == "killed" and status(env, importing.id) == "killed"
    assert env.store.staged(importing.id) is None and list(env.store.tmp.iterdir()) == []
    assert status(env, complete.id) == "uploading" and env.store.staged(complete.id) == 5


def test_staged_data_not_imported_is_reaped_and_deleted_images_lose_theirs(
        env: Env, clock: FakeClock) -> None:
    waiting = new(env, name="waiting")
    stage(env, waiting.id, b"staged")
    gone = new(env, name="gone")
    stage(env, gone.id, b"staged too")
    env.images.delete(ZUUL, gone.id)
    assert env.data.collect() == 1 and env.store.staged(gone.id) is None
    assert env.store.staged(waiting.id) == 6
    clock.advance(env.config.stale_upload_seconds + 1)
    assert env.data.reap() == 1
    assert status(env, waiting.id) == "killed" and env.store.staged(waiting.id) is None
    assert env.images.get(ZUUL, waiting.id).size is None  # counts against no quota


def test_the_owner_deactivates_and_reactivates_its_image(env: Env) -> None:
    image = new(env)
    with pytest.raises(Forbidden, match="status 'queued'"):
        env.images.set_status(ZUUL, image.id, "deactivate")
    env.upload(ZUUL, image.id, b"disk")
    assert env.images.set_status(ZUUL, image.id, "deactivate").status == "deactivated"
    assert env.images.set_status(ZUUL, image.id, "deactivate").status == "deactivated"
    env.images.update(ZUUL, image.id, {"visibility": "community"}, [])
    with pytest.raises(Forbidden):  # another project sees it, but it is not its image
        env.images.set_status(CI, image.id, "reactivate")
    assert env.images.set_status(ZUUL, image.id, "reactivate").status == "active"


@pytest.mark.parametrize("key", ["os_glance_import_task", "os_glance_x", "location",
                                 "deleted"])
def test_reserved_attributes_are_refused(env: Env, key: str) -> None:
    with pytest.raises(Forbidden, match=f"Attribute '{key}' is reserved"):
        new(env, **{key: "x"})
    image = new(env)
    with pytest.raises(Forbidden, match="is reserved"):
        env.images.update(ZUUL, image.id, {key: "x"}, [])
    with pytest.raises(Forbidden, match="is reserved"):
        env.images.update(ZUUL, image.id, {}, [key])


def test_v20_patch_becomes_v21() -> None:
    ops = [{"replace": "/name", "value": "n"}, {"add": "/k", "value": "v"},
           {"remove": "/old"}]
    assert patch.from_v20(ops) == [{"op": "replace", "path": "/name", "value": "n"},
                                   {"op": "add", "path": "/k", "value": "v"},
                                   {"op": "remove", "path": "/old"}]
    for bad in ([{"value": 1}], [{"add": "/a", "remove": "/b"}], {"replace": "/x"}, ["x"]):
        with pytest.raises(BadRequest):
            patch.from_v20(bad)


def names(env: Env, **params: str) -> set[str]:
    tags = params.pop("tags", "")
    return {i.name for i in env.images.list_images(
        ZUUL, query(tags=tags.split(",") if tags else None, **params))[0]}


def test_list_filters(env: Env, clock: FakeClock) -> None:
    small = new(env, name="small", tags=["a", "b"], disk_format="raw", ci_label="x")
    env.upload(ZUUL, small.id, b"s" * 100)
    clock.advance(60)
    big = new(env, name="big", tags=["a"], container_format="ovf", protected=True)
    env.upload(ZUUL, big.id, b"b" * 5000)
    clock.advance(60)
    new(env, name="hidden", os_hidden=True)
    new(env, name="empty")
    assert names(env) == {"small", "big", "empty"}
    assert names(env, os_hidden="true") == {"hidden"}
    assert names(env, size_min="100", size_max="4999") == {"small"}
    assert names(env, size_min="101") == {"big"}
    assert names(env, tags="a") == {"small", "big"}
    assert names(env, tags="a,b") == {"small"}  # every tag must match
    assert names(env, disk_format="raw") == {"small"}
    assert names(env, disk_format="in:raw,qcow2") == {"small", "big", "empty"}
    assert names(env, container_format="ovf") == {"big"}
    assert names(env, protected="true") == {"big"}
    assert names(env, protected="False") == {"small", "empty"}
    assert names(env, name='in:small,"big"') == {"small", "big"}
    assert names(env, status="in:queued,active", owner="p-zuul") == {"small", "big", "empty"}
    assert names(env, owner="p-ci") == set()
    assert names(env, ci_label="x") == {"small"}  # an extra property
    odd = new(env, name="odd", **{'quo"te': 'v"1', "café": "crème", "a.b": "c"})
    for key, value in (('quo"te', 'v"1'), ("café", "crème"), ("a.b", "c")):
        assert names(env, **{key: value}) == {"odd"}, key
        assert names(env, **{key: value + "x"}) == set(), key
    env.images.delete(ZUUL, odd.id)
    when = isoformat(big.created_at)
    assert names(env, created_at=f"lt:{when}") == {"small"}
    assert names(env, created_at=f"gte:{when}") == {"big", "empty"}
    assert names(env, created_at=f"gt:{when}") == {"empty"}
    assert names(env, created_at=f"neq:{isoformat(small.created_at)}") == {"big", "empty"}
    later = isoformat(big.updated_at + dt.timedelta(seconds=1))
    assert names(env, updated_at=f"lte:{later}") == {"small", "big"}
    for bad in ({"size_min": "big"}, {"protected": "maybe"}, {"os_hidden": "yes"},
                {"created_at": "gt:yesterday"}, {"visibility": "secret"},
                {"member_status": "bored"}, {"changes-since": "2020-01-01T00:00:00Z"}):
        with pytest.raises(BadRequest):
            names(env, **bad)


def test_member_status_filter(env: Env) -> None:
    shared = new(env, name="shared", visibility="shared")
    env.images.add_member(ZUUL, shared.id, "p-ci")

    def seen(**params: str) -> set[str]:
        return {i.name for i in env.images.list_images(CI, query(**params))[0]}

    assert seen(visibility="shared") == set()  # accepted by default
    assert seen(visibility="shared", member_status="pending") == {"shared"}
    assert seen(visibility="shared", member_status="all") == {"shared"}
    env.images.set_member_status(CI, shared.id, "p-ci", "rejected")
    assert seen(visibility="shared", member_status="rejected") == {"shared"}
    assert seen(visibility="shared", member_status="pending") == set()


def test_an_import_that_fails_leaves_the_image_killed(env: Env) -> None:
    image = new(env)
    stage(env, image.id, b"staged data")
    env.store.discard_staged(image.id)  # as a lost staging area would
    ImageImports(env.data).start(ZUUL, image.id, GLANCE_DIRECT)
    wait_for("the import to fail", lambda: status(env, image.id) == "killed")
    assert env.images.get(ZUUL, image.id).size is None and list(env.store.blobs()) == []
