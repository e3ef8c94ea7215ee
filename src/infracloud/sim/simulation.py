"""Simulated machines that boot: when a fake BMC powers a machine on with deploy media
inserted, the machine "boots" (after its boot delay) and runs `infracloud agent` in this
process, with the join token from the media's config, and the simulated machine's CPU, RAM and
disk as its capacity (with the libvirt driver: this machine's, as libvirt reports it; the servers
are real VMs). Powering it off stops the agent (its servers vanish with it)."""

from __future__ import annotations

import functools
import json
import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import httpx

from infracloud.agent.drivers.base import DriverError
from infracloud.agent.hosts import AgentThreads, driver_capacity, host_info, make_driver
from infracloud.agent.runner import Agent
from infracloud.clients import http
from infracloud.core.settings import SimulationConfig
from infracloud.hardware.bmc.fake import SIMULATOR, SimulatedMachine, Simulator

log = logging.getLogger(__name__)
CREDENTIAL = "host-credential.json"  # what the agent keeps on the machine's "disk"


def config_url(media_url: str) -> str:
    return media_url[:-4] + ".json" if media_url.endswith(".iso") else media_url


class Simulation:
    def __init__(self, config: SimulationConfig, cacert: str | bool = True,
                 simulator: Simulator | None = None, controller: str | None = None) -> None:
        """`controller`: the URL of the controller this simulation runs in; machines booting
        from their disk use it (the demo may come back on another port)."""
        self.config = config
        self.controller = controller
        self.cacert = cacert
        self.sim = simulator or SIMULATOR
        self._root = config.root
        self.agents = AgentThreads()  # by simulated machine (BMC address)

    @functools.cached_property
    def tls(self) -> ssl.SSLContext:
        """One TLS context for every simulated machine (making one costs ~30 ms of CPU), made
        when the first machine boots."""
        if isinstance(self.cacert, str):
            return ssl.create_default_context(cafile=self.cacert)
        return ssl.create_default_context()

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="infracloud-sim-"))
        return self._root

    def install(self) -> None:
        self.sim.on_boot = self.boot
        self.sim.on_power_off = self.power_off

    def boot(self, m: SimulatedMachine) -> None:
        config = None
        if m.media and m.boot_device == "cd":
            try:
                with http.client("sim", verify=self.tls, timeout=10) as c:
                    r = c.get(config_url(m.media))
                r.raise_for_status()
                config = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("simulated machine %s cannot read its deploy media: %s", m.name, exc)
                return
            self._install(m, config)
        elif m.boot_device == "disk":
            config = self._installed(m)
            if config is not None and self.controller:
                config["controller"] = self.controller
        if config is None:
            return  # nothing to boot (PXE has no server in the simulation)
        if config.get("role") != "compute":
            self._join_only(m, config)
            return
        self._start_agent(m, config)

    # what a machine "installed" from its deploy media, on its "disk": booting from disk (also
    # after the simulation restarts) runs it again

    def _disk(self, m: SimulatedMachine) -> Path:
        return self.root / "bmc" / m.name / "installed.json"

    def _install(self, m: SimulatedMachine, config: dict[str, Any]) -> None:
        """A fresh install: what an earlier deploy left (its host's credential) is gone."""
        (self.root / config["name"] / CREDENTIAL).unlink(missing_ok=True)
        path = self._disk(m)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)

    def _installed(self, m: SimulatedMachine) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._disk(m).read_text()))
        except (OSError, ValueError):
            return None

    def _start_agent(self, m: SimulatedMachine, config: dict[str, Any]) -> None:
        self.power_off(m)  # a reboot: the old agent is gone with the old boot
        name = config["name"]
        root = self.root / name
        try:  # libvirt: real VMs, their image bases shared by the simulated machines
            driver = make_driver(self.config.agent_driver, root, ssh_port=self.config.ssh_port,
                                 libvirt_uri=self.config.libvirt_uri,
                                 cache_dir=self.root / "libvirt-images")
        except DriverError as exc:
            log.warning("simulated machine %s cannot start its agent: %s", m.name, exc)
            return
        size = (m.cpus, m.memory_mb, m.disk_gb)
        if driver.name == "libvirt":  # what this machine really holds, not the simulated one
            size = driver_capacity(driver, root)
        agent = Agent(config["controller"], "", driver, host_info(name, *size), root,
                      cacert=self.tls, poll_wait=self.config.poll_wait,
                      join_token=config["join_token"], credential_file=root / CREDENTIAL)
        self.agents.start(agent, key=m.name)
        log.info("simulated machine booted", extra={"host": name, "event": "sim.boot"})

    def _join_only(self, m: SimulatedMachine, config: dict[str, Any]) -> None:
        """A controller-role machine: it joins, but runs no compute agent."""
        try:
            with http.client("sim", verify=self.tls, timeout=10) as c:
                c.post(config["controller"] + "/agent/v1/join",
                       json={"join_token": config["join_token"]})
        except httpx.HTTPError as exc:
            log.warning("simulated machine %s cannot join: %s", m.name, exc)

    def power_off(self, m: SimulatedMachine) -> None:
        self.agents.stop([m.name], timeout=15, destroy=True)

    def close(self) -> None:
        self.agents.stop(timeout=15, destroy=True)
        self.sim.on_boot = self.sim.on_power_off = None
