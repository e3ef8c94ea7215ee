"""The site status (what `infracloud status`, /ops/v1/status and the dashboard show): hosts by
state, capacity as the scheduler counts it, free slots as `infracloud capacity` counts them,
servers, machines, the pool's waiting requests and firing alerts, in a few queries however
many hosts there are; and the dashboard's pages rendered from it, escaped."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

from infracloud.compute.hosts import Report
from infracloud.core.clock import FakeClock
from infracloud.hardware.capacity import capacity
from infracloud.hardware.drain import Drainer
from infracloud.ops import context
from infracloud.ops.events import EventLog
from infracloud.site import dashboard as views
from infracloud.site.status import gather, pool_status, site_view
from infracloud.store import Database
from infracloud.store.models import Alert, Node
from tests.unit.compute_env import ADMIN, Env, env_fixture  # noqa: F401
from tests.unit.pool_env import Harness, pool_config


def status(env: Env, log: EventLog | None = None, **kw: Any) -> dict[str, Any]:
    return gather(env.db, log, env.clock, site="vanilla", region="RegionOne",
                  url="https://ctl.example:8443", **kw)


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append(sql)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def alert(db: Database, key: str, severity: str, state: str, started: dt.datetime,
          summary: str) -> None:
    with db.write() as s:
        s.add(Alert(id=key.replace(":", "-")[:32], key=key, rule=key.split(":")[0],
                    subject=key.split(":")[1], severity=severity, state=state,
                    summary=summary, started_at=started,
                    resolved_at=started + dt.timedelta(minutes=5)
                    if state == "resolved" else None))


def site(env: Env) -> None:
    """Five hosts: a and b up with servers, c disabled, d fenced, e down."""
    for name in "abcde":
        env.host(name)
    env.clock.advance(env.config.host_down_after + 1)
    env.beat(*(env.host_row(n) for n in "abcd"))
    env.hosts.reap()
    env.hosts.set_enabled(ADMIN, "c", False, "repairs")
    Drainer(env.db, env.clock, env.hosts, env.servers).fence("d", "BMC does not answer")
    first = env.boot(name="one")
    env.boot(name="two")
    env.boot(name="small", flavor="ci.small")
    env.hosts.report(first.host_id or "", [Report(first.id, "running")])


def test_status_counts_hosts_capacity_slots_servers_and_alerts(env: Env) -> None:
    site(env)
    now = env.clock.now()
    alert(env.db, "host_down:e", "critical", "firing", now - dt.timedelta(minutes=3),
          "Host e is down")
    alert(env.db, "capacity:ci.8g", "warning", "firing", now, "Few ci.8g left")
    alert(env.db, "host_down:x", "critical", "resolved", now - dt.timedelta(hours=1),
          "Host x was down")
    with env.db.write() as s:
        s.add(Node(id="n-1", name="rack1-07", driver="fake", provision_state="deploy failed",
                   last_error="no PXE answer"))
        s.add(Node(id="n-2", name="rack1-08", driver="fake", provision_state="available"))

    got = status(env)
    assert got["site"]["name"] == "vanilla" and got["site"]["version"] == "0.1.0"
    assert got["site"]["url"] == "https://ctl.example:8443"
    assert got["hosts"]["total"] == 5
    assert got["hosts"]["by_state"] == {"up": 2, "down": 1, "disabled": 1, "fenced": 1}
    rows = {h["name"]: h for h in got["hosts"]["rows"]}
    assert [h["name"] for h in got["hosts"]["rows"]] == list("abcde")
    assert rows["d"]["state"] == "fenced" and rows["d"]["note"] == "BMC does not answer"
    assert rows["c"]["note"] == "repairs" and rows["a"]["note"] == ""
    assert sum(h["instances"] for h in rows.values()) == 3
    assert rows["a"]["vcpus"]["total"] == 40
    # five hosts of 40 vCPUs, 40 GiB, 400 GB; two ci.8g (8, 8 GiB, 80 GB) + a ci.small
    # (1, 1 GiB, 10 GB) on a and b; only a and b take servers
    vcpus = got["capacity"]["vcpus"]
    assert vcpus == {"total": 200, "used": 17, "free": 80 - 17, "unavailable": 120}
    assert got["capacity"]["ram_mb"]["free"] == 2 * 40960 - 2 * 8192 - 1024
    # free slots: what `infracloud capacity` says for every flavor
    for f in got["flavors"]:
        c = capacity(env.db, "vanilla", f["name"])
        assert (f["free"], f["total"]) == (c.free, c.total), f
    assert {f["name"] for f in got["flavors"]} >= {"ci.8g", "ci.small"}
    assert got["instances"]["total"] == 3
    assert got["instances"]["by_state"]["active"] == 1
    assert got["instances"]["by_state"]["spawning"] == 2
    assert got["instances"]["by_state"]["error"] == 0  # every state shows
    assert got["machines"]["total"] == 2
    assert got["machines"]["by_state"] == {"available": 1, "deploy failed": 1}
    assert [(m["name"], m["last_error"]) for m in got["machines"]["faults"]] == [
        ("rack1-07", "no PXE answer")]
    # firing only: critical first, then the newest
    assert [(a["severity"], a["summary"]) for a in got["alerts"]] == [
        ("critical", "Host e is down"), ("warning", "Few ci.8g left")]
    assert got["alerts"][0]["age_seconds"] == 180
    assert got["pool"] is None and got["events"] == []


def test_status_reads_in_the_same_few_queries_for_any_number_of_hosts(env: Env) -> None:
    env.host("a")
    env.boot()
    with statements(env.db) as few:
        status(env)
    for i in range(12):
        env.host(f"h{i:02}")
        env.boot(name=f"s{i}")
    with statements(env.db) as many:
        got = status(env)
    assert got["hosts"]["total"] == 13 and got["instances"]["total"] == 13
    assert len(many) == len(few) <= 7, many


def test_recent_events_newest_first(env: Env, db: Database) -> None:
    log = EventLog(db, "vanilla", env.clock)
    log.install()
    with context.acting("zuul"):
        env.host("a")
        server = env.boot(name="job")
    got = status(env, log, recent=2)
    assert [(e["resource_type"], e["action"], e["actor"]) for e in got["events"]] == [
        ("server", "create", "zuul"), ("host", "create", "zuul")]
    assert got["events"][0]["resource_id"] == server.id


def test_pool_requests_waiting_by_label_and_age(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'pool.db'}")
    db.migrate()
    clock = FakeClock()
    h = Harness(db, pool_config({"a": {"max-servers": 2}}), now=clock.now)
    try:
        first = h.request(count=2)
        h.until(lambda: h.state(first) == "fulfilled")
        assert pool_status(h.pool)["requests_waiting"] == 0
        assert pool_status(h.pool)["oldest_wait_seconds"] == 0
        h.request(count=2)  # max-servers 2, both taken: they wait
        clock.advance(30)
        h.request(count=1, requestor="ci")
        h.tick(3)
        clock.advance(60)
        got = pool_status(h.pool)
        assert got["requests_waiting"] == 2
        assert got["waiting_by_label"] == {"small": 2}  # requests, not nodes
        assert got["oldest_wait_seconds"] == got["requests"][0]["age_seconds"] == 90
        assert [(r["requestor"], r["age_seconds"]) for r in got["requests"]] == [
            ("zuul", 90), ("ci", 60)]  # oldest first
        assert got["labels"][0]["name"] == "small" and got["labels"][0]["waiting"] == 3
        assert got["nodes_by_state"]["in-use"] == 2 and got["nodes_by_state"]["ready"] == 0
        assert [(p["name"], p["state"]) for p in got["providers"]] == [("a", "up")]
    finally:
        h.pool.stop()
        db.dispose()


def test_event_rate_per_minute_by_kind(env: Env, db: Database) -> None:
    log = EventLog(db, "vanilla", env.clock)
    log.install()
    start = env.clock.now()
    env.host("a")  # a state event now
    for minute in (5, 5, 30):
        log.record(kind="alert", resource_type="alert", action="firing", host="a",
                   at=start + dt.timedelta(minutes=minute))
    log.record(kind="api", resource_type="server", action="POST", host="b",
               at=start + dt.timedelta(minutes=30))
    log.record(kind="api", resource_type="server", action="POST", host="b",
               at=start - dt.timedelta(hours=2))  # too old to show
    now = start + dt.timedelta(minutes=30, seconds=20)
    starts, counts = views.event_rate(db, now, None, views.EventFilter())
    assert len(starts) == len(counts) == 60
    assert starts[-1] == now.replace(second=0)
    by_start = dict(zip(starts, counts, strict=True))
    assert by_start[start] == {"state": 1}
    assert by_start[start + dt.timedelta(minutes=5)] == {"alert": 2}
    assert by_start[start + dt.timedelta(minutes=30)] == {"alert": 1, "api": 1}
    assert sum(sum(c.values()) for c in counts) == 5
    _, only_b = views.event_rate(db, now, None, views.EventFilter(host="b"))
    assert sum(sum(c.values()) for c in only_b) == 1


def test_pages_render_the_status_escaped_with_a_banner(env: Env) -> None:
    site(env)
    now = env.clock.now()
    alert(env.db, "host_down:e", "critical", "firing", now, "<script>alert('e')</script> down")
    got = status(env)
    common = {"site": site_view("vanilla", "RegionOne", "https://ctl", now), "now": now,
              "alerts": got["alerts"], "page": "overview", "title": "Overview"}
    page = views.render("overview.html", fragment=False, **common, **views.overview(got))
    assert page.startswith("<!doctype html>")
    assert "<script>alert(" not in page and "&lt;script&gt;alert(" in page
    assert 'class="alert-banner"' in page and "1 alert firing" in page
    assert len(re.findall(r'<a class="host (up|down|disabled|fenced)"', page)) == 5
    assert 'class="host fenced"' in page and 'class="host down"' in page
    assert 'id="capacity-vcpus"' in page and 'aria-label="vCPUs capacity"' in page
    assert "https://" not in page.replace("https://ctl", "")  # nothing from elsewhere
    fragment = views.render("overview.html", fragment=True, **common, **views.overview(got))
    assert "<html" not in fragment and 'class="alert-banner"' in fragment
    assert 'id="hosts-grid"' in fragment

    quiet = views.render("alerts.html", fragment=True, **{**common, "alerts": []},
                         data=views.alerts_page(env.db, now))
    assert "alert-banner" not in quiet and "No alerts firing" in quiet


def test_status_screen_puts_failures_first_and_in_red(env: Env) -> None:
    from rich.console import Console

    from infracloud.cli.status import screen

    site(env)
    alert(env.db, "host_down:e", "critical", "firing", env.clock.now(), "Host e is down")
    console = Console(record=True, width=100, color_system="truecolor")
    console.print(screen(status(env)))
    text = console.export_text(styles=False, clear=False)
    lines = {line.split()[0]: line for line in text.splitlines() if line[:1].strip()}
    assert lines["Hosts"].split()[:2] == ["Hosts", "5:"]
    assert "2 up, 1 down, 1 disabled, 1 fenced" in lines["Hosts"]
    assert "down: e" in text and "fenced: d (BMC does not answer)" in text
    assert "disabled: c (repairs)" in text
    assert "63 free" in lines["Capacity"]  # vCPUs on a and b: 80 - 17
    assert "ci.8g 7/10" in lines["Free"]  # a: 31 vCPUs free, b: 32; 5 each when empty
    assert lines["Servers"].split()[1:] == ["3:", "2", "spawning,", "1", "active"]
    assert "no pool" in lines["Pool"]
    assert "CRITICAL" in lines["Alerts"] and "Host e is down" in lines["Alerts"]
    red = console.export_text(styles=True)
    assert "\x1b[1;31mfenced: d (BMC does not answer)" in red
