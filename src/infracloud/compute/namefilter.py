"""The servers' `?name=` filter: a regular expression of the caller's, searched in every
name as Nova does. Python's engine backtracks, so a pattern could take exponential time
("catastrophic backtracking"); the ones taken here cannot: at most MAX_LENGTH characters, no
backreferences, no quantifier over something that itself repeats or alternates, and at most
MAX_REPEATS quantifiers of variable width (names are at most 255 characters, so the cost of
one search stays polynomial and small). A pattern without special characters is a plain
substring, which the database can filter on (`literal`)."""

from __future__ import annotations

import re
import re._constants as sre  # type: ignore[import-not-found,unused-ignore]
import re._parser as sre_parse  # type: ignore[import-not-found,unused-ignore]
from dataclasses import dataclass
from typing import Any

from infracloud.core.errors import BadRequest

MAX_LENGTH = 255
MAX_REPEATS = 2
_SPECIAL = set(".^$*+?{}[]\\|()")
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT)}
_REFS = {sre.GROUPREF, sre.GROUPREF_EXISTS}


@dataclass(frozen=True)
class NameFilter:
    pattern: re.Pattern[str]
    literal: str | None  # the pattern is this plain substring

    def matches(self, name: str) -> bool:
        return self.pattern.search(name) is not None


def name_filter(value: str) -> NameFilter:
    """The filter of a `?name=` value, or a 400 saying why the pattern is refused."""
    if len(value) > MAX_LENGTH:
        raise BadRequest(f"Invalid regular expression for name: longer than {MAX_LENGTH} "
                         f"characters.")
    try:
        compiled = re.compile(value)
        parsed = sre_parse.parse(value)
    except (re.error, RecursionError, OverflowError):
        raise BadRequest(f"Invalid regular expression for name: {value}") from None
    why = _too_costly(list(parsed), inside_repeat=False)
    if why is None and _variable_repeats(list(parsed)) > MAX_REPEATS:
        why = f"more than {MAX_REPEATS} quantifiers of variable width"
    if why is not None:
        raise BadRequest(f"Regular expression for name not accepted ({why}): {value}")
    return NameFilter(compiled, None if _SPECIAL & set(value) else value)


def _children(op: Any, av: Any) -> list[list[Any]]:
    """The sub-patterns of one parsed item."""
    if op in _REPEATS:
        return [list(av[2])]
    if op is sre.SUBPATTERN:
        return [list(av[3])]
    if op is sre.BRANCH:
        return [list(b) for b in av[1]]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [list(av[1])]
    if op is getattr(sre, "ATOMIC_GROUP", None):
        return [list(av)]
    return []


def _too_costly(items: list[Any], *, inside_repeat: bool) -> str | None:
    for op, av in items:
        if op in _REFS:
            return "a backreference"
        if inside_repeat and (op in _REPEATS or op is sre.BRANCH):
            return "a quantifier over a repetition or an alternation"
        repeat = op in _REPEATS and av[0] != av[1]
        for child in _children(op, av):
            why = _too_costly(child, inside_repeat=inside_repeat or repeat)
            if why is not None:
                return why
    return None


def _variable_repeats(items: list[Any]) -> int:
    count = 0
    for op, av in items:
        if op in _REPEATS and av[0] != av[1]:
            count += 1
        count += sum(_variable_repeats(child) for child in _children(op, av))
    return count
