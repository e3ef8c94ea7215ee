"""Scheduled backups (`backup:` in the controller config): the maintenance takes one when the
newest good one in `dir` is older than `every` and not before, prunes the oldest beyond `keep`,
leaves no file for a failed one; `infracloud status` shows the last one's age and the
backup_stale alert fires when it is too old, on an injected clock."""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from infracloud.cli.status import screen
from infracloud.core.clock import FakeClock
from infracloud.core.errors import ConfigError
from infracloud.core.secrets import SecretBox
from infracloud.core.settings import ControllerConfig, config_errors, load_config
from infracloud.site.backups import Backups
from infracloud.site.services import Services, build_services
from infracloud.site.status import site_status
from infracloud.store.backup import read_manifest
from infracloud.store.db import Database
from tests.servers import write_controller_config

HOUR = 3600.0


def _config(folder: Path, **backup: Any) -> ControllerConfig:
    folder.mkdir(exist_ok=True)
    (folder / "passphrase").write_text("correct horse battery staple\n")
    sections = {"backup": {"dir": "backups", "passphrase_file": "passphrase", **backup}} \
        if backup else {}
    config_file, _ = write_controller_config(folder, f"sqlite:///{folder / 'c.db'}",
                                             sections=sections)
    config = load_config(config_file)
    SecretBox(config).encrypt("make the key file")
    return config


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def services(tmp_path: Path, clock: FakeClock) -> Iterator[Services]:
    s = build_services(_config(tmp_path / "site", every="1h", keep=3), clock)
    yield s
    s.close()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _lines(data: dict[str, Any]) -> dict[str, str]:
    console = Console(record=True, width=120)
    console.print(screen(data))
    text = console.export_text(styles=False)
    return {line.split()[0]: line for line in text.splitlines() if line[:1].strip()}


def test_the_backup_section_parses_durations_and_needs_a_passphrase(tmp_path: Path) -> None:
    assert not ControllerConfig().backup.enabled
    config = _config(tmp_path / "a", every="1h", keep=48)
    assert config.backup.every == HOUR and config.backup.stale_seconds() == 2 * HOUR
    assert config.backup.dir == (tmp_path / "a" / "backups").resolve()
    assert _config(tmp_path / "b", every=600, stale_after="2d").backup.stale_seconds() == \
        2 * 86400
    bad = tmp_path / "bad.yaml"
    bad.write_text("backup:\n  every: 1h\n  dir: /srv/backups\n")
    config_or_none, errors = config_errors(bad)
    assert config_or_none is None
    assert errors == [f"{bad}:1: backup: Value error, passphrase_file is required when every "
                      f"is set"]
    bad.write_text("backup:\n  every: soon\n  passphrase_file: p\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: backup.every: Value error, 'soon' is "
                                          r"neither seconds nor a duration"):
        load_config(bad)


def test_a_backup_is_taken_when_due_and_not_before(services: Services, clock: FakeClock
                                                   ) -> None:
    folder = services.config.backup.dir
    services.maintenance(backups=False)  # the round before the controller serves: none
    assert _names(folder) == []
    services.maintenance()
    assert _names(folder) == ["vanilla-20260101T000000Z.tar"]
    manifest = read_manifest(folder / "vanilla-20260101T000000Z.tar")
    assert manifest["site"] == "vanilla" and manifest["database"] == "sqlite"
    clock.advance(HOUR - 1)
    services.maintenance()
    assert _names(folder) == ["vanilla-20260101T000000Z.tar"]
    clock.advance(1)
    services.maintenance()
    assert _names(folder) == ["vanilla-20260101T000000Z.tar", "vanilla-20260101T010000Z.tar"]
    with tarfile.open(folder / "vanilla-20260101T010000Z.tar") as tar:
        assert sorted(tar.getnames()) == ["controller.yaml", "database.sqlite", "keys.enc",
                                          "manifest.json"]


def test_keep_prunes_the_oldest_and_leaves_other_files(services: Services, clock: FakeClock
                                                       ) -> None:
    folder = services.config.backup.dir
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "vanilla-20251231T000000Z.tar.part").write_text("cut short")
    for _ in range(4):
        services.maintenance()
        clock.advance(HOUR)
    assert _names(folder) == ["notes.txt", "vanilla-20251231T000000Z.tar.part",
                              "vanilla-20260101T010000Z.tar", "vanilla-20260101T020000Z.tar",
                              "vanilla-20260101T030000Z.tar"]


