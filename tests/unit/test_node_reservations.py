"""Per-node reservations of the hardware conductor (hardware/reservations.py), as Ironic's
conductors hold them: two conductors (two controllers) on one database with fake BMCs that say
which conductor made each call, and a clock the tests move. A long deploy step keeps its node
however long it runs while its controller heartbeats; a dead (here: frozen) controller's node
is taken over and finished by the other, and the frozen one, resumed, makes no more calls."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from infracloud.hardware.bmc import BmcAccess
from infracloud.hardware.bmc.fake import FakeBmc, SimulatedMachine, Simulator
from infracloud.hardware.conductor import Conductor
from infracloud.hardware.drain import Drainer
from infracloud.store import Database
from infracloud.store.leases import Leases, heartbeat_name
from infracloud.store.models import Node
from tests.servers import wait_for
from tests.unit.test_hardware import Site, to_available

HEARTBEAT_TTL = 10.0


class TaggedBmc(FakeBmc):
    """A fake BMC that records which conductor made each call; `paused` cleared freezes its
    conductor's thread right after a call (what SIGSTOP does to a whole controller)."""

    def __init__(self, access: BmcAccess, sim: Simulator, tag: str, log: list[str],
                 paused: threading.Event, frozen: threading.Event) -> None:
        super().__init__(access, sim)
        self.tag, self.log, self.paused, self.frozen = tag, log, paused, frozen

    def _call(self, what: str, arg: str = "-") -> SimulatedMachine:
        m = super()._call(what, arg)
        self.log.append(self.tag)
        if not self.paused.is_set():
            self.frozen.set()
            self.paused.wait()
        return m


class Controller:
    """One controller's conductor and its heartbeat (the duty runner renews it in a real
    controller; here the test does)."""

    def __init__(self, site: Site, tag: str, calls: list[str]) -> None:
        self.tag = tag
        self.running = threading.Event()
        self.running.set()
        self.frozen = threading.Event()
        self.conductor = Conductor(
            site.db, site.config, site.clock, site.nodes,
            Drainer(site.db, site.clock, site.env.hosts, site.env.servers),
            "https://controller.invalid", tag,
            make=lambda access: TaggedBmc(access, site.sim, tag, calls, self.running,
                                          self.frozen))
        self.leases = Leases(site.db, site.clock, tag)
        self.heartbeat()

    def heartbeat(self) -> None:
        assert self.leases.acquire(heartbeat_name(self.tag), HEARTBEAT_TTL)


@pytest.fixture
def site(db: Database, tmp_path: Path) -> Iterator[Site]:
    s = Site(db, tmp_path, power_wait=600)  # the deploy step waits as long as the test likes
    yield s
    s.close()


def deploying(site: Site, first: Controller, name: str, calls: list[str]) -> SimulatedMachine:
    """`name` made available, then its deploy step started by `first`, which is now waiting
    for the machine to power on (it never does until the test says so)."""
    site.add(name, power_delay=10_000)
    to_available(site, name)
    site.nodes.provision(name, "active")
    first.conductor.tick()
    wait_for("the deploy step to power the machine on",
             lambda: site.sim.machines[f"{name}-bmc"].epoch >= 1 and calls.count(first.tag) >= 6)
    node = site.nodes.get(name)
    assert (node.provision_state, node.reservation) == ("deploying", first.tag)
    return site.sim.machines[f"{name}-bmc"]


def power_on(site: Site, machine: SimulatedMachine) -> None:
    """The machine's delayed power-on happens now."""
    site.sim.apply_power(machine, "on", machine.epoch)


def test_a_long_step_keeps_its_node_and_the_other_conductor_never_drives_it(site: Site) -> None:
    calls: list[str] = []
    first, second = Controller(site, "c1#aa", calls), Controller(site, "c2#bb", calls)
    try:
        machine = deploying(site, first, "long", calls)
        before = site.nodes.get("long").bmc_calls  # the step's calls are recorded at its end
        for _ in range(6):  # a step six times the reservation's length
            site.clock.advance(site.config.lease + 1)  # the reservation has run out
            first.heartbeat()  # ... but its controller is alive
            second.heartbeat()
            second.conductor.tick()  # sees a live holder: leaves the node alone
            assert site.nodes.get("long").reservation == first.tag
            first.conductor.renew()  # the heartbeat of the step
            assert site.nodes.get("long").reserved_until == site.clock.now() + \
                dt.timedelta(seconds=site.config.lease)
        assert second.conductor.idle()
        power_on(site, machine)
        wait_for("the deploy to reach wait call-back",
                 lambda: site.state("long") == "wait call-back" and first.conductor.idle())
        node = site.nodes.get("long")
        assert node.reservation is None and node.power_state == "power on"
        assert second.tag not in calls  # the second conductor never called this BMC
        assert node.bmc_calls - before == calls.count(first.tag)  # every call recorded once
    finally:
        first.conductor.stop()
        second.conductor.stop()


