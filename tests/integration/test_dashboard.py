"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright) against
the demo site: the pages show the site's real figures, follow a server created through
openstacksdk without a reload, load nothing from anywhere but the controller and log no
errors; `infracloud status` prints the same counts."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.servers import (
    Running,
    env_file,
    infracloud,
    password_token,
    sdk,
    start_controller,
    wait_for,
    write_controller_config,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UPDATE = 20_000  # ms: the pages refresh every 3 s; a server boots in a few


@dataclass
class Recorder:
    """What the pages asked for and what went wrong in them."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        elsewhere = [u for u in self.requests if urlsplit(u).scheme not in ("data", "blob")
                     and urlsplit(u).hostname != "127.0.0.1"]
        assert not elsewhere, elsewhere
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[tuple[Any, Recorder]]:
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    seen = Recorder()

    def on_console(message: Any) -> None:
        if message.type == "error":
            seen.errors.append(message.text)

    def watch(page: Any) -> None:
        page.on("request", lambda r: seen.requests.append(r.url))
        page.on("console", on_console)
        page.on("pageerror", lambda e: seen.errors.append(str(e)))

    ctx.on("page", watch)
    yield ctx, seen
    ctx.close()


def site_status(demo: Running) -> dict[str, Any]:
    with demo.http() as http:
        r = http.get("/ops/v1/status")
        assert r.status_code == 200, r.text
        return dict(r.json())


def test_the_overview_shows_the_site(demo: Running, context: tuple[Any, Recorder]) -> None:
    from playwright.sync_api import expect

    ctx, seen = context
    status = site_status(demo)
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    hosts = len(list(admin.compute.hypervisors()))
    assert status["hosts"]["total"] == hosts >= 1
    page = ctx.new_page()
    page.goto(demo.base_url + "/dashboard")
    # (the title starts with "⚠ N alerts · " while any fires)
    expect(page).to_have_title(re.compile(
        rf"Overview · {re.escape(status['site']['name'])} · infracloud$"))
    expect(page.locator("#hosts-total")).to_have_text(str(hosts))
    expect(page.locator("#hosts-grid .host")).to_have_count(hosts)
    names = sorted(page.locator("#hosts-grid .host").evaluate_all(
        "cells => cells.map(c => c.dataset.host)"))
    assert names == sorted(h["name"] for h in status["hosts"]["rows"])
    vcpus = page.locator("#capacity-vcpus")
    expect(vcpus.locator('svg[aria-label="vCPUs capacity"]')).to_be_visible()
    expect(vcpus).to_contain_text(f"/{status['capacity']['vcpus']['total']} used")
    expect(page.locator("#pool")).to_contain_text("ubuntu-noble")
    expect(page.locator("#events table.events tbody tr").first).to_be_visible()
    firing = bool(site_status(demo)["alerts"])
    assert page.locator(".alert-banner").count() == (1 if firing else 0)
    css = page.evaluate("getComputedStyle(document.querySelector('.host')).backgroundColor")
    assert css == "rgb(46, 125, 50)"  # up: green (the stylesheet loaded)
    seen.check()


def test_pages_follow_a_server_without_a_reload(demo: Running,
                                                context: tuple[Any, Recorder]) -> None:
    from playwright.sync_api import expect

    ctx, seen = context
    instances = ctx.new_page()
    instances.goto(demo.base_url + "/dashboard/instances")
    events = ctx.new_page()
    events.goto(demo.base_url + "/dashboard/events?kind=state")
    for page in (instances, events):  # gone if the page reloads
        page.evaluate("window.notReloaded = true")

    conn = sdk(demo.clouds_yaml, "infracloud")
    name = f"dash-{uuid.uuid4().hex[:6]}"
    server = conn.compute.create_server(
        name=name, flavor_id=conn.compute.find_flavor("ci.small").id,
        image_id=conn.image.find_image("demo").id, networks="auto")
    try:
        conn.compute.wait_for_server(server, wait=120)
        row = instances.locator(f'#servers tr[data-id="{server.id}"]')
        expect(row).to_contain_text(name, timeout=UPDATE)
        expect(row).to_have_attribute("data-state", "active", timeout=UPDATE)
        expect(row).to_contain_text("zuul")  # its project
        changes = events.locator(f'tr[data-resource="{server.id}"]')
        created = changes.filter(has_text="spawning").filter(has_text="create")
        expect(created).to_contain_text("zuul", timeout=UPDATE)  # who: the user
        expect(changes.filter(has_text="booted")).to_contain_text("active", timeout=UPDATE)

        pool = ctx.new_page()
        pool.goto(demo.base_url + "/dashboard/pool")
        expect(pool.locator('tr[data-label="ubuntu-noble"]')).to_be_visible()
        expect(pool.locator("#pool-waiting")).to_have_text(
            str(site_status(demo)["pool"]["requests_waiting"]), timeout=UPDATE)
    finally:
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=120)
    expect(instances.locator(f'#servers tr[data-id="{server.id}"]')).to_have_count(
        0, timeout=UPDATE)
    expect(events.locator(f'tr[data-resource="{server.id}"]').filter(
        has_text="deleted").first).to_be_visible(timeout=UPDATE)
    for page in (instances, events):
        assert page.evaluate("window.notReloaded") is True
    seen.check()


def test_a_bad_filter_gets_a_clear_error(demo: Running) -> None:
    with demo.http() as http:
        r = http.get("/dashboard/events", params={"kind": "gossip"})
        assert r.status_code == 400 and "kind must be" in r.text
        r = http.get("/dashboard/instances", params={"state": "asleep"})
        assert r.status_code == 400 and "state must be" in r.text
        r = http.get("/dashboard/static/services.py")
        assert r.status_code == 404
        page = http.get("/dashboard/events", params={"host": "<b>x</b>"})
        assert page.status_code == 200 and "<b>x</b>" not in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        fragment = http.get("/dashboard", params={"fragment": "1"})
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert 'id="hosts-grid"' in fragment.text


def test_status_command_prints_the_same_counts(demo: Running) -> None:
    env = env_file(demo.state_dir / "infracloud.env")  # type: ignore[operator]
    admin = sdk(demo.clouds_yaml, "infracloud-admin")
    hosts = len(list(admin.compute.hypervisors()))

    def same() -> dict[str, Any] | None:
        r = infracloud("status", "--format", "json", env=env)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        servers = len(list(admin.compute.servers(all_projects=True)))
        return got if got["instances"]["total"] == servers else None  # the pool moves

    got = wait_for("status and openstacksdk to agree", same, timeout=30, every=1)
    assert got["hosts"]["total"] == hosts
    assert got["site"]["url"] == demo.base_url and got["pool"]["name"] == "demo"
    table = infracloud("status", env={**env, "COLUMNS": "120"})
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()
             and not line.startswith(" ")}
    assert re.match(rf"Hosts\s+{hosts}: \d+ up, ", lines["Hosts"]), lines["Hosts"]
    assert lines["Servers"].split()[1].rstrip(":").isdigit()
    assert "vCPUs" in lines["Capacity"] and "free" in lines["Capacity"]
    assert lines["Pool"].startswith("Pool        demo: ") and "waiting" in lines["Pool"]
    # the demo's one controller holds every background duty
    assert re.match(r"Duties\s+maintenance, reaper, alerts, lifetimes, conductor on "
                    r"\S+#[0-9a-f]{6}$", lines["Duties"].rstrip()), lines["Duties"]
    assert ("no alerts" in lines["Alerts"]) == (not got["alerts"])
    bad = infracloud("status", "--format", "yaml", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("infracloud: error: --format")


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A controller with `ops.public_read: false`, a `watcher` with the reader role on its
    project and a `nobody` with no role anywhere."""
    folder = tmp_path_factory.mktemp("closed")
    path, url = write_controller_config(folder, f"sqlite:///{folder / 'c.db'}", sections={
        "site": "closed", "region": "closed", "ops": {"public_read": False}})
    running = start_controller(path, url)
    try:
        with running.http() as h:
            h.headers["X-Auth-Token"] = password_token(running)
            project = h.post("/identity/v3/projects", json={"project": {"name": "watchers"}})
            reader = h.get("/identity/v3/roles", params={"name": "reader"}).json()["roles"][0]
            for name in ("watcher", "nobody"):
                user = h.post("/identity/v3/users", json={"user": {
                    "name": name, "password": f"{name}-secret"}})
                assert user.status_code == 201, user.text
                if name == "watcher":
                    granted = h.put(f"/identity/v3/projects/{project.json()['project']['id']}"
                                    f"/users/{user.json()['user']['id']}/roles/{reader['id']}")
                    assert granted.status_code == 204, granted.text
        yield running
    finally:
        assert running.stop() == 0


