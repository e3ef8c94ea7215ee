"""`infracloud backup` of a live controller and `infracloud restore` into a new state folder
(the lost disk): a controller started on the restored state serves the old data, and a token
issued before the backup still validates (its signing key lives in the database, encrypted with
the site's secret key file: both came back)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.conftest import create_pg_database
from tests.servers import (
    Running,
    infracloud,
    password_token,
    start_controller,
    write_controller_config,
)

PASS = "it was a dark and stormy night\n"


def _populate(site: Running) -> tuple[str, str, str]:
    """A project, a user and a flavor made through the API, and a token of before; the
    project's id, the flavor's id and the token."""
    token = password_token(site)
    with site.http(headers={"X-Auth-Token": token}) as h:
        r = h.post("/identity/v3/projects", json={"project": {"name": "chocolate-ci"}})
        assert r.status_code == 201, r.text
        project = r.json()["project"]["id"]
        r = h.post("/identity/v3/users", json={"user": {
            "name": "nodepool", "password": "np-pw", "default_project_id": project}})
        assert r.status_code == 201, r.text
        r = h.post("/compute/v2.1/flavors", json={"flavor": {
            "name": "backup.drill", "ram": 1024, "vcpus": 1, "disk": 10}})
        assert r.status_code == 200, r.text
        flavor = r.json()["flavor"]["id"]
    return project, flavor, token


def _check_restored(site: Running, project: str, flavor: str, token: str) -> None:
    with site.http(headers={"X-Auth-Token": token}) as h:
        r = h.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
        assert r.status_code == 200, r.text  # the token of before the backup validates
        assert h.get(f"/identity/v3/projects/{project}").json()["project"]["name"] == \
            "chocolate-ci"
        users = h.get("/identity/v3/users", params={"name": "nodepool"}).json()["users"]
        assert [u["name"] for u in users] == ["nodepool"]
        assert h.get(f"/compute/v2.1/flavors/{flavor}").json()["flavor"]["name"] == "backup.drill"


def _churn(site: Running, token: str, stop: threading.Event, made: list[str]) -> None:
    """Writes while the backup runs: projects made one after another."""
    with site.http(headers={"X-Auth-Token": token}) as h:
        while not stop.is_set():
            r = h.post("/identity/v3/projects",
                       json={"project": {"name": f"churn-{len(made)}"}})
            assert r.status_code == 201, r.text
            made.append(r.json()["project"]["id"])


def test_backup_of_a_live_sqlite_site_restores_on_a_new_controller(tmp_path: Path) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASS)
    old = tmp_path / "old"
    (old / "state").mkdir(parents=True)
    config, url = write_controller_config(old, f"sqlite:///{old / 'state' / 'c.db'}")
    archive = tmp_path / "backups" / "vanilla.tar"
    archive.parent.mkdir()
    site = start_controller(config, url)
    try:
        project, flavor, token = _populate(site)
        stop, made = threading.Event(), []  # type: ignore[var-annotated]
        writer = threading.Thread(target=_churn, args=(site, token, stop, made))
        writer.start()
        try:
            r = infracloud("backup", "--config", str(config), "--output", str(archive),
                           "--passphrase-file", str(passphrase))
        finally:
            stop.set()
            writer.join()
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        assert r.stdout.splitlines()[-1].startswith(
            "backed up site vanilla (sqlite, schema revision ")
        assert made  # the controller wrote while the backup ran
    finally:
        assert site.stop() == 0
    shutil.rmtree(old / "state")  # the lost disk

    new = tmp_path / "new"
    new.mkdir()
    new_config, new_url = write_controller_config(new, f"sqlite:///{new / 'state' / 'c.db'}")
    assert new_url != url
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    r = infracloud("restore", "--config", str(new_config), str(archive),
                   "--passphrase-file", str(wrong))
    assert (r.returncode, r.stderr) == (2, f"infracloud: error: {archive}: wrong passphrase "
                                           f"(the key files cannot be decrypted with it)\n")
    assert not (new / "state").exists()

    r = infracloud("restore", "--config", str(new_config), str(archive),
                   "--passphrase-file", str(passphrase))
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    db_file = new / "state" / "c.db"
    assert f"restored the database to {db_file} (mode 0600)" in r.stdout
    assert f"restored the secret_key_file to {new / 'state' / 'bmc-secret.key'} (mode 0600)" \
        in r.stdout
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        names = {n for (n,) in conn.execute("SELECT name FROM projects")}
    # a consistent snapshot: the churn's projects up to some point, none after a gap
    churned = sorted(int(n.split("-")[1]) for n in names if n.startswith("churn-"))
    assert churned == list(range(len(churned)))

    again = infracloud("restore", "--config", str(new_config), str(archive),
                       "--passphrase-file", str(passphrase))
    assert (again.returncode, again.stderr) == (
        2, f"infracloud: error: the database {db_file} is not empty: restore over it only "
           f"with --force\n")

    restored = start_controller(new_config, new_url)
    try:
        _check_restored(restored, project, flavor, token)
    finally:
        assert restored.stop() == 0


@pytest.mark.pg
def test_backup_and_restore_on_postgresql(tmp_path: Path, pg_admin_url: str) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASS)
    old = tmp_path / "old"
    old.mkdir()
    config, url = write_controller_config(old, create_pg_database(pg_admin_url))
    archive = tmp_path / "vanilla.tar"
    site = start_controller(config, url)
    try:
        project, flavor, token = _populate(site)
        r = infracloud("backup", "--config", str(config), "--output", str(archive),
                       "--passphrase-file", str(passphrase))
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        assert "(postgresql, schema revision " in r.stdout
    finally:
        assert site.stop() == 0
    (old / "secret.key").unlink()  # the lost controller took its key file with it

    new = tmp_path / "new"
    new.mkdir()
    new_config, new_url = write_controller_config(new, create_pg_database(pg_admin_url))
    r = infracloud("restore", "--config", str(new_config), str(archive),
                   "--passphrase-file", str(passphrase))
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "restored the database into the configured PostgreSQL database" in r.stdout
    assert (new / "secret.key").stat().st_mode & 0o777 == 0o600
    restored = start_controller(new_config, new_url)
    try:
        _check_restored(restored, project, flavor, token)
    finally:
        assert restored.stop() == 0
    r = infracloud("restore", "--config", str(new_config), str(archive),
                   "--passphrase-file", str(passphrase))
    assert (r.returncode, r.stderr) == (
        2, "infracloud: error: the PostgreSQL database of the config is not empty: restore "
           "over it only with --force\n")
    r = infracloud("restore", "--config", str(new_config), str(archive), "--force",
                   "--passphrase-file", str(passphrase))
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_backup_of_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    config, _url = write_controller_config(tmp_path, "postgresql://nobody@127.0.0.1:1/none")
    r = infracloud("backup", "--config", str(config), "--output", str(tmp_path / "b.tar"),
                   env={"INFRACLOUD_BACKUP_PASSPHRASE": "pp"})
    assert r.returncode == 2
    assert r.stderr.startswith("infracloud: error: database unreachable: ")
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "b.tar").exists()
