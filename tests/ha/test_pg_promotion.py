"""A streaming replica promoted while the controllers run (README: "PostgreSQL: restarts, a
standby, promotion"): a primary and a standby made with `pg_basebackup -R`, synchronous
(`synchronous_commit = on`, `synchronous_standby_names` naming the standby), two controllers
behind HAProxy whose `database.url` names both servers with
`target_session_attrs=read-write`, an agent, openstacksdk churn and a writer of projects.
The primary dies (`pg_ctl stop -m immediate`: no shutdown checkpoint, as a crash), the standby
is promoted (`pg_ctl promote`), and the controllers, unchanged and not restarted, find it:
the churn goes on, and every project whose creation was answered 201 is on the new primary."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from infracloud.store import Database
from tests.ha.pgreplica import Cluster
from tests.ha.pgsite import Churn, Site, prepare
from tests.servers import infracloud, wait_for

pytestmark = pytest.mark.pg
LOGIN = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": "admin-secret"}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}


class Ledger:
    """Creates projects one after another through HAProxy; `acked` holds each one answered
    201 (or 409 on a try again: its first try was committed after all)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.acked: list[str] = []
        self.acked_at: list[float] = []  # time.monotonic() of each
        self.failed = 0
        self.dropped = 0  # of which with no answer
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.site.public, verify=str(self.site.ca),
                              timeout=30) as h:
                r = h.post("/identity/v3/auth/tokens", json=LOGIN)
                assert r.status_code == 201, r.text
                h.headers["X-Auth-Token"] = r.headers["X-Subject-Token"]
                n = 0
                while not self.stopping.is_set():
                    name = f"ledger-{n}"
                    while True:
                        try:
                            status = h.post("/identity/v3/projects", json={
                                "project": {"name": name}}).status_code
                        except httpx.HTTPError:  # a connection HAProxy closed: no answer
                            status = 0
                            self.dropped += 1
                        if status in (201, 409):
                            break
                        assert status in (0, 503), status
                        self.failed += 1
                        self.site.wait_proxy_ready(time.monotonic() + 60)
                    self.acked.append(name)
                    self.acked_at.append(time.monotonic())
                    n += 1
                    self.stopping.wait(0.05)  # one project every 50 ms at most
        except BaseException as exc:
            self.errors.append(exc)


def test_standby_promoted_under_churn_loses_no_commit(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="infracloud-ha-repl-"))
    base.chmod(0o755)  # the postgres user's reach
    primary = Cluster(base / "primary")
    replica: Cluster | None = None
    site: Site | None = None
    try:
        primary.init()
        primary.start()
        replica = primary.clone(base / "replica", name="replica1")
        replica.start()
        primary.make_synchronous("replica1")
        primary.query("CREATE DATABASE infracloud")
        # libpq's form: both servers, the one that takes writes
        url = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{replica.port}"
               f"/infracloud?target_session_attrs=read-write")
        db = Database(url)
        db.migrate()
        db.dispose()
        site = Site(tmp_path, url, controllers=2)
        site.start()
        image, flavor = prepare(site)
        churn = Churn(site, image, flavor, threads=3).start()
        ledger = Ledger(site)
        ledger.thread.start()
        wait_for("churn and projects on the primary", lambda: (churn.cycles() >= 2 and
                 len(ledger.acked) >= 20) or churn.errors or ledger.errors, timeout=60)

        primary.stop("immediate")  # the primary's machine is gone
        acked_before = len(ledger.acked)
        wait_for("the clients to meet the outage", lambda: churn.tally.answers[503] >= 1 or
                 churn.errors, timeout=30)
        assert replica.query("SELECT pg_is_in_recovery()") == [(True,)]
        replica.promote()
        promoted_at = time.monotonic()
        assert replica.query("SELECT pg_is_in_recovery()") == [(False,)]
        promoted = churn.cycles()
        wait_for("churn and projects on the promoted standby",
                 lambda: (churn.cycles() >= promoted + 4 and
                 len(ledger.acked) >= acked_before + 20) or churn.errors or ledger.errors,
                 timeout=90)
        ledger.stopping.set()
        ledger.thread.join(30)
        tally = churn.stop()
        first = next(t for t in ledger.acked_at if t > promoted_at) - promoted_at
        print(tally.summary(), f"; projects {len(ledger.acked)} acknowledged "
              f"({acked_before} before the primary died), {ledger.failed} tries failed "
              f"({ledger.dropped} with no answer); "
              f"the first write {first:.1f} s after the promotion")
        assert ledger.errors == []
        assert {s for s in tally.answers if s >= 500} <= {503}, (
            tally.summary() + "\n" + "".join(e for c in site.controllers for e in c.errors()))
        assert tally.bad_503s == []
        assert all(c.running() for c in site.controllers)

        # nothing acknowledged is lost: every project is on the new primary
        names = {name for (name,) in replica.query(
            "SELECT name FROM projects WHERE name LIKE 'ledger-%'", "infracloud")}
        assert names == set(ledger.acked)
        wait_for("nothing left in the database", lambda: site.leftovers() == {
            "servers": 0, "ports": 0, "claimed_vcpus": 0, "claimed_ram_mb": 0})
        wait_for("nothing left on the host", lambda: site.agent_instances() == 0)
        # the controllers' tools take the same URL: a backup (pg_dump) of the new primary
        r = infracloud("backup", "--config", str(site.controllers[0].config), "--output",
                       str(tmp_path / "after-promotion.tar"),
                       env={"INFRACLOUD_BACKUP_PASSPHRASE": "promoted"})
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        assert "(postgresql, schema revision " in r.stdout
    finally:
        if site is not None:
            site.close()
        if replica is not None:
            replica.gone()
        primary.gone()
        shutil.rmtree(base, ignore_errors=True)
