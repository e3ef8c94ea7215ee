"""The skip list: one test id a line, then what we expect of it and why.

    <test id>  skip: <group>[: detail]     not run here: it needs what this cloud lacks
    <test id>  fails: <group>[: detail]    run, and expected to fail today (a gap of issue 17)

A test id is pytest's node id relative to site-packages
(`openstack/tests/functional/compute/v2/test_server.py::TestServer::test_server_create`);
a `skip:` entry may name a whole file or class. The group (the reason up to its first ':')
is what the summary and the README count by. Lines starting with '#' are comments."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KINDS = ("skip", "fails")
UNEXPLAINED = "UNEXPLAINED"
_LINE = re.compile(r"^(?P<id>\S+)\s+(?P<kind>\w+):\s*(?P<reason>.*?)\s*$")


class SkipListError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    test_id: str
    kind: str  # "skip" or "fails"
    reason: str

    @property
    def group(self) -> str:
        return UNEXPLAINED if self.unexplained else self.reason.split(":", 1)[0].strip()

    @property
    def unexplained(self) -> bool:
        return self.reason.startswith(UNEXPLAINED)

    def matches(self, test_id: str) -> bool:
        if test_id == self.test_id:
            return True
        return self.kind == "skip" and test_id.startswith(self.test_id + "::")

    def line(self) -> str:
        return f"{self.test_id}  {self.kind}: {self.reason}"


@dataclass
class SkipList:
    entries: list[Entry]
    header: list[str]  # the comment lines the file starts with, kept by a rewrite

    def find(self, test_id: str) -> Entry | None:
        for entry in self.entries:
            if entry.matches(test_id):
                return entry
        return None

    def render(self) -> str:
        """The file's text: its header, then the `skip:` entries, then the `fails:` ones,
        each sorted by test id."""
        lines = list(self.header)
        for kind in KINDS:
            chosen = sorted((e for e in self.entries if e.kind == kind), key=lambda e: e.test_id)
            lines += [e.line() for e in chosen]
        return "\n".join(lines) + "\n"


def parse(text: str) -> SkipList:
    entries: list[Entry] = []
    header: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if not entries:
                header.append(raw.rstrip())
            continue
        m = _LINE.match(line)
        if m is None:
            raise SkipListError(f"line {number}: want '<test id>  skip|fails: <reason>', "
                                f"got {line!r}")
        kind, reason, test_id = m["kind"], m["reason"], m["id"]
        if kind not in KINDS:
            raise SkipListError(f"line {number}: {kind!r} is neither 'skip' nor 'fails'")
        if not reason:
            raise SkipListError(f"line {number}: {test_id} has no reason")
        if test_id in seen:
            raise SkipListError(f"line {number}: {test_id} is listed twice")
        seen.add(test_id)
        entries.append(Entry(test_id, kind, reason))
    while header and not header[-1].strip():
        header.pop()
    return SkipList(entries, header)


def load(path: Path) -> SkipList:
    return parse(path.read_text())


def updated(skips: SkipList, failed: Iterable[tuple[str, str]], not_failing: Iterable[str]
            ) -> SkipList:
    """The list after a run: `fails:` entries of tests that ran and did not fail are dropped,
    those that still fail keep their reason, and a failure not listed yet gets
    `fails: UNEXPLAINED <its message>` (a run refuses one: a human writes the reason)."""
    gone = set(not_failing)
    entries = [e for e in skips.entries if not (e.kind == "fails" and e.test_id in gone)]
    listed = {e.test_id for e in entries}
    for test_id, message in failed:
        if test_id not in listed and skips.find(test_id) is None:
            hint = " ".join(message.split())[:120]
            entries.append(Entry(test_id, "fails", f"{UNEXPLAINED} {hint}".rstrip()))
            listed.add(test_id)
    return SkipList(entries, skips.header)
