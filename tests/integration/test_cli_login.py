"""`infracloud`'s admin commands log in as every OpenStack tool does (openstack.config): an
application-credential cloud, its secret in secure.yaml, a cloud made of OS_* variables only,
the cloud's region; and each failure to log in is one line."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import BIN, Running, sdk


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`infracloud capacity` with `env` and none of the test run's OS_* or INFRACLOUD_*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "INFRACLOUD_"))}
    return subprocess.run([str(BIN / "infracloud"), "capacity", *args], capture_output=True,
                          text=True, timeout=120, env={**clean, **env},
                          stdin=subprocess.DEVNULL)


def capacity(env: dict[str, str], *args: str) -> Any:
    r = run(env, "--format", "json", *args)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    return json.loads(r.stdout)


def failure(env: dict[str, str], *args: str) -> str:
    r = run(env, *args)
    assert r.returncode == 2, r.stdout
    return r.stderr


@pytest.fixture(scope="module")
def admin(demo: Running) -> dict[str, Any]:
    """The demo's admin cloud, as its clouds.yaml has it."""
    return dict(yaml.safe_load(demo.clouds_yaml.read_text())["clouds"]["infracloud-admin"])


@pytest.fixture(scope="module")
def credential(demo: Running) -> Iterator[Any]:
    """An application credential of the demo's admin, with the admin role."""
    conn = sdk(demo.clouds_yaml, "infracloud-admin")
    cred = conn.identity.create_application_credential(
        user=conn.current_user_id, name=f"infracloud-cli-{uuid.uuid4().hex[:6]}",
        roles=[{"name": "admin"}])
    yield cred
    conn.identity.delete_application_credential(conn.current_user_id, cred.id)


def test_an_application_credential_cloud_and_its_secret_in_secure_yaml(
        demo: Running, admin: dict[str, Any], credential: Any, tmp_path: Path) -> None:
    expected = capacity({"OS_CLIENT_CONFIG_FILE": str(demo.clouds_yaml),
                         "INFRACLOUD_ADMIN_CLOUD": "infracloud-admin"})
    cloud = {"auth_type": "v3applicationcredential",
             "auth": {"auth_url": admin["auth"]["auth_url"],
                      "application_credential_id": credential.id,
                      "application_credential_secret": credential.secret},
             "region_name": admin["region_name"], "cacert": admin["cacert"]}
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"ac": cloud}}))
    env = {"OS_CLIENT_CONFIG_FILE": str(clouds)}
    assert capacity(env, "--os-cloud", "ac") == expected
    # INFRACLOUD_ADMIN_CLOUD comes before OS_CLOUD
    assert capacity({**env, "INFRACLOUD_ADMIN_CLOUD": "ac", "OS_CLOUD": "nope"}) == expected
    assert capacity({**env, "OS_CLOUD": "ac"}) == expected

    # the secret kept apart, as openstack.config merges it
    public = {**cloud, "auth": {k: v for k, v in cloud["auth"].items() if "secret" not in k}}
    clouds.write_text(yaml.safe_dump({"clouds": {"ac": public}}))
    secure = tmp_path / "secure.yaml"
    secure.write_text(yaml.safe_dump({"clouds": {"ac": {"auth": {
        "application_credential_secret": credential.secret}}}}))
    assert capacity({**env, "OS_CLIENT_SECURE_FILE": str(secure)}, "--os-cloud", "ac") \
        == expected
    assert failure(env, "--os-cloud", "ac") == (
        "infracloud: error: cloud 'ac': You must provide an auth secret.\n")
    secure.write_text(yaml.safe_dump({"clouds": {"ac": {"auth": {
        "application_credential_secret": "not-" + credential.secret}}}}))
    assert failure({**env, "OS_CLIENT_SECURE_FILE": str(secure)}, "--os-cloud", "ac") == (
        "infracloud: error: login to cloud 'ac' failed: HTTP 401\n")


def test_a_cloud_of_os_variables_alone_and_its_region(
        demo: Running, admin: dict[str, Any], tmp_path: Path) -> None:
    expected = capacity({"OS_CLIENT_CONFIG_FILE": str(demo.clouds_yaml),
                         "INFRACLOUD_ADMIN_CLOUD": "infracloud-admin"})
    auth = admin["auth"]
    env = {"OS_CLIENT_CONFIG_FILE": str(tmp_path / "none.yaml"),  # no clouds.yaml anywhere
           "OS_AUTH_URL": auth["auth_url"], "OS_USERNAME": auth["username"],
           "OS_PASSWORD": auth["password"], "OS_PROJECT_NAME": auth["project_name"],
           "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
           "OS_CACERT": admin["cacert"], "OS_INTERFACE": "public",
           "OS_REGION_NAME": admin["region_name"]}
    assert capacity(env) == expected
    assert failure({**env, "OS_REGION_NAME": "elsewhere"}) == (
        "infracloud: error: cloud 'envvars' has no baremetal service in its catalog\n")
    assert failure({**env, "OS_PASSWORD": "wrong"}) == (
        "infracloud: error: login to cloud 'envvars' failed: HTTP 401\n")


def test_each_failure_to_find_or_reach_the_cloud_is_one_line(
        demo: Running, admin: dict[str, Any], tmp_path: Path) -> None:
    nowhere = str(tmp_path / "none.yaml")
    assert failure({"OS_CLIENT_CONFIG_FILE": nowhere}, "--os-cloud", "x") == (
        f"infracloud: error: cloud 'x' not found: no clouds.yaml at {nowhere} (the demo "
        f"writes one: `source var/demo/infracloud.env`)\n")
    env = {"OS_CLIENT_CONFIG_FILE": str(demo.clouds_yaml)}
    assert failure(env) == (
        f"infracloud: error: which cloud? pass --os-cloud or set INFRACLOUD_ADMIN_CLOUD or "
        f"OS_CLOUD (clouds in {demo.clouds_yaml}: infracloud, infracloud-admin, "
        f"infracloud-ci)\n")
    assert failure(env, "--os-cloud", "x") == (
        f"infracloud: error: cloud 'x' is not in {demo.clouds_yaml} (clouds: infracloud, "
        f"infracloud-admin, infracloud-ci)\n")
    closed = tmp_path / "closed.yaml"  # nothing listens on port 9 of the loopback
    closed.write_text(yaml.safe_dump({"clouds": {"c": {
        **admin, "auth": {**admin["auth"], "auth_url": "http://127.0.0.1:9/identity"}}}}))
    assert failure({"OS_CLIENT_CONFIG_FILE": str(closed)}, "--os-cloud", "c") == (
        "infracloud: error: cannot reach the controller at http://127.0.0.1:9/identity: "
        "[Errno 111] Connection refused\n")
