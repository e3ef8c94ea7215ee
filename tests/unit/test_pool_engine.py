"""The pool's engine on fake clouds: requests are served, quota is a wait, failures retry on
another provider, impossible requests fail at once, leaks go after two sightings, drains,
fair share, min-ready, restarts and image uploads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infracloud.core.clock import Clock
from infracloud.core.errors import BadRequest, Conflict, Forbidden
from infracloud.ops.events import EventLog, Query
from infracloud.pool.engine import META_NODE, META_POOL
from infracloud.pool.fakecloud import FakeCloud
from infracloud.pool.records import NodeRec
from infracloud.store import Database
from tests.unit.pool_env import Harness, pool_config, write_config


@pytest.fixture
def h(sqlite_db: Database) -> Iterator[Harness]:
    harness = Harness(sqlite_db, pool_config())
    yield harness
    harness.close()


def test_thirty_requests_are_fulfilled_with_reachable_nodes(sqlite_db: Database) -> None:
    h = Harness(sqlite_db, pool_config({"a": {"max-servers": 15}, "b": {"max-servers": 15}}))
    try:
        _thirty(h)
    finally:
        h.close()


def _thirty(h: Harness) -> None:
    ids = [h.request() for _ in range(30)]
    h.until(lambda: all(h.state(r) == "fulfilled" for r in ids), what="all fulfilled")
    nodes = h.nodes("in-use")
    assert len(nodes) == 30
    assert {n["provider"] for n in nodes} == {"a", "b"}  # spread over both
    for n in nodes:
        assert n["host_keys"] == [f"ssh-ed25519 AAAAfake{n['interface_ip']}"]
        assert n["username"] == "zuul" and n["key_name"] == "pool" and n["ssh_port"] == 22
    assert len(h.prober.scanned) == 30
    view = h.pool.get_request(ids[0])
    assert view["nodes"][0]["id"] == view["node_ids"][0]
    # servers carry the pool's metadata
    server = h.clouds[nodes[0]["provider"]].servers_by_id()[nodes[0]["server_id"]]
    assert server.metadata[META_POOL] == "test-pool"
    assert server.metadata[META_NODE] == nodes[0]["id"]
    # nodepool's /node-list and /request-list rows
    rows = {r["id"]: r for r in h.pool.nodepool_nodes()}
    row = rows[nodes[0]["id"]]
    assert row["state"] == "in-use" and row["label"] == ["small"]
    assert row["public_ipv4"] == nodes[0]["interface_ip"] and row["connection_port"] == 22
    assert row["allocated_to"] == nodes[0]["request_id"]
    reqs = {r["id"]: r for r in h.pool.nodepool_requests()}
    assert reqs[ids[0]]["state"] == "fulfilled" and reqs[ids[0]]["node_types"] == ["small"]
    # released nodes are deleted from the cloud
    for n in nodes:
        h.pool.release(n["id"], "zuul")
    h.until(lambda: not h.nodes(), what="all deleted")
    assert sum(len(c.deleted_servers) for c in h.clouds.values()) == 30
    assert all(not c.servers_by_id() for c in h.clouds.values())


def test_quota_is_a_wait_not_a_failure(sqlite_db: Database) -> None:
    h = Harness(sqlite_db, pool_config({"a": {}}))
    try:
        h.clouds["a"].instances = 2
        ids = [h.request() for _ in range(4)]
        h.until(lambda: len(h.nodes("in-use")) == 2, what="two served")
        h.tick(20)
        # the two waiting are back to `requested` (waiting for capacity), none failed
        assert sorted(h.state(r) for r in ids) == ["fulfilled", "fulfilled", "requested",
                                                   "requested"]
        assert not h.nodes("failed")
        # refused launches left nothing behind: no node, no server
        assert sorted(n["state"] for n in h.nodes()) == ["in-use", "in-use"]
        assert len(h.clouds["a"].servers_by_id()) == 2
        provider = h.pool.list_providers()[0]
        assert provider["launch_failures"] == 0
        assert provider["quota"]["instances"] == 2
        for n in h.nodes("in-use"):
            h.pool.release(n["id"], None)
        h.until(lambda: all(h.state(r) == "fulfilled" for r in ids), what="the rest")
    finally:
        h.close()


def test_a_failing_provider_is_retried_elsewhere(h: Harness) -> None:
    h.clouds["a"].fail_create = "Image demo is broken"
    ids = [h.request() for _ in range(6)]
    h.until(lambda: all(h.state(r) == "fulfilled" for r in ids), what="served by b")
    assert {n["provider"] for n in h.nodes("in-use")} == {"b"}
    a = next(p for p in h.pool.list_providers() if p["name"] == "a")
    assert a["launch_failures"] >= 1 and "broken" in a["last_error"]


def test_ssh_that_never_answers_keeps_the_console_and_fails_after_retries(
        sqlite_db: Database) -> None:
    h = Harness(sqlite_db, pool_config({"a": {}}))
    try:
        h.prober.fail_hosts.update(f"127.200.0.{i}" for i in range(1, 10))
        h.clouds["a"].console = "kernel panic: no init\n"
        rid = h.request()
        h.until(lambda: h.state(rid) == "failed", what="request failed")
        view = h.pool.get_request(rid)
        assert "2 launches failed" in view["reason"]
        failed = [n for n in h.pool.store.finished()[0] if n.failure]
        assert failed and all(n.console == "kernel panic: no init\n" for n in failed)
        h.until(lambda: not h.nodes(), what="failed nodes deleted")
    finally:
        h.close()


def test_a_request_no_provider_can_serve_fails_at_once(h: Harness) -> None:
    with pytest.raises(BadRequest, match="Unknown label"):
        h.pool.create_request(["nope"], "zuul")
    h.clouds["a"]._flavors = [f for f in h.clouds["a"]._flavors if f.name != "ci.small"]
    h.clouds["b"]._flavors = [f for f in h.clouds["b"]._flavors if f.name != "ci.small"]
    h.tick(5)
    rid = h.request()
    h.tick(1)
    view = h.pool.get_request(rid)
    assert view["state"] == "failed"
    assert "a: flavor ci.small not found" in view["reason"]
    assert "b: flavor ci.small not found" in view["reason"]


def test_a_flavor_bigger_than_the_quota_fails_at_once(sqlite_db: Database) -> None:
    h = Harness(sqlite_db, pool_config({"a": {}}))
    try:
        h.clouds["a"].cores = 0
        h.tick(5)
        rid = h.request()
        assert h.state(rid) == "failed"
        assert "bigger than the project's quota" in h.pool.get_request(rid)["reason"]
    finally:
        h.close()


def test_a_request_bigger_than_its_providers_together_fails_at_once(h: Harness) -> None:
    h.tick(5)
    too_big = h.request(21)  # a and b hold 10 each
    h.tick(1)
    view = h.pool.get_request(too_big)
    assert view["state"] == "failed"
    assert "wants 21 small nodes at once" in view["reason"]
    assert "can hold 20" in view["reason"]
    assert not h.nodes()  # nothing was launched (or held) for it
    fits = h.request(20)
    h.until(lambda: h.state(fits) == "fulfilled", what="20 nodes on a and b")
    assert {n["provider"] for n in h.nodes("in-use")} == {"a", "b"}


def test_the_quota_counts_and_a_full_drain_is_a_wait(sqlite_db: Database, tmp_path: Path
                                                     ) -> None:
    path = tmp_path / "pool.yaml"
    h = Harness(sqlite_db, pool_config(), clouds={"a": FakeCloud("a", instances=3),
                                                  "b": FakeCloud("b", ip_prefix="127.201.0.")})
    try:
        h.tick(5)
        rid = h.request(14)  # 3 in a's quota + 10 on b
        h.tick(1)
        assert h.state(rid) == "failed"
        assert "can hold 13" in h.pool.get_request(rid)["reason"]
        write_config(path, pool_config({"a": {"max-servers": 0}, "b": {"max-servers": 0}}))
        h.pool.config_file = path
        h.pool._last["reload"] = -1e9
        h.tick()
        waiting = h.request(2)  # every provider drained: it waits for an undrain
        h.tick(3)
        assert h.state(waiting) == "requested"
    finally:
        h.close()


def test_an_unreachable_provider_moves_its_launches(h: Harness) -> None:
    h.tick(3)
    h.clouds["a"].build_polls = 10_000  # a's servers never come up...
    ids = [h.request() for _ in range(8)]
    h.until(lambda: any(n["provider"] == "a" and n["server_id"] for n in h.nodes()),
            what="some launches on a")
    h.clouds["a"].unreachable = True  # ...and then a dies
    h.until(lambda: all(h.state(r) == "fulfilled" for r in ids), what="moved to b")
    assert {n["provider"] for n in h.nodes("in-use")} == {"b"}
    assert next(p for p in h.pool.list_providers() if p["name"] == "a")["state"] == "down"


def test_drain_stops_new_launches_and_lets_nodes_finish(h: Harness) -> None:
    first = h.request(4)
    h.until(lambda: h.state(first) == "fulfilled")
    on_a = [n for n in h.nodes("in-use") if n["provider"] == "a"]
    assert on_a
    view = h.pool.drain("a", "rack maintenance")
    assert view["state"] == "draining"
    later = [h.request() for _ in range(6)]
    h.until(lambda: all(h.state(r) == "fulfilled" for r in later))
    assert {n["provider"] for n in h.nodes("in-use")} - {"a"} == {"b"}
    assert [n["id"] for n in h.nodes("in-use") if n["provider"] == "a"] == \
        [n["id"] for n in on_a]  # still there, nothing new
    h.pool.drain("a", None, drained=False)
    assert next(p for p in h.pool.list_providers() if p["name"] == "a")["state"] == "up"


def test_max_servers_zero_in_the_file_drains_on_reload(sqlite_db: Database,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    config = pool_config()
    write_config(path, config)
    h = Harness(sqlite_db, config, config_file=path)
    try:
        write_config(path, pool_config({"a": {"max-servers": 0}, "b": {}}))
        h.pool._last["reload"] = -1e9  # the next tick looks at the file (else within 5 s)
        h.tick()
        ids = [h.request() for _ in range(5)]
        h.until(lambda: all(h.state(r) == "fulfilled" for r in ids))
        assert {n["provider"] for n in h.nodes("in-use")} == {"b"}
        assert next(p for p in h.pool.list_providers() if p["name"] == "a")["state"] \
            == "draining"
    finally:
        h.close()


def test_leaked_servers_and_ports_go_after_two_sightings(h: Harness) -> None:
    cloud = h.clouds["a"]
    leak = cloud.add_server("small-a-0000099999", {META_POOL: "test-pool",
                                                   META_NODE: "0000099999"})
    other = cloud.add_server("theirs", {META_POOL: "another-pool", META_NODE: "1"})
    mine = cloud.add_server("no-metadata", {})
    port = cloud.add_port(device_id="gone-server")
    h.until(lambda: h.pool.cleaner.servers_seen.get(("a", leak)) == 1, what="first sighting")
    assert leak not in cloud.deleted_servers
    h.until(lambda: leak in cloud.deleted_servers, what="second sighting deletes it")
    h.until(lambda: port in cloud.deleted_ports, what="leaked port deleted")
    h.tick(30)
    assert other not in cloud.deleted_servers and mine not in cloud.deleted_servers


def test_fair_share_serves_the_small_requestor_within_a_few_launches(
        sqlite_db: Database) -> None:
    h = Harness(sqlite_db, pool_config({"a": {"max-servers": 2}}))
    try:
        big = [h.request(requestor="big") for _ in range(100)]
        h.tick(2)
        for _ in range(2):
            h.request(requestor="small")
        served: list[str] = []

        def done() -> bool:
            for n in h.nodes("in-use"):
                served.append(str(n["requestor"]))
                h.pool.release(n["id"], None)
            return served.count("small") == 2

        h.until(done, timeout=20, what="small served")
        assert len(served) <= 6, served  # within the next few launches, not after 100
        assert sum(h.state(r) == "fulfilled" for r in big) < 10
    finally:
        h.close()


def test_min_ready_is_kept_and_hands_out_at_once(sqlite_db: Database) -> None:
    config = pool_config({"a": {}}, labels=[{"name": "small", "min-ready": 2}])
    h = Harness(sqlite_db, config)
    try:
        h.until(lambda: len(h.nodes("ready")) == 2, what="two ready")
        rid = h.request()
        h.tick(1)
        assert h.state(rid) == "fulfilled"  # from a spare, no launch
        h.until(lambda: len(h.nodes("ready")) == 2, what="refilled")
    finally:
        h.close()


def test_min_ready_waits_while_requests_need_the_room(sqlite_db: Database) -> None:
    config = pool_config({"a": {"max-servers": 2}}, labels=[{"name": "small", "min-ready": 2}])
    h = Harness(sqlite_db, config)
    try:
        h.clouds["a"].instances = 2
        ids = [h.request() for _ in range(3)]
        h.until(lambda: len(h.nodes("in-use")) == 2)
        h.tick(10)
        assert all(n["request_id"] for n in h.nodes())  # nothing spent on min-ready
        assert sum(h.state(r) == "requested" for r in ids) == 1
    finally:
        h.close()


def test_hold_release_and_ownership(h: Harness) -> None:
    rid = h.request()
    h.until(lambda: h.state(rid) == "fulfilled")
    node = h.pool.get_request(rid)["nodes"][0]["id"]
    with pytest.raises(Forbidden):
        h.pool.release(node, "someone-else")
    with pytest.raises(BadRequest):
        h.pool.hold(node, " ", "zuul")
    held = h.pool.hold(node, "look at the failed job", "zuul")
    assert held["state"] == "held" and held["hold_reason"] == "look at the failed job"
    h.tick(5)
    assert h.pool.get_node(node)["state"] == "held"
    with pytest.raises(Conflict):
        h.pool.hold(node, "again", "zuul")
    h.pool.release(node, None)
    h.until(lambda: not h.nodes())


def test_cancel_turns_its_nodes_into_spares_then_trims_them(h: Harness) -> None:
    h.clouds["a"].build_polls = h.clouds["b"].build_polls = 5
    rid = h.request(3)
    h.tick(2)
    assert h.pool.cancel_request(rid, "zuul")["state"] == "cancelled"
    with pytest.raises(Conflict):
        h.pool.cancel_request(rid, "zuul")
    h.until(lambda: not h.nodes(), what="spares beyond min-ready deleted")


def test_a_restart_picks_up_nodes_and_requests(sqlite_db: Database) -> None:
    config = pool_config({"a": {}})
    h = Harness(sqlite_db, config)
    rid = h.request(2)
    h.until(lambda: h.state(rid) == "fulfilled")
    h.clouds["a"].build_polls = 3
    waiting = h.request(1)
    h.until(lambda: any(n["state"] == "building" and n["server_id"] for n in h.nodes()))
    h.pool.stop()
    again = Harness(sqlite_db, config, clouds=h.clouds)
    try:
        assert again.pool.get_request(rid)["state"] == "fulfilled"
        again.until(lambda: again.state(waiting) == "fulfilled", what="resumed launch")
        assert len(again.nodes("in-use")) == 3
        assert len(h.clouds["a"].servers_by_id()) == 3  # nothing launched twice
    finally:
        again.close()


def test_images_are_uploaded_and_old_ones_retired(sqlite_db: Database,
                                                  tmp_path: Path) -> None:
    image = tmp_path / "noble.qcow2"
    image.write_bytes(b"version one" * 100)
    config = pool_config(
        {"a": {"pools": [{"labels": [{"name": "small", "diskimage": "noble",
                                      "flavor-name": "ci.small"}]}]}},
        diskimages=[{"name": "noble", "file": str(image)}])
    h = Harness(sqlite_db, config)
    try:
        rid = h.request()
        h.until(lambda: h.state(rid) == "fulfilled", what="served from the upload")
        first = h.pool.nodepool_images()
        assert [u["state"] for u in first] == ["ready"]
        assert h.pool.get_request(rid)["nodes"][0]["id"]
        assert set(h.clouds["a"].uploads) == {first[0]["external_name"]}
        image.write_bytes(b"version two" * 100)
        h.pool.release(h.nodes("in-use")[0]["id"], None)
        h.until(lambda: any(u["state"] == "ready" and u["external_name"] !=
                            first[0]["external_name"] for u in h.pool.nodepool_images()),
                what="new upload")
        rid2 = h.request()
        h.until(lambda: h.state(rid2) == "fulfilled")
        h.until(lambda: [u["external_name"] for u in h.pool.nodepool_images()] ==
                [u["external_name"] for u in h.pool.nodepool_images()
                 if u["external_name"] != first[0]["external_name"]],
                what="old upload deleted")
        assert first[0]["external_id"] not in {i.id for i in h.clouds["a"].images()}
    finally:
        h.close()


def test_max_ready_age_replaces_stale_spares(sqlite_db: Database) -> None:
    config = pool_config({"a": {}}, labels=[{"name": "small", "min-ready": 1,
                                             "max-ready-age": 1}])
    h = Harness(sqlite_db, config)
    try:
        h.until(lambda: len(h.nodes("ready")) == 1)
        first = h.nodes("ready")[0]
        h.until(lambda: bool(h.nodes("ready")) and h.nodes("ready")[0]["id"] != first["id"],
                timeout=10, what="replaced")
        h.until(lambda: first["server_id"] in h.clouds["a"].deleted_servers,
                what="the stale one deleted")
    finally:
        h.close()


def test_node_and_request_state_changes_are_events(h: Harness) -> None:
    rid = h.request(requestor="zuul")
    h.until(lambda: h.state(rid) == "fulfilled", what="fulfilled")
    node_id = h.pool.get_request(rid)["node_ids"][0]
    h.until(lambda: not h.pool.store._new[NodeRec] and not h.pool.store._dirty[NodeRec],
            what="written")
    log = EventLog(h.db, "test-pool", Clock())
    node = log.query(Query(resource_id=node_id))
    provider = node[0].host
    assert provider in ("a", "b")
    assert [(e.action, e.source, e.target, e.host, e.resource_type) for e in node] == [
        ("create", None, "building", provider, "pool-node"),
        ("ready", "building", "ready", provider, "pool-node"),
        ("assign", "ready", "in-use", provider, "pool-node")]
    assert [e.detail for e in node] == [{"request": rid, "requestor": "zuul"}] * 3
    request = log.query(Query(resource_id=rid))
    assert [(e.action, e.source, e.target, e.detail) for e in request] == [
        ("create", None, "requested", {"requestor": "zuul"}),
        ("launch", "requested", "pending", {"requestor": "zuul"}),
        ("fulfil", "pending", "fulfilled", {"requestor": "zuul"})]
    assert {e.site for e in [*node, *request]} == {"test-pool"}
