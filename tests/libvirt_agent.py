"""A compute host's agent with the libvirt driver, as a process of its own (so a test can
kill -9 it), until the `infracloud agent --driver libvirt` flags exist:

  python -m tests.libvirt_agent CONTROLLER_URL STATE_DIR NAME IMAGE   (X-Agent-Token from
                                                                       INFRACLOUD_AGENT_TOKEN)

Every server boots IMAGE (the test guest): the controller has no agent-authenticated image
download yet, so this stands in for fetching the server's image by id."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from infracloud.agent.hosts import driver_capacity, host_info, make_driver
from infracloud.agent.runner import Agent
from infracloud.core.lifecycle import stop_on_signals


def main(controller: str, state_dir: str, name: str, image: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    root = Path(state_dir)
    driver = make_driver("libvirt", root, libvirt_uri=os.environ.get("LIBVIRT_URI",
                                                                     "qemu:///system"))
    vcpus, ram_mb, disk_gb = driver_capacity(driver, root)
    agent = Agent(controller, os.environ["INFRACLOUD_AGENT_TOKEN"], driver,
                  host_info(name, vcpus, ram_mb, disk_gb), root, poll_wait=5,
                  images=lambda _image_id: Path(image))
    try:
        with stop_on_signals():
            agent.run()
    except KeyboardInterrupt:
        pass
    finally:
        agent.close()
        driver.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
