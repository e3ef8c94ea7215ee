"""Backups and restores of a site's state (store.backup) on SQLite: the archive, its checks
(passphrase, sha256, schema revision, a database that is not empty) and what a restore writes."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from infracloud.core.secrets import SecretBox
from infracloud.core.settings import load_config
from infracloud.store.backup import BackupError, backup, read_manifest, read_passphrase, restore
from infracloud.store.db import Database
from tests.servers import write_controller_config

PASS = "correct horse battery staple"


def _site(folder: Path) -> tuple[Path, Path]:
    """A migrated SQLite site under `folder`: its config file and database file."""
    folder.mkdir()
    db_file = folder / "state" / "c.db"
    db_file.parent.mkdir()
    config_file, _ = write_controller_config(folder, f"sqlite:///{db_file}")
    db = Database(f"sqlite:///{db_file}")
    db.migrate()
    db.dispose()
    return config_file, db_file


def _rows(db_file: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_file) as conn:
        return conn.execute(sql).fetchall()


def test_round_trip_restores_database_and_key(tmp_path: Path) -> None:
    config_file, db_file = _site(tmp_path / "old")
    config = load_config(config_file)
    sealed = SecretBox(config).encrypt("bmc-password")  # makes the key file beside the db
    with sqlite3.connect(db_file) as conn:
        conn.execute("CREATE TABLE probe (v TEXT)")
        conn.execute("INSERT INTO probe VALUES (?)", (sealed,))
    out = tmp_path / "site.tar"
    lines: list[str] = []
    manifest = backup(config, config_file, out, PASS, say=lines.append)
    assert not Path(f"{out}.part").exists() and out.stat().st_mode & 0o077 == 0
    assert manifest["site"] == "vanilla" and manifest["database"] == "sqlite"
    assert manifest["revision"] == _rows(db_file, "SELECT version_num FROM alembic_version")[0][0]
    assert read_manifest(out) == manifest
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["controller.yaml", "database.sqlite", "keys.enc",
                                          "manifest.json"]
        keys_blob = tar.extractfile("keys.enc").read()  # type: ignore[union-attr]
    key = (db_file.parent / "bmc-secret.key").read_bytes()
    assert key.strip() not in keys_blob and PASS.encode() not in out.read_bytes()

    new_file, new_db = _site_unmigrated(tmp_path / "new")
    new_config = load_config(new_file)
    done = restore(new_config, out, PASS).done
    assert done[0] == f"restored the database to {new_db} (mode 0600)"
    assert new_db.stat().st_mode & 0o777 == 0o600
    new_key = new_db.parent / "bmc-secret.key"
    assert new_key.read_bytes() == key and new_key.stat().st_mode & 0o777 == 0o600
    restored = _rows(new_db, "SELECT v FROM probe")[0][0]
    assert SecretBox(new_config).decrypt(str(restored)) == "bmc-password"


def _site_unmigrated(folder: Path) -> tuple[Path, Path]:
    folder.mkdir()
    db_file = folder / "state" / "c.db"
    config_file, _ = write_controller_config(folder, f"sqlite:///{db_file}")
    return config_file, db_file


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    config_file, _ = _site(tmp_path / "old")
    config = load_config(config_file)
    SecretBox(config).encrypt("x")
    out = tmp_path / "site.tar"
    backup(config, config_file, out, PASS)
    return out


def test_wrong_passphrase_is_refused_and_writes_nothing(tmp_path: Path, archive: Path) -> None:
    new_file, new_db = _site_unmigrated(tmp_path / "new")
    with pytest.raises(BackupError) as err:
        restore(load_config(new_file), archive, "not the passphrase")
    assert err.value.message == f"{archive}: wrong passphrase (the key files cannot be " \
                                f"decrypted with it)"
    assert not new_db.parent.exists()


def _rewrite(archive: Path, change: dict[str, bytes]) -> None:
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members.update(change)
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tampered_member_is_refused(tmp_path: Path, archive: Path) -> None:
    with tarfile.open(archive) as tar:
        data = bytearray(tar.extractfile("database.sqlite").read())  # type: ignore[union-attr]
    data[-1] ^= 0xFF
    _rewrite(archive, {"database.sqlite": bytes(data)})
    new_file, new_db = _site_unmigrated(tmp_path / "new")
    with pytest.raises(BackupError) as err:
        restore(load_config(new_file), archive, PASS)
    assert err.value.message == f"{archive}: corrupt archive: the sha256 of database.sqlite " \
                                f"is not the manifest's"
    assert not new_db.exists()


def test_a_newer_schema_is_refused(tmp_path: Path, archive: Path) -> None:
    manifest = read_manifest(archive)
    manifest["revision"] = "9999_from_the_future"
    _rewrite(archive, {"manifest.json": json.dumps(manifest).encode()})
    new_file, _ = _site_unmigrated(tmp_path / "new")
    with pytest.raises(BackupError, match=r"schema revision 9999_from_the_future, newer than "
                                          r"this infracloud knows \(head \w+\)"):
        restore(load_config(new_file), archive, PASS)


def test_a_database_that_is_not_empty_needs_force(tmp_path: Path, archive: Path) -> None:
    config_file, db_file = _site(tmp_path / "busy")
    config = load_config(config_file)
    with pytest.raises(BackupError, match="is not empty: restore over it only with --force"):
        restore(config, archive, PASS)
    with sqlite3.connect(db_file) as conn:
        conn.execute("CREATE TABLE mine (v TEXT)")
    restore(config, archive, PASS, force=True)
    assert _rows(db_file, "SELECT count(*) FROM sqlite_master WHERE name = 'mine'") == [(0,)]


def test_backup_errors(tmp_path: Path) -> None:
    config_file, db_file = _site(tmp_path / "old")
    config = load_config(config_file)
    SecretBox(config).encrypt("x")
    with pytest.raises(BackupError, match=r"the folder .*/nowhere does not exist"):
        backup(config, config_file, tmp_path / "nowhere" / "b.tar", PASS)
    db_file.unlink()
    with pytest.raises(BackupError, match=r"database unreachable: no SQLite database at"):
        backup(config, config_file, tmp_path / "b.tar", PASS)
    assert not (tmp_path / "b.tar").exists() and not (tmp_path / "b.tar.part").exists()


def test_passphrase_sources(tmp_path: Path) -> None:
    f = tmp_path / "pp"
    f.write_text("s3cret words\n")
    assert read_passphrase(f, {}) == "s3cret words"
    assert read_passphrase(None, {"INFRACLOUD_BACKUP_PASSPHRASE": "env"}) == "env"
    with pytest.raises(BackupError, match="a passphrase is needed"):
        read_passphrase(None, {})
    f.write_text("\n")
    with pytest.raises(BackupError, match="the passphrase is empty"):
        read_passphrase(f, {})


def test_a_cut_or_foreign_file_is_one_error(tmp_path: Path, archive: Path) -> None:
    new_file, new_db = _site_unmigrated(tmp_path / "new")
    config = load_config(new_file)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BackupError, match=rf"^{cut}: corrupt archive"):
        restore(config, cut, PASS)
    foreign = tmp_path / "foreign.tar"
    foreign.write_text("site: vanilla\n")
    with pytest.raises(BackupError, match=rf"^{foreign}: not a backup archive"):
        restore(config, foreign, PASS)
    with pytest.raises(BackupError, match=rf"^{tmp_path / 'none.tar'}: no such file$"):
        restore(config, tmp_path / "none.tar", PASS)
    assert not new_db.parent.exists()
