"""Identity v3 through the real clients (openstacksdk, the `openstack` CLI) and raw HTTP,
against a demo controller serving TLS on 127.0.0.1."""

from __future__ import annotations

import json
import uuid

import openstack.exceptions
import pytest
import yaml

from tests.servers import Running, openstack_cli, sdk

SERVED = {"identity", "compute", "image", "network", "block-storage", "baremetal"}


def _password(demo: Running, cloud: str) -> str:
    return yaml.safe_load(demo.clouds_yaml.read_text())["clouds"][cloud]["auth"]["password"]


def _token(demo: Running, user: str, cloud: str, project: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": _password(demo, cloud)}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    with demo.http() as c:
        r = c.post("/identity/v3/auth/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


def test_cli_token_issue(demo: Running) -> None:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "token", "issue", "-f", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["id"] and out["project_id"] and out["user_id"] and out["expires"]


def test_cli_catalog_lists_exactly_the_served_services(demo: Running) -> None:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "catalog", "list",
                      "-f", "json")
    assert r.returncode == 0, r.stderr
    services = {s["Type"]: s for s in json.loads(r.stdout)}
    assert set(services) == SERVED
    endpoints = services["identity"]["Endpoints"]
    assert {(e["interface"], e["url"]) for e in endpoints} == {
        (i, f"{demo.base_url}/identity") for i in ("public", "internal", "admin")}


def test_cli_admin_lists_projects(demo: Running) -> None:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud-admin", "project", "list",
                      "-f", "json")
    assert r.returncode == 0, r.stderr
    assert {"admin", "zuul", "ci"} <= {p["Name"] for p in json.loads(r.stdout)}


def test_cli_admin_creates_project_user_and_grant(demo: Running) -> None:
    name = f"proj-{uuid.uuid4().hex[:6]}"
    admin = ("--os-cloud", "infracloud-admin")
    assert openstack_cli(demo.clouds_yaml, *admin, "project", "create", name).returncode == 0
    r = openstack_cli(demo.clouds_yaml, *admin, "user", "create", "--password", "pw-1234",
                      "--project", name, f"{name}-user", "-f", "json")
    assert r.returncode == 0, r.stderr
    r = openstack_cli(demo.clouds_yaml, *admin, "role", "add", "--project", name, "--user",
                      f"{name}-user", "member")
    assert r.returncode == 0, r.stderr
    r = openstack_cli(demo.clouds_yaml, *admin, "role", "assignment", "list", "--user",
                      f"{name}-user", "--names", "-f", "json")
    assert r.returncode == 0, r.stderr
    assert [(a["Role"], a["Project"]) for a in json.loads(r.stdout)] == [
        ("member", f"{name}@Default")]
    # the new user can log in to the new project
    conn = sdk(demo.clouds_yaml, "infracloud", auth={
        "username": f"{name}-user", "password": "pw-1234", "project_name": name})
    assert conn.current_project_id == openstack_cli(
        demo.clouds_yaml, *admin, "project", "show", name, "-f", "value", "-c", "id"
    ).stdout.strip()


def test_sdk_admin_manages_identity(demo: Running) -> None:
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    project = admin.identity.create_project(name=name, description="made by the sdk")
    user = admin.identity.create_user(name=f"{name}-u", password="pw-5678",
                                      default_project_id=project.id)
    role = admin.identity.find_role("reader")
    admin.identity.assign_project_role_to_user(project, user, role)
    assert admin.identity.validate_user_has_project_role(project, user, role)
    assert admin.identity.find_project(name).id == project.id
    assert admin.identity.get_user(user.id).default_project_id == project.id
    # a reader logs in; no default project given, the token is scoped to the default one
    conn = sdk(demo.clouds_yaml, "infracloud", auth={
        "username": f"{name}-u", "password": "pw-5678", "project_name": name})
    assert conn.current_project_id == project.id
    admin.identity.update_project(project, enabled=False)
    with pytest.raises(openstack.exceptions.SDKException, match="HTTP 401"):
        sdk(demo.clouds_yaml, "infracloud", auth={
            "username": f"{name}-u", "password": "pw-5678", "project_name": name}).authorize()
    admin.identity.delete_user(user)
    admin.identity.delete_project(project)
    assert admin.identity.find_project(name) is None