def test_a_failed_backup_leaves_no_file_and_is_logged(
        tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    config = _config(tmp_path / "site", every="1h")
    db = Database(config.database.url)
    db.migrate()
    try:
        def broken(*args: Any, **kw: Any) -> dict[str, Any]:
            raise OSError("disk full")

        backups = Backups(db, config, clock, take=broken)
        with caplog.at_level(logging.ERROR, logger="infracloud.site.backups"):
            assert backups.maintenance() is None
        assert _names(config.backup.dir) == []
        assert "scheduled backup failed" in caplog.text
        caplog.clear()
        assert config.backup.passphrase_file is not None
        config.backup.passphrase_file.unlink()  # the real archive, no passphrase: one line
        with caplog.at_level(logging.ERROR, logger="infracloud.site.backups"):
            assert Backups(db, config, clock).maintenance() is None
        assert _names(config.backup.dir) == []
        assert "scheduled backup failed: --passphrase-file" in caplog.text
    finally:
        db.dispose()


def test_backup_stale_fires_when_too_old_and_resolves_after_a_backup(
        services: Services, clock: FakeClock) -> None:
    def firing() -> list[tuple[str, str]]:
        return [(a.rule, a.summary) for a in services.alerts.list()]

    assert services.alerts.evaluate() == []  # no backup yet, but only just started
    clock.advance(2 * HOUR + 1)
    services.alerts.evaluate()
    assert firing() == [("backup_stale", f"no backup in {services.config.backup.dir} since "
                         f"the controller started, longer ago than backup.stale_after "
                         f"(7200 s)")]
    services.maintenance()
    assert [(a.rule, a.state) for a in services.alerts.evaluate()] == \
        [("backup_stale", "resolved")]
    clock.advance(2 * HOUR + 1)
    services.alerts.evaluate()
    assert firing() == [("backup_stale", "the last good backup, vanilla-20260101T020001Z.tar, "
                         "is older than backup.stale_after (7200 s)")]
    services.maintenance()
    services.alerts.evaluate()
    assert firing() == []


def test_status_shows_the_last_backup_and_its_age(services: Services, clock: FakeClock
                                                  ) -> None:
    backup = site_status(services)["backup"]
    assert backup["enabled"] and backup["last"] is None and backup["age_seconds"] is None
    assert "none yet in" in _lines(site_status(services))["Backup"]
    services.maintenance()
    clock.advance(90 * 60)
    data = site_status(services)
    assert {k: data["backup"][k] for k in ("last", "file", "age_seconds", "stale")} == {
        "last": "2026-01-01T00:00:00Z", "file": "vanilla-20260101T000000Z.tar",
        "age_seconds": 5400.0, "stale": False}
    assert _lines(data)["Backup"].split() == [
        "Backup", "last", "2026-01-01T00:00:00Z", "(1", "h", "30", "min", "ago)",
        "vanilla-20260101T000000Z.tar"]


def test_status_says_backups_off(tmp_path: Path, clock: FakeClock) -> None:
    s = build_services(_config(tmp_path / "site"), clock)
    try:
        s.maintenance()
        assert site_status(s)["backup"] == {"enabled": False}
        assert "backups off" in _lines(site_status(s))["Backup"]
        clock.advance(30 * 86400)
        assert s.alerts.evaluate() == []
    finally:
        s.close()


def test_one_backup_at_a_time(tmp_path: Path, clock: FakeClock, db: Database) -> None:
    """A second round while one runs in this process skips; with several controllers on
    PostgreSQL, one that holds the backup's advisory lock makes the others skip."""
    from sqlalchemy import text

    from infracloud.site import backups as sb

    config = _config(tmp_path / "site", every="1h")
    backups = Backups(db, config, clock)
    with backups._running:
        assert backups.maintenance() is None
    if not db.is_sqlite:
        with db.write() as s:
            assert s.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                             {"k": sb._LEAD_KEY}).scalar()
            assert backups.maintenance() is None
    assert _names(config.backup.dir) == []
