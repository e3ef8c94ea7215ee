"""The disaster drill (issue 16): a site runs servers on two hosts whose agents are separate
processes (sandbox driver: each server answers SSH on its own loopback address); a backup is
taken; then a third host joins, more servers are created and some of the older ones deleted;
the controller is killed and its folder deleted (the lost disk); a new controller is restored
from the backup on another port. Hosts a and b were started with both URLs and fail over by
themselves; host c was started with the old URL only, and the operator restarts its agent
pointed at the new controller. Then, without anyone's hand:

- the servers created after the backup (the restored database does not know them) are
  reported by their agents, kept running for the grace (compute.unknown_servers.grace), then
  destroyed (action: reap), each with its events: seen, reap, destroyed; or, with action
  adopt, made servers of the database again with their project, flavor and address (and
  deleted through the API like any other);
- the servers deleted after the backup (the restored database has them ACTIVE, their hosts do
  not run them) go to ERROR with a fault saying why, are never re-created, and their owner's
  delete frees their addresses;
- host c, which joined after the backup with the site's shared agent token, registers again;
- openstacksdk sees what the hosts run, and nothing else, with no leaked port.

The time from the start of the restore to serving (/readyz) and to that consistent state is
printed, beside a plain controller start of the same run (bench/drill.py measures it for the
README). With the controller on SQLite and on PostgreSQL (reap), and on SQLite (adopt)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.conftest import create_pg_database
from tests.ha.drill_site import DrillSite, Timings
from tests.servers import ssh_run, wait_for

GRACE = 5.0


@pytest.fixture(params=[("sqlite", "reap"), pytest.param(("postgresql", "reap"),
                                                          marks=pytest.mark.pg),
                        ("sqlite", "adopt")], ids=lambda p: "-".join(p))
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DrillSite]:
    backend, action = request.param
    if backend == "sqlite":
        s = DrillSite(tmp_path / "drill", grace=GRACE, action=action)
    else:
        admin = request.getfixturevalue("pg_admin_url")
        s = DrillSite(tmp_path / "drill", create_pg_database(admin), create_pg_database(admin),
                      grace=GRACE, action=action, pg_admin_url=admin)
    yield s
    s.close()


def hosts(conn: Any) -> dict[str, str]:
    return {h.name: h.state for h in conn.compute.hypervisors(details=True)}


def at(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(event["at"].replace("Z", "+00:00"))


def answers_ssh(ip: str, key: Any) -> bool:
    try:
        return ssh_run(ip, key, "echo up").stdout.strip() == "up"
    except (OSError, asyncssh.Error):
        return False


def test_a_lost_controller_restored_from_a_backup_reconciles_with_its_hosts(
        site: DrillSite, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
        record_property: Any) -> None:
    baseline = site.start_old()
    both = (site.old_url, site.new_url)
    site.start_agent("compute-a", *both)
    site.start_agent("compute-b", *both)
    old = site.conn("old")
    wait_for("two hosts up", lambda: hosts(old) == {"compute-a": "up", "compute-b": "up"},
             timeout=60)
    image = old.image.create_image(name="drill", data=b"x" * 1024, disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    old.compute.create_keypair(name="drill", public_key=key.export_public_key().decode())
    flavor = old.compute.find_flavor("ci.small")

    def boot(names: dict[str, str]) -> dict[str, Any]:
        made = {name: old.compute.create_server(
            name=name, flavor_id=flavor.id, image_id=image.id, key_name="drill",
            networks="auto", availability_zone=f"nova:{host}") for name, host in names.items()}
        return {name: old.compute.wait_for_server(s, wait=60) for name, s in made.items()}

    servers = boot({"kept-a": "compute-a", "gone-a": "compute-a", "kept-b": "compute-b",
                    "gone-b": "compute-b"})
    archive = site.backup()

    # after the backup: a host joins, servers come, and two of the older ones go
    site.start_agent("compute-c", site.old_url)
    wait_for("host c up", lambda: hosts(old).get("compute-c") == "up", timeout=60)
    servers.update(boot({"new-a": "compute-a", "new-b": "compute-b", "new-c": "compute-c"}))
    for name in ("gone-a", "gone-b"):
        old.compute.delete_server(servers[name])
    for name in ("gone-a", "gone-b"):
        old.compute.wait_for_delete(servers[name], wait=60)
    ids = {name: s.id for name, s in servers.items()}
    assert site.running() == {"compute-a": {ids["kept-a"], ids["new-a"]},
                              "compute-b": {ids["kept-b"], ids["new-b"]},
                              "compute-c": {ids["new-c"]}}

    site.lose_controller()

    gone = {ids["gone-a"], ids["gone-b"]}
    unknown = {ids["new-a"], ids["new-b"], ids["new-c"]}
    # what the hosts should run in the end: the survivors, and with adopt the newer ones
    kept = {ids["kept-a"], ids["kept-b"]} | (unknown if site.action == "adopt" else set())
    conns: list[Any] = []

    def operator() -> None:
        """What the operator does once the new controller serves: the agent that knows
        only the old URL is restarted with the new one."""
        site.stop_agent("compute-c")
        site.start_agent("compute-c", site.new_url)
        conns.append(site.conn("new"))

    def consistent() -> bool:
        new = conns[0]
        listed = {s.id: s.status for s in new.compute.servers()}
        on_hosts = set().union(*site.running().values())
        return (hosts(new) == {"compute-a": "up", "compute-b": "up", "compute-c": "up"}
                and on_hosts == kept
                and {i for i, st in listed.items() if st == "ACTIVE"} == kept
                and {i for i, st in listed.items() if st == "ERROR"} == gone
                and set(listed) == kept | gone)

    t: Timings = site.restore(archive, consistent=consistent, then=operator)
    new = conns[0]
    with capsys.disabled():
        print(f"\ndisaster drill ({request.node.callspec.id}): plain controller "
              f"start {baseline:.2f} s; restore -> serving {t.serving:.2f} s "
              f"(restore command {t.restore:.2f} s); restore -> consistent "
              f"{t.consistent:.2f} s (grace {GRACE:.0f} s)")
    record_property("restore_to_serving_s", round(t.serving, 3))
    record_property("restore_to_consistent_s", round(t.consistent, 3))
    record_property("plain_start_s", round(baseline, 3))

    # each server created after the backup: seen, kept for the grace, then reaped and
    # destroyed, or adopted
    for server_id in unknown:
        steps = site.events(resource=server_id, resource_type="unknown-server")
        handled = [("reap", "reaping"), ("destroyed", "destroyed")] \
            if site.action == "reap" else [("adopt", "adopted")]
        assert [(e["action"], e["target"]) for e in steps] == [("create", "seen"),
                                                               *handled], steps
        assert (at(steps[1]) - at(steps[0])).total_seconds() >= GRACE
        assert steps[1]["actor"] == "system:reaper"
        assert f"compute.unknown_servers.action: {site.action}" in steps[1]["reason"]
        assert steps[0]["resource_name"] in ("new-a", "new-b", "new-c")
    if site.action == "adopt":  # as they were: name, project, flavor, address, host
        for name in ("new-a", "new-b", "new-c"):
            was, now = servers[name], new.compute.get_server(ids[name])
            assert (now.name, now.project_id, now.flavor.id, now.access_ipv4,
                    now.key_name) == (was.name, was.project_id, flavor.id, was.access_ipv4,
                                      "drill")
            assert now.compute_host == f"compute-{name[-1]}"
    # those deleted after the backup: ERROR, saying why, and nothing re-created them
    for server_id in gone:
        fault = new.compute.get_server(server_id).fault
        assert "deleted after the backup" in fault["message"], fault
    assert not gone & set().union(*site.running().values())
    for name in ("kept-a", "new-c") if site.action == "adopt" else ("kept-a",):
        ip = new.compute.get_server(ids[name]).access_ipv4  # it never stopped, or came back
        wait_for(f"SSH on {name}", lambda ip=ip: answers_ssh(ip, key), timeout=60)

    # no address is leaked or held: the ports are those of the servers the database has
    ports = list(new.network.ports())
    assert {p.device_id for p in ports} == kept | gone
    assert {p.device_owner for p in ports} == {"compute:nova"}
    for server_id in gone:  # their owner deletes them: they go, and their ports with them
        new.compute.delete_server(server_id)
    wait_for("the deleted servers gone", lambda: all(
        new.compute.find_server(i) is None for i in gone), timeout=60)
    assert {s.id for s in new.compute.servers()} == kept == set().union(
        *site.running().values())
    assert {p.device_id for p in new.network.ports()} == kept

    # and the restored site works: a new server boots, on an address nobody else has
    fresh = new.compute.wait_for_server(new.compute.create_server(
        name="after-the-drill", flavor_id=flavor.id, image_id=image.id, key_name="drill",
        networks="auto"), wait=60)
    addresses = [new.compute.get_server(i).access_ipv4 for i in kept | {fresh.id}]
    assert len(set(addresses)) == len(addresses)
    wait_for("SSH on the new server", lambda: answers_ssh(fresh.access_ipv4, key), timeout=60)
    if site.action == "adopt":  # an adopted server is deleted as any other
        new.compute.delete_server(ids["new-a"])
        wait_for("the adopted server destroyed", lambda: new.compute.find_server(
            ids["new-a"]) is None and ids["new-a"] not in site.running()["compute-a"],
                 timeout=60)
