"""`infracloud report usage` against the demo site: a server made with openstacksdk shows up
in the usage by project and by flavor (with its flavor's vCPUs, RAM and disk), as a table, JSON,
CSV and a PNG chart; bad values are one line and exit 2, or an OpenStack-shaped 400."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Running, env_file, infracloud, sdk


@pytest.fixture(scope="module")
def server(demo: Running) -> Iterator[tuple[Any, str]]:
    """A zuul server of a flavor of its own (3 vCPUs, 2 GiB, 5 GB), running."""
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    zuul = sdk(demo.clouds_yaml, "infracloud")
    name = f"usage.{uuid.uuid4().hex[:6]}"
    flavor = admin.compute.create_flavor(name=name, vcpus=3, ram=2048, disk=5)
    made = zuul.compute.create_server(name=name, flavor_id=flavor.id, networks="auto",
                                      image_id=zuul.image.find_image("demo").id)
    try:
        zuul.compute.wait_for_server(made, wait=60)
        yield made, name
    finally:
        zuul.compute.delete_server(made)
        zuul.compute.wait_for_delete(made, wait=60)
        admin.compute.delete_flavor(flavor)


def report(demo: Running, *args: str) -> Any:
    env = env_file(demo.state_dir / "infracloud.env")  # type: ignore[operator]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return infracloud("report", "usage", "--since", today, *args, env=env)


def test_json_by_project_and_flavor(demo: Running, server: tuple[Any, str]) -> None:
    _, flavor = server
    r = report(demo, "--by", "project", "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["by"] == "project" and data["since"].endswith("T00:00:00Z")
    zuul = {row["name"]: row for row in data["rows"]}["zuul"]
    assert zuul["id"] and zuul["servers"] >= 1 and zuul["instance_hours"] > 0
    assert data["total"]["vcpu_hours"] >= zuul["vcpu_hours"] > 0
    assert {c["flavor"] for c in data["capacity_left"]} >= {"ci.small", "ci.8g", flavor}

    r = report(demo, "--by", "flavor", "--format", "json")
    assert r.returncode == 0, r.stderr
    mine = {row["name"]: row for row in json.loads(r.stdout)["rows"]}[flavor]
    hours = mine["instance_hours"]
    assert mine["servers"] == 1 and hours > 0
    # the flavor's 3 vCPUs, 2 GiB and 5 GB for every hour (hours are rounded to 6 decimals)
    assert mine["vcpu_hours"] == pytest.approx(3 * hours, abs=1e-5)
    assert mine["ram_gb_hours"] == pytest.approx(2 * hours, abs=1e-5)
    assert mine["disk_gb_hours"] == pytest.approx(5 * hours, abs=1e-5)


def test_table_csv_and_png(demo: Running, server: tuple[Any, str], tmp_path: Path) -> None:
    r = report(demo)  # by project, as a table, with the capacity left under it
    assert r.returncode == 0, r.stderr
    assert "zuul" in r.stdout and "vCPU-hours" in r.stdout and "total" in r.stdout
    assert "Capacity left per flavor" in r.stdout and "ci.small" in r.stdout

    r = report(demo, "--by", "host", "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == ["host", "servers", "instance_hours", "vcpu_hours",
                             "ram_gb_hours", "disk_gb_hours"]
    assert rows[-1]["host"] == "(total)"
    assert float(rows[-1]["vcpu_hours"]) == pytest.approx(
        sum(float(row["vcpu_hours"]) for row in rows[:-1]), abs=1e-5)
    assert int(rows[-1]["servers"]) >= 1

    png = tmp_path / "chart.png"
    r = report(demo, "--format", "png", "--output", str(png))
    assert r.returncode == 0, r.stderr
    assert str(png) in r.stdout
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_bad_values(demo: Running) -> None:
    for bad in (["--by", "colour"], ["--format", "xml"], ["--since", "last-week"],
                ["--until", "2000-01-01"]):
        r = report(demo, *bad)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert r.stderr.startswith("infracloud: error:") and "--" in r.stderr, bad
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    with demo.http() as http:
        for params, word in (({"by": "colour"}, "by must be"), ({"format": "xml"}, "format"),
                             ({"since": "soon"}, "since"),
                             ({"since": "2026-02-01", "until": "2026-01-01"}, "before")):
            r = http.get("/ops/v1/usage", params=params)
            assert r.status_code == 400, (params, r.text)
            assert word in r.json()["error"]["message"], r.text
        r = http.get("/ops/v1/usage", params={"format": "csv", "by": "flavor"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.text.startswith("flavor,servers,")
