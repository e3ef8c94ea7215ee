"""bench/ha.py's verdict (tests/ha/verdict.py) on made-up figures: a clean run passes, and each
thing the issue forbids (a leak, a slow or missing takeover, an unanswered request, a server
made twice, a pool node launched twice) is named."""

from __future__ import annotations

from tests.ha.verdict import Figures, duplicate_servers, spread, violations


def clean() -> Figures:
    return Figures(calls=5000, failed=40, retried=40, pool_calls=900,
                   takeovers=[0.2, 9.8, 11.0, 0.1], holder_kills=2, pool_takeovers=[8.5],
                   leftovers={"servers": 0, "ports": 0, "claimed_vcpus": 0,
                              "claimed_ram_mb": 0, "pool nodes": 0})


def test_a_clean_run_passes_failed_calls_that_were_retried_are_no_violation() -> None:
    assert violations(clean()) == []


def test_a_leak_is_a_violation_naming_what_was_left() -> None:
    f = clean()
    f.leftovers.update(ports=2, claimed_vcpus=1)
    assert violations(f) == ["leaked after the churn: 1 claimed_vcpus, 2 ports"]
    f = clean()
    f.leftovers["pool nodes"] = 1
    assert violations(f) == ["leaked after the churn: 1 pool nodes"]


def test_a_takeover_at_or_over_the_bound_or_never_is_a_violation() -> None:
    f = clean()
    f.takeovers = [9.0, 15.0, 14.9]
    assert violations(f) == ["1 duty takeover(s) not within 15 s: 15.0 s"]
    f.takeovers = [9.0, None]
    f.pool_takeovers = [16.2]
    assert violations(f) == ["1 duty takeover(s) not within 15 s: never",
                             "1 pool takeover(s) not within 15 s: 16.2 s"]
    assert spread([9.0, None]) == "1 of 2 never taken over"
    assert spread([9.0, 11.0, 1.0]) == "p50 9.0 s, max 11.0 s over 3"


def test_requests_unanswered_after_retries_are_violations() -> None:
    f = clean()
    f.unanswered = ["create soak-0-3 still failing: 503"]
    f.pool_failed = ["ConnectError: refused", "ReadTimeout"]
    assert violations(f) == [
        "1 client request(s) not answered after retries (first: create soak-0-3 still "
        "failing: 503)",
        "2 pool call(s) failed after retries (first: ConnectError: refused)"]


def test_servers_made_beyond_the_answered_and_the_cleaned_are_duplicates() -> None:
    # 100 made: 97 named in an answer, 3 by creates whose answer was lost (found, deleted)
    assert duplicate_servers(made=100, answered=97, cleaned=3) == 0
    f = clean()
    f.unexplained_servers = duplicate_servers(made=101, answered=97, cleaned=3)
    f.nodes_launched_twice = 2
    assert violations(f) == ["1 server(s) created twice for one client request",
                             "2 pool node(s) launched twice"]
