"""Server actions (compute.actions) on the services, SQLite and PostgreSQL: the instance
table's rows for them, each action's way through its in-progress state to the agent's report
naming its task, Nova's conflicts, locks, resetState and the timeouts."""

from __future__ import annotations

import pytest

from infracloud.compute.actions import ACTION_STATES, DONE_EVENT, ServerActions
from infracloud.compute.hosts import Report
from infracloud.compute.servers import api_status, task_state, vm_state
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.states import INSTANCE
from infracloud.store import Database
from infracloud.store.models import Image, Instance
from tests.unit.compute_env import (  # noqa: F401
    ADMIN,
    CI,
    IMAGE_ID,
    ZUUL,
    Env,
    FakeImage,
    env_fixture,
)

OTHER_IMAGE = "66666666-7777-8888-9999-000000000000"


def test_action_rows_of_the_instance_table() -> None:
    for state in ACTION_STATES:
        s = INSTANCE.states[state]
        assert not s.stable and s.timeout, state
        assert INSTANCE.allows(state, "timeout") and INSTANCE.allows(state, "fail"), state
        assert INSTANCE.allows(state, DONE_EVENT[state]), state
        assert INSTANCE.next(state, "delete") == "deleting", state
        assert INSTANCE.next(state, "reset_active") == "active"
        assert INSTANCE.next(state, "reset_error") == "error"
    assert INSTANCE.next(INSTANCE.next("active", "stop"), "stopped") == "shutoff"
    assert INSTANCE.next(INSTANCE.next("shutoff", "start"), "started") == "active"
    assert INSTANCE.next(INSTANCE.next("active", "reboot"), "rebooted") == "active"
    assert INSTANCE.next(INSTANCE.next("shutoff", "reboot_hard"), "rebooted") == "active"
    assert INSTANCE.next(INSTANCE.next("error", "rebuild"), "rebuilt") == "active"
    assert INSTANCE.next(INSTANCE.next("shutoff", "rebuild"), "rebuilt") == "shutoff"
    assert INSTANCE.next(INSTANCE.next("shutoff", "snapshot"), "snapshotted") == "shutoff"
    assert INSTANCE.next("snapshotting", "fail") == "active"  # a failed snapshot harms nothing
    # what nova refuses: a soft reboot or a start of a stopped server, a stop of a stopping one
    for source, event in (("shutoff", "reboot"), ("active", "start"), ("stopping", "stop"),
                          ("rebuilding", "snapshot"), ("deleting", "reset_active")):
        assert not INSTANCE.allows(source, event), (source, event)


def _active(env: Env, name: str = "n") -> Instance:
    h = env.host("a")
    inst = env.boot(name=name)
    env.hosts.report(h.id, [Report(inst.id, "running")])
    assert env.state(inst.id).state == "active"
    return inst


def _listed(env: Env, inst: Instance) -> Instance:
    """The server as its host's agent sees it in its long-poll."""
    assert inst.host_id is not None
    _, rows, _ = env.hosts.desired(inst.host_id)
    return next(r for r in rows if r.id == inst.id)


def test_stop_and_start_through_the_agent(env: Env) -> None:
    inst = _active(env)
    actions = ServerActions(env.servers)
    woken = len(env.notified)
    actions.stop(ZUUL, inst.id)
    row = env.state(inst.id)
    assert (api_status(row), vm_state(row), task_state(row)) == ("ACTIVE", "active",
                                                                 "powering-off")
    assert len(env.notified) > woken  # its agent is woken, and sees what to do
    seen = _listed(env, inst)
    assert seen.state == "stopping" and seen.task_id == row.task_id
    assert inst.host_id is not None
    # a report that names no task, or another, changes nothing
    env.hosts.report(inst.host_id, [Report(inst.id, "running")])
    env.hosts.report(inst.host_id, [Report(inst.id, "stopped", task="not-this-one")])
    assert env.state(inst.id).state == "stopping"
    env.hosts.report(inst.host_id, [Report(inst.id, "stopped", task=row.task_id)])
    row = env.state(inst.id)
    assert (api_status(row), vm_state(row), task_state(row)) == ("SHUTOFF", "stopped", None)
    assert _listed(env, inst).state == "shutoff"  # kept on its host, with its address
    ip = row.ip_address
    actions.start(ZUUL, inst.id)
    row = env.state(inst.id)
    assert (api_status(row), task_state(row)) == ("SHUTOFF", "powering-on")
    env.hosts.report(inst.host_id, [Report(inst.id, "running", task=row.task_id)])
    row = env.state(inst.id)
    assert (api_status(row), row.ip_address, row.task_id) == ("ACTIVE", ip, None)


