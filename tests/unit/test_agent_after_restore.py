"""The agent's side of a restored controller: it destroys only what the controller says, reports
the servers it runs that the controller did not list (with what it kept of them) and those it
should run but lacks; and its credential: one rotated after the backup falls back to the one
before, one issued after the backup is refused with one log line saying what to do."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from infracloud.agent.drivers.fake import FakeDriver
from infracloud.agent.runner import Agent, HostInfo
from infracloud.api.app import create_app
from infracloud.compute.hosts import Registration
from infracloud.site.services import Services, build_services
from tests.servers import wait_for
from tests.unit.api_env import quick_config

HOST = HostInfo("h1", 8, 8192, 80)


def spec(server_id: str, state: str, ip: str) -> dict[str, Any]:
    """One server as the controller's `desired` lists it."""
    return {"id": server_id, "name": f"n-{server_id[:4]}", "state": state, "vcpus": 1,
            "ram_mb": 512, "disk_gb": 1, "image_id": None, "flavor_id": "f-small",
            "user_id": "u-1",
            "network": {"ip": ip, "prefix": 16, "mac": "fa:16:3e:00:00:01", "gateway": None,
                        "dns": [], "network_id": "net"},
            "config": {"hostname": "n", "availability_zone": "nova", "project_id": "p-1",
                       "meta": {"k": "v"}, "public_keys": {"me": "ssh-ed25519 AAAA me"},
                       "user_data": None}}


