"""A PostgreSQL primary and a streaming replica for tests, started without systemd: the recipe
of the README ("PostgreSQL: restarts, a standby, promotion") with throwaway clusters.

    primary = Cluster(folder / "primary"); primary.init(); primary.start()
    replica = primary.clone(folder / "replica", name="replica1"); replica.start()
    primary.make_synchronous("replica1")
    ...; primary.stop("immediate"); replica.promote()

As root the clusters run as the postgres user (initdb refuses root), as tests/pgcluster.py's.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.pgcluster import bindir
from tests.servers import free_port, wait_for


def _user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def _run(*args: str) -> str:
    user = _user()
    cmd = ["runuser", "-u", user, "--", *args] if user else list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Cluster:
    folder: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _own(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if (user := _user()) is not None:
            pw = pwd.getpwnam(user)
            os.chmod(self.folder, 0o755)
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)

    def _settings(self, extra: dict[str, str]) -> None:
        """Appended to postgresql.auto.conf (the last setting of a name wins)."""
        self.port = self.port or free_port()
        values = {"port": str(self.port), "listen_addresses": "'127.0.0.1'",
                  "unix_socket_directories": f"'{self.folder}'", "fsync": "off",
                  "max_connections": "100", **extra}
        text = "".join(f"{k} = {v}\n" for k, v in values.items())
        _run("sh", "-c", f"cat >> '{self.data}/postgresql.auto.conf' <<'EOF'\n{text}EOF")

    def init(self) -> None:
        """A new primary: trust on 127.0.0.1 (replication connections too, initdb's
        default), WAL for a standby (wal_level replica, initdb's default)."""
        self._own()
        _run(str(bindir() / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8")
        self._settings({"synchronous_commit": "on", "max_wal_senders": "5"})

    def clone(self, folder: Path, name: str) -> Cluster:
        """A standby of this primary: `pg_basebackup -R` (it writes primary_conninfo and
        standby.signal), named `name` (cluster_name: its application_name on the primary)."""
        replica = Cluster(folder)
        replica._own()
        _run(str(bindir() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-D", str(replica.data), "-R", "-X", "stream", "--no-sync")
        replica._settings({"cluster_name": f"'{name}'", "hot_standby": "on"})
        return replica

    def start(self) -> None:
        _run(str(bindir() / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "pg.log"),
             "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        _run(str(bindir() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def promote(self) -> None:
        """`pg_ctl promote`: the standby stops replaying and takes writes."""
        _run(str(bindir() / "pg_ctl"), "-D", str(self.data), "-w", "promote")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def make_synchronous(self, name: str) -> None:
        """Commits wait until standby `name` has the commit on disk (synchronous_commit is
        on): one it acknowledged survives this primary's loss."""
        self.query(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
        self.query("SELECT pg_reload_conf()")
        wait_for(f"{name} to be a synchronous standby", lambda: self.query(
            "SELECT application_name, sync_state FROM pg_stat_replication") ==
            [(name, "sync")])

    def gone(self) -> None:
        """Stopped if running (a test's cleanup)."""
        with contextlib.suppress(AssertionError):
            self.stop("immediate")