def test_sdk_catalog_and_token(demo: Running) -> None:
    conn = sdk(demo.clouds_yaml, "infracloud")
    access = conn.session.auth.get_access(conn.session)
    assert access.project_name == "zuul"
    assert sorted(access.role_names) == ["member", "reader"]
    assert {s["type"] for s in access.service_catalog.catalog} == SERVED
    assert conn.session.get_endpoint(service_type="identity", interface="public") == (
        demo.base_url + "/identity")


def test_member_cannot_list_users(demo: Running) -> None:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "user", "list")
    assert r.returncode != 0
    assert "403" in r.stderr and "not authorized" in r.stderr and "identity:list_users" in r.stderr
    with demo.http() as c:
        resp = c.get("/identity/v3/users",
                     headers={"X-Auth-Token": _token(demo, "zuul", "infracloud", "zuul")})
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == 403 and resp.json()["error"]["title"] == "Forbidden"


def test_wrong_password_is_401(demo: Running) -> None:
    r = openstack_cli(demo.clouds_yaml, "--os-cloud", "infracloud", "--os-password", "wrong",
                      "token", "issue")
    assert r.returncode != 0
    assert "The request you have made requires authentication. (HTTP 401)" in r.stderr
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "zuul", "domain": {"name": "Default"}, "password": "wrong"}}}}}
    with demo.http() as c:
        resp = c.post("/identity/v3/auth/tokens", json=body)
    assert resp.status_code == 401
    assert resp.json() == {"error": {"code": 401, "title": "Unauthorized",
                                     "message": "The request you have made requires "
                                                "authentication."}}
    assert resp.headers["WWW-Authenticate"].startswith("Keystone uri=")


def test_revoked_token_is_401(demo: Running) -> None:
    token = _token(demo, "zuul", "infracloud", "zuul")
    headers = {"X-Auth-Token": token}
    with demo.http() as c:
        assert c.get("/identity/v3/auth/projects", headers=headers).status_code == 200
        r = c.delete("/identity/v3/auth/tokens", headers={**headers, "X-Subject-Token": token})
        assert r.status_code == 204
        r = c.get("/identity/v3/auth/projects", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["title"] == "Unauthorized"
        admin = {"X-Auth-Token": _token(demo, "admin", "infracloud-admin", "admin")}
        assert c.get("/identity/v3/auth/tokens",
                     headers={**admin, "X-Subject-Token": token}).status_code == 404


def test_token_validation(demo: Running) -> None:
    member = _token(demo, "zuul", "infracloud", "zuul")
    admin = _token(demo, "admin", "infracloud-admin", "admin")
    with demo.http() as c:
        r = c.get("/identity/v3/auth/tokens",
                  headers={"X-Auth-Token": admin, "X-Subject-Token": member})
        assert r.status_code == 200 and r.headers["X-Subject-Token"] == member
        token = r.json()["token"]
        assert token["user"]["name"] == "zuul" and token["project"]["name"] == "zuul"
        assert {s["type"] for s in token["catalog"]} == SERVED
        r = c.get("/identity/v3/auth/tokens?nocatalog",
                  headers={"X-Auth-Token": member, "X-Subject-Token": member})
        assert r.status_code == 200 and "catalog" not in r.json()["token"]
        assert c.head("/identity/v3/auth/tokens", headers={
            "X-Auth-Token": member, "X-Subject-Token": member}).status_code == 200
        assert c.head("/identity/v3/auth/tokens", headers={
            "X-Auth-Token": member, "X-Subject-Token": admin}).status_code == 403


def test_application_credential_login_as_nodepool_does(demo: Running, tmp_path) -> None:
    member = sdk(demo.clouds_yaml, "infracloud")
    name = f"nodepool-{uuid.uuid4().hex[:6]}"
    cred = member.identity.create_application_credential(
        user=member.current_user_id, name=name, roles=[{"name": "member"}])
    clouds = {"clouds": {"np": {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": demo.base_url + "/identity",
                 "application_credential_id": cred.id,
                 "application_credential_secret": cred.secret},
        "region_name": "RegionOne", "cacert": demo.cacert}}}
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump(clouds))
    conn = sdk(path, "np")
    assert conn.current_project_id == member.current_project_id
    r = openstack_cli(path, "--os-cloud", "np", "token", "issue", "-f", "json")
    assert r.returncode == 0, r.stderr
    member.identity.delete_application_credential(member.current_user_id, cred.id)
    r = openstack_cli(path, "--os-cloud", "np", "token", "issue")
    assert r.returncode != 0 and "HTTP 401" in r.stderr


