"""Backups of a site's controller state, taken while the controller runs, and their restore.

A backup is one tar file:

- ``manifest.json``: the site, the database kind, the schema revision (Alembic), when it was
  made, the key derivation's parameters and the sha256 of every other member;
- ``database.sqlite`` (a copy made through SQLite's online backup API: a consistent snapshot
  while the controller writes) or ``database.pgdump`` (``pg_dump --format=custom``);
- ``keys.enc``: the site's secret key file (it encrypts the BMC passwords, the token signing
  keys and the hosts' pending credentials kept in the database) and the agent token file when
  the config names one, Fernet-encrypted with a key derived (scrypt) from the operator's
  passphrase;
- ``controller.yaml``: the controller config file the backup was taken with (plain text).

The passphrase is only ever held in memory. The archive is written to ``FILE.part`` and renamed,
so the final name never holds half an archive.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import glob
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from infracloud.core.errors import InfracloudError
from infracloud.core.secrets import SQLITE_PREFIX, key_path
from infracloud.core.settings import ControllerConfig
from infracloud.store.db import migrations_location, normalise_url

FORMAT = 1
MANIFEST = "manifest.json"
KEYS = "keys.enc"
CONFIG = "controller.yaml"
DUMPS = {"sqlite": "database.sqlite", "postgresql": "database.pgdump"}
PASSPHRASE_ENV = "INFRACLOUD_BACKUP_PASSPHRASE"
# scrypt at RFC 7914's interactive cost (about 0.1 s, 32 MiB): a guess costs as much
SCRYPT = {"n": 2**15, "r": 8, "p": 1}


class BackupError(InfracloudError):
    """A backup or restore that cannot be done; its message is the one line the CLI prints."""


Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Restored:
    """What a restore did, one line each."""

    done: list[str] = field(default_factory=list)


# --- the passphrase's key ------------------------------------------------------------------

def derive_key(passphrase: str, salt: bytes, params: dict[str, int] | None = None) -> Fernet:
    p = params or SCRYPT
    raw = Scrypt(salt=salt, length=32, n=p["n"], r=p["r"], p=p["p"]).derive(passphrase.encode())
    return Fernet(base64.urlsafe_b64encode(raw))


def read_passphrase(passphrase_file: Path | None, env: dict[str, str] | None = None) -> str:
    """The operator's passphrase: the file's first line, else $INFRACLOUD_BACKUP_PASSPHRASE."""
    if passphrase_file is not None:
        try:
            text = passphrase_file.read_text().splitlines()
        except OSError as exc:
            raise BackupError(f"--passphrase-file {passphrase_file}: cannot read: "
                              f"{exc.strerror}") from None
        value = text[0] if text else ""
    else:
        value = (os.environ if env is None else env).get(PASSPHRASE_ENV, "")
        if not value:
            raise BackupError(f"a passphrase is needed: --passphrase-file or {PASSPHRASE_ENV}")
    if not value.strip():
        raise BackupError("the passphrase is empty")
    return value


# --- the database --------------------------------------------------------------------------

def database_kind(url: str) -> str:
    if url.startswith("sqlite"):
        return "sqlite"
    if url.startswith(("postgresql", "postgres:")):
        return "postgresql"
    raise BackupError(f"cannot back up a database of URL scheme {url.split(':', 1)[0]!r}")


def sqlite_path(url: str) -> Path:
    if not url.startswith(SQLITE_PREFIX) or ":memory:" in url or url == SQLITE_PREFIX:
        raise BackupError("a database that lives only in memory has nothing to back up")
    return Path(url[len(SQLITE_PREFIX):].split("?", 1)[0])


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as pg_dump and pg_restore take it (no `+driver`)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith(("postgresql", "postgres")) else url


def pg_tool(name: str) -> str:
    """pg_dump or pg_restore: the newest of Debian's versioned ones, else the one on PATH (a
    newer pg_dump reads older servers; an older one refuses newer servers)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise BackupError(f"{name} not found: install PostgreSQL's client programs "
                      f"(apt-get install postgresql-client)")


def _tool_error(name: str, proc: subprocess.CompletedProcess[str]) -> BackupError:
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    why = lines[0] if lines else f"exit code {proc.returncode}"
    return BackupError(f"{name} failed: {why.removeprefix(f'{name}: ').removeprefix('error: ')}")


def _revision_sqlite(path: Path) -> str | None:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None


