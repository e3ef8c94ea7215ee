"""Prometheus metrics on the demo site: /metrics moves when a server is created through
openstacksdk, Prometheus' own promtool accepts the scrape config, the exposition and every
dashboard query, and the dashboards query only metrics the site exports. An agent serves its
own metrics with --metrics-port."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Running, infracloud, sdk, start_lone_agent, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = "/usr/bin/promtool"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
BUSY_INSTANCE = ("scheduling", "networking", "spawning", "deleting")
BUSY_POOL_NODE = ("building", "deleting")
METRIC = re.compile(r"\b(?:infracloud|process)_[a-z0-9_]+\b")


def scrape(demo: Running) -> str:
    with demo.http() as http:
        r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, label: str, values: tuple[str, ...]) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == name and dict(labels).get(label) in values)


def settled(demo: Running) -> Samples | None:
    """The site's metrics once nothing is on its way (no server being built or deleted, no
    pool node launching or going, the demo pool's min-ready met): the active count then only
    moves with this test."""
    assert demo.state_dir is not None
    pool = yaml.safe_load((demo.state_dir / "pool.yaml").read_text())
    min_ready = sum(label.get("min-ready", 0) for label in pool["labels"])
    samples = parse(scrape(demo))
    busy = total(samples, "infracloud_instances", "state", BUSY_INSTANCE) + \
        total(samples, "infracloud_pool_nodes", "state", BUSY_POOL_NODE)
    ready = total(samples, "infracloud_pool_nodes", "state", ("ready",))
    # the pool's gauges are live, the site's cached for 5 s: the pool's nodes with a server
    # must be among the site's active servers, or the site's numbers are from before them
    live = total(samples, "infracloud_pool_nodes", "state", ("ready", "in-use", "held"))
    active = get(samples, "infracloud_instances", state="active")
    return None if busy or ready < min_ready or active < live else samples


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def dashboard_queries(keys: tuple[str, ...] = ("expr",)) -> list[str]:
    """The dashboards' PromQL expressions (`expr`), or their variables' queries too
    (`definition`: Grafana's label_values(...))."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in keys and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in DASHBOARDS:
        walk(json.loads(path.read_text()))
    return found


def test_metrics_move_when_servers_are_created(demo: Running) -> None:
    before = wait_for("the site to settle", lambda: settled(demo), timeout=120, every=1)
    active = get(before, "infracloud_instances", state="active")
    launches = get(before, "infracloud_server_launch_seconds_count", stage="active")
    create = {"method": "POST", "route": "/compute/v2.1/servers", "status": "202"}
    posts = get(before, "infracloud_api_request_seconds_count", **create)
    assert get(before, "infracloud_hosts", state="up") >= 1
    info = [dict(labels) for (n, labels), v in before.items()
            if n == "infracloud_site_info" and v == 1]
    assert len(info) == 1 and info[0]["region"] == "RegionOne", info

    conn = sdk(demo.clouds_yaml, "infracloud")
    server = conn.compute.create_server(
        name=f"metrics-{uuid.uuid4().hex[:6]}", flavor_id=conn.compute.find_flavor(
            "ci.small").id, image_id=conn.image.find_image("demo").id, networks="auto")
    try:
        conn.compute.wait_for_server(server, wait=60)

        def moved() -> Samples | None:
            now = parse(scrape(demo))  # the site's gauges are cached for 5 s
            return now if get(now, "infracloud_instances", state="active") == active + 1 \
                else None

        after = wait_for("the active count to move", moved, timeout=30, every=0.5)
        assert get(after, "infracloud_server_launch_seconds_count", stage="active") >= \
            launches + 1
        assert get(after, "infracloud_api_request_seconds_count", **create) == posts + 1
        used = get(after, "infracloud_used", resource="vcpus")
        assert used >= get(before, "infracloud_used", resource="vcpus") + 1  # ci.small: 1
        text = scrape(demo)
        assert server.id not in text  # ids never become label values
        assert not re.search(r'="[0-9a-f]{8}-[0-9a-f]{4}-', text)
    finally:
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=60)
    wait_for("the active count to go back", lambda: get(
        parse(scrape(demo)), "infracloud_instances", state="active") == active, timeout=30)


def test_promtool_accepts_the_scrape_config_and_the_exposition(demo: Running,
                                                                tmp_path: Path) -> None:
    checked = promtool("check", "config", str(ROOT / "deploy" / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = [j["job_name"] for j in yaml.safe_load(
        (ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"]]
    assert "infracloud-pool" in jobs and "infracloud-agents" in jobs
    assert any(j.startswith("infracloud-site-") for j in jobs)
    # the linter of the exposition format (names, units, _total on counters, help texts)
    linted = promtool("check", "metrics", stdin=scrape(demo))
    assert linted.returncode == 0 and not (linted.stdout + linted.stderr).strip(), \
        linted.stdout + linted.stderr
    # every dashboard query parses as PromQL (as a recording rule; `$job` filled in)
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query{i}", "expr": q.replace("$job", "site")}
        for i, q in enumerate(dashboard_queries())]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    parsed = promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr


def test_dashboards_query_only_exported_metrics(demo: Running) -> None:
    assert [p.name for p in DASHBOARDS] == ["pool.json", "site.json"]
    exported: dict[str, str] = {}  # name -> type
    for family in text_string_to_metric_families(scrape(demo)):
        exported[family.name] = family.type
        for sample in family.samples:
            exported.setdefault(sample.name, "sample")
    queried = {m for q in dashboard_queries(("expr", "definition")) for m in METRIC.findall(q)}
    assert any(m.startswith("infracloud_pool_") for m in queried)  # the pool's, served here
    missing = set()
    for name in queried:
        histogram = re.sub(r"_(bucket|sum|count)$", "", name)
        counter = re.sub(r"_total$", "", name)  # a counter family is named without it
        if name not in exported and exported.get(histogram) != "histogram" and \
                exported.get(counter) != "counter":
            missing.add(name)
    assert not missing, f"dashboards query metrics /metrics does not have: {sorted(missing)}"
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and board["uid"] and board["title"]
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def test_agent_serves_its_metrics(tmp_path: Path) -> None:
    agent = start_lone_agent(tmp_path, "metrics-host")  # its controller is not there
    try:
        samples = parse(agent.metrics() or "")
        assert get(samples, "infracloud_agent_controller_up") == 0
        assert get(samples, "infracloud_agent_instances", state="running") == 0
        assert ("infracloud_agent_poll_seconds_count", frozenset()) in samples
        # the port is taken now: a second agent says so and exits 2
        taken = infracloud("agent", "--controller", agent.controller, "--token", "t" * 24,
                           "--driver", "fake", "--state-dir", str(tmp_path / "b"),
                           "--metrics-port", str(agent.metrics_port), timeout=60)
        assert taken.returncode == 2
        assert taken.stderr.startswith("infracloud: error: --metrics-port"), taken.stderr
    finally:
        assert stop_process(agent.proc) == 0, agent.log.read_text()