def test_wrong_state_answers_nova_conflict(env: Env) -> None:
    inst = _active(env)
    actions = ServerActions(env.servers)
    with pytest.raises(Conflict, match=f"Cannot 'start' instance {inst.id} while it is in "
                                       f"vm_state active"):
        actions.start(ZUUL, inst.id)
    actions.stop(ZUUL, inst.id)
    with pytest.raises(Conflict, match="while it is in task_state powering-off"):
        actions.stop(ZUUL, inst.id)
    with pytest.raises(Conflict, match="Cannot 'reboot'"):
        actions.reboot(ZUUL, inst.id, hard=False)
    with pytest.raises(NotFound):  # another project's server: 404 before anything
        actions.stop(CI, inst.id)
    with pytest.raises(NotFound):
        actions.stop(ZUUL, "00000000-0000-0000-0000-000000000000")


def test_reboot_hard_and_soft(env: Env) -> None:
    inst = _active(env)
    assert inst.host_id is not None
    actions = ServerActions(env.servers)
    actions.reboot(ZUUL, inst.id, hard=False)
    row = env.state(inst.id)
    assert (api_status(row), task_state(row)) == ("REBOOT", "rebooting")
    actions.reboot(ZUUL, inst.id, hard=True)  # a hard reboot overrides a soft one, as in nova
    row = env.state(inst.id)
    assert (api_status(row), task_state(row)) == ("HARD_REBOOT", "rebooting_hard")
    env.hosts.report(inst.host_id, [Report(inst.id, "failed", fault="reset refused",
                                           task=row.task_id)])
    row = env.state(inst.id)
    assert api_status(row) == "ERROR" and "reset refused" in (row.fault or {})["message"]


def test_rebuild_keeps_the_address(env: Env) -> None:
    env.images[OTHER_IMAGE] = FakeImage(OTHER_IMAGE)
    inst = _active(env)
    assert inst.host_id is not None
    actions = ServerActions(env.servers)
    with pytest.raises(BadRequest, match="could not be found"):
        actions.rebuild(ZUUL, inst.id, "no-such-image")
    rebuilt = actions.rebuild(ZUUL, inst.id, OTHER_IMAGE, name="renamed", metadata={"k": "v"})
    assert (rebuilt.image_id, rebuilt.name, rebuilt.ip_address) == (OTHER_IMAGE, "renamed",
                                                                     inst.ip_address)
    row = env.state(inst.id)
    assert (api_status(row), vm_state(row), task_state(row)) == ("REBUILD", "rebuilding",
                                                                 "rebuilding")
    assert _listed(env, inst).image_id == OTHER_IMAGE  # what the agent boots
    env.hosts.report(inst.host_id, [Report(inst.id, "running", task=row.task_id)])
    assert api_status(env.state(inst.id)) == "ACTIVE"
    assert [p.ip_address for p in env.ports() if p.device_id == inst.id] == [inst.ip_address]
    # a stopped server is rebuilt stopped, as in nova
    actions.stop(ZUUL, inst.id)
    env.hosts.report(inst.host_id, [Report(inst.id, "stopped",
                                           task=env.state(inst.id).task_id)])
    actions.rebuild(ZUUL, inst.id, IMAGE_ID)
    row = env.state(inst.id)
    assert (api_status(row), task_state(row)) == ("REBUILD", "rebuilding")
    env.hosts.report(inst.host_id, [Report(inst.id, "stopped", task=row.task_id)])
    row = env.state(inst.id)
    assert (api_status(row), row.image_id, row.ip_address) == ("SHUTOFF", IMAGE_ID,
                                                               inst.ip_address)


def test_lock(env: Env) -> None:
    inst = _active(env)
    actions = ServerActions(env.servers)
    actions.lock(ZUUL, inst.id)
    assert env.state(inst.id).locked_by == "owner"
    for refused in (lambda: actions.stop(ZUUL, inst.id),
                    lambda: actions.reboot(ZUUL, inst.id, hard=True),
                    lambda: env.servers.delete(ZUUL, inst.id),
                    lambda: env.servers.set_metadata(ZUUL, inst.id, {"a": "b"}, replace=False)):
        with pytest.raises(Conflict, match=f"Instance {inst.id} is locked"):
            refused()
    rows, _ = env.servers.list_servers(ZUUL, locked=True)
    assert [r.id for r in rows] == [inst.id]
    assert env.servers.list_servers(ZUUL, locked=False)[0] == []
    actions.unlock(ZUUL, inst.id)
    actions.stop(ZUUL, inst.id)  # unlocked: allowed again
    actions.lock(ADMIN, inst.id)
    with pytest.raises(Forbidden):  # an administrator's lock is theirs to lift
        actions.unlock(ZUUL, inst.id)
    actions.reset_state(ADMIN, inst.id, "active")  # administrators pass a lock
    actions.unlock(ADMIN, inst.id)
    assert env.state(inst.id).locked_by is None


