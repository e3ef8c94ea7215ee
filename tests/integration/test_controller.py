"""`infracloud controller --config` on SQLite and PostgreSQL, config validation and the CLI's
error contract (one line on stderr, exit code 2)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from infracloud.core.settings import load_config
from tests.conftest import create_pg_database
from tests.servers import (
    Running,
    infracloud,
    password_token,
    start_controller,
    wait_for,
    write_controller_config,
)


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[Running]:
    path, url = write_controller_config(tmp_path, f"sqlite:///{tmp_path / 'c.db'}",
                                        token_expiration=2, validation_cache_seconds=0)
    running = start_controller(path, url)
    yield running
    assert running.stop() == 0


def test_expired_token_is_401(short_lived: Running) -> None:
    asked = time.monotonic()
    token = password_token(short_lived)
    with short_lived.http() as h:
        def refused() -> httpx.Response | None:
            r = h.get("/identity/v3/projects", headers={"X-Auth-Token": token})
            return r if r.status_code == 401 else None

        assert h.get("/identity/v3/projects", headers={"X-Auth-Token": token}).status_code == 200
        r = wait_for("the token to expire", refused, timeout=20)
    assert time.monotonic() - asked > 1  # its 2 s (the expiry is kept in whole seconds)
    assert r.json()["error"] == {"code": 401, "title": "Unauthorized", "message":
                                 "The request you have made requires authentication."}


def test_catalog_uses_the_configured_region(short_lived: Running) -> None:
    token = password_token(short_lived)
    with short_lived.http() as h:
        body = h.get("/identity/v3/auth/catalog", headers={"X-Auth-Token": token}).json()
    by_type = {svc["type"]: svc for svc in body["catalog"]}
    project = body["catalog"] and _project_of(short_lived, token)
    paths = {"identity": "/identity", "compute": "/compute/v2.1", "image": "/image",
             "network": "/network", "block-storage": f"/volume/v3/{project}",
             "baremetal": "/baremetal"}
    assert set(by_type) == set(paths)
    for kind, svc in by_type.items():
        assert {e["region_id"] for e in svc["endpoints"]} == {"vanilla"}
        assert {e["url"] for e in svc["endpoints"]} == {short_lived.base_url + paths[kind]}


def _project_of(c: Running, token: str) -> str:
    with c.http() as h:
        r = h.get("/identity/v3/auth/tokens", headers={"X-Auth-Token": token,
                                                        "X-Subject-Token": token})
    return str(r.json()["token"]["project"]["id"])


@pytest.mark.pg
def test_controller_on_postgresql_keeps_data_across_restarts(tmp_path: Path,
                                                             pg_admin_url: str) -> None:
    from tests.servers import sdk

    path, url = write_controller_config(tmp_path, create_pg_database(pg_admin_url))
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"pg": {
        "auth": {"auth_url": url + "/identity", "username": "admin",
                 "password": "admin-secret", "project_name": "admin",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "vanilla", "identity_api_version": 3}}}))
    first = start_controller(path, url)
    try:
        conn = sdk(clouds, "pg")
        project = conn.identity.create_project(name="chocolate-ci")
        user = conn.identity.create_user(name="np", password="np-pw",
                                         default_project_id=project.id)
        conn.identity.assign_project_role_to_user(project, user,
                                                  conn.identity.find_role("member"))
    finally:
        assert first.stop() == 0
    second = start_controller(path, url)
    try:
        conn = sdk(clouds, "pg", auth={"username": "np", "password": "np-pw",
                                       "project_name": "chocolate-ci"})
        assert conn.current_project_id == project.id
    finally:
        assert second.stop() == 0


def test_config_validate_reports_every_error_with_its_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: vanilla\nlisten:\n  port: 99999\n  hots: x\n"
                   "identity:\n  token_expiration: -5\ndatabase:\n  url: mysql://x\n")
    r = infracloud("config", "validate", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert any(f"{bad}:3: listen.port:" in line for line in lines), lines
    assert any(f"{bad}:4: listen.hots: unknown setting" in line for line in lines), lines
    assert any(f"{bad}:6: identity.token_expiration:" in line for line in lines), lines
    assert any(f"{bad}:8: database.url:" in line for line in lines), lines
    assert "Traceback" not in r.stderr


def test_config_validate_accepts_a_good_file(tmp_path: Path) -> None:
    path, _ = write_controller_config(tmp_path, "sqlite:///x.db")
    r = infracloud("config", "validate", str(path))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok")


def test_invalid_yaml_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("site: [unclosed\n")
    r = infracloud("config", "validate", str(bad))
    assert r.returncode == 2 and "invalid YAML" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [
    ("controller", "--config", "/nonexistent/controller.yaml"),
    ("demo", "--port", "0"),
    ("demo", "--log-format", "xml"),
    ("no-such-command",),
])
def test_cli_errors_exit_2_without_traceback(args: tuple[str, ...], tmp_path: Path) -> None:
    r = infracloud(*args, "--state-dir", str(tmp_path)) if args[0] == "demo" else infracloud(
        *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip()


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = infracloud("demo", "--state-dir", str(tmp_path), "--port", str(port))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "already in use" in r.stderr


@pytest.mark.parametrize("command", [(), ("demo",), ("controller",), ("config",),
                                     ("config", "validate"), ("keys", "rotate"), ("version",),
                                     ("agent",), ("states",), ("hardware",),
                                     ("hardware", "enroll"), ("hardware", "list"),
                                     ("hardware", "deploy"), ("hardware", "undeploy"),
                                     ("hardware", "inventory"), ("capacity",), ("status",),
                                     ("events",), ("report",), ("report", "usage")])
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    r = infracloud(*command, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "controller.example"])
def test_plain_http_is_refused_off_loopback_unless_a_tls_proxy_is_said_to_be_there(
        tmp_path: Path, host: str) -> None:
    path, _ = write_controller_config(tmp_path, f"sqlite:///{tmp_path / 'h.db'}")
    config = yaml.safe_load(path.read_text())
    config["listen"]["host"] = host
    path.write_text(yaml.safe_dump(config))
    out = infracloud("controller", "--config", str(path), timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"infracloud: error: listen.host {host} is not a loopback "
                                 f"address and there is no tls section")
    assert not (tmp_path / "h.db").exists()  # refused before anything started
    config["listen"]["tls_terminated_by_proxy"] = True
    path.write_text(yaml.safe_dump(config))
    assert load_config(path).plain_http_refusal() is None
    config["listen"].update(host="127.0.0.1", tls_terminated_by_proxy=False)
    path.write_text(yaml.safe_dump(config))
    assert load_config(path).plain_http_refusal() is None


def test_keys_rotate(tmp_path: Path) -> None:
    path, _ = write_controller_config(tmp_path, f"sqlite:///{tmp_path / 'k.db'}")
    assert infracloud("keys", "rotate", "--config", str(path)).stdout.strip() == (
        "rotated: 2 keys active")
    assert "3 keys" in infracloud("keys", "rotate", "--config", str(path)).stdout
    assert "3 keys" in infracloud("keys", "rotate", "--config", str(path)).stdout


def test_states_prints_the_tables_the_code_runs_on() -> None:
    from infracloud.core.states import INSTANCE, PROVISION

    out = infracloud("states", "instance").stdout
    for source, event, target in INSTANCE.table():
        assert f"{source:15} --{event}--> {target}" in out
    assert "spawning        in progress, times out after 900 s" in out
    out = infracloud("states", "node").stdout
    for source, event, target in PROVISION.table():
        assert f"{source:15} --{event}--> {target}" in out
    assert "wait call-back  in progress, times out after 1800 s" in out
    dot = infracloud("states", "image", "--format", "dot").stdout
    assert dot.startswith("digraph image {") and '"saving" -> "killed"' in dot
    assert infracloud("states", "nothing").returncode == 2


def test_config_validate_knows_pool_files(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("labels: [{name: noble, min-ready: 1}]\nproviders:\n"
                    "  - {name: vanilla, cloud: infracloud, max-servers: 4,\n"
                    "     pools: [{labels: [{name: noble, image: noble, flavor-name: ci.8g}]}]}\n")
    r = infracloud("config", "validate", str(pool))
    assert r.returncode == 0 and r.stdout.strip() == f"{pool}: ok"
    pool.write_text(pool.read_text().replace("max-servers: 4", "max-servers: many"))
    r = infracloud("config", "validate", str(pool))
    assert r.returncode == 2 and f"{pool}:3: providers.0.max-servers:" in r.stderr


def test_closed_ops_views_need_a_reader_token(tmp_path: Path) -> None:
    path, url = write_controller_config(tmp_path, f"sqlite:///{tmp_path / 'c.db'}",
                                        sections={"ops": {"public_read": False}})
    running = start_controller(path, url)
    try:
        token = password_token(running)
        with running.http() as h:
            r = h.post("/identity/v3/users", headers={"X-Auth-Token": token}, json={
                "user": {"name": "nobody", "password": "nobody-secret"}})
            assert r.status_code == 201, r.text
            body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": "nobody", "domain": {"id": "default"}, "password": "nobody-secret"}}}}}
            r = h.post("/identity/v3/auth/tokens", json=body)  # no project: no roles
            assert r.status_code == 201, r.text
            unscoped = r.headers["X-Subject-Token"]
            for view in ("/ops/v1/events", "/metrics", "/dashboard?fragment=1",
                         "/ops/v1/status"):
                r = h.get(view)
                assert r.status_code == 401, (view, r.text)
                assert h.get(view, headers={"X-Auth-Token": unscoped}).status_code == 403
                assert h.get(view, headers={"X-Auth-Token": token}).status_code == 200, view
                bearer = h.get(view, headers={"Authorization": f"Bearer {token}"})
                assert bearer.status_code == 200, view
    finally:
        assert running.stop() == 0
