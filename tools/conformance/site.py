"""The demo the suites run against: its own state folder, its own loopback address, seeded
with what the suites look for, and the clouds.yaml and environment that point them at it."""

from __future__ import annotations

import copy
import os
import queue
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
# what the suites look for: OSC's compute tests want a flavor m1.tiny or cirros256 and an image
# cirros-*-disk; openstacksdk's take the ones named in OPENSTACKSDK_FLAVOR/_IMAGE
FLAVOR_NAME = "cirros256"
FLAVOR_SIZE = {"vcpus": 1, "ram": 256, "disk": 1}
IMAGE = "cirros-0.6.3-x86_64-disk"
NETWORK = "private"  # devstack's name, which OSC's server tests ask for
# clouds.yaml names: the demo's own (admin; zuul, a member; ci, a member of another project)
ADMIN, MEMBER, MEMBER_ALT = "infracloud-admin", "infracloud", "infracloud-ci"
# openstacksdk's flavor-access test looks its member's project up by devstack's name, 'demo':
# the harness makes that project and a member of it, and the suites' demo cloud is theirs
DEMO_CLOUD = DEMO_PROJECT = "demo"


def suite_env(clouds_yaml: Path) -> dict[str, str]:
    """The variables the suites' base.py read to find their clouds and resources."""
    return {
        "OS_CLIENT_CONFIG_FILE": str(clouds_yaml),
        # openstacksdk's functional base.py
        "OS_CLOUD": ADMIN,
        "OPENSTACKSDK_OPERATOR_CLOUD": ADMIN,
        "OPENSTACKSDK_SYSTEM_ADMIN_CLOUD": ADMIN,  # no system scope here: the admin
        "OPENSTACKSDK_DEMO_CLOUD": DEMO_CLOUD,
        "OPENSTACKSDK_DEMO_CLOUD_ALT": MEMBER_ALT,
        "OPENSTACKSDK_FLAVOR": FLAVOR_NAME,
        "OPENSTACKSDK_IMAGE": IMAGE,
        "OPENSTACKSDK_FUNC_TEST_TIMEOUT": "60",
        "OS_TEST_TIMEOUT": "300",  # oslotest's per-test timeout (its default is 5 s)
        # python-openstackclient's functional base.py (its `openstack` runs drop every OS_*
        # variable, so they find clouds.yaml in their working folder)
        "OS_ADMIN_CLOUD": ADMIN,
        "OS_SYSTEM_CLOUD": ADMIN,
    }


class DemoError(RuntimeError):
    pass


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    state_dir: Path
    base_url: str
    lines: list[str] = field(default_factory=list)

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_address(port: int) -> str:
    """A loopback address in 127.252.0.0/16 whose `port` is free (a user's `make demo` is on
    127.0.0.1)."""
    for _ in range(50):
        host = f"127.252.{random.randrange(1, 255)}.1"
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return host
    raise DemoError(f"no free loopback address for port {port}")


def start(state_dir: Path, port: int = 8443, timeout: float = 180) -> Demo:
    """`infracloud demo` with the fake driver (the suites boot servers but never log in),
    two compute hosts and no pool nodes; returns once it says it is ready."""
    host = free_address(port)
    cidr = f"127.253.{host.split('.')[2]}.0/24"
    cmd = [str(BIN / "infracloud"), "demo", "--state-dir", str(state_dir), "--host", host,
           "--port", str(port), "--driver", "fake", "--site", "none", "--hosts", "2",
           "--min-ready", "0", "--network-cidr", cidr, "--network-name", NETWORK]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"ready at (https?://\S+)", line)
            if m:
                ready.put(m.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return Demo(proc, state_dir, ready.get(timeout=0.5), lines)
        except queue.Empty:
            continue
    proc.kill()
    proc.wait()
    raise DemoError("the demo did not become ready:\n" + "".join(lines[-30:]))


def seed(clouds_yaml: Path) -> None:
    """The flavor and image the suites pick (public, made by the admin), and the project
    `demo` with a member whose cloud is added to `clouds_yaml`."""
    from openstack import config, connection

    region = config.OpenStackConfig(config_files=[str(clouds_yaml)]).get_one(cloud=ADMIN)
    conn = connection.Connection(config=region)
    try:
        identity: Any = conn.identity  # v3 (the demo serves no v2)
        project = identity.create_project(name=DEMO_PROJECT, domain_id="default")
        password = secrets.token_urlsafe(18)
        user = identity.create_user(name=DEMO_PROJECT, password=password,
                                    default_project_id=project.id, domain_id="default")
        identity.assign_project_role_to_user(project, user, identity.find_role(
            "member", ignore_missing=False))
        clouds = yaml.safe_load(clouds_yaml.read_text())
        entry = copy.deepcopy(clouds["clouds"][MEMBER])
        entry["auth"].update(username=user.name, password=password, project_name=project.name)
        clouds["clouds"][DEMO_CLOUD] = entry
        clouds_yaml.write_text(yaml.safe_dump(clouds, sort_keys=False))
        if conn.compute.find_flavor(FLAVOR_NAME) is None:
            conn.compute.create_flavor(name=FLAVOR_NAME, is_public=True, **FLAVOR_SIZE)
        if conn.image.find_image(IMAGE) is None:
            # the fake driver boots nothing: the bytes only need to be an image's
            conn.image.create_image(name=IMAGE, disk_format="qcow2", container_format="bare",
                                    visibility="public", data=b"\0" * 4096)
    finally:
        conn.close()


def write_clouds(demo: Demo, folder: Path) -> Path:
    """The demo's three clouds in `folder`/clouds.yaml (the suites' working folder), and the
    file openstacksdk's image tests upload from the folder they run in (its repository)."""
    (folder / "CONTRIBUTING.rst").write_text("an image's bytes for openstacksdk's tests\n")
    clouds = yaml.safe_load(demo.clouds_yaml.read_text())["clouds"]
    path = folder / "clouds.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({"clouds": {name: clouds[name] for name in (ADMIN, MEMBER, MEMBER_ALT)}},
                       f, sort_keys=False)
    return path
