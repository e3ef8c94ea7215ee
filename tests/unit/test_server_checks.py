"""What Nova's schemas check on a server's create and update, and the server list's filters:
the checks themselves (compute/server_checks.py, compute/server_filters.py), without HTTP."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from infracloud.compute import server_checks as checks
from infracloud.compute.server_filters import (
    MAX_IP_PATTERN,
    all_tenants,
    compile_ip,
    from_query,
    parse_changes_since,
)
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Forbidden

ADMIN = Caller(user_id="u-admin", project_id="p-admin", roles=frozenset({"admin", "member",
                                                                         "reader"}))
MEMBER = Caller(user_id="u-m", project_id="p-m", roles=frozenset({"member", "reader"}))


@pytest.mark.parametrize("name", ["n1", "a b", "x" * 255, "ünïcode-名前", "no\u00a0break"])
def test_names_nova_accepts(name: str) -> None:
    assert checks.check_name(name) == name


@pytest.mark.parametrize("name", [" lead", "trail ", "\tx", "x\n", "nul\x00in", "tab\tinside",
                                  "line\u2028sep"])
def test_names_nova_refuses_by_format(name: str) -> None:
    with pytest.raises(BadRequest, match="Can not start or end with whitespace"):
        checks.check_name(name)


@pytest.mark.parametrize(("name", "why"), [("", "too short"), ("x" * 256, "too long"),
                                           (5, "not of type 'string'"),
                                           (None, "not of type 'string'")])
def test_names_of_the_wrong_length_or_type(name: Any, why: str) -> None:
    with pytest.raises(BadRequest, match=f"Invalid input for field/attribute name.*{why}"):
        checks.check_name(name)


def test_access_addresses() -> None:
    assert checks.check_access_ip("192.0.2.7", 4) == "192.0.2.7"
    assert checks.check_access_ip("2001:DB8::1", 6) == "2001:db8::1"
    assert checks.check_access_ip("", 4) is None and checks.check_access_ip(None, 6) is None
    for value, version in (("2001:db8::1", 4), ("192.0.2.7", 6), ("300.1.1.1", 4),
                           ("host.example", 4), (17, 4)):
        with pytest.raises(BadRequest, match=f"field/attribute accessIPv{version}"):
            checks.check_access_ip(value, version)


def test_counts_are_positive_integers_or_digit_strings() -> None:
    assert checks.check_counts(1, 1) == (1, 1)
    assert checks.check_counts("2", "3") == (2, 3)
    assert checks.check_counts(None, None) == (1, 1)
    for low, high, why in ((0, 1, "less than the minimum of 1"), ("0", 1, "minimum of 1"),
                           ("-1", 1, "does not match"), ("1.5", 1, "does not match"),
                           ("", 1, "too short"), (1.5, 1, "not of type"),
                           (True, 1, "not of type"), (1, 0, "max_count")):
        with pytest.raises(BadRequest, match=why):
            checks.check_counts(low, high)
    with pytest.raises(BadRequest, match="min_count must be <= max_count"):
        checks.check_counts(3, 2)


def test_security_groups() -> None:
    checks.check_security_groups(None)
    checks.check_security_groups([{"name": "default"}])
    with pytest.raises(BadRequest, match="Security group web not found"):
        checks.check_security_groups([{"name": "default"}, {"name": "web"}])


def test_metadata_quota_is_a_403() -> None:
    checks.check_metadata_quota(128)
    with pytest.raises(Forbidden, match="Quota exceeded for metadata_items"):
        checks.check_metadata_quota(129)
    checks.check_metadata_quota(10**6, -1)  # unlimited


@pytest.mark.parametrize("pattern", ["127.100.0.5", r"^127\.100\.", "10.0.0.(1|2)$",
                                     r"127\.100\.[0-9]+\.[0-9]{1,3}", "1?2?7?",
                                     "(.|.|.|.|.)(.|.|.|.|.)(.|.|.|.|.)(.|.|.|.|.)(.|.|.|.|.)",
                                     ".*.*.*.*9$"])
def test_ip_patterns_that_run(pattern: str) -> None:
    compile_ip(pattern)


@pytest.mark.parametrize("pattern", [
    "(a+)+$", "(.*)*x", "((1|2)+)+", r"(\d+)\1",  # nested repetition, back-reference
    r"(\d?\d?)*x", r"(\d|\d|\d|.)*x",  # an optional or an alternation inside a repetition
    ".*.*.*.*.*x", "1?2?7?1?0?",  # five repetitions
    "(.|.|.)(.|.|.)(.|.|.)(.|.|.)(.|.|.)(.|.|.)(.|.|.)(.|.|.)",  # 3**8 ways
    "(1|27).*.*.*.*",  # 2 * 3876 ways
    "[", "(", "*1",  # not expressions
    "1" * (MAX_IP_PATTERN + 1),
])
def test_ip_patterns_that_are_refused(pattern: str) -> None:
    with pytest.raises(BadRequest, match="Invalid filter field: ip"):
        compile_ip(pattern)


def test_ip_filter_matches_from_the_start_as_nova() -> None:
    rx = compile_ip(r"127\.100\.0\.1")
    assert rx.match("127.100.0.1") and rx.match("127.100.0.12")
    assert not rx.match("10.127.100.0.1")


def test_changes_since() -> None:
    assert parse_changes_since("2026-12-07T03:00:00Z") == dt.datetime(2026, 12, 7, 3,
                                                                     tzinfo=dt.UTC)
    assert parse_changes_since("2026-12-07T04:00:00+01:00").hour == 3
    for bad in ("yesterday", "2026-13-01T00:00:00Z", ""):
        with pytest.raises(BadRequest, match="changes-since"):
            parse_changes_since(bad)


def test_host_is_an_administrators_filter() -> None:
    q = {"host": "h1", "image": "https://c.example/compute/images/abc", "flavor": "ci.small"}
    assert from_query(q, admin=True).host == "h1"
    mine = from_query(q, admin=False)
    assert mine.host is None and mine.image == "abc" and mine.flavor == "ci.small"


def test_all_tenants() -> None:
    assert all_tenants(ADMIN, {"all_tenants": ""}, True) is True  # empty means true
    assert all_tenants(ADMIN, {"all_tenants": "True"}, False) is True
    assert all_tenants(ADMIN, {"all_tenants": "0"}, True) is False
    assert all_tenants(ADMIN, {"tenant_id": "p"}, True) is False
    assert all_tenants(MEMBER, {}, True) is False
    with pytest.raises(Forbidden, match="servers:detail:get_all_tenants"):
        all_tenants(MEMBER, {"all_tenants": ""}, True)


def test_ip6_is_checked_and_matches_only_ipv6_addresses() -> None:
    from infracloud.store.models import Instance

    f = from_query({"ip6": "2001:db8::"}, admin=False)
    assert not f.exact
    assert f.matches(Instance(ip_address="2001:db8::5"))
    assert not f.matches(Instance(ip_address="127.100.0.5"))
    v4 = from_query({"ip": "127"}, admin=False)
    assert v4.matches(Instance(ip_address="127.100.0.5"))
    assert not v4.matches(Instance(ip_address="2001:db8::5"))
    assert not v4.matches(Instance(ip_address=None))
    with pytest.raises(BadRequest, match="Invalid filter field: ip6"):
        from_query({"ip6": "(a*)*"}, admin=False)
