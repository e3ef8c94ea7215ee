"""PostgreSQL stopped (a fast shutdown, as `systemctl restart postgresql` does) and started
again under a running site: the controllers keep running and reconnect by themselves; a
request the database cannot serve answers 503 in the service's shape with Retry-After (never
a 500, never a hang); /readyz says not ready meanwhile, so HAProxy takes the controllers out
and back; background duties log one line each way. Each test has a cluster of its own (it
stops it)."""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests import pgcluster
from tests.conftest import create_pg_database
from tests.ha.pgsite import Churn, Site, own_cluster, prepare
from tests.servers import password_token, start_controller, wait_for, write_controller_config

pytestmark = pytest.mark.pg
DUTY_DOWN = re.compile(r"(reaper|conductor tick|alerts|maintenance|keys|recording API events): "
                       r"database unavailable: .*; trying again each round$")
DUTY_UP = re.compile(r"(.+): the database answers again$")


def _upload_image(h: httpx.Client) -> str:
    r = h.post("/image/v2/images", json={"name": "img", "disk_format": "raw",
                                          "container_format": "bare"})
    assert r.status_code == 201, r.text
    image = r.json()["id"]
    r = h.put(f"/image/v2/images/{image}/file", content=b"\0" * 1024,
              headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    return str(image)


def _lines(lines: list[str], level: str) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("level") == level:
            out.append(record)
    return out


def test_a_request_in_flight_when_postgresql_stops_answers_503(tmp_path: Path) -> None:
    """Deterministic: a server create waits inside PostgreSQL (on the project's quota lock,
    which the test holds) when the cluster shuts down; it answers 503 with Retry-After, as do
    new requests while the cluster is down; once it is back the same controller serves."""
    with own_cluster() as (folder, admin_url):
        db_url = create_pg_database(admin_url)
        config, url = write_controller_config(tmp_path, db_url)
        controller = start_controller(config, url)
        try:
            token = password_token(controller)
            h = controller.http(headers={"X-Auth-Token": token})
            project = h.get("/identity/v3/auth/tokens", headers={
                "X-Subject-Token": token}).json()["token"]["project"]["id"]
            image = _upload_image(h)
            flavor = h.get("/compute/v2.1/flavors").json()["flavors"][0]["id"]
            body = {"server": {"name": "in-flight", "imageRef": image, "flavorRef": flavor}}
            libpq = db_url.replace("+psycopg", "")  # advisory locks are per database
            holder = psycopg.connect(libpq, autocommit=True)
            holder.execute("SELECT pg_advisory_lock(%s)", (zlib.crc32(project.encode()),))
            answers: list[httpx.Response] = []
            create = threading.Thread(target=lambda: answers.append(
                h.post("/compute/v2.1/servers", json=body)))
            create.start()

            def waiting_on_the_lock() -> bool:
                with psycopg.connect(libpq, autocommit=True) as probe:
                    row = probe.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                        "wait_event = 'advisory'").fetchone()
                return bool(row and row[0])

            wait_for("the create to wait inside PostgreSQL", waiting_on_the_lock)
            pgcluster.stop(folder, mode="fast")  # ends every session, the holder's too
            create.join(30)
            assert not create.is_alive(), "the create hangs"
            (r,) = answers
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "5"
            assert r.json() == {"serviceUnavailable": {
                "code": 503, "message": "The database is unavailable; retry later."}}
            with pytest.raises(psycopg.OperationalError):
                holder.execute("SELECT 1")
            holder.close()

            # new requests while it is down: 503s of each service's shape, and not ready
            r = h.get("/network/v2.0/ports")
            assert (r.status_code, r.json()["NeutronError"]["type"]) == (503, "ServiceUnavailable")
            r = h.post("/identity/v3/auth/tokens", json={"auth": {"identity": {
                "methods": ["token"], "token": {"id": token}}}})
            assert (r.status_code, r.headers["Retry-After"]) == (503, "5")
            assert r.json()["error"]["title"] == "Service Unavailable"
            ready = h.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["reason"].startswith("database unreachable: ")

            pgcluster.resume(folder)
            assert h.get("/readyz").status_code == 200  # the same process, reconnected
            r = h.post("/compute/v2.1/servers", json=body)
            assert r.status_code == 202, r.text
            assert h.get(f"/compute/v2.1/servers/{r.json()['server']['id']}").status_code == 200
        finally:
            assert controller.stop() == 0
        warnings = [w["msg"] for w in _lines(controller.lines, "warning")
                    if "database unavailable" in w["msg"]]
        assert any(w.startswith("POST /compute/v2.1/servers: database unavailable: ")
                   for w in warnings), warnings
        assert _lines(controller.lines, "error") == []  # no traceback, no 500