def test_a_dead_holders_node_is_taken_over_and_the_holder_resumed_does_no_more(
        site: Site) -> None:
    calls: list[str] = []
    first, second = Controller(site, "c1#aa", calls), Controller(site, "c2#bb", calls)
    try:
        machine = deploying(site, first, "orphan", calls)
        first.running.clear()  # the first controller freezes after its next BMC call
        wait_for("the first controller to freeze", first.frozen.is_set)
        made_by_first = calls.count(first.tag)
        token = site.nodes.get("orphan").join_token_hash
        site.clock.advance(HEARTBEAT_TTL / 2)
        second.heartbeat()
        second.conductor.tick()  # the first's heartbeat is still live: nothing taken
        assert second.conductor.idle() and site.nodes.get("orphan").reservation == first.tag
        site.clock.advance(HEARTBEAT_TTL)  # no heartbeat from the first for 15 s
        second.heartbeat()
        second.conductor.tick()  # its reservation ran out and its heartbeat is stale
        wait_for("the second conductor to redo the deploy step",
                 lambda: site.nodes.get("orphan").reservation == second.tag
                 and calls.count(second.tag) >= 6)
        power_on(site, machine)
        wait_for("the second conductor to finish the deploy",
                 lambda: site.state("orphan") == "wait call-back" and second.conductor.idle())
        finished = site.nodes.get("orphan")
        assert finished.reservation is None and finished.join_token_hash != token
        first.running.set()  # the first controller resumes: its step finds the node gone
        wait_for("the first conductor's work to stop", first.conductor.idle)
        assert calls.count(first.tag) == made_by_first  # not one more BMC call
        after = site.nodes.get("orphan")
        assert (after.provision_state, after.join_token_hash, after.media_id,
                after.reservation) == ("wait call-back", finished.join_token_hash,
                                       finished.media_id, None)
        assert machine.power == "on" and machine.media is not None
        assert after.media_id is not None and after.media_id in machine.media
    finally:
        first.running.set()
        first.conductor.stop()
        second.conductor.stop()


def test_a_step_whose_reservation_was_cleared_stops_at_its_next_call(site: Site) -> None:
    """A node freed under the work is no longer the work's: once its hold is due the step
    asks the database, and stops instead of moving the node on."""
    calls: list[str] = []
    first = Controller(site, "c1#aa", calls)
    try:
        deploying(site, first, "aborted", calls)
        with site.db.write() as s:
            node = s.scalars(select(Node).where(Node.name == "aborted")).one()
            node.reservation = node.reserved_until = None
        site.clock.advance(site.config.lease)  # the step's hold is due: it asks the database
        wait_for("the step to stop", first.conductor.idle)
        assert site.state("aborted") == "deploying"  # left for the next holder, not failed
    finally:
        first.conductor.stop()


def test_a_stopping_conductor_frees_its_nodes_for_the_next_one(site: Site) -> None:
    """A clean stop in the middle of a step neither fails the step nor keeps the node: the
    node stays where it was, free, and the next conductor redoes the step at once."""
    calls: list[str] = []
    first, second = Controller(site, "c1#aa", calls), Controller(site, "c2#bb", calls)
    try:
        machine = deploying(site, first, "handed", calls)
        first.conductor.stop()
        node = site.nodes.get("handed")
        assert (node.provision_state, node.reservation, node.last_error) == \
            ("deploying", None, None)
        second.conductor.tick()  # no waiting for a reservation to run out
        wait_for("the second conductor to redo the step",
                 lambda: calls.count(second.tag) >= 6)
        power_on(site, machine)
        wait_for("the deploy to reach wait call-back",
                 lambda: site.state("handed") == "wait call-back" and second.conductor.idle())
    finally:
        first.conductor.stop()
        second.conductor.stop()


def test_a_conductor_that_lost_its_duty_mid_tick_claims_no_more(site: Site) -> None:
    """The gate (the conductor duty's lease) is asked again before each claim: a controller
    paused in the middle of a tick and resumed after losing the duty starts nothing."""
    site.add("idle")
    site.nodes.provision("idle", "manage")
    site.conductor.gate = lambda: False
    site.conductor.tick()
    assert site.conductor.idle() and site.state("idle") == "verifying"
    assert site.nodes.get("idle").reservation is None
    site.conductor.gate = lambda: True
    site.settle(lambda: site.state("idle") == "manageable")


def test_a_node_moved_on_since_the_dispatcher_read_it_is_not_claimed(site: Site) -> None:
    """The dispatcher reads its candidates, then claims them one by one; work that ends in
    between moves its node on (here verifying -> manageable) and frees it. The claim is for
    the node as it was read: a node moved on is left alone, not taken as work it no longer
    is (seen in the demo: a node already `available` claimed as provisioning work, the step
    `available` looked up and the conductor's worker crashing)."""
    calls: list[str] = []
    other = Controller(site, "c2#bb", calls)
    try:
        site.add("moved")
        site.nodes.provision("moved", "manage")
        stale = site.nodes.get("moved")
        assert stale.provision_state == "verifying"
        site.settle(lambda: site.state("moved") == "manageable")
        assert not other.conductor._submit(stale, "provision")
        site.nodes.power("moved", "power on")
        wanted = site.nodes.get("moved")
        assert wanted.target_power_state == "power on"
        site.settle(lambda: site.nodes.get("moved").target_power_state is None)
        assert not other.conductor._submit(wanted, "power")
        node = site.nodes.get("moved")
        assert (node.provision_state, node.reservation, node.last_error) == \
            ("manageable", None, None)
        assert other.conductor.idle() and calls == []
    finally:
        other.conductor.stop()