class Controller:
    """Records the agent's reports."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report"):
            self.reports.append(json.loads(request.read()))
            return httpx.Response(200, json={"generation": 1})
        return httpx.Response(404)

    def taken(self) -> list[dict[str, Any]]:
        out, self.reports = self.reports, []
        return out


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Agent, FakeDriver, Controller]]:
    controller, driver = Controller(), FakeDriver()
    a = Agent("http://controller.test", "t" * 24, driver, HOST, tmp_path,
              transport=controller.transport)
    a.host_id = "h-1"
    yield a, driver, controller
    a.close()


def settled(a: Agent) -> bool:
    return a.instance_counts()["busy"] == 0


A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"


def test_the_agent_keeps_and_reports_what_the_controller_does_not_list(
        agent: tuple[Agent, FakeDriver, Controller]) -> None:
    a, driver, controller = agent
    a.reconcile([spec(A, "spawning", "10.1.0.5")], [])
    wait_for("the spawn", lambda: settled(a) and controller.reports)
    assert controller.taken()[-1]["instances"][0]["state"] == "running"

    # a controller restored from a backup older than A: it lists nothing
    a.reconcile([], [])
    assert driver.list() == [A]  # kept running
    (sent,) = controller.taken()
    assert sent["instances"] == []
    (unknown,) = sent["unknown"]
    assert unknown["id"] == A and unknown["name"] == f"n-{A[:4]}"
    assert (unknown["project_id"], unknown["user_id"], unknown["flavor_id"]) == (
        "p-1", "u-1", "f-small")
    assert (unknown["ip"], unknown["mac"], unknown["vcpus"]) == ("10.1.0.5",
                                                                 "fa:16:3e:00:00:01", 1)
    assert (unknown["key_name"], unknown["key_data"], unknown["meta"]) == (
        "me", "ssh-ed25519 AAAA me", {"k": "v"})
    assert "user_data" not in unknown and unknown["launched_at"].endswith("Z")
    a.reconcile([], [])  # said again on every answer while it runs
    assert [r["unknown"][0]["id"] for r in controller.taken()] == [A]

    # told to remove it: destroyed, reported absent, its record gone; and none is unknown
    # any more, which the controller is told once
    a.reconcile([], [A])
    wait_for("the destroy", lambda: settled(a) and not driver.list())
    assert sorted(controller.taken(), key=len) == [
        {"instances": [{"id": A, "state": "absent"}]}, {"instances": [], "unknown": []}]
    assert not (a.records / f"{A}.json").exists()
    a.reconcile([], [])
    assert controller.taken() == []


def test_the_agent_never_re_creates_a_server_it_lacks(
        agent: tuple[Agent, FakeDriver, Controller]) -> None:
    """An ACTIVE server the host does not have (deleted after the backup the controller was
    restored from, or lost with the disk) is reported absent, not spawned again."""
    a, driver, controller = agent
    a.reconcile([spec(B, "active", "10.1.0.6")], [])
    assert controller.taken() == [{"instances": [{"id": B, "state": "absent"}]}]
    assert settled(a) and driver.list() == []


# ---- credentials after a restore: a real controller app in this process ------------------

def serve(services: Services) -> TestClient:
    return TestClient(create_app(services), raise_server_exceptions=False)


def host_agent(client: TestClient, credential: str, name: str, folder: Path) -> Agent:
    """An agent that keeps its credential in `folder` (as one that joined), talking to the
    app `client` serves."""
    return Agent("http://testserver", credential, FakeDriver(), HostInfo(name, 8, 8192, 80),
                 folder, transport=client._transport, credential_file=folder / "cred.json")


def register(a: Agent) -> int:
    """Register as the loop does (a refused credential handled); the status."""
    try:
        a.register()
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 401:
            a._refused()
        return exc.response.status_code
    return 200


def test_credentials_rotated_or_issued_after_the_backup(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    old = build_services(quick_config(tmp_path))
    client = serve(old)
    _, secret = old.credentials.enrol(old.hosts, Registration("h1", "fake", 8, 8192, 80))
    h1 = host_agent(client, secret, "h1", tmp_path / "h1")
    assert register(h1) == 200

    # the backup: the database and the site's key file
    backup = tmp_path / "backup"
    backup.mkdir()
    with sqlite3.connect(tmp_path / "controller.db") as src, \
            sqlite3.connect(backup / "controller.db") as dst:
        src.backup(dst)
    shutil.copy(tmp_path / "bmc-secret.key", backup / "bmc-secret.key")

    assert old.credentials.rotate() == 1  # after the backup: a rotation, and a new host
    h1.step(0)
    rotated = h1.http.headers["X-Agent-Token"]
    assert rotated != secret
    h1.step(0)  # the first call with the successor makes it the only one
    assert json.loads((tmp_path / "h1" / "cred.json").read_text()) == {
        "name": "h1", "credential": rotated, "previous": secret}
    _, late = old.credentials.enrol(old.hosts, Registration("h2", "fake", 8, 8192, 80))
    h2 = host_agent(client, late, "h2", tmp_path / "h2")
    assert register(h2) == 200
    h1.close()
    h2.close()
    client.close()
    old.close()

    # the controller's disk is lost; a new one is restored from the backup
    restored = build_services(quick_config(backup))
    client = serve(restored)
    try:
        h1 = host_agent(client, "unused", "h1", tmp_path / "h1")  # restarted: its kept file
        assert h1.http.headers["X-Agent-Token"] == rotated
        with caplog.at_level(logging.WARNING, logger="infracloud.agent.runner"):
            assert register(h1) == 401
            assert "trying the one of before its last rotation" in caplog.text
            assert register(h1) == 200  # with the credential the backup knows
        assert h1.http.headers["X-Agent-Token"] == secret
        h1.step(0)

        h2 = host_agent(client, "unused", "h2", tmp_path / "h2")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="infracloud.agent.runner"):
            assert register(h2) == 401
            assert register(h2) == 401
        refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(refusals) == 2
        assert refusals[0].getMessage() == (
            "the controller refuses this host's credential (401): it does not know it, as "
            "when it was restored from a backup older than this host's join; deploy the "
            "machine again (`infracloud hardware deploy NAME`), or start this agent with the "
            "site's agent token")
        assert [h.name for h in restored.hosts.list_hosts()] == ["h1"]
        h1.close()
        h2.close()
    finally:
        client.close()
        restored.close()