def test_a_closed_dashboard_signs_in_and_out_in_the_browser(
        closed: Running, context: tuple[Any, Recorder]) -> None:
    from playwright.sync_api import expect

    ctx, seen = context
    page = ctx.new_page()
    page.goto(closed.base_url + "/dashboard/events?kind=state")
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next=%2Fdashboard%2Fevents"))

    def sign_in(user: str, password: str, project: str = "") -> None:
        page.fill('input[name="username"]', user)
        page.fill('input[name="password"]', password)
        page.fill('input[name="project"]', project)
        page.click('button[type="submit"]')

    sign_in("watcher", "wrong", "watchers")
    expect(page.locator("#login-error")).to_contain_text("Wrong user name or password")
    sign_in("nobody", "nobody-secret")  # signs in, but may not read
    expect(page.locator("#login-error")).to_contain_text(
        "nobody has neither the admin nor the reader role")
    assert not ctx.cookies()
    sign_in("watcher", "watcher-secret", "watchers")
    expect(page).to_have_url(closed.base_url + "/dashboard/events?kind=state")  # back there
    expect(page).to_have_title(re.compile(r"^Events · closed · infracloud$"))
    expect(page.locator("form.signout")).to_contain_text("watcher")
    cookie = next(c for c in ctx.cookies() if c["name"] == "infracloud_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "infracloud_dashboard" not in page.evaluate("document.cookie")  # scripts cannot
    # the live refresh and every ops view take the sign-in
    assert page.evaluate("fetch('/dashboard?fragment=1').then(r => r.status)") == 200
    assert page.evaluate("fetch('/ops/v1/status').then(r => r.status)") == 200

    page.click("#sign-out")
    expect(page).to_have_url(re.compile(r"/dashboard/login$"))
    assert not [c for c in ctx.cookies() if c["name"] == "infracloud_dashboard"]
    with closed.http() as h:  # the token itself is revoked, not only forgotten
        r = h.get("/ops/v1/status", headers={"X-Auth-Token": cookie["value"]})
        assert r.status_code == 401
    page.goto(closed.base_url + "/dashboard")
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next=%2Fdashboard$"))
    # the two refused sign-ins were answered 401 and 403, which the browser logs
    refused = [e for e in seen.errors if re.search(r"status of 40[13] ", e)]
    assert len(refused) == 2, seen.errors
    seen.errors = [e for e in seen.errors if e not in refused]
    seen.check()


def test_a_closed_dashboard_sends_browsers_to_sign_in_and_scripts_get_401(
        closed: Running) -> None:
    with closed.http() as h:
        r = h.get("/dashboard/alerts")
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Falerts"
        assert h.get("/dashboard/alerts", params={"fragment": "1"}).status_code == 401
        login = h.get("/dashboard/login", params={"next": "https://elsewhere.example/"})
        assert login.status_code == 200 and 'value="/dashboard"' in login.text  # not away
        r = h.post("/dashboard/login", content="username=watcher&password=watcher-secret"
                   "&project=watchers&next=//elsewhere.example/",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        assert h.cookies["infracloud_dashboard"]  # the client keeps it, as a browser would
        page = h.get("/dashboard/alerts")
        assert page.status_code == 200 and "watcher" in page.text
        r = h.post("/dashboard/login", content="username=&password=",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400 and "Give a user name and a password" in r.text