def test_reset_state(env: Env) -> None:
    inst = _active(env)
    assert inst.host_id is not None
    actions = ServerActions(env.servers)
    actions.stop(ZUUL, inst.id)
    stale = env.state(inst.id).task_id
    with pytest.raises(Forbidden):
        actions.reset_state(ZUUL, inst.id, "active")
    with pytest.raises(BadRequest):
        actions.reset_state(ADMIN, inst.id, "paused")
    actions.reset_state(ADMIN, inst.id, "error")
    row = env.state(inst.id)
    assert api_status(row) == "ERROR" and row.fault and "reset" in row.fault["message"]
    actions.reset_state(ADMIN, inst.id, "active")
    assert api_status(env.state(inst.id)) == "ACTIVE" and env.state(inst.id).fault is None
    # the agent's late report of the abandoned stop changes nothing
    env.hosts.report(inst.host_id, [Report(inst.id, "stopped", task=stale)])
    assert env.state(inst.id).state == "active"


def test_actions_time_out(env: Env) -> None:
    inst = _active(env)
    assert inst.host_id is not None
    actions = ServerActions(env.servers)
    actions.stop(ZUUL, inst.id)
    env.clock.advance((INSTANCE.states["stopping"].timeout or 0) - 1)
    env.beat(env.host_row("a"))
    assert env.hosts.reap()["action_timeouts"] == 0
    env.clock.advance(2)
    env.beat(env.host_row("a"))
    assert env.hosts.reap()["action_timeouts"] == 1
    row = env.state(inst.id)
    assert api_status(row) == "ERROR" and "stop timed out" in (row.fault or {})["message"]
    # a way out: a hard reboot from ERROR, as in nova
    actions.reboot(ZUUL, inst.id, hard=True)
    env.hosts.report(inst.host_id, [Report(inst.id, "running",
                                           task=env.state(inst.id).task_id)])
    assert api_status(env.state(inst.id)) == "ACTIVE"


def test_snapshot_needs_a_driver_with_disks(env: Env) -> None:
    inst = _active(env)  # on a host of the fake driver
    actions = ServerActions(env.servers)
    with pytest.raises(Conflict, match="createImage is not supported by the fake driver"):
        actions.snapshot_allowed(ZUUL, inst.id)
    assert env.state(inst.id).state == "active"


def test_a_stopped_server_on_a_lost_host_fails(env: Env) -> None:
    inst = _active(env)
    assert inst.host_id is not None
    actions = ServerActions(env.servers)
    actions.stop(ZUUL, inst.id)
    env.hosts.report(inst.host_id, [Report(inst.id, "stopped",
                                           task=env.state(inst.id).task_id)])
    env.hosts.report(inst.host_id, [Report(inst.id, "absent")])  # gone from its host
    assert api_status(env.state(inst.id)) == "ERROR"


def test_microversions_of_lock_fields() -> None:
    """`locked` is shown from 2.9 and filtered on by everyone from 2.73, within the maximum
    the compute API advertises (2.1 today: never shown, an administrator's filter only)."""
    from starlette.requests import Request

    from infracloud.api import compute, compute_actions

    def request(version: str | None, query: str = "") -> Request:
        headers = [(b"openstack-api-version", f"compute {version}".encode())] if version \
            else []
        return Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                        "query_string": query.encode()})

    assert compute.VERSION["version"] == compute_actions.MAX_VERSION
    assert compute_actions.requested_version(request(None)) == (2, 1)
    assert compute_actions.requested_version(request("2.95")) <= (2, 1)  # capped at the max
    assert not compute_actions.shows_locked(request("2.9"))
    assert compute_actions.locked_filter(request(None, "locked=true"), admin=False) is None
    assert compute_actions.locked_filter(request(None, "locked=true"), admin=True) is True
    assert compute_actions.locked_filter(request(None, "locked=0"), admin=True) is False
    with pytest.raises(BadRequest, match="Unrecognized value 'maybe'"):
        compute_actions.locked_filter(request(None, "locked=maybe"), admin=True)
    with pytest.raises(BadRequest, match="invalid format"):
        compute_actions.requested_version(request("two"))


def test_a_server_deleted_while_snapshotted_leaves_no_image(env: Env, db: Database) -> None:
    inst = _active(env)
    assert inst.host_id is not None
    now = env.clock.now()
    with db.write() as s:  # what createImage makes: the image waits for the agent's data
        s.add(Image(id=OTHER_IMAGE, owner=inst.project_id, status="queued", properties={},
                    created_at=now, updated_at=now, visibility="private"))
    ServerActions(env.servers).snapshot(ZUUL, inst.id, OTHER_IMAGE, "libvirt")
    env.servers.delete(ZUUL, inst.id)
    env.hosts.report(inst.host_id, [Report(inst.id, "absent")])  # its agent destroyed it
    with db.read() as s:
        assert s.get(Image, OTHER_IMAGE) is None
