"""What the libvirt tests need, and the gate: on a machine without libvirt they are skipped,
saying why, except under CI=true (.ci/run installs and starts libvirt), where that fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from infracloud.agent.drivers.base import DriverError

TEST_URI = "test:///default"  # libvirt's in-process test driver: fast, no VM
QEMU_URI = "qemu:///system"
GUEST_BUILD = Path(__file__).resolve().parent.parent / "tools" / "guest" / "build.sh"


def unavailable(why: str) -> None:
    """Skip, or fail under CI (where libvirt is installed and must work)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"libvirt is required under CI: {why}", pytrace=False)
    pytest.skip(why)


def require(uri: str) -> None:
    from infracloud.agent.drivers.libvirt import load_libvirt

    try:
        libvirt = load_libvirt()
    except DriverError as e:
        unavailable(str(e))
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError as e:
        unavailable(f"cannot connect to {uri}: {' '.join(str(e).split())}")


def guest_image() -> Path:
    """The tiny test guest's disk (tools/guest/build.sh, cached across runs)."""
    out = Path(os.environ.get("INFRACLOUD_GUEST_DIR") or
               Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
               / "infracloud" / "guest")
    done = subprocess.run([str(GUEST_BUILD), str(out)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        unavailable(f"cannot build the test guest: {done.stderr.strip()}")
    return out / "disk.raw"
