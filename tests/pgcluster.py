"""A throwaway PostgreSQL cluster for tests, started without systemd.

    python tests/pgcluster.py start DIR     # prints the admin URL; the server keeps running
    python tests/pgcluster.py stop DIR

The test session uses $INFRACLOUD_TEST_PG_URL when it is set (.ci/run sets it) and otherwise
starts a cluster of its own with `start()` from this module.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries not found: install Debian's postgresql "
                       "package (apt-get install postgresql), or set INFRACLOUD_TEST_PG_URL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], user: str | None) -> None:
    cmd = ["runuser", "-u", user, "--", *args] if user else args
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start(folder: Path) -> str:
    """Create and start a cluster under `folder`; return a superuser URL on 127.0.0.1."""
    bins = bindir()
    user = None
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chmod(folder, 0o755)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    data = folder / "data"
    port = _free_port()
    _run([str(bins / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
          "-E", "UTF8"], user)
    (folder / "port").write_text(str(port))
    resume(folder)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def resume(folder: Path) -> None:
    """Start the cluster `start()` made under `folder` again (after `stop()`), on its port."""
    user = "postgres" if os.geteuid() == 0 else None
    port = int((folder / "port").read_text())
    opts = (f"-k {folder} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    _run([str(bindir() / "pg_ctl"), "-D", str(folder / "data"), "-o", opts, "-l",
          str(folder / "pg.log"), "-w", "-t", "60", "start"], user)


def stop(folder: Path, mode: str = "immediate") -> None:
    """`mode`: pg_ctl's: immediate (as a crash), fast (sessions ended, a clean shutdown)."""
    user = "postgres" if os.geteuid() == 0 else None
    _run([str(bindir() / "pg_ctl"), "-D", str(folder / "data"), "-m", mode, "-w",
          "stop"], user)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: pgcluster.py start|stop DIR")
    target = Path(sys.argv[2]).resolve()
    if sys.argv[1] == "start":
        print(start(target))
    else:
        stop(target)
