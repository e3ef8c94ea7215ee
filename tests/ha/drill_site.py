"""A site for the disaster drill (tests/ha/test_disaster_drill.py, bench/drill.py): a controller
on SQLite or PostgreSQL, compute agents as separate processes, and everything needed to lose
the controller and restore a new one from a backup on another port: its config is written up
front, so the agents can be given both URLs (`--controller OLD,NEW`) as an operator of a site
with a standby address would.

The lost disk: the old controller is killed (SIGKILL) and its folder deleted (the SQLite
database, the site's key file, the agent token file; with PostgreSQL its database is dropped
too). The restore: `infracloud restore` into the new config (a new SQLite file, or a new
PostgreSQL database), then `infracloud controller`; `serving` is its first `/readyz` 200."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, text

from tests.servers import (
    BIN,
    Running,
    free_port,
    infracloud,
    loopback_cidr,
    sdk,
    stop_process,
    wait_for,
    write_controller_config,
)

AGENT_TOKEN = "drill-site-agent-token-0123456789"
PASSPHRASE = "the drill's backup passphrase\n"


@dataclass
class AgentProc:
    name: str
    proc: subprocess.Popen[str]
    state_dir: Path
    log: Path
    metrics_port: int

    def running(self) -> set[str]:
        """Ids of the servers this host runs (the sandbox's instance folders)."""
        root = self.state_dir / "instances"
        return {p.name for p in root.iterdir()} if root.exists() else set()

    def count(self) -> dict[str, int] | None:
        """What the agent says it runs and is working on (its metrics); None while it does
        not answer."""
        try:
            r = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        except httpx.HTTPError:
            return None
        found = dict(re.findall(r'^infracloud_agent_instances\{state="(\w+)"\} (\S+)$',
                                r.text, re.M))
        return {k: int(float(v)) for k, v in found.items()}


@dataclass
class Timings:
    restore: float = 0.0  # `infracloud restore` (the database and the key files)
    serving: float = 0.0  # from the start of the restore to the first /readyz 200
    consistent: float = 0.0  # ... to the site's state and its hosts' agreeing


@dataclass
class DrillSite:
    """`old_db`, `new_db`: database URLs, or "sqlite" for a file in each controller's
    folder (`state/`, lost with it)."""

    folder: Path
    old_db: str = "sqlite"
    new_db: str = "sqlite"
    driver: str = "sandbox"
    grace: float = 5.0
    action: str = "reap"
    pg_admin_url: str | None = None
    agents: dict[str, AgentProc] = field(default_factory=dict)
    controller: Running | None = None
    cidr: str = ""

    def __post_init__(self) -> None:
        self.cidr = loopback_cidr()
        self.old_dir, self.new_dir = self.folder / "old", self.folder / "new"
        for d in (self.old_dir / "state", self.new_dir, self.folder / "agents"):
            d.mkdir(parents=True)
        if self.old_db == "sqlite":
            self.old_db = f"sqlite:///{self.old_dir / 'state' / 'c.db'}"
        if self.new_db == "sqlite":
            self.new_db = f"sqlite:///{self.new_dir / 'state' / 'c.db'}"
        (self.old_dir / "agent-token").write_text(AGENT_TOKEN + "\n")
        self.old_config, self.old_url = self._config(self.old_dir, self.old_db)
        self.new_config, self.new_url = self._config(self.new_dir, self.new_db)
        (self.folder / "passphrase").write_text(PASSPHRASE)
        clouds = {name: {"auth": {
            "auth_url": url + "/identity", "username": "admin", "password": "admin-secret",
            "project_name": "admin", "user_domain_name": "Default",
            "project_domain_name": "Default"}, "region_name": "vanilla"}
            for name, url in (("old", self.old_url), ("new", self.new_url))}
        (self.folder / "clouds.yaml").write_text(yaml.safe_dump({"clouds": clouds}))

    def _config(self, folder: Path, db_url: str) -> tuple[Path, str]:
        return write_controller_config(folder, db_url, sections={
            "compute": {
                "agent_token_file": "agent-token", "agent_token_shared": True,
                # agents fail over within their backoff (10 s at most): well inside these
                "host_down_after": 10, "instance_error_after": 60, "reap_seconds": 0.5,
                "network": {"name": "drill-net", "cidr": self.cidr},
                "quota": {"instances": -1, "cores": -1, "ram_mb": -1, "ports": -1},
                "unknown_servers": {"action": self.action, "grace": self.grace}},
            "logging": {"format": "json", "access_log": False},
            **({"hardware": {"secret_key_file": "secret.key"}}
               if not db_url.startswith("sqlite") else {})})

    # ---- processes ------------------------------------------------------------------------

    def _launch(self, config: Path, url: str) -> None:
        """`infracloud controller`, until its first /readyz 200 (its output in logs/)."""
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / f"controller-{url.rsplit(':', 1)[1]}.log").open("a") as out:
            proc = subprocess.Popen([str(BIN / "infracloud"), "controller", "--config",
                                     str(config)], stdout=out, stderr=subprocess.STDOUT,
                                    text=True)
        self.controller = Running(proc, url)
        try:
            ready(url, proc)
        except AssertionError:
            stop_process(proc, timeout=5)
            raise AssertionError((logs / f"controller-{url.rsplit(':', 1)[1]}.log")
                                 .read_text()[-4000:]) from None

    def start_old(self) -> float:
        """The site's controller; seconds from its start to its first /readyz 200 (the
        baseline: a plain controller start)."""
        started = time.monotonic()
        self._launch(self.old_config, self.old_url)
        return time.monotonic() - started

    def restart_old(self) -> float:
        """Stop the site's controller (SIGINT) and start it again on its own data: seconds
        from the start to its first /readyz 200."""
        assert self.controller is not None
        assert self.controller.stop() == 0
        started = time.monotonic()
        self._launch(self.old_config, self.old_url)
        return time.monotonic() - started

    def start_agent(self, name: str, *urls: str) -> AgentProc:
        state = self.folder / "agents" / name
        log = self.folder / "agents" / f"{name}.log"
        port = free_port()
        args = [str(BIN / "infracloud"), "agent", "--controller", ",".join(urls),
                "--driver", self.driver, "--name", name, "--state-dir", str(state),
                "--vcpus", "64", "--ram-mb", "262144", "--disk-gb", "4000",
                "--metrics-port", str(port), "--log-format", "json"]
        if self.driver == "sandbox":
            args.append("--allow-unisolated-sandbox")
        with log.open("a") as err:
            proc = subprocess.Popen(args, env={**os.environ, "INFRACLOUD_AGENT_TOKEN":
                                               AGENT_TOKEN},
                                    stdout=subprocess.DEVNULL, stderr=err, text=True)
        agent = AgentProc(name, proc, state, log, port)
        self.agents[name] = agent
        return agent

    def stop_agent(self, name: str) -> None:
        agent = self.agents.pop(name)
        assert stop_process(agent.proc, timeout=30, sig=signal.SIGTERM) == 0, \
            agent.log.read_text()[-4000:]

    def conn(self, which: str = "new") -> Any:
        return sdk(self.folder / "clouds.yaml", which)

    def backup(self) -> Path:
        archive = self.folder / "backup.tar"
        r = infracloud("backup", "--config", str(self.old_config), "--output", str(archive),
                       "--passphrase-file", str(self.folder / "passphrase"))
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        return archive

    def lose_controller(self) -> None:
        """kill -9, and the disk is gone."""
        assert self.controller is not None
        self.controller.proc.send_signal(signal.SIGKILL)
        self.controller.proc.wait()
        self.controller = None
        shutil.rmtree(self.old_dir)
        if self.pg_admin_url is not None:  # the site's database went with it
            name = self.old_db.rsplit("/", 1)[1]
            engine = create_engine(self.pg_admin_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            engine.dispose()

    def restore(self, archive: Path, consistent: Callable[[], bool] | None = None,
                then: Callable[[], None] | None = None, timeout: float = 180) -> Timings:
        """Restore into the new config and start it; the time to serving, and (when given
        the probe) to consistent. `then` runs once it serves (what the operator does next)."""
        t = Timings()
        started = time.monotonic()
        r = infracloud("restore", "--config", str(self.new_config), str(archive),
                       "--passphrase-file", str(self.folder / "passphrase"))
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        t.restore = time.monotonic() - started
        self._launch(self.new_config, self.new_url)
        t.serving = time.monotonic() - started
        if then is not None:
            then()
        if consistent is not None:
            wait_for("the site consistent", consistent, timeout=timeout, every=0.1)
            t.consistent = time.monotonic() - started
        return t

    def running(self) -> dict[str, set[str]]:
        """Per agent, the servers its host runs (sandbox)."""
        return {name: a.running() for name, a in self.agents.items()}

    def events(self, **params: Any) -> list[dict[str, Any]]:
        url = (self.controller.base_url if self.controller else self.new_url)
        r = httpx.get(url + "/ops/v1/events", params={"limit": 1000, **params}, timeout=30)
        r.raise_for_status()
        return list(r.json()["events"])

    def close(self) -> None:
        for name in list(self.agents):
            agent = self.agents.pop(name)
            stop_process(agent.proc, timeout=30, sig=signal.SIGTERM)
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def ready(url: str, proc: subprocess.Popen[str] | None = None, timeout: float = 90) -> None:
    def answers() -> bool:
        assert proc is None or proc.poll() is None, f"exited with {proc.returncode}"
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(f"{url}/readyz", answers, timeout=timeout, every=0.02)