def _sqlite_has_tables(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        try:
            return bool(conn.execute("SELECT count(*) FROM sqlite_master "
                                     "WHERE type = 'table'").fetchone()[0])
        except sqlite3.DatabaseError:
            return True  # not a database we can read: not ours to overwrite silently


def _pg_query(url: str, sql: str) -> Any:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(normalise_url(url))  # libpq's several hosts too
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    except SQLAlchemyError as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackupError(f"database unreachable: {why}") from None
    finally:
        engine.dispose()


def code_revisions() -> tuple[str, set[str]]:
    """The code's head revision and every revision it knows."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", migrations_location())
    script = ScriptDirectory.from_config(cfg)
    return str(script.get_current_head()), {r.revision for r in script.walk_revisions()}


# --- backup --------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dump_sqlite(src: Path, dst: Path) -> str | None:
    if not src.is_file():
        raise BackupError(f"database unreachable: no SQLite database at {src}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{src}?mode=rw", uri=True,
                                                timeout=30)) as source, \
                contextlib.closing(sqlite3.connect(dst)) as target:
            # the online backup API, all pages in one step: one read transaction, so one
            # consistent snapshot (in WAL mode the controller's writers do not wait for it)
            source.backup(target)
    except sqlite3.Error as exc:
        raise BackupError(f"database unreachable: {src}: {exc}") from None
    os.chmod(dst, 0o600)
    return _revision_sqlite(dst)


def _dump_postgresql(url: str, dst: Path) -> str | None:
    revision = None  # a database no controller has migrated yet has no revision
    if _pg_query(url, "SELECT to_regclass('alembic_version') IS NOT NULL"):
        revision = _pg_query(url, "SELECT version_num FROM alembic_version")
    proc = subprocess.run([pg_tool("pg_dump"), "--format=custom", "--no-owner",
                           "--no-privileges", f"--file={dst}", f"--dbname={libpq_url(url)}"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise _tool_error("pg_dump", proc)
    return str(revision) if revision else None


def _key_files(config: ControllerConfig) -> dict[str, Path]:
    files: dict[str, Path] = {}
    secret = key_path(config)
    if secret is not None:
        files["secret_key_file"] = secret
    if config.compute.agent_token_file is not None:
        files["agent_token_file"] = config.compute.agent_token_file
    return files


def backup(config: ControllerConfig, config_file: Path, output: Path, passphrase: str,
           say: Say = _quiet, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Write the backup of the site `config` runs to `output`; its manifest."""
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise BackupError(f"--output {output}: the folder {folder} does not exist")
    kind = database_kind(config.database.url)
    salt = os.urandom(16)
    part = output.with_name(output.name + ".part")
    with tempfile.TemporaryDirectory(prefix=".infracloud-backup-", dir=folder) as tmp:
        work = Path(tmp)
        dump = work / DUMPS[kind]
        say(f"dumping the {kind} database")
        if kind == "sqlite":
            revision = _dump_sqlite(sqlite_path(config.database.url), dump)
        else:
            revision = _dump_postgresql(config.database.url, dump)
        keys: dict[str, str] = {}
        for name, path in _key_files(config).items():
            try:
                keys[name] = path.read_text()
            except FileNotFoundError:
                if name == "secret_key_file":
                    raise BackupError(f"the secret key file {path} is missing: without it the "
                                      f"database's secrets cannot be read") from None
            except OSError as exc:
                raise BackupError(f"{path}: cannot read: {exc.strerror}") from None
        (work / KEYS).write_bytes(derive_key(passphrase, salt).encrypt(
            json.dumps(keys).encode()))
        shutil.copyfile(config_file, work / CONFIG)
        members = [DUMPS[kind], KEYS, CONFIG]
        manifest = {
            "format": FORMAT,
            "site": config.site,
            "database": kind,
            "revision": revision,
            "created_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
            "kdf": {"name": "scrypt", "salt": base64.b64encode(salt).decode(), **SCRYPT},
            "keys": sorted(keys),
            "sha256": {m: _sha256(work / m) for m in members},
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
                for m in [MANIFEST, *members]:
                    tar.add(work / m, arcname=m, recursive=False)
                tar.close()
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(part, output)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise
    return manifest


# --- restore -------------------------------------------------------------------------------

@contextlib.contextmanager
def open_archive(archive: Path, work: Path) -> Iterator[dict[str, Any]]:
    """Unpack `archive` into `work`, its members checked against the manifest; the manifest."""
    try:
        tar = tarfile.open(archive, mode="r:")  # noqa: SIM115 - closed by `with tar` below
    except FileNotFoundError:
        raise BackupError(f"{archive}: no such file") from None
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{archive}: not a backup archive ({exc})") from None
    with tar:
        try:
            found = {m.name: m for m in tar.getmembers()}
        except (tarfile.TarError, OSError) as exc:
            raise BackupError(f"{archive}: corrupt archive ({exc})") from None
        if MANIFEST not in found:
            raise BackupError(f"{archive}: not a backup archive (no {MANIFEST})")
        try:
            manifest = json.loads(_read_member(tar, found[MANIFEST]))
            expected: dict[str, str] = manifest["sha256"]
            kind = manifest["database"]
        except (ValueError, KeyError, TypeError):
            raise BackupError(f"{archive}: corrupt archive (unreadable {MANIFEST})") from None
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{archive}: backup format {manifest.get('format')!r} is not "
                              f"one this infracloud reads ({FORMAT})")
        wanted = {DUMPS.get(kind, "?"), KEYS, CONFIG}
        if set(expected) != wanted or set(found) != wanted | {MANIFEST}:
            raise BackupError(f"{archive}: corrupt archive (members "
                              f"{', '.join(sorted(found))})")
        for name in sorted(wanted):
            member = found[name]
            if not member.isfile():
                raise BackupError(f"{archive}: corrupt archive ({name} is not a file)")
            data = tar.extractfile(member)
            assert data is not None
            target = work / name
            h = hashlib.sha256()
            with target.open("wb") as out:
                try:
                    while chunk := data.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
                except (tarfile.TarError, OSError) as exc:
                    raise BackupError(f"{archive}: corrupt archive ({exc})") from None
            if h.hexdigest() != expected[name]:
                raise BackupError(f"{archive}: corrupt archive: the sha256 of {name} is not "
                                  f"the manifest's")
    yield manifest


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    if f is None or member.size > 1 << 20:
        raise ValueError("not a small file")
    return f.read()


def _write_private(path: Path, data: bytes) -> None:
    """`data` into `path`, mode 0600, complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.restore")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def restore(config: ControllerConfig, archive: Path, passphrase: str, *, force: bool = False,
            say: Say = _quiet) -> Restored:
    """Rebuild the state of the controller `config` describes from `archive`."""
    result = Restored()
    kind = database_kind(config.database.url)
    with tempfile.TemporaryDirectory(prefix="infracloud-restore-") as tmp, \
            open_archive(archive, Path(tmp)) as manifest:
        work = Path(tmp)
        if manifest["database"] != kind:
            raise BackupError(f"{archive} holds a {manifest['database']} database; the config "
                              f"names a {kind} one")
        head, known = code_revisions()
        revision = manifest.get("revision")
        if revision is not None and revision not in known:
            raise BackupError(f"{archive} has schema revision {revision}, newer than this "
                              f"infracloud knows (head {head}): restore it with a newer "
                              f"infracloud")
        kdf = manifest.get("kdf") or {}
        try:
            box = derive_key(passphrase, base64.b64decode(kdf["salt"]),
                             {k: int(kdf[k]) for k in ("n", "r", "p")})
            keys: dict[str, str] = json.loads(box.decrypt((work / KEYS).read_bytes()))
        except InvalidToken:
            raise BackupError(f"{archive}: wrong passphrase (the key files cannot be "
                              f"decrypted with it)") from None
        except (KeyError, ValueError, TypeError):
            raise BackupError(f"{archive}: corrupt archive (unreadable key derivation "
                              f"parameters)") from None
        targets = _key_files(config)
        if "secret_key_file" in keys and "secret_key_file" not in targets:
            raise BackupError("the config keeps its database in memory: nowhere to restore to")
        # refuse before changing anything
        dump = work / DUMPS[kind]
        if kind == "sqlite":
            path = sqlite_path(config.database.url)
            if _sqlite_has_tables(path) and not force:
                raise BackupError(f"the database {path} is not empty: restore over it only "
                                  f"with --force")
        else:
            tables = _pg_query(config.database.url, "SELECT count(*) FROM "
                               "information_schema.tables WHERE table_schema = 'public'")
            if tables and not force:
                raise BackupError("the PostgreSQL database of the config is not empty: "
                                  "restore over it only with --force")
        for name, content in keys.items():
            target = targets.get(name)
            if target is not None and target.exists() and not force and \
                    target.read_text().strip() != content.strip():
                raise BackupError(f"{target} exists with another key: restore over it only "
                                  f"with --force")
        say(f"restoring the {kind} database of site {manifest.get('site')} "
            f"(backup of {manifest.get('created_at')}, schema revision {revision})")
        if kind == "sqlite":
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp_db = path.with_name(f".{path.name}.restore")
            shutil.copyfile(dump, tmp_db)
            os.chmod(tmp_db, 0o600)
            for stale in (Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            os.replace(tmp_db, path)
            result.done.append(f"restored the database to {path} (mode 0600)")
        else:
            proc = subprocess.run([pg_tool("pg_restore"), "--clean", "--if-exists",
                                   "--no-owner", "--no-privileges", "--single-transaction",
                                   "--exit-on-error", f"--dbname={libpq_url(config.database.url)}",
                                   str(dump)], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise _tool_error("pg_restore", proc)
            result.done.append("restored the database into the configured PostgreSQL "
                               "database")
        for name, content in sorted(keys.items()):
            target = targets.get(name)
            if target is None:
                result.done.append(f"skipped the {name}: the config names none")
                continue
            _write_private(target, content.encode())
            result.done.append(f"restored the {name} to {target} (mode 0600)")
        if revision != head:
            result.done.append(f"schema revision {revision}; the controller migrates it to "
                               f"{head} when it starts")
    for line in result.done:
        say(line)
    return result


def read_manifest(archive: Path) -> dict[str, Any]:
    """The manifest of `archive` alone (no check of the other members)."""
    with tarfile.open(archive, mode="r:") as tar:
        return dict(json.loads(_read_member(tar, tar.getmember(MANIFEST))))
