"""Issue 18's reporting through the real clients: a server, a project and an image made with
openstacksdk are each named (id and name) by their API events, and `infracloud events --user`
shows what one user made and nothing of another's."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.servers import Running, env_file, infracloud, sdk, wait_for


def test_events_by_user_name_what_each_made(demo: Running) -> None:
    env = env_file(demo.state_dir / "infracloud.env")  # type: ignore[operator]
    zuul = sdk(demo.clouds_yaml, "infracloud")
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    name = f"rep-{uuid.uuid4().hex[:8]}"
    server = zuul.compute.create_server(
        name=name, flavor_id=zuul.compute.find_flavor("ci.small").id,
        image_id=zuul.image.find_image("demo").id, networks="auto")
    image = zuul.image.create_image(name=name, data=b"x" * 1024, disk_format="raw",
                                    container_format="bare")
    project = admin.identity.create_project(name=name)
    zuul_id = zuul.current_user_id
    try:
        def mine(user: str) -> Any:
            r = infracloud("events", "--since", "10m", "--user", user, "--kind", "api",
                           "--format", "json", env=env)
            assert r.returncode == 0, r.stderr
            rows = [e for e in json.loads(r.stdout) if e["action"].startswith("POST")]
            made = {(e["resource_type"], e["resource_id"], e["resource_name"]) for e in rows}
            return made if len(made & wanted) == len(wanted) else None

        wanted = {("server", server.id, name), ("image", image.id, name)}
        made = wait_for("zuul's creations in events --user", lambda: mine("zuul"), timeout=30)
        assert ("project", project.id, name) not in made  # admin's, not zuul's
        # by id as by name; every row is zuul's
        r = infracloud("events", "--since", "10m", "--user", zuul_id, "--format", "json",
                       env=env)
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert rows and {e["actor_id"] for e in rows} == {zuul_id}
        assert {server.id, image.id} <= {e["resource_id"] for e in rows}

        wanted = {("project", project.id, name)}
        made = wait_for("admin's project in events --user", lambda: mine("admin"), timeout=30)
        assert ("server", server.id, name) not in made
        # the table names the new resource beside the route
        table = infracloud("events", "--since", "10m", "--user", "admin", "--kind", "api",
                           env={**env, "COLUMNS": "250"})
        assert table.returncode == 0, table.stderr
        assert f"project {name} ({project.id})" in table.stdout
        # a user who never acted: nothing, and the CLI says so
        empty = infracloud("events", "--since", "10m", "--user", "nobody-" + name, env=env)
        assert empty.returncode == 0 and "no events" in empty.stdout
    finally:
        zuul.compute.delete_server(server)
        zuul.image.delete_image(image)
        admin.identity.delete_project(project)
        # API events are written behind the answers: let these land before the next test
        # takes its cursor
        wait_for("the clean-up's events", lambda: _recorded(demo, project.id), timeout=30)


def _recorded(demo: Running, project_id: str) -> bool:
    with demo.http() as http:
        r = http.get("/ops/v1/events", params={"kind": "api", "order": "desc", "limit": 50})
        assert r.status_code == 200, r.text
    return any(e["action"].startswith("DELETE /identity/v3/projects")
               and e["detail"]["path"].endswith(project_id) for e in r.json()["events"])
