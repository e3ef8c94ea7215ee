"""The server list's filters beyond name and status, as Nova 2.1 reads them: `image`, `flavor`,
`host` (administrators'), `changes-since` in SQL, and `ip`, a regular expression matched (as
`re.match`) against each server's fixed address, in Python, over the rows the other filters
left. The expression's cost is bounded before it runs: at most 64 characters, at most four
repetitions (`?` included), none inside another, no alternation inside one, no
back-references, and alternations and repetitions together may try at most MAX_WAYS ways on
an address; anything else is a 400."""

from __future__ import annotations

import datetime as dt
import math
import re
import re._parser as sre_parse
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select

from infracloud.core.clock import parse_time
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Forbidden
from infracloud.store.models import Host, Instance

MAX_IP_PATTERN = 64
MAX_REPEATS = 4
MAX_WAYS = 4000  # math.comb(15 + 4, 4) = 3876: four unbounded repetitions, no alternation
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
_REFUSED = ("GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE", "GROUPREF_LOC_IGNORE",
            "GROUPREF_UNI_IGNORE")


@dataclass(frozen=True)
class ServerFilters:
    image: str | None = None
    flavor: str | None = None
    host: str | None = None  # a compute host's name (administrators only)
    changes_since: dt.datetime | None = None
    ip: re.Pattern[str] | None = None
    ip6: re.Pattern[str] | None = None  # over IPv6 fixed addresses (the network has none yet)

    def where(self, q: Select[Any]) -> Select[Any]:
        """The filters SQL can apply."""
        if self.image is not None:
            q = q.where(Instance.image_id == self.image)
        if self.flavor is not None:
            q = q.where(Instance.flavor_id == self.flavor)
        if self.host is not None:
            q = q.where(Instance.host_id.in_(select(Host.id).where(Host.name == self.host)))
        if self.changes_since is not None:
            q = q.where(Instance.updated_at >= self.changes_since)
        return q

    @property
    def exact(self) -> bool:
        """True when SQL alone decides (a page can be cut in SQL)."""
        return self.ip is None and self.ip6 is None

    def matches(self, inst: Instance) -> bool:
        """Nova's: one of the server's fixed addresses matches `ip` (IPv4) or `ip6` (IPv6)."""
        if self.ip is None and self.ip6 is None:
            return True
        addr = inst.ip_address
        if not addr:
            return False
        pattern = self.ip6 if ":" in addr else self.ip
        return bool(pattern is not None and pattern.match(addr))


def _image_id(ref: str) -> str:
    """An image's id, or the id at the end of its URL (nova's imageRef form)."""
    return ref.rstrip("/").rsplit("/", 1)[-1]


def _walk(parsed: Any, inside: bool, counts: list[int]) -> None:
    """Refuse what can backtrack beyond a small polynomial: a repetition (`*`, `+`, `?`,
    `{m,n}`) or an alternation inside a repetition, more than MAX_REPEATS repetitions in all,
    back-references. `counts`: [repetitions, product of the alternations' branch counts]."""
    for op, av in parsed:
        name = str(op)
        if name in _REFUSED:
            raise ValueError("back-references are not allowed")
        if name == "BRANCH":
            if inside:
                raise ValueError("an alternation inside a repetition")
            counts[1] *= max(1, len(av[1]))
        if name in _REPEATS:
            if inside:
                raise ValueError("a repetition inside a repetition")
            counts[0] += 1
            if counts[0] > MAX_REPEATS:
                raise ValueError(f"more than {MAX_REPEATS} repetitions")
            _walk(av[2], True, counts)
            continue
        children: list[Any] = []
        stack = [av]
        while stack:
            item = stack.pop()
            if isinstance(item, sre_parse.SubPattern):
                children.append(item)
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
        for child in children:
            _walk(child, inside, counts)


def compile_ip(pattern: str, field: str = "ip") -> re.Pattern[str]:
    """The `ip` (or `ip6`) filter's expression, compiled once its cost is known to be small;
    a 400 otherwise."""
    if len(pattern) > MAX_IP_PATTERN:
        raise BadRequest(f"Invalid filter field: {field}. The expression is longer than "
                         f"{MAX_IP_PATTERN} characters.")
    try:
        counts = [0, 1]
        _walk(sre_parse.parse(pattern), False, counts)
        # the ways a match can be tried on an IPv4 address (15 characters): each repetition
        # may end at any of its places, each alternation try each branch
        if counts[1] * math.comb(15 + counts[0], counts[0]) > MAX_WAYS:
            raise ValueError("too many ways to try (alternations times repetitions)")
        return re.compile(pattern)
    except (re.error, ValueError, RecursionError) as exc:
        raise BadRequest(f"Invalid filter field: {field}. {exc}") from None


def parse_changes_since(value: str) -> dt.datetime:
    try:
        return parse_time(value)
    except ValueError:
        raise BadRequest(f"Invalid input for query parameters changes-since. Value: "
                         f"{value[:80]}. '{value[:80]}' is not a 'date-time'") from None


def from_query(params: Any, *, admin: bool) -> ServerFilters:
    """The filters of a list request's query string (`params`: a mapping). A non-administrator's
    `host` is ignored, as Nova drops the options a caller may not use."""
    image = params.get("image")
    ip, ip6 = params.get("ip"), params.get("ip6")
    since = params.get("changes-since")
    return ServerFilters(
        image=_image_id(image) if image else None,
        flavor=_image_id(params["flavor"]) if params.get("flavor") else None,
        host=params.get("host") or None if admin else None,
        changes_since=parse_changes_since(since) if since is not None else None,
        ip=compile_ip(ip) if ip else None, ip6=compile_ip(ip6, "ip6") if ip6 else None)


def all_tenants(caller: Caller, params: Any, detail: bool) -> bool:
    """Nova's `all_tenants` (or openstacksdk's `all_projects`): given with no value it means
    true; a non-administrator asking for it is refused (403), as Nova's
    `servers:index:get_all_tenants` rule refuses."""
    wanted = False
    for key in ("all_tenants", "all_projects"):
        if key in params:
            raw = str(params[key]).strip().lower()
            wanted = wanted or raw == "" or raw in ("1", "true", "t", "yes", "y", "on")
    if wanted and not caller.is_admin:
        rule = "detail:get_all_tenants" if detail else "index:get_all_tenants"
        raise Forbidden(f"Policy doesn't allow os_compute_api:servers:{rule} to be performed.")
    return wanted
