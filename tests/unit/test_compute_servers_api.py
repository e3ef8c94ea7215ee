"""Compute v2.1 answers as Nova 2.1 gives them, through the controller's HTTP application in
this process (no compute host: servers stay unplaced, which these routes do not need): the
create's and update's validation, the update, one metadata item, os-server-password,
os-instance-actions from the event log, nova's image proxy, the v2.0 version document and
x-compute-request-id. What needs running servers (addresses, filters) is in
tests/integration/test_compute_servers_api.py."""

from __future__ import annotations

from typing import Any

import pytest

from infracloud.compute import server_details
from tests.unit.api_env import Api, api

__all__ = ["api"]
C = "/compute/v2.1"


@pytest.fixture(scope="module")
def image(api: Api) -> str:
    r = api.client.post("/image/v2/images", headers=api.admin, json={
        "name": "base", "disk_format": "raw", "container_format": "bare",
        "visibility": "public", "min_ram": 64})
    assert r.status_code == 201, r.text
    image_id = str(r.json()["id"])
    r = api.client.put(f"/image/v2/images/{image_id}/file", content=b"disk-bytes",
                       headers={**api.admin, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    return image_id


def create(api: Api, image: str, **extra: Any) -> Any:
    return api.client.post(f"{C}/servers", headers=api.member, json={"server": {
        "name": "s1", "flavorRef": "ci.small", "imageRef": image, **extra}})


def message(r: Any, status: int = 400) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    return str(next(iter(body.values()))["message"])


def test_compute_answers_carry_x_compute_request_id(api: Api) -> None:
    for r in (api.client.get(f"{C}/flavors", headers=api.member),
              api.client.get(f"{C}/servers/nope", headers=api.member),
              api.client.get("/compute/")):
        assert r.headers["x-compute-request-id"] == r.headers["x-openstack-request-id"]
        assert r.headers["x-compute-request-id"].startswith("req-")
    assert "x-compute-request-id" not in api.client.get("/image/v2/images",
                                                        headers=api.member).headers


def test_the_v2_version_document_is_the_one_the_list_advertises(api: Api) -> None:
    listed = {v["id"]: v for v in api.client.get("/compute/").json()["versions"]}
    href = listed["v2.0"]["links"][0]["href"]
    path = href.split("://", 1)[1].split("/", 1)[1]
    for p in ("/" + path, "/" + path.rstrip("/")):
        r = api.client.get(p)
        assert r.status_code == 200, p
        doc = r.json()["version"]
        assert doc["id"] == "v2.0" and doc["status"] == listed["v2.0"]["status"]
        assert doc["links"][0] == {"rel": "self", "href": href}
        assert doc["media-types"][0]["type"] == "application/vnd.openstack.compute+json;version=2"


@pytest.mark.parametrize(("extra", "wording"), [
    ({"name": " padded"}, "Can not start or end with whitespace"),
    ({"name": ""}, "field/attribute name"),
    ({"name": "x" * 256}, "field/attribute name"),
    ({"accessIPv4": "2001:db8::1"}, "field/attribute accessIPv4"),
    ({"accessIPv6": "not-an-address"}, "field/attribute accessIPv6"),
    ({"min_count": 0}, "min_count"),
    ({"max_count": "many"}, "max_count"),
    ({"min_count": 3, "max_count": 2}, "min_count must be <= max_count"),
    ({"security_groups": [{"name": "web"}]}, "Security group web not found"),
])
def test_create_validation(api: Api, image: str, extra: dict[str, Any], wording: str) -> None:
    assert wording in message(create(api, image, **extra))


def test_min_count_alone_is_also_the_max_count(api: Api, image: str) -> None:
    """Whatever multi-create answers, min_count=2 without max_count is not a bad range."""
    r = create(api, image, min_count=2)
    assert "min_count must be" not in r.text


def test_metadata_over_its_quota_is_a_403(api: Api, image: str) -> None:
    many = {f"k{i}": "v" for i in range(129)}
    assert "Quota exceeded for metadata_items" in message(create(api, image, metadata=many), 403)
    r = create(api, image, metadata={f"k{i}": "v" for i in range(128)})
    assert r.status_code == 202, r.text
    server = r.json()["server"]["id"]
    path = f"{C}/servers/{server}/metadata"
    r = api.client.put(f"{path}/one-more", headers=api.member, json={"meta": {"one-more": "x"}})
    assert "Quota exceeded for metadata_items" in message(r, 403)
    r = api.client.post(path, headers=api.member, json={"metadata": {"k0": "changed"}})
    assert r.status_code == 200 and r.json()["metadata"]["k0"] == "changed"  # no new item
    r = api.client.put(path, headers=api.member, json={"metadata": many})
    assert "Quota exceeded for metadata_items" in message(r, 403)


def test_a_default_security_group_and_admin_pass(api: Api, image: str) -> None:
    r = create(api, image, security_groups=[{"name": "default"}], min_count="1",
               max_count="1")
    assert r.status_code == 202, r.text
    assert "adminPass" not in r.json()["server"]  # none was set: none is made up
    r = create(api, image, adminPass="s3cret-Pass")
    assert r.status_code == 202 and r.json()["server"]["adminPass"] == "s3cret-Pass"


def test_update_name_and_access_addresses(api: Api, image: str) -> None:
    r = create(api, image, accessIPv4="192.0.2.10")
    server = r.json()["server"]["id"]
    path = f"{C}/servers/{server}"
    shown = api.client.get(path, headers=api.member).json()["server"]
    assert shown["accessIPv4"] == "192.0.2.10" and shown["accessIPv6"] == ""
    r = api.client.put(path, headers=api.member, json={"server": {
        "name": "renamed", "accessIPv6": "2001:db8::10", "OS-DCF:diskConfig": "MANUAL"}})
    assert r.status_code == 200, r.text
    got = r.json()["server"]
    assert got["id"] == server and got["name"] == "renamed" and got["status"]
    assert got["accessIPv4"] == "192.0.2.10" and got["accessIPv6"] == "2001:db8::10"
    # nova's update answer at 2.1: the server without the extended attributes
    assert {"OS-DCF:diskConfig", "addresses", "created", "flavor", "hostId", "image",
            "links", "metadata", "progress", "tenant_id", "updated", "user_id"} <= set(got)
    assert not [k for k in got if k.startswith(("OS-EXT-", "OS-SRV-USG"))]
    assert "key_name" not in got and "security_groups" not in got
    assert api.client.get(path, headers=api.member).json()["server"]["name"] == "renamed"
    r = api.client.put(path, headers=api.member, json={"server": {"accessIPv4": ""}})
    assert r.status_code == 200 and r.json()["server"]["accessIPv4"] == ""  # not placed
    for body, wording in (({"server": {"name": " x"}}, "Can not start or end"),
                          ({"server": {"accessIPv4": "1.2.3"}}, "accessIPv4"),
                          ({"server": {"description": "d"}}, "Additional properties"),
                          ({"server": {"OS-DCF:diskConfig": "X"}}, "OS-DCF:diskConfig"),
                          ({"server": "x"}, "server")):
        assert wording in message(api.client.put(path, headers=api.member, json=body))
    r = api.client.put(f"{C}/servers/nope", headers=api.member, json={"server": {"name": "n"}})
    assert r.status_code == 404 and "itemNotFound" in r.json()


def test_one_metadata_item(api: Api, image: str) -> None:
    server = create(api, image, metadata={"role": "ci"}).json()["server"]["id"]
    r = api.client.get(f"{C}/servers/{server}/metadata/role", headers=api.member)
    assert r.status_code == 200 and r.json() == {"meta": {"role": "ci"}}
    r = api.client.get(f"{C}/servers/{server}/metadata/nope", headers=api.member)
    assert message(r, 404) == "Metadata item was not found"


def test_server_password(api: Api, image: str) -> None:
    server = create(api, image).json()["server"]["id"]
    path = f"{C}/servers/{server}/os-server-password"
    assert api.client.get(path, headers=api.member).json() == {"password": ""}
    member = api.services.identity.auth.validate(api.member["X-Auth-Token"]).caller
    server_details.set_password(api.services.servers, member, server, "ZW5jcnlwdGVk")
    assert api.client.get(path, headers=api.member).json() == {"password": "ZW5jcnlwdGVk"}
    r = api.client.delete(path, headers=api.member)
    assert r.status_code == 204 and r.content == b""
    assert api.client.get(path, headers=api.member).json() == {"password": ""}


def test_instance_actions_from_the_event_log(api: Api, image: str) -> None:
    r = create(api, image)
    server, create_rid = r.json()["server"]["id"], r.headers["x-openstack-request-id"]
    path = f"{C}/servers/{server}/os-instance-actions"
    r = api.client.post(f"{C}/servers/{server}/action", headers=api.member,
                        json={"os-getConsoleOutput": {}})  # not an action nova logs
    assert r.status_code == 200
    r = api.client.delete(f"{C}/servers/{server}", headers=api.member)
    assert r.status_code == 204
    delete_rid = r.headers["x-openstack-request-id"]
    api.services.events.drain()
    # the log outlives the server, as nova's does
    listed = api.client.get(path, headers=api.member).json()["instanceActions"]
    assert [(a["action"], a["request_id"]) for a in listed] == [("delete", delete_rid),
                                                                ("create", create_rid)]
    first = listed[1]
    assert first["instance_uuid"] == server and first["message"] is None
    assert first["user_id"] and first["project_id"] and first["start_time"].endswith("Z")
    one = api.client.get(f"{path}/{create_rid}", headers=api.member).json()["instanceAction"]
    assert one["action"] == "create" and "events" not in one  # events: admins', at 2.1
    admin = api.client.get(f"{path}/{create_rid}", headers=api.admin).json()["instanceAction"]
    assert admin["events"] and {"event", "start_time", "finish_time", "result",
                                "traceback"} <= set(admin["events"][0])
    r = api.client.get(f"{path}/req-unknown", headers=api.member)
    assert message(r, 404) == "Action req-unknown not found"
    r = api.client.get(f"{C}/servers/never-was/os-instance-actions", headers=api.member)
    assert r.status_code == 404


def test_image_proxy(api: Api, image: str) -> None:
    r = api.client.post("/image/v2/images", headers=api.member, json={
        "name": "pending", "disk_format": "raw", "container_format": "bare",
        "auto_disk_config": "true"})
    pending = r.json()["id"]
    detail = api.client.get(f"{C}/images/detail", headers=api.member).json()["images"]
    by_id = {i["id"]: i for i in detail}
    active = by_id[image]
    assert active["status"] == "ACTIVE" and active["progress"] == 100
    assert active["OS-EXT-IMG-SIZE:size"] == len(b"disk-bytes") and active["minRam"] == 64
    assert active["minDisk"] == 0 and active["metadata"] == {}
    assert active["created"].endswith("Z") and active["updated"].endswith("Z")
    assert [link["rel"] for link in active["links"]] == ["self", "bookmark", "alternate"]
    assert by_id[pending]["status"] == "SAVING" and by_id[pending]["progress"] == 25
    assert by_id[pending]["OS-DCF:diskConfig"] == "AUTO"
    brief = api.client.get(f"{C}/images", headers=api.member).json()["images"]
    assert {frozenset(i) for i in brief} == {frozenset({"id", "name", "links"})}
    page = api.client.get(f"{C}/images?limit=1", headers=api.member).json()
    assert len(page["images"]) == 1 and page["images_links"][0]["rel"] == "next"
    rest = api.client.get(page["images_links"][0]["href"].split("testserver", 1)[-1],
                          headers=api.member).json()["images"]
    assert page["images"][0]["id"] not in {i["id"] for i in rest}
    only = api.client.get(f"{C}/images/detail?minRam=64", headers=api.member).json()["images"]
    assert [i["id"] for i in only] == [image]
    later = "2999-01-01T00:00:00Z"
    assert api.client.get(f"{C}/images/detail?changes-since={later}",
                          headers=api.member).json()["images"] == []
    assert api.client.get(f"{C}/images?type=snapshot", headers=api.member).json() == {
        "images": []}
    r = api.client.get(f"{C}/images/{image}", headers=api.member)
    assert r.status_code == 200 and r.json()["image"]["id"] == image
    r = api.client.delete(f"{C}/images/{pending}", headers=api.member)
    assert r.status_code == 204
    r = api.client.get(f"{C}/images/{pending}", headers=api.member)
    assert message(r, 404) == "Image not found."
    assert api.client.get(f"{C}/images/detail?minRam=x", headers=api.member).status_code == 400


def test_keypair_import_checks_the_key(api: Api) -> None:
    path = f"{C}/os-keypairs"
    bad = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== me"  # base64, but no RSA key
    r = api.client.post(path, headers=api.member, json={"keypair": {"name": "k1",
                                                                    "public_key": bad}})
    assert message(r) == "Keypair data is invalid: failed to generate fingerprint"
    huge = "ssh-ed25519 " + "A" * 20000
    r = api.client.post(path, headers=api.member, json={"keypair": {"name": "k2",
                                                                    "public_key": huge}})
    assert "longer than" in message(r)


def test_a_projects_own_metadata_items_quota(api: Api, image: str) -> None:
    """A project with a metadata_items quota of its own (os-quota-sets) is held to it."""
    from infracloud.store.models import QuotaLimit

    project = api.services.identity.auth.validate(api.member["X-Auth-Token"]).caller.project_id
    assert project is not None
    with api.services.db.write() as s:
        s.add(QuotaLimit(project_id=project, resource="metadata_items", hard_limit=2))
    try:
        r = create(api, image, metadata={"a": "1", "b": "2", "c": "3"})
        assert "limit is 2 metadata_items" in message(r, 403)
        r = create(api, image, metadata={"a": "1", "b": "2"})
        assert r.status_code == 202, r.text
        path = f"{C}/servers/{r.json()['server']['id']}/metadata"
        r = api.client.post(path, headers=api.member, json={"metadata": {"c": "3"}})
        assert "Quota exceeded for metadata_items" in message(r, 403)
    finally:
        with api.services.db.write() as s:
            s.delete(s.get(QuotaLimit, (project, "metadata_items")))


def test_image_metadata_proxy(api: Api) -> None:
    r = api.client.post("/image/v2/images", headers=api.member, json={
        "name": "meta", "disk_format": "raw", "container_format": "bare", "os_distro": "x"})
    path = f"{C}/images/{r.json()['id']}/metadata"
    assert api.client.get(path, headers=api.member).json() == {"metadata": {"os_distro": "x"}}
    r = api.client.post(path, headers=api.member, json={"metadata": {"k0": "", "k1": "v1"}})
    assert r.json() == {"metadata": {"os_distro": "x", "k0": "", "k1": "v1"}}
    r = api.client.put(f"{path}/k1", headers=api.member, json={"meta": {"k1": "v1.1"}})
    assert r.status_code == 200 and r.json() == {"meta": {"k1": "v1.1"}}
    assert api.client.get(f"{path}/k1", headers=api.member).json() == {"meta": {"k1": "v1.1"}}
    assert message(api.client.put(f"{path}/k1", headers=api.member,
                                  json={"meta": {"k2": "v"}})) == "Request body and URI mismatch"
    r = api.client.put(path, headers=api.member, json={"metadata": {"only": "this"}})
    assert r.json() == {"metadata": {"only": "this"}}
    assert api.client.get(path, headers=api.member).json() == {"metadata": {"only": "this"}}
    assert api.client.delete(f"{path}/only", headers=api.member).status_code == 204
    assert api.client.get(path, headers=api.member).json() == {"metadata": {}}
    assert message(api.client.delete(f"{path}/only", headers=api.member),
                   404) == "Invalid metadata key"
    assert api.client.get(f"{path}/only", headers=api.member).status_code == 404
    r = api.client.post(path, headers=api.member, json={"metadata": {"name": "renamed"}})
    assert "reserved" in message(r, 403)
    many = {f"k{i}": "v" for i in range(129)}
    r = api.client.put(path, headers=api.member, json={"metadata": many})
    assert message(r, 403) == "Image metadata limit exceeded"
    r = api.client.get(f"{C}/images/nope/metadata", headers=api.member)
    assert message(r, 404) == "Image not found."
