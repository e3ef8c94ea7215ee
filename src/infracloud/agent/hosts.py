"""Helpers to run agents: build a driver by name and run agents on threads (the demo runs
its compute hosts inside its own process this way)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from infracloud.agent.drivers.base import Driver
from infracloud.agent.runner import Agent, HostInfo

DRIVERS = ("sandbox", "fake", "libvirt")


def make_driver(name: str, root: Path, *, ssh_port: int = 22, boot_delay: float = 0.0,
                libvirt_uri: str = "qemu:///system", virt_type: str | None = None,
                network: str = "user", bridge: str | None = None,
                user_outbound: bool = False, instance_dir: Path | None = None,
                cache_dir: Path | None = None) -> Driver:
    """The driver `name` with its state under `root`. libvirt: `virt_type` kvm or qemu
    (None: detected), `network` user (`user_outbound`: the guest may open connections) or
    bridge (then `bridge` names the bridge), instances
    in `instance_dir` (default root/instances), image bases in `cache_dir` (default
    root/images); raises DriverError, one line saying what to install, when libvirt is
    missing."""
    if name == "sandbox":
        from infracloud.agent.drivers.sandbox import SandboxDriver

        return SandboxDriver(root / "instances", ssh_port=ssh_port)
    if name == "fake":
        from infracloud.agent.drivers.fake import FakeDriver

        return FakeDriver(boot_delay=boot_delay)
    if name == "libvirt":
        from infracloud.agent.drivers.libvirt import LibvirtDriver

        driver = LibvirtDriver(instance_dir or root / "instances", cache_dir or root / "images",
                               uri=libvirt_uri, virt_type=virt_type, network=network,
                               bridge=bridge, ssh_port=ssh_port, user_outbound=user_outbound)
        try:
            driver.validate()
        except BaseException:
            driver.close()
            raise
        return driver
    raise ValueError(f"unknown driver {name!r}; drivers: {', '.join(DRIVERS)}")


def driver_capacity(driver: Driver, root: Path) -> tuple[int, int, int]:
    """vCPUs, RAM (MiB) and free disk (GiB) for a host's registration: what the
    hypervisor reports where the driver can ask it (libvirt), else this machine's."""
    capacity = getattr(driver, "capacity", None)
    return capacity() if callable(capacity) else machine_capacity(root)


def machine_capacity(path: Path) -> tuple[int, int, int]:
    """vCPUs, RAM (MiB) and free disk (GiB) of this machine."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    path.mkdir(parents=True, exist_ok=True)
    return os.cpu_count() or 1, pages // (1024 * 1024), shutil.disk_usage(path).free // 1024**3


class AgentThreads:
    """Agents on daemon threads, by name; stopped one at a time or all together."""

    def __init__(self) -> None:
        self.running: dict[str, tuple[Agent, threading.Thread]] = {}
        self._lock = threading.Lock()

    @property
    def agents(self) -> list[Agent]:
        with self._lock:
            return [agent for agent, _ in self.running.values()]

    def start(self, agent: Agent, key: str | None = None) -> None:
        t = threading.Thread(target=agent.run, name=f"agent-{agent.host.name}", daemon=True)
        with self._lock:
            self.running[key or agent.host.name] = (agent, t)
        t.start()

    def stop(self, keys: list[str] | None = None, timeout: float = 10,
             destroy: bool = False) -> None:
        """Stop the agents (all, or those of `keys`); with `destroy`, their instances go too
        (the machine lost power)."""
        with self._lock:
            chosen = [self.running.pop(k) for k in (list(self.running) if keys is None
                                                     else keys) if k in self.running]
        for agent, _ in chosen:
            agent.stop()
        for agent, thread in chosen:
            thread.join(timeout)
            agent.close()
            if destroy:
                for instance_id in agent.driver.list():
                    agent.driver.destroy(instance_id)
            agent.driver.close()


def host_info(name: str, vcpus: int, ram_mb: int, disk_gb: int, az: str = "nova",
              reserved: tuple[int, int, int] = (0, 0, 0)) -> HostInfo:
    """`reserved`: vCPUs, MiB and GiB the host keeps for itself."""
    return HostInfo(name=name, vcpus=vcpus, ram_mb=ram_mb, disk_gb=disk_gb,
                    availability_zone=az, reserved_vcpus=reserved[0],
                    reserved_ram_mb=reserved[1], reserved_disk_gb=reserved[2])
