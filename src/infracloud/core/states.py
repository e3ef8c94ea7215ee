"""State machines as data. Each resource kind lists its states (stable or in progress, failure
or not, with a timeout for every in-progress state) and its allowed transitions; code changes a
resource's state only through `Machine.next`, and the tables print themselves for the docs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from infracloud.core.errors import Conflict


@dataclass(frozen=True)
class State:
    name: str
    stable: bool
    failure: bool = False
    timeout: float | None = None  # seconds, for in-progress states
    description: str = ""


@dataclass(frozen=True)
class Transition:
    source: str
    event: str
    target: str


class Machine:
    def __init__(self, kind: str, states: Iterable[State], transitions: Iterable[Transition]
                 ) -> None:
        self.kind = kind
        self.states = {s.name: s for s in states}
        self.transitions = list(transitions)
        self._next = {(t.source, t.event): t.target for t in self.transitions}
        self._check()

    def _check(self) -> None:
        for t in self.transitions:
            for name in (t.source, t.target):
                if name not in self.states:
                    raise ValueError(f"{self.kind}: transition names unknown state {name!r}")
        for s in self.states.values():
            out = [t for t in self.transitions if t.source == s.name]
            if not s.stable and s.timeout is None:
                raise ValueError(f"{self.kind}: in-progress state {s.name!r} has no timeout")
            if not s.stable and not any(self.states[t.target].failure or t.event == "fail"
                                        for t in out):
                raise ValueError(f"{self.kind}: in-progress state {s.name!r} cannot fail")
            if s.failure and not out:
                raise ValueError(f"{self.kind}: failure state {s.name!r} has no way out")

    def next(self, source: str, event: str) -> str:
        target = self._next.get((source, event))
        if target is None:
            raise Conflict(f"{self.kind.capitalize()} status transition from {source} "
                           f"({event}) is not allowed.")
        return target

    def allows(self, source: str, event: str) -> bool:
        return (source, event) in self._next

    def final(self, state: str) -> bool:
        """A state nothing leaves: a record in it has ended (and may be removed)."""
        return not any(t.source == state for t in self.transitions)

    def table(self) -> list[tuple[str, str, str]]:
        return [(t.source, t.event, t.target) for t in self.transitions]

    def dot(self) -> str:
        lines = [f"digraph {self.kind} {{"]
        for s in self.states.values():
            shape = "doubleoctagon" if s.failure else ("box" if s.stable else "ellipse")
            lines.append(f'  "{s.name}" [shape={shape}];')
        for t in self.transitions:
            lines.append(f'  "{t.source}" -> "{t.target}" [label="{t.event}"];')
        lines.append("}")
        return "\n".join(lines)


def _t(spec: str) -> list[Transition]:
    """'a --event--> b' lines."""
    out = []
    for line in spec.strip().splitlines():
        left, _, target = line.partition("-->")
        source, _, event = left.strip().partition(" --")
        out.append(Transition(source.strip(), event.strip(), target.strip()))
    return out


IMAGE = Machine(
    "image",
    [State("queued", stable=True, description="record made, no data yet"),
     State("saving", stable=False, timeout=300, description="data being received"),
     State("active", stable=True, description="data stored and checksummed"),
     State("killed", stable=True, failure=True,
           description="upload, stage or import failed (client gone, size mismatch, "
                       "controller restart)"),
     State("deactivated", stable=True, description="data kept, downloads refused"),
     State("deleted", stable=True, description="gone; data collected later"),
     # the interoperable import (glance-direct): stage, then import
     State("uploading", stable=False, timeout=300,
           description="data being staged, or staged and waiting for the import "
                       "(images.stale_upload_seconds without progress: killed)"),
     State("importing", stable=False, timeout=300,
           description="staged data being checksummed and moved into the store "
                       "(images.stale_upload_seconds without progress: killed)")],
    _t("""
        queued --upload--> saving
        saving --stored--> active
        saving --fail--> killed
        saving --refuse--> queued
        queued --stage--> uploading
        uploading --fail--> killed
        uploading --refuse--> queued
        uploading --import--> importing
        importing --stored--> active
        importing --fail--> killed
        uploading --delete--> deleted
        importing --delete--> deleted
        active --deactivate--> deactivated
        deactivated --reactivate--> active
        queued --delete--> deleted
        saving --delete--> deleted
        active --delete--> deleted
        killed --delete--> deleted
        deactivated --delete--> deleted
    """),
)

# Servers. Scheduling and networking happen inside the create request; spawning is the
# agent's part. API status: scheduling/networking/spawning are BUILD, deleting keeps the status
# it had (with task_state "deleting").
INSTANCE = Machine(
    "instance",
    [State("scheduling", stable=False, timeout=60, description="choosing a host"),
     State("networking", stable=False, timeout=60, description="allocating the address"),
     State("spawning", stable=False, timeout=900, description="the host's agent boots it"),
     State("active", stable=True, description="running"),
     State("error", stable=True, failure=True, description="failed; the fault says why"),
     State("deleting", stable=False, timeout=300, description="the agent removes it"),
     State("deleted", stable=True, description="gone (the record is removed)"),
     # server actions (compute.actions): the agent carries each out and reports it done
     State("stopping", stable=False, timeout=300, description="os-stop: the guest shuts down"),
     State("shutoff", stable=True, description="stopped; its disk and address are kept"),
     State("starting", stable=False, timeout=300, description="os-start: the guest boots"),
     State("rebooting", stable=False, timeout=300, description="reboot SOFT"),
     State("rebooting_hard", stable=False, timeout=300, description="reboot HARD"),
     State("rebuilding", stable=False, timeout=900,
           description="rebuild: the guest recreated from a new image, same address"),
     State("rebuilding_off", stable=False, timeout=900,
           description="rebuild of a stopped server: recreated, then stopped again"),
     State("snapshotting", stable=False, timeout=1800,
           description="createImage of a running server: its disk uploaded as an image"),
     State("snapshotting_off", stable=False, timeout=1800,
           description="createImage of a stopped server")],
    _t("""
        scheduling --scheduled--> networking
        scheduling --no_host--> error
        networking --networked--> spawning
        networking --fail--> error
        spawning --booted--> active
        spawning --fail--> error
        spawning --timeout--> error
        active --host_lost--> error
        active --vanished--> error
        error --recovered--> active
        scheduling --delete--> deleting
        spawning --delete--> deleting
        active --delete--> deleting
        error --delete--> deleting
        deleting --delete--> deleting
        deleting --destroyed--> deleted
        deleting --timeout--> deleted
        deleting --fail--> error
        active --stop--> stopping
        error --stop--> stopping
        stopping --stopped--> shutoff
        stopping --fail--> error
        stopping --timeout--> error
        shutoff --start--> starting
        starting --started--> active
        starting --fail--> error
        starting --timeout--> error
        active --reboot--> rebooting
        active --reboot_hard--> rebooting_hard
        shutoff --reboot_hard--> rebooting_hard
        error --reboot_hard--> rebooting_hard
        rebooting --reboot_hard--> rebooting_hard
        rebooting --rebooted--> active
        rebooting --fail--> error
        rebooting --timeout--> error
        rebooting_hard --rebooted--> active
        rebooting_hard --fail--> error
        rebooting_hard --timeout--> error
        active --rebuild--> rebuilding
        shutoff --rebuild--> rebuilding_off
        rebuilding_off --rebuilt--> shutoff
        rebuilding_off --fail--> error
        rebuilding_off --timeout--> error
        rebuilding_off --delete--> deleting
        error --rebuild--> rebuilding
        rebuilding --rebuilt--> active
        rebuilding --fail--> error
        rebuilding --timeout--> error
        active --snapshot--> snapshotting
        shutoff --snapshot--> snapshotting_off
        snapshotting --snapshotted--> active
        snapshotting --fail--> active
        snapshotting --timeout--> active
        snapshotting_off --snapshotted--> shutoff
        snapshotting_off --fail--> shutoff
        snapshotting_off --timeout--> shutoff
        shutoff --host_lost--> error
        shutoff --vanished--> error
        shutoff --delete--> deleting
        stopping --delete--> deleting
        starting --delete--> deleting
        rebooting --delete--> deleting
        rebooting_hard --delete--> deleting
        rebuilding --delete--> deleting
        snapshotting --delete--> deleting
        snapshotting_off --delete--> deleting
    """) + [Transition(source, event, event.removeprefix("reset_"))  # os-resetState (admin)
           for source in ("spawning", "active", "error", "stopping", "shutoff", "starting",
                          "rebooting", "rebooting_hard", "rebuilding", "rebuilding_off",
                          "snapshotting",
                          "snapshotting_off")
           for event in ("reset_active", "reset_error")],
)

# Compute hosts as the controller sees them through their agents' heartbeats.
HOST = Machine(
    "host",
    [State("up", stable=True, description="heartbeats arrive"),
     State("down", stable=True, failure=True,
           description="heartbeats stopped; no new servers; its servers fail after a grace")],
    _t("""
        up --missed_heartbeats--> down
        down --heartbeat--> up
    """),
)

# Bare-metal machines (Ironic's provision states and names, so `openstack baremetal ... --wait`
# works). Events named after the API's provision targets: manage, inspect, provide, deploy
# (target "active"), undeploy (target "deleted"), abort; the conductor's: done, wait, fail,
# timeout. Maintenance is a flag beside the state, not a state. Timeouts are defaults; the
# conductor takes them from `hardware.timeouts` when set.
PROVISION = Machine(
    "node",
    [State("enroll", stable=True, description="known; the BMC not yet checked"),
     State("verifying", stable=False, timeout=300,
           description="checking the BMC answers with these credentials"),
     State("manageable", stable=True, description="BMC verified; can be inspected"),
     State("inspecting", stable=False, timeout=600,
           description="reading CPU, RAM, disk and MACs from the BMC"),
     State("inspect failed", stable=True, failure=True, description="inspection failed"),
     State("cleaning", stable=False, timeout=900,
           description="powering off and ejecting media before reuse"),
     State("clean failed", stable=True, failure=True, description="cleaning failed"),
     State("available", stable=True, description="ready to deploy"),
     State("deploying", stable=False, timeout=600,
           description="boot device, deploy media and power on"),
     State("wait call-back", stable=False, timeout=1800,
           description="booting; waits for its agent to join with the one-time token"),
     State("deploy failed", stable=True, failure=True, description="deploy failed"),
     State("active", stable=True, description="deployed; a compute host (or controller)"),
     State("deleting", stable=False, timeout=7200,
           description="undeploy: draining or evicting its servers, then powering off"),
     State("error", stable=True, failure=True, description="undeploy failed")],
    _t("""
        enroll --manage--> verifying
        verifying --done--> manageable
        verifying --fail--> enroll
        verifying --timeout--> enroll
        manageable --manage--> manageable
        manageable --inspect--> inspecting
        inspecting --done--> manageable
        inspecting --fail--> inspect failed
        inspecting --timeout--> inspect failed
        inspecting --abort--> inspect failed
        inspect failed --manage--> manageable
        inspect failed --inspect--> inspecting
        manageable --provide--> cleaning
        cleaning --done--> available
        cleaning --fail--> clean failed
        cleaning --timeout--> clean failed
        cleaning --abort--> clean failed
        clean failed --manage--> manageable
        available --manage--> manageable
        available --provide--> available
        available --deploy--> deploying
        deploying --wait--> wait call-back
        deploying --fail--> deploy failed
        deploying --timeout--> deploy failed
        wait call-back --done--> active
        wait call-back --fail--> deploy failed
        wait call-back --timeout--> deploy failed
        wait call-back --abort--> deploy failed
        deploy failed --deploy--> deploying
        deploy failed --undeploy--> deleting
        active --undeploy--> deleting
        deleting --done--> cleaning
        deleting --fail--> error
        deleting --timeout--> error
        error --undeploy--> deleting
        error --manage--> manageable
    """),
)

# The node pool's nodes (nodepool's states): a server on some provider, launched for a label.
# A launch the provider refused for quota or capacity is withdrawn (no server) or deleted (a
# server in ERROR): a wait, never a failure.
POOL_NODE = Machine(
    "pool-node",
    [State("building", stable=False, timeout=3600,
           description="server created; waiting for ACTIVE, SSH and its host keys"),
     State("ready", stable=True, description="SSH-reachable, host keys recorded, unassigned"),
     State("in-use", stable=True, description="handed to a requestor"),
     State("used", stable=True, description="released; to be deleted"),
     State("held", stable=True, description="kept by an operator (with a reason)"),
     State("failed", stable=True, failure=True,
           description="launch failed (console log kept); to be deleted"),
     State("deleting", stable=False, timeout=900, description="server being deleted"),
     State("deleted", stable=True, description="gone from the provider")],
    _t("""
        building --ready--> ready
        building --withdraw--> deleted
        building --delete--> deleting
        building --fail--> failed
        building --timeout--> failed
        ready --assign--> in-use
        ready --expire--> used
        ready --hold--> held
        in-use --release--> used
        in-use --hold--> held
        held --release--> used
        used --delete--> deleting
        failed --delete--> deleting
        ready --delete--> deleting
        deleting --deleted--> deleted
        deleting --fail--> failed
        deleting --timeout--> failed
    """),
)

# Node requests: waiting for capacity is normal (quota is a wait, not a failure); a request no
# provider can ever satisfy fails at once with the reason.
POOL_REQUEST = Machine(
    "pool-request",
    [State("requested", stable=True, description="waiting for a fair share of capacity"),
     State("pending", stable=False, timeout=7200, description="its nodes are launching"),
     State("fulfilled", stable=True, description="every node is ready and assigned"),
     State("failed", stable=True, failure=True,
           description="no provider can serve it, or its launches kept failing"),
     State("cancelled", stable=True, description="withdrawn by the requestor")],
    _t("""
        requested --launch--> pending
        requested --fulfil--> fulfilled
        requested --fail--> failed
        requested --cancel--> cancelled
        pending --requeue--> requested
        pending --fulfil--> fulfilled
        pending --fail--> failed
        pending --timeout--> failed
        pending --cancel--> cancelled
        failed --retry--> requested
    """),
)

# Servers a compute host's agent runs that the database does not know: created after the
# backup the database was restored from, or deleted while their host was down. Their agent
# reports them and keeps them running; the controller handles each once, by the rule of
# compute.unknown_servers (destroy, or adopt), when `grace` has passed since the first report
# (at once for a server the database knows was deleted). The record goes in a final state.
UNKNOWN_SERVER = Machine(
    "unknown-server",
    [State("seen", stable=True,
           description="reported by its host's agent, unknown to the database; the grace runs"),
     State("reaping", stable=False, timeout=600,
           description="its agent was told to destroy it"),
     State("unreaped", stable=True, failure=True,
           description="its agent did not confirm the destroy in time; still asked to"),
     State("destroyed", stable=True, description="its agent destroyed it (the record goes)"),
     State("adopted", stable=True,
           description="a server of the database now, on the same host and address"),
     State("gone", stable=True, description="its agent no longer has it (the record goes)")],
    _t("""
        seen --reap--> reaping
        seen --adopt--> adopted
        seen --gone--> gone
        reaping --destroyed--> destroyed
        reaping --timeout--> unreaped
        unreaped --reap--> reaping
        unreaped --destroyed--> destroyed
    """),
)

MACHINES = {m.kind: m for m in (IMAGE, INSTANCE, HOST, PROVISION, POOL_NODE, POOL_REQUEST,
                                UNKNOWN_SERVER)}
