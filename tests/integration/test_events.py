"""Events through the real API and CLI: API writes name the caller who made them, state
changes follow, the CLI filters, exports JSON lines and follows new events."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from typing import Any

from tests.servers import BIN, Running, env_file, infracloud, sdk, wait_for


def _events(demo: Running, **params: Any) -> list[dict[str, Any]]:
    with demo.http() as http:
        r = http.get("/ops/v1/events", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        return list(r.json()["events"])


def test_api_writes_are_recorded_with_their_actor(demo: Running) -> None:
    zuul = sdk(demo.clouds_yaml, "infracloud")
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    cursor = _events(demo, order="desc", limit=1)[0]["id"]
    name = f"ev-{uuid.uuid4().hex[:8]}"
    zuul.compute.create_keypair(name=name)
    project = admin.identity.create_project(name=name)
    admin.identity.delete_project(project)
    zuul.compute.delete_keypair(name)
    zuul.compute.delete_keypair(name, ignore_missing=True)  # a 404: recorded too
    mine = {"POST /compute/v2.1/os-keypairs", "POST /identity/v3/projects",
            "DELETE /identity/v3/projects/{project_id}",
            "DELETE /compute/v2.1/os-keypairs/{name}"}

    def recorded() -> list[dict[str, Any]]:
        rows = [e for e in _events(demo, kind="api", after=cursor) if e["action"] in mine]
        return rows if len(rows) == 5 else []

    rows = wait_for("the API events", recorded, timeout=15)
    assert [(e["action"], e["actor"], e["target"]) for e in rows] == [
        ("POST /compute/v2.1/os-keypairs", "zuul", "200"),
        ("POST /identity/v3/projects", "admin", "201"),
        ("DELETE /identity/v3/projects/{project_id}", "admin", "204"),
        ("DELETE /compute/v2.1/os-keypairs/{name}", "zuul", "202"),
        ("DELETE /compute/v2.1/os-keypairs/{name}", "zuul", "404")]
    assert rows[0]["project_id"] == zuul.current_project_id
    assert rows[2]["detail"]["path"].endswith(project.id)
    assert rows[3]["detail"]["path"].endswith(name)
    assert all(e["request_id"].startswith("req-") and e["at"].endswith("Z") and e["site"]
               for e in rows)
    # a server created through the API: the write names the server it made, and the server's
    # state changes carry the same request id and caller
    server = zuul.compute.create_server(name=name, flavor_id=zuul.compute.find_flavor(
        "ci.small").id, image_id=zuul.image.find_image("demo").id, networks="auto")
    try:
        write = wait_for("the server's create event", lambda: [
            e for e in _events(demo, kind="api", resource=server.id)])
        assert write[0]["actor"] == "zuul" and write[0]["resource_name"] == name
        assert write[0]["host"]
        created = _events(demo, kind="state", resource=server.id)[0]
        assert created["action"] == "create" and created["actor"] == "zuul"
        assert created["request_id"] == write[0]["request_id"]
    finally:
        zuul.compute.delete_server(server)


def test_cli_filters_exports_and_follows(demo: Running) -> None:
    env = env_file(demo.state_dir / "infracloud.env")  # type: ignore[operator]
    conn = sdk(demo.clouds_yaml, "infracloud")
    name = f"cli-{uuid.uuid4().hex[:8]}"
    conn.compute.create_keypair(name=name)
    conn.compute.delete_keypair(name)

    def listed() -> Any:
        r = infracloud("events", "--since", "10m", "--project", "zuul", "--kind", "api",
                       "--format", "json", env=env)
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        return [e for e in rows if name in e["detail"]["path"]]

    rows = wait_for("the keypair's events in the CLI", listed, timeout=15)
    assert {e["actor"] for e in rows} == {"zuul"}
    table = infracloud("events", "--since", "10m", "--project", "zuul", env=env)
    assert table.returncode == 0 and "zuul" in table.stdout

    r = infracloud("events", "--since", "1d", "--format", "jsonl", env=env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) > 2 and [e["id"] for e in lines] == sorted(e["id"] for e in lines)
    assert any(e["kind"] == "state" and e["resource_type"] == "host" for e in lines)

    for bad in (["--kind", "nope"], ["--since", "yesterday-ish"], ["--format", "xml"]):
        r = infracloud("events", *bad, env=env)
        assert r.returncode == 2 and r.stderr.startswith("infracloud: error:"), (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1

    follow = subprocess.Popen([str(BIN / "infracloud"), "events", "--follow", "--since", "1s",
                               "--kind", "api", "--format", "jsonl"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, **env})
    got: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follow.stdout is not None
        for line in follow.stdout:
            got.put(line)

    threading.Thread(target=read, daemon=True).start()
    later = f"follow-{uuid.uuid4().hex[:8]}"
    try:
        conn.compute.create_keypair(name=later)
        conn.compute.delete_keypair(later)
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "--follow did not print the new event"
            try:
                e = json.loads(got.get(timeout=1))
            except queue.Empty:
                continue
            if e["detail"]["path"].endswith(later):
                assert e["action"].startswith("DELETE") and e["actor"] == "zuul"
                break
    finally:
        follow.terminate()
        follow.wait(10)
