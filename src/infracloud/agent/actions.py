"""Server actions on the agent's side (compute.actions on the controller's): the controller
lists a server in an action's in-progress state with a task (`{"id": ..., ...}`); the agent
carries it out once through its driver, on a worker thread, and reports it done (or failed)
naming the task's id, so a report of an older action is never taken for the current one.

createImage: the driver copies the guest's disk into one standalone qcow2 under the agent's
`snapshots/`, and the agent uploads it through its own route for that image only
(`PUT /agent/v1/hosts/{host}/snapshots/{image}`): the host's credential can upload the
snapshot the controller asked this host for, and nothing else."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from infracloud.agent.drivers.base import DriverError
from infracloud.agent.image_fetch import ImageFetchError

if TYPE_CHECKING:
    from infracloud.agent.runner import Agent

log = logging.getLogger(__name__)
# the in-progress states the agent acts on, and the power state each leaves
RESULT = {"stopping": "stopped", "starting": "running", "rebooting": "running",
          "rebooting_hard": "running", "rebuilding": "running", "rebuilding_off": "stopped",
          "snapshotting": "running",
          "snapshotting_off": "stopped"}
CHUNK = 1024 * 1024


def pending(agent: Agent, w: dict[str, Any], present: set[str]) -> bool:
    """Whether `w` is a server in an action's state; starts the work when it is new. A
    server stopped (shutoff) is left as it is."""
    state, task = w["state"], w.get("task")
    if state == "shutoff":
        if w["id"] in present:
            agent._started.add(w["id"])  # kept, and not to be booted again
        return w["id"] in present
    if state not in RESULT or not task:
        return False
    if agent._done.get(w["id"]) != task["id"]:
        agent._start(w["id"], carry_out, (agent, w))
    return True


def carry_out(args: tuple[Agent, dict[str, Any]]) -> None:
    agent, w = args
    inst_id, state, task = w["id"], w["state"], w["task"]
    driver = agent.driver
    try:
        if state == "stopping":
            driver.stop(inst_id)
        elif state == "starting":
            driver.start(agent._spec(w))
        elif state == "rebooting_hard" and inst_id not in driver.list():
            # a server in ERROR that its host removed: a hard reboot boots it anew
            agent._remember(w)
            driver.spawn(agent._spec(w))
        elif state in ("rebooting", "rebooting_hard"):
            driver.reboot(agent._spec(w), hard=state == "rebooting_hard")
        elif state in ("rebuilding", "rebuilding_off"):
            spec = agent._spec(w)
            driver.rebuild(spec)
            agent._remember(w, again=True)
            if state == "rebuilding_off":  # a stopped server stays stopped, as in nova
                driver.stop(inst_id)
        else:
            snapshot(agent, inst_id, str(task.get("image_id") or ""))
    except (DriverError, ImageFetchError, OSError, ValueError, KeyError,
            httpx.HTTPError) as exc:
        log.warning("server action failed", extra={"instance_id": inst_id, "state": state,
                                                   "fault": str(exc)})
        agent._done[inst_id] = task["id"]
        agent._report([{"id": inst_id, "state": "failed", "task": task["id"],
                        "fault": str(exc)[:1000]}])
        return
    agent._done[inst_id] = task["id"]
    agent._started.add(inst_id)
    agent._report([{"id": inst_id, "state": RESULT[state], "task": task["id"],
                    "console": agent._console(inst_id, force=True)}])


def snapshot(agent: Agent, inst_id: str, image_id: str) -> None:
    if not image_id or "/" in image_id or len(image_id) > 36:
        raise ValueError(f"invalid snapshot image id {image_id!r}")
    folder = agent.workdir / "snapshots"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{image_id}.qcow2"
    dest.unlink(missing_ok=True)
    try:
        agent.driver.snapshot(inst_id, dest)
        size = dest.stat().st_size
        r = agent.http.put(f"/hosts/{agent.host_id}/snapshots/{image_id}",
                           content=_chunks(dest),
                           headers={"Content-Type": "application/octet-stream",
                                    "Content-Length": str(size)},
                           timeout=httpx.Timeout(60, read=1800))
        if r.status_code >= 400:
            raise DriverError(f"the controller refused the snapshot's upload: "
                              f"{r.status_code} {r.text[:300]}")
        log.info("snapshot uploaded", extra={"instance_id": inst_id, "image_id": image_id,
                                             "size": size})
    finally:
        dest.unlink(missing_ok=True)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            yield data
