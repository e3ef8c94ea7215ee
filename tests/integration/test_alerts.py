"""Alerts end to end: a real controller with a real `infracloud agent` (fake driver); the
agent freezes (SIGSTOP), the host goes down, the controller's alert fires (webhook, API,
events, log) and resolves when the agent wakes up (SIGCONT)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import BIN, free_port, loopback_cidr, start_controller, stop_process, wait_for
from tests.webhooks import Recorder

TOKEN = "agent-token-for-tests-0123456789"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def _hooks(recorder: Recorder, status: str) -> list[dict[str, Any]]:
    return [b for b in recorder.bodies if b["rule"] == "host_down" and b["status"] == status]


def test_a_frozen_agent_fires_host_down_and_its_return_resolves_it(
        tmp_path: Path, recorder: Recorder) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "agent-token").write_text(TOKEN)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "site": "alerting",
        "listen": {"host": "127.0.0.1", "port": port},
        "database": {"url": "sqlite:///c.db"},
        "compute": {"agent_token_file": "agent-token", "heartbeat_seconds": 1,
                    "host_down_after": 3, "reap_seconds": 0.5,
                    "network": {"name": "test-net", "cidr": loopback_cidr()}},
        "ops": {"alerts": {"interval": 1, "webhook_url": recorder.url,
                           "capacity_min_free": 0}}}))
    controller = start_controller(tmp_path / "c.yaml", url)
    agent = subprocess.Popen(
        [str(BIN / "infracloud"), "agent", "--controller", url, "--driver", "fake",
         "--name", "compute-a", "--state-dir", str(tmp_path / "agent"), "--vcpus", "16",
         "--ram-mb", "65536", "--disk-gb", "500"],
        env={**os.environ, "INFRACLOUD_AGENT_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    http = httpx.Client(base_url=url, timeout=10)

    def alerts(state: str = "firing") -> list[tuple[str, str, str]]:
        rows = http.get("/ops/v1/alerts", params={"state": state}).json()["alerts"]
        return [(a["rule"], a["subject"], a["state"]) for a in rows]

    def host_states() -> list[str | None]:
        rows = http.get("/ops/v1/events", params={"resource_type": "host",
                                                  "kind": "state"}).json()["events"]
        return [e["target"] for e in rows if e["resource_name"] == "compute-a"]

    try:
        wait_for("the host up", lambda: host_states()[-1:] == ["up"])
        assert alerts() == []

        agent.send_signal(signal.SIGSTOP)  # alive, but no more heartbeats
        (fired,) = wait_for("the firing POST", lambda: _hooks(recorder, "firing"), timeout=20)
        assert (fired["subject"], fired["severity"], fired["site"]) == \
            ("compute-a", "critical", "alerting")
        assert fired["dashboard"] == url + "/dashboard/alerts"
        assert alerts() == [("host_down", "compute-a", "firing")]
        assert http.get("/ops/v1/alerts", params={"state": "nope"}).status_code == 400

        agent.send_signal(signal.SIGCONT)
        (resolved,) = wait_for("the resolved POST", lambda: _hooks(recorder, "resolved"),
                               timeout=20)
        assert resolved["started_at"] == fired["started_at"]
        assert resolved["resolved_at"] >= fired["started_at"]
        assert alerts() == []
        assert alerts("resolved") == [("host_down", "compute-a", "resolved")]
        events = http.get("/ops/v1/events", params={"kind": "alert"}).json()["events"]
        assert [(e["resource_name"], e["action"], e["actor"]) for e in events] == [
            ("compute-a", "firing", "system:alerts"), ("compute-a", "resolved",
                                                       "system:alerts")]
        assert len(recorder.bodies) == 2  # nothing else fired
        assert any('"alert firing"' in line and '"host_down"' in line
                   for line in controller.lines)
    finally:
        http.close()
        if agent.poll() is None:
            agent.send_signal(signal.SIGCONT)
        stop_process(agent, 20)
        controller.stop()