def test_postgresql_restart_under_churn_loses_nothing(tmp_path: Path) -> None:
    """Two controllers behind HAProxy, an agent, three openstacksdk clients churning servers
    (create -> ACTIVE -> delete, each call tried again after a failure as nodepool does).
    PostgreSQL shuts down (fast) and starts again: the clients see only 503s with a body and
    Retry-After, every cycle finishes, the churn goes on after the restart, and no server,
    port, address or claim is left over."""
    with own_cluster() as (folder, admin_url):
        site = Site(tmp_path, create_pg_database(admin_url), controllers=2)
        try:
            site.start()
            image, flavor = prepare(site)
            pids = [c.proc.pid for c in site.controllers if c.proc]
            churn = Churn(site, image, flavor, threads=3).start()
            wait_for("churn before the restart", lambda: churn.cycles() >= 3, timeout=60)

            pgcluster.stop(folder, mode="fast")
            wait_for("the clients to meet the outage",
                     lambda: churn.tally.answers[503] >= 3 or churn.errors, timeout=30)
            wait_for("HAProxy to take every controller out (/readyz: 503)",
                     lambda: all(site.states(c)[-1:] == ["DOWN"] for c in site.controllers))
            r = httpx.get(site.controllers[0].url + "/readyz", verify=str(site.ca))
            assert r.status_code == 503
            r = httpx.get(site.public + "/compute/v2.1/flavors", verify=str(site.ca))
            assert r.status_code == 503  # HAProxy's own, in the same shape
            assert r.headers["Retry-After"] == "5"
            assert r.json()["error"]["code"] == 503
            during = churn.cycles()

            pgcluster.resume(folder)
            resumed = time.monotonic()
            wait_for("HAProxy to take the controllers back",
                     lambda: all(site.up_in_haproxy(c) for c in site.controllers))
            back = time.monotonic() - resumed
            wait_for("churn after the restart", lambda: churn.cycles() >= during + 3 or
                     bool(churn.errors), timeout=90)
            tally = churn.stop()
            print(tally.summary(), f"; HAProxy had the controllers back {back:.1f} s after "
                  f"PostgreSQL started")

            assert tally.failed > 0 and tally.retried == tally.failed
            assert {s for s in tally.answers if s >= 500} == {503}, tally.summary()
            assert tally.bad_503s == []
            assert [c.proc.pid for c in site.controllers if c.proc] == pids
            assert all(c.running() for c in site.controllers)
            wait_for("nothing left in the database", lambda: site.leftovers() == {
                "servers": 0, "ports": 0, "claimed_vcpus": 0, "claimed_ram_mb": 0})
            wait_for("nothing left on the host", lambda: site.agent_instances() == 0)
        finally:
            site.close()
        noticed: set[str] = set()
        for c in site.controllers:  # the duties: one line as the outage begins, one after
            began = {m.group(1) for w in _lines(c.lines, "warning")
                     if (m := DUTY_DOWN.match(w["msg"]))}
            ended = {m.group(1) for i in _lines(c.lines, "info")
                     if (m := DUTY_UP.match(i["msg"]))}
            assert began <= ended, c.output()
            noticed |= began
            serving = c.lines[:next((i for i, line in enumerate(c.lines)
                                     if '"msg":"Shutting down"' in line), len(c.lines))]
            assert _lines(serving, "error") == [], c.output()  # no traceback, no 500
        # a singleton duty runs on the controller holding its lease only: the site noticed
        assert noticed & {"reaper", "alerts", "maintenance"}, noticed
