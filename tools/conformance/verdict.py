"""A run judged against the skip list, and its summary per suite and area.

The run fails when a test fails that the list does not expect to, when a test the list
expects to fail does not (it passes now, or the suite skipped it itself: remove it from the
list), when an entry's reason is still UNEXPLAINED, and (on a full run) when a `fails:` entry names
a test that did not run at all."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tools.conformance.results import FAILED, PASSED, SKIPPED, Result
from tools.conformance.skiplist import SkipList

SUITE_NAMES = {"openstackclient": "python-openstackclient", "openstack": "openstacksdk"}


def area_of(test_id: str) -> tuple[str, str]:
    """(suite, area) of a test id: ('openstacksdk', 'compute')."""
    parts = test_id.split("::", 1)[0].split("/")
    suite = SUITE_NAMES.get(parts[0], parts[0])
    area = parts[parts.index("functional") + 1] if "functional" in parts[:-1] else "?"
    return suite, area.removesuffix(".py")


@dataclass
class Tally:
    ran: int = 0
    passed: int = 0
    expected_failures: Counter[str] = field(default_factory=Counter)  # group -> tests
    unexpected_failures: int = 0
    skipped_by_list: Counter[str] = field(default_factory=Counter)  # group -> tests
    skipped_by_suite: Counter[str] = field(default_factory=Counter)  # its reason -> tests


@dataclass
class Verdict:
    tallies: dict[tuple[str, str], Tally]
    problems: list[str]  # each one line; any makes the run fail

    @property
    def ok(self) -> bool:
        return not self.problems

    def total(self) -> Tally:
        total = Tally()
        for t in self.tallies.values():
            total.ran += t.ran
            total.passed += t.passed
            total.unexpected_failures += t.unexpected_failures
            total.expected_failures.update(t.expected_failures)
            total.skipped_by_list.update(t.skipped_by_list)
            total.skipped_by_suite.update(t.skipped_by_suite)
        return total


def judge(skips: SkipList, results: dict[str, Result], full_run: bool = True,
          run_skipped: bool = False) -> Verdict:
    """`run_skipped`: the `skip:` tests ran too (to see whether the list still holds): one
    that fails counts as expected, one that passes fails the run (remove its line)."""
    tallies: dict[tuple[str, str], Tally] = defaultdict(Tally)
    problems: list[str] = []
    for test_id, result in sorted(results.items()):
        tally = tallies[area_of(test_id)]
        entry = skips.find(test_id)
        listed_fails = entry is not None and (entry.kind == "fails" or run_skipped)
        if entry is not None and entry.unexplained:
            problems.append(f"{test_id}: write the reason in the skip list (it says "
                            f"'{entry.reason[:60]}')")
        if result.outcome == SKIPPED:
            if entry is not None and entry.kind == "skip" and not run_skipped:
                tally.skipped_by_list[entry.group] += 1
            else:
                tally.skipped_by_suite[result.message or "no reason given"] += 1
            if entry is not None and entry.kind == "fails":
                problems.append(f"{test_id}: listed as 'fails' but the suite skips it itself "
                                f"({result.message}): remove it from the list")
            continue
        tally.ran += 1
        if result.outcome == PASSED:
            tally.passed += 1
            if listed_fails:
                problems.append(f"{test_id}: passes now: remove it from the list")
        elif result.outcome == FAILED:
            if listed_fails:
                assert entry is not None
                tally.expected_failures[entry.group] += 1
            else:
                tally.unexpected_failures += 1
                problems.append(f"{test_id}: fails and is not on the list: {result.message}")
    if full_run:
        for entry in skips.entries:
            if entry.kind == "fails" and entry.test_id not in results:
                problems.append(f"{entry.test_id}: on the list but did not run (renamed or "
                                f"gone?): remove it from the list")
    return Verdict(dict(tallies), problems)


def _groups(counter: Counter[str]) -> str:
    return ", ".join(f"{name} ({n})" for name, n in counter.most_common())


def summary(verdict: Verdict) -> str:
    """The lines `make conformance` prints: per suite and area, then the total."""
    lines = []
    rows = sorted(verdict.tallies.items())
    rows.append((("total", ""), verdict.total()))
    for (suite, area), t in rows:
        expected = sum(t.expected_failures.values())
        listed = sum(t.skipped_by_list.values())
        own = sum(t.skipped_by_suite.values())
        lines.append(f"{suite} {area}".strip() + f": {t.ran} ran, {t.passed} passed, "
                     f"{expected + t.unexpected_failures} failed ({expected} expected), "
                     f"{listed + own} skipped")
        if t.expected_failures:
            lines.append(f"    expected to fail: {_groups(t.expected_failures)}")
        if t.skipped_by_list:
            lines.append(f"    skipped by the list: {_groups(t.skipped_by_list)}")
        if t.skipped_by_suite:
            lines.append(f"    skipped by the suite: {_groups(t.skipped_by_suite)}")
    return "\n".join(lines)