def test_discovery_needs_no_token(demo: Running) -> None:
    with demo.http() as c:
        r = c.get("/identity", headers={"Accept": "application/json"})
        assert r.status_code == 300
        (v,) = r.json()["versions"]["values"]
        assert v["id"].startswith("v3.") and v["status"] == "stable"
        assert v["links"][0]["href"] == f"{demo.base_url}/identity/v3/"
        r = c.get("/identity/v3")
        assert r.status_code == 200 and r.json()["version"]["id"] == v["id"]


def test_every_response_has_a_request_id_and_errors_are_shaped(demo: Running) -> None:
    with demo.http() as c:
        for resp in (c.get("/identity"), c.get("/identity/v3/nothing-here"),
                     c.post("/identity/v3/auth/tokens", content=b"{not json",
                            headers={"Content-Type": "application/json"}),
                     c.post("/identity/v3/auth/tokens", json={"auth": {}})):
            rid = resp.headers["x-openstack-request-id"]
            assert rid.startswith("req-") and len(rid) == 40
            if resp.status_code >= 400:
                err = resp.json()["error"]
                assert err["code"] == resp.status_code and err["message"]
        assert c.get("/identity/v3/nothing-here").status_code == 404
        bad = c.post("/identity/v3/auth/tokens", content=b"{not json",
                     headers={"Content-Type": "application/json"})
        assert bad.status_code == 400


def test_bad_input_is_400_and_duplicates_409(demo: Running) -> None:
    headers = {"X-Auth-Token": _token(demo, "admin", "infracloud-admin", "admin")}
    with demo.http() as c:
        r = c.post("/identity/v3/projects", json={"project": {"description": "no name"}},
                   headers=headers)
        assert r.status_code == 400 and "project.name" in r.json()["error"]["message"]
        r = c.post("/identity/v3/projects", json={"project": {"name": "zuul"}}, headers=headers)
        assert r.status_code == 409
        r = c.get("/identity/v3/projects/does-not-exist", headers=headers)
        assert r.status_code == 404


def test_unknown_query_parameters_are_ignored(demo: Running) -> None:
    headers = {"X-Auth-Token": _token(demo, "admin", "infracloud-admin", "admin")}
    with demo.http() as c:
        r = c.get("/identity/v3/projects?deleted=False&usage=False&whatever=1&name=zuul",
                  headers=headers)
    assert r.status_code == 200
    assert [p["name"] for p in r.json()["projects"]] == ["zuul"]


def test_json_log_lines_carry_request_ids(demo: Running) -> None:
    with demo.http() as c:
        rid = c.get("/identity/v3").headers["x-openstack-request-id"]
    assert demo.state_dir is not None
    lines = [json.loads(line) for line in
             (demo.state_dir / "controller.log").read_text().splitlines() if line.strip()]
    mine = [line for line in lines if line.get("request_id") == rid]
    assert mine and mine[0]["path"] == "/identity/v3" and mine[0]["status"] == 200
