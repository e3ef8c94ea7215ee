"""Image records and the data path, on SQLite and PostgreSQL, with a filesystem store."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infracloud.core.clock import FakeClock
from infracloud.core.context import Caller
from infracloud.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    OverLimit,
    RangeNotSatisfiable,
)
from infracloud.core.settings import ImageQuotaConfig, ImagesConfig
from infracloud.core.states import IMAGE
from infracloud.images.data import ImageData, parse_range
from infracloud.images.filters import parse, split_quoted
from infracloud.images.service import ImageService, ListQuery
from infracloud.images.store import FilesystemStore
from infracloud.store import Database

ZUUL = Caller("u-zuul", "p-zuul", frozenset({"member", "reader"}))
CI = Caller("u-ci", "p-ci", frozenset({"member", "reader"}))
ADMIN = Caller("u-admin", "p-admin", frozenset({"admin", "member", "reader"}))
MiB = 1024 * 1024


class Env:
    def __init__(self, db: Database, root: Path, clock: FakeClock, **limits: int) -> None:
        quota = ImageQuotaConfig(images=limits.get("images", 100),
                                 bytes=limits.get("bytes", 1 << 40))
        self.config = ImagesConfig(store_path=root, quota=quota,
                                   max_image_size=limits.get("max_size", 1 << 40),
                                   gc_grace_seconds=0)
        self.store = FilesystemStore(root)
        self.images = ImageService(db, self.config, clock)
        self.data = ImageData(db, self.images, self.store, self.config, clock, "ctl-1")

    def upload(self, caller: Caller, image_id: str, data: bytes, declared: int | None = None,
               chunk: int = 256 * 1024, fail_after: int | None = None):  # type: ignore[no-untyped-def]
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(data), chunk):
                if fail_after is not None and i >= fail_after:
                    raise ConnectionResetError("client went away")
                yield data[i:i + chunk]

        ticket = self.data.begin(caller, image_id, len(data) if declared is None else declared)
        return asyncio.run(self.data.receive(ticket, chunks()))


@pytest.fixture
def env(db: Database, tmp_path: Path, clock: FakeClock) -> Env:
    return Env(db, tmp_path / "store", clock)


def new(env: Env, caller: Caller = ZUUL, **body):  # type: ignore[no-untyped-def]
    body.setdefault("name", "img")
    body.setdefault("disk_format", "qcow2")
    body.setdefault("container_format", "bare")
    return env.images.create(caller, body)


def test_upload_computes_checksums_while_streaming(env: Env) -> None:
    data = os.urandom(9 * MiB + 123)  # more than two batches and a partial one
    image = new(env)
    assert image.status == "queued"
    done = env.upload(ZUUL, image.id, data)
    assert done.status == "active" and done.size == len(data)
    assert done.checksum == hashlib.md5(data).hexdigest()
    assert done.os_hash_algo == "sha512"
    assert done.os_hash_value == hashlib.sha512(data).hexdigest()
    got = env.data.download(ZUUL, image.id, None)
    assert got is not None and b"".join(got.chunks) == data
    assert list(env.store.tmp.iterdir()) == []


def test_interrupted_upload_is_killed_and_leaves_no_file(env: Env) -> None:
    image = new(env)
    with pytest.raises(ConnectionResetError):
        env.upload(ZUUL, image.id, os.urandom(10 * MiB), fail_after=5 * MiB)
    assert env.images.get(ZUUL, image.id).status == "killed"
    assert list(env.store.tmp.iterdir()) == [] and list(env.store.blobs()) == []
    with pytest.raises(Conflict):
        env.upload(ZUUL, image.id, b"again")


def test_size_mismatch_kills_the_image(env: Env) -> None:
    image = new(env)
    with pytest.raises(BadRequest, match="size mismatch"):
        env.upload(ZUUL, image.id, b"x" * 1000, declared=2000)
    assert env.images.get(ZUUL, image.id).status == "killed"
    assert list(env.store.blobs()) == []


def test_upload_only_to_queued_images(env: Env) -> None:
    image = new(env)
    env.upload(ZUUL, image.id, b"data")
    with pytest.raises(Conflict):
        env.upload(ZUUL, image.id, b"more data")
    with pytest.raises(Forbidden):
        env.upload(CI, new(env, visibility="public", caller=ADMIN).id, b"x")


def test_maximum_image_size(db: Database, tmp_path: Path, clock: FakeClock) -> None:
    env = Env(db, tmp_path, clock, max_size=MiB)
    image = new(env)
    with pytest.raises(OverLimit, match="maximum image size"):
        env.upload(ZUUL, image.id, b"x" * (MiB + 1))  # declared up front
    assert env.images.get(ZUUL, image.id).status == "queued"
    with pytest.raises(OverLimit, match="maximum image size"):
        env.upload(ZUUL, image.id, b"x" * (2 * MiB), declared=MiB)  # found while streaming
    assert env.images.get(ZUUL, image.id).status == "queued"
    assert list(env.store.tmp.iterdir()) == []
    env.upload(ZUUL, image.id, b"x" * MiB)


def test_byte_and_count_quotas(db: Database, tmp_path: Path, clock: FakeClock) -> None:
    env = Env(db, tmp_path, clock, bytes=3 * MiB, images=3)
    first, second = new(env), new(env)
    env.upload(ZUUL, first.id, os.urandom(2 * MiB))
    with pytest.raises(OverLimit, match="quota"):
        env.upload(ZUUL, second.id, os.urandom(2 * MiB))
    assert env.images.get(ZUUL, second.id).status == "queued"
    env.upload(ZUUL, second.id, os.urandom(MiB))
    assert env.images.usage("p-zuul") == (2, 3 * MiB)
    new(env)
    with pytest.raises(OverLimit, match="Quota exceeded for images"):
        new(env)
    new(env, caller=CI)  # quotas are per project


def test_restart_kills_this_controllers_uploads(env: Env, db: Database) -> None:
    image = new(env)
    ticket = env.data.begin(ZUUL, image.id, None)
    w = env.store.writer(image.id)
    w.write([b"half"])
    other = new(env)
    env.data.begin(ZUUL, other.id, None)
    assert env.images.get(ZUUL, image.id).status == "saving"
    restarted = ImageData(db, env.images, env.store, env.config, env.data.clock, "ctl-1")
    assert restarted.recover() == 2
    assert env.images.get(ZUUL, image.id).status == "killed"
    assert list(env.store.tmp.iterdir()) == []
    assert ticket.holder == "ctl-1"


def test_stale_uploads_of_other_controllers_are_reaped(env: Env, clock: FakeClock) -> None:
    image = new(env)
    env.data.begin(ZUUL, image.id, None)
    elsewhere = ImageData(env.data.db, env.images, env.store, env.config, clock, "ctl-2")
    assert elsewhere.recover() == 0  # not its upload
    assert elsewhere.reap() == 0  # still fresh
    clock.advance(env.config.stale_upload_seconds + 1)
    assert elsewhere.reap() == 1
    assert env.images.get(ZUUL, image.id).status == "killed"


def test_identical_images_share_data_until_both_are_deleted(env: Env) -> None:
    data = os.urandom(MiB)
    a, b = new(env, name="a"), new(env, name="b")
    env.upload(ZUUL, a.id, data)
    env.upload(ZUUL, b.id, data)
    assert len(list(env.store.blobs())) == 1
    env.images.delete(ZUUL, a.id)
    assert env.data.collect() == 0
    got = env.data.download(ZUUL, b.id, None)
    assert got is not None and b"".join(got.chunks) == data
    env.images.delete(ZUUL, b.id)
    assert env.data.collect() == 1
    assert list(env.store.blobs()) == []


def test_garbage_collection_waits_for_the_grace_period(env: Env) -> None:
    env.config.gc_grace_seconds = 3600
    image = new(env)
    env.upload(ZUUL, image.id, b"young data")
    env.images.delete(ZUUL, image.id)
    assert env.data.collect() == 0
    (blob,) = env.store.blobs()
    old = time.time() - 7200
    os.utime(env.store.path_of(blob.key), (old, old))
    assert env.data.collect() == 1


def test_download_ranges_and_queued_images(env: Env) -> None:
    data = bytes(range(256)) * 4096
    image = new(env)
    assert env.data.download(ZUUL, image.id, None) is None
    env.upload(ZUUL, image.id, data)
    part = env.data.download(ZUUL, image.id, "bytes=100-199")
    assert part is not None and part.partial and (part.start, part.length) == (100, 100)
    assert b"".join(part.chunks) == data[100:200]
    tail = env.data.download(ZUUL, image.id, "bytes=-10")
    assert tail is not None and b"".join(tail.chunks) == data[-10:]
    with pytest.raises(RangeNotSatisfiable):
        env.data.download(ZUUL, image.id, f"bytes={len(data)}-")


@pytest.mark.parametrize("header,expected", [
    (None, (0, 1000)), ("bytes=0-", (0, 1000)), ("bytes=10-19", (10, 20)),
    ("bytes=990-5000", (990, 1000)), ("bytes=-100", (900, 1000)),
    ("bytes=0-1,5-9", (0, 1000)), ("items=0-5", (0, 1000))])
def test_parse_range(header: str | None, expected: tuple[int, int]) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=1000-", "bytes=5-2", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_visibility(env: Env) -> None:
    private = new(env, name="private", visibility="private")
    shared = new(env, name="shared", visibility="shared")
    community = new(env, name="community", visibility="community")
    public = new(env, ADMIN, name="public", visibility="public")

    def names(caller: Caller, **q) -> list[str]:  # type: ignore[no-untyped-def]
        return sorted(i.name for i in env.images.list_images(caller, query(**q))[0])

    assert names(ZUUL) == ["community", "private", "public", "shared"]
    assert names(CI) == ["public"]
    assert names(CI, visibility="community") == ["community"]
    for hidden in (private, shared):
        with pytest.raises(NotFound):
            env.images.get(CI, hidden.id)
    assert env.images.get(CI, community.id).name == "community"
    assert env.images.get(CI, public.id).name == "public"
    # sharing: visible to the member at once, listed once accepted
    env.images.add_member(ZUUL, shared.id, "p-ci")
    assert env.images.get(CI, shared.id).name == "shared"
    assert names(CI) == ["public"]
    assert names(CI, member_status="pending") == ["public", "shared"]
    with pytest.raises(Forbidden):
        env.images.set_member_status(ZUUL, shared.id, "p-ci", "accepted")
    env.images.set_member_status(CI, shared.id, "p-ci", "accepted")
    assert names(CI) == ["public", "shared"]
    with pytest.raises(Forbidden):
        env.images.add_member(ZUUL, private.id, "p-ci")
    assert names(ADMIN) == ["community", "private", "public", "shared"]


def test_only_admins_publish_and_others_cannot_modify(env: Env) -> None:
    with pytest.raises(Forbidden):
        new(env, visibility="public")
    image = new(env)
    with pytest.raises(Forbidden):
        env.images.update(ZUUL, image.id, {"visibility": "public"}, [])
    env.images.update(ADMIN, image.id, {"visibility": "public"}, [])
    with pytest.raises(Forbidden):
        env.images.update(CI, image.id, {"name": "mine now"}, [])
    with pytest.raises(Forbidden):
        env.images.delete(CI, image.id)


def test_protected_images_cannot_be_deleted(env: Env) -> None:
    image = new(env, protected=True)
    with pytest.raises(Forbidden, match="protected"):
        env.images.delete(ZUUL, image.id)
    env.images.update(ZUUL, image.id, {"protected": False}, [])
    env.images.delete(ZUUL, image.id)
    with pytest.raises(NotFound):
        env.images.get(ZUUL, image.id)


def test_properties_round_trip_and_read_only_fields(env: Env) -> None:
    image = new(env, nodepool_build_id="0001", **{"owner_specified.openstack.md5": ""})
    assert image.properties == {"nodepool_build_id": "0001", "owner_specified.openstack.md5": ""}
    updated = env.images.update(ZUUL, image.id, {"k": "v", "min_ram": 512}, ["nodepool_build_id"])
    assert updated.properties == {"owner_specified.openstack.md5": "", "k": "v"}
    assert updated.min_ram == 512
    for bad in ({"status": "active"}, {"checksum": "x"}, {"size": 1}):
        with pytest.raises(Forbidden):
            env.images.update(ZUUL, image.id, bad, [])
    with pytest.raises(BadRequest):
        env.images.update(ZUUL, image.id, {"k": 5}, [])
    with pytest.raises(BadRequest):
        new(env, disk_format="exe")
    with pytest.raises(Conflict):
        env.images.update(ZUUL, image.id, {}, ["missing"])


def test_listing_pages_filters_and_sorting(env: Env, clock: FakeClock) -> None:
    made = []
    for n in range(7):
        made.append(new(env, name=f"img-{n}", tags=["even"] if n % 2 == 0 else []))
        clock.advance(1)
    seen, marker = [], None
    while True:
        page, marker = env.images.list_images(ZUUL, query(limit=3, marker=marker))
        seen += [i.name for i in page]
        if marker is None:
            break
    assert seen == [f"img-{n}" for n in reversed(range(7))]
    asc, _ = env.images.list_images(ZUUL, query(sort_key="name", sort_dir="asc", limit=2,
                                                marker=made[2].id))
    assert [i.name for i in asc] == ["img-3", "img-4"]
    ids = f"in:{made[1].id},{made[5].id}"
    assert sorted(i.name for i in env.images.list_images(ZUUL, query(id=ids))[0]) == [
        "img-1", "img-5"]
    assert len(env.images.list_images(ZUUL, query(name='img-0'))[0]) == 1
    assert {i.name for i in env.images.list_images(ZUUL, query(tags=["even"]))[0]} == {
        "img-0", "img-2", "img-4", "img-6"}
    env.images.update(ZUUL, made[0].id, {"os_hidden": True}, [])
    assert "img-0" not in {i.name for i in env.images.list_images(ZUUL, query())[0]}
    assert [i.name for i in env.images.list_images(ZUUL, query(os_hidden="true"))[0]] == [
        "img-0"]
    with pytest.raises(BadRequest):
        env.images.list_images(ZUUL, query(sort_key="password"))


def query(limit: int = 200, marker: str | None = None, sort_key: str = "created_at",
          sort_dir: str = "desc", tags: list[str] | None = None, **params: str) -> ListQuery:
    """A ListQuery as the API makes it from a query string."""
    return ListQuery(parse(params, tags or []), limit=limit, marker=marker, sort_key=sort_key,
                     sort_dir=sort_dir)


def test_in_lists_with_quotes() -> None:
    assert split_quoted('a,"b,c",d') == ["a", "b,c", "d"]
    assert split_quoted("plain") == ["plain"]
    assert parse({"name": 'in:a,"b,c"'}, []).lists == {"name": ["a", "b,c"]}
    assert parse({"name": "ubuntu:24.04"}, []).lists == {"name": ["ubuntu:24.04"]}
    with pytest.raises(BadRequest):
        split_quoted('a,"b')


def test_image_state_table_is_enforced() -> None:
    assert IMAGE.next("queued", "upload") == "saving"
    assert IMAGE.next("saving", "fail") == "killed"
    with pytest.raises(Conflict):
        IMAGE.next("active", "upload")
    for state in IMAGE.states.values():
        if not state.stable:
            assert state.timeout and any(IMAGE.states[t.target].failure
                                         for t in IMAGE.transitions if t.source == state.name)
    assert "digraph image" in IMAGE.dot()


def test_client_chosen_ids_must_be_uuids_and_unique(env: Env) -> None:
    image = new(env, id="6b4e8f0e-1111-4a5b-9c6d-000000000001")
    with pytest.raises(Conflict):
        new(env, id=image.id)
    with pytest.raises(BadRequest):
        new(env, id="not-a-uuid")


def test_timestamps_use_the_clock(env: Env, clock: FakeClock) -> None:
    image = new(env)
    assert image.created_at == clock.now()
    clock.advance(60)
    assert env.images.update(ZUUL, image.id, {"name": "x"}, []).updated_at == (
        image.created_at + dt.timedelta(seconds=60))
