"""What os-server-groups, os-flavor-access and os-extra_specs answer to odd input and to the
wrong caller (the controller's app in this process: no servers started)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit import api_env
from tests.unit.api_env import Api

api = api_env.api  # the fixture

G = "/compute/v2.1/os-server-groups"


@pytest.mark.parametrize("body", [
    {"server_group": {"name": "g", "policies": ["soft-affinity"]}},  # 2.15 and later
    {"server_group": {"name": "g", "policies": ["affinity", "anti-affinity"]}},
    {"server_group": {"name": "g", "policies": []}},
    {"server_group": {"name": "g", "policies": "affinity"}},
    {"server_group": {"name": "g", "policy": "affinity"}},  # 2.64 and later
    {"server_group": {"policies": ["affinity"]}},
    {"server_group": {"name": "", "policies": ["affinity"]}},
    {"server_group": {"name": " padded", "policies": ["affinity"]}},
    {"server_group": {"name": "tab\tin", "policies": ["affinity"]}},
    {"server_group": {"name": "x" * 256, "policies": ["affinity"]}},
    {"server_group": {"name": "g", "policies": ["affinity"], "rules": {}}},
    {"name": "g", "policies": ["affinity"]},
])
def test_a_bad_server_group_body_is_a_400(api: Api, body: Any) -> None:
    r = api.client.post(G, headers=api.member, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["badRequest"]["code"] == 400
    message = r.json()["badRequest"]["message"]
    assert message.startswith("Invalid input for field/attribute") or message.endswith(
        "is a required property"), message


def test_a_padded_group_name_in_novas_words(api: Api) -> None:
    r = api.client.post(G, headers=api.member, json={"server_group": {
        "name": "job ", "policies": ["affinity"]}})
    assert r.status_code == 400
    assert "Can not start or end with whitespace." in r.json()["badRequest"]["message"]


def test_server_group_crud_and_all_projects(api: Api) -> None:
    r = api.client.post(G, headers=api.member, json={"server_group": {
        "name": "mine", "policies": ["anti-affinity"]}})
    assert r.status_code == 200, r.text
    group = r.json()["server_group"]
    assert group == {"id": group["id"], "name": "mine", "policies": ["anti-affinity"],
                     "members": [], "metadata": {}}
    assert r.headers["OpenStack-API-Version"] == "compute 2.1"
    r = api.client.get(f"{G}?all_projects=True", headers=api.member)
    assert r.status_code == 403 and "index:all_projects" in r.json()["forbidden"]["message"]
    admin_group = api.client.post(G, headers=api.admin, json={"server_group": {
        "name": "admins", "policies": ["affinity"]}}).json()["server_group"]
    zuul = api.services.identity.directory.find_project("zuul").id
    detail = api.client.get(f"/compute/v2.1/os-quota-sets/{zuul}/detail",
                            headers=api.member).json()["quota_set"]
    assert detail["server_groups"] == {"limit": 10, "in_use": 1, "reserved": 0}
    absolute = api.client.get("/compute/v2.1/limits", headers=api.member).json()[
        "limits"]["absolute"]
    assert (absolute["maxServerGroups"], absolute["totalServerGroupsUsed"]) == (10, 1)
    mine = api.client.get(G, headers=api.member).json()["server_groups"]
    assert [g["id"] for g in mine] == [group["id"]]
    every = api.client.get(f"{G}?all_projects", headers=api.admin).json()["server_groups"]
    assert {g["id"] for g in every} >= {group["id"], admin_group["id"]}
    assert api.client.get(f"{G}/{admin_group['id']}", headers=api.member).status_code == 404
    assert api.client.get(f"{G}?limit=1&offset=0", headers=api.admin).json()[
        "server_groups"] == [next(g for g in api.client.get(G, headers=api.admin).json()[
            "server_groups"])]
    assert api.client.delete(f"{G}/{group['id']}", headers=api.member).status_code == 204
    r = api.client.get(f"{G}/{group['id']}", headers=api.member)
    assert r.status_code == 404 and r.json()["itemNotFound"]["message"] == (
        f"Instance group {group['id']} could not be found.")


def test_a_group_hint_that_is_not_a_uuid_is_a_400(api: Api) -> None:
    """Before the image is looked up, as nova's schema checks it (an unknown group is a 400
    too: test_server_groups.py)."""
    for hints in ("os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"):
        r = api.client.post("/compute/v2.1/servers", headers=api.member, json={
            "server": {"name": "s", "flavorRef": "ci.small", "imageRef": "x"},
            hints: {"group": "not-a-uuid"}})
        assert r.status_code == 400, r.text
        assert "'not-a-uuid' is not a 'uuid'" in r.json()["badRequest"]["message"]


def test_flavor_access_and_extra_specs_inputs(api: Api) -> None:
    f = api.client.post("/compute/v2.1/flavors", headers=api.admin, json={"flavor": {
        "name": "priv", "vcpus": 1, "ram": 64, "disk": 1,
        "os-flavor-access:is_public": False}}).json()["flavor"]
    fid = f["id"]
    base = f"/compute/v2.1/flavors/{fid}"
    assert f["os-flavor-access:is_public"] is False
    assert api.client.get(base, headers=api.member).status_code == 404
    assert api.client.get(f"{base}/os-extra_specs", headers=api.member).status_code == 404
    for body in ({"addTenantAccess": {}}, {"addTenantAccess": {"tenant": ""}},
                 {"addTenantAccess": {"tenant": "nope"}}, {"nonsense": {}},
                 {"addTenantAccess": {"tenant": "x"}, "removeTenantAccess": {"tenant": "x"}}):
        r = api.client.post(f"{base}/action", headers=api.admin, json=body)
        assert r.status_code == 400, (body, r.text)
    zuul = api.services.identity.directory.find_project("zuul").id
    r = api.client.post(f"{base}/action", headers=api.admin,
                        json={"addTenantAccess": {"tenant": zuul}})
    assert r.json() == {"flavor_access": [{"flavor_id": fid, "tenant_id": zuul}]}
    assert api.client.get(base, headers=api.member).json()["flavor"]["name"] == "priv"
    assert api.client.get(f"{base}/os-flavor-access", headers=api.member).status_code == 403
    r = api.client.post(f"{base}/action", headers=api.admin,
                        json={"removeTenantAccess": {"tenant": "not-on-the-list"}})
    assert r.status_code == 404
    for body in ({"extra_specs": {"a/b": "x"}}, {"extra_specs": {"k": "v" * 256}},
                 {"extra_specs": {"k": None}}, {"extra_specs": "x"}, {"specs": {}}):
        r = api.client.post(f"{base}/os-extra_specs", headers=api.admin, json=body)
        assert r.status_code == 400, (body, r.text)
    r = api.client.post(f"{base}/os-extra_specs", headers=api.admin,
                        json={"extra_specs": {"a": "1", "b": 2}})
    assert r.status_code == 200 and r.json() == {"extra_specs": {"a": "1", "b": "2"}}
    assert api.client.put(f"{base}/os-extra_specs/a", headers=api.admin,
                          json={"a": "3", "b": "4"}).status_code == 400
    r = api.client.put(f"{base}/os-extra_specs/a", headers=api.admin, json={"b": "3"})
    assert r.status_code == 400 and r.json()["badRequest"]["message"] == (
        "Request body and URI mismatch")
    assert api.client.put(f"{base}/os-extra_specs/a", headers=api.admin,
                          json={"a": "3"}).json() == {"a": "3"}
    assert api.client.get(f"{base}/os-extra_specs/a", headers=api.member).json() == {"a": "3"}
    r = api.client.delete(f"{base}/os-extra_specs/a", headers=api.admin)
    assert r.status_code == 200 and r.content == b""
    assert api.client.get(f"{base}/os-extra_specs", headers=api.member).json() == {
        "extra_specs": {"b": "2"}}
    assert api.client.delete(f"{base}/os-extra_specs/a", headers=api.admin).status_code == 404
