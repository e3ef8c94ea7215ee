"""Scheduled backups: the controller's maintenance takes `infracloud backup`'s archive into
`backup.dir` when the newest good one there is older than `backup.every`, and deletes the
oldest beyond `backup.keep`. The files in `dir` are the record (no table): a good backup is a
file under its final name, `SITE-YYYYmmddTHHMMSSZ.tar` (a failed one leaves none: the archive
is written to `.part` and renamed). One backup at a time: in this process a lock, and with
several controllers on PostgreSQL the one holding the advisory lock (as the alerts' evaluator)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from infracloud.core.clock import Clock, as_utc, isoformat
from infracloud.core.settings import ControllerConfig
from infracloud.site.alerts import try_lead
from infracloud.store import Database
from infracloud.store.backup import BackupError, backup, read_passphrase

log = logging.getLogger(__name__)

_LEAD_KEY = 74_610_233  # pg advisory lock: one controller backs up at a time
_STAMP = "%Y%m%dT%H%M%SZ"

Take = Callable[..., dict[str, Any]]


class Backups:
    """The schedule of one controller's backups (`backup` in its config)."""

    def __init__(self, db: Database, config: ControllerConfig, clock: Clock,
                 take: Take = backup) -> None:
        """`take`: what writes an archive (store.backup.backup; tests inject failures)."""
        self.db = db
        self.config = config
        self.settings = config.backup
        self.clock = clock
        self.take = take
        self.started = clock.now()
        self._running = threading.Lock()
        self._name = re.compile(rf"^{re.escape(config.site)}-(\d{{8}}T\d{{6}}Z)\.tar$")

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def archives(self) -> list[tuple[dt.datetime, Path]]:
        """The good backups in `dir`, oldest first."""
        try:
            names = os.listdir(self.settings.dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            m = self._name.match(name)
            if m is None:
                continue
            taken = dt.datetime.strptime(m[1], _STAMP).replace(tzinfo=dt.UTC)
            found.append((taken, self.settings.dir / name))
        return sorted(found)

    def newest(self) -> tuple[dt.datetime, Path] | None:
        found = self.archives()
        return found[-1] if found else None

    def due(self, now: dt.datetime) -> bool:
        every = self.settings.every
        if every is None:
            return False
        newest = self.newest()
        return newest is None or (now - newest[0]).total_seconds() >= every

    def maintenance(self) -> Path | None:
        """Take a backup when one is due (a worker thread: runtime's maintenance); the new
        archive, or None."""
        if not self.enabled or not self._running.acquire(blocking=False):
            return None
        try:
            now = as_utc(self.clock.now())
            if not self.due(now):
                return None
            if self.db.is_sqlite:  # one controller: the lock above is enough
                return self._take(now)
            with self.db.write() as s:  # held while pg_dump runs: the others skip
                if not try_lead(self.db, s, _LEAD_KEY):
                    return None
                if not self.due(now):  # another controller has just taken it
                    return None
                return self._take(now)
        finally:
            self._running.release()

    def _take(self, now: dt.datetime) -> Path | None:
        folder = self.settings.dir
        out = folder / f"{self.config.site}-{now.strftime(_STAMP)}.tar"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            passphrase = read_passphrase(self.settings.passphrase_file)
            with self._config_file(folder) as config_file:
                self.take(self.config, config_file, out, passphrase, now=now)
        except BackupError as exc:
            log.error("scheduled backup failed: %s", exc.message, extra={"file": str(out)})
            return None
        except Exception:
            log.exception("scheduled backup failed", extra={"file": str(out)})
            return None
        log.info("scheduled backup taken", extra={"file": str(out)})
        self.prune()
        return out

    @contextlib.contextmanager
    def _config_file(self, folder: Path) -> Iterator[Path]:
        """The file the config was read from; for a config built in code, its settings
        written to a private temporary file."""
        if self.config.source is not None:
            yield self.config.source
            return
        fd, name = tempfile.mkstemp(prefix=".infracloud-config-", suffix=".yaml", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(self.config.model_dump(mode="json"), f, sort_keys=False)
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def prune(self) -> list[Path]:
        """Delete the oldest good backups beyond `keep`; those deleted."""
        found = self.archives()
        gone = [path for _, path in found[:max(len(found) - self.settings.keep, 0)]]
        for path in gone:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("cannot delete old backup %s: %s", path, exc.strerror)
        return gone

    def status(self, now: dt.datetime) -> dict[str, Any]:
        """What `infracloud status` shows: the newest good backup, its age, whether stale."""
        if not self.enabled:
            return {"enabled": False}
        now = as_utc(now)
        newest = self.newest()
        age = None if newest is None else round(max((now - newest[0]).total_seconds(), 0), 1)
        return {"enabled": True, "dir": str(self.settings.dir),
                "every_seconds": self.settings.every,
                "stale_after_seconds": self.settings.stale_seconds(),
                "last": None if newest is None else isoformat(newest[0]),
                "file": None if newest is None else newest[1].name,
                "age_seconds": age, "stale": self.stale(now) is not None}

    def stale(self, now: dt.datetime) -> str | None:
        """Why the backups are too old (the backup_stale alert), or None."""
        limit = self.settings.stale_seconds()
        if limit is None:
            return None
        now = as_utc(now)
        newest = self.newest()
        if newest is None:
            up = (now - as_utc(self.started)).total_seconds()
            if up <= limit:
                return None
            return (f"no backup in {self.settings.dir} since the controller started, longer "
                    f"ago than backup.stale_after ({int(limit)} s)")
        age = (now - newest[0]).total_seconds()
        if age <= limit:
            return None
        return (f"the last good backup, {newest[1].name}, is older than "
                f"backup.stale_after ({int(limit)} s)")
