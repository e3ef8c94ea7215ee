"""The server list's filters in the service, on SQLite and PostgreSQL: image, flavor, host,
changes-since in SQL; ip in Python after them, with pages that still hold `limit` matches."""

from __future__ import annotations

import datetime as dt
import re

from infracloud.compute.server_filters import ServerFilters, compile_ip
from tests.unit.compute_env import ADMIN, CI, IMAGE_ID, ZUUL, Env, FakeImage, env_fixture

__all__ = ["env_fixture"]
OTHER_IMAGE = "99999999-2222-3333-4444-555555555555"


def listed(env: Env, caller: object = ZUUL, **kw: object) -> list[str]:
    rows, _ = env.servers.list_servers(caller, **kw)  # type: ignore[arg-type]
    return [r.name for r in rows]


def test_filters(env: Env) -> None:
    env.images[OTHER_IMAGE] = FakeImage(OTHER_IMAGE)
    h1, h2 = env.host("h1"), env.host("h2")
    a = env.boot(name="a", flavor="ci.8g")
    env.clock.advance(1)  # the list is newest first
    b = env.boot(name="b", flavor="ci.small", image_ref=OTHER_IMAGE)
    env.clock.advance(60)
    env.beat(h1, h2)  # still up
    since = env.clock.now()
    c = env.boot(name="c", flavor="ci.small")
    env.boot(CI, name="theirs", flavor="ci.small")
    f = ServerFilters
    assert listed(env, filters=f(image=OTHER_IMAGE)) == ["b"]
    assert listed(env, filters=f(image=IMAGE_ID)) == ["c", "a"]
    assert listed(env, filters=f(flavor="ci.small")) == ["c", "b"]
    assert listed(env, filters=f(flavor="no-such")) == []
    assert listed(env, filters=f(changes_since=since)) == ["c"]
    assert listed(env, filters=f(changes_since=since + dt.timedelta(seconds=1))) == []
    assert all(s.host_id for s in (a, b, c))
    for host in (h1, h2):  # spread: both hold some
        on_it = {s.name for s in (a, b, c) if s.host_id == host.id}
        assert on_it and set(listed(env, filters=f(host=host.name))) == on_it
    assert listed(env, filters=f(host="nowhere")) == []
    assert sorted(listed(env, ADMIN, all_projects=True, filters=f(flavor="ci.small"))) == [
        "b", "c", "theirs"]
    ip = env.state(b.id).ip_address
    assert ip is not None
    assert listed(env, filters=f(ip=compile_ip(re.escape(ip) + "$"))) == ["b"]
    assert listed(env, filters=f(ip=compile_ip("192\\.0\\.2\\."))) == []
    # the ip filter with the other filters, then paged: each page holds `limit` matches
    prefix = compile_ip(".".join(ip.split(".")[:2]))
    rows, marker = env.servers.list_servers(ZUUL, limit=1, filters=f(ip=prefix))
    assert [r.name for r in rows] == ["c"] and marker == c.id
    rows, marker = env.servers.list_servers(ZUUL, limit=1, marker=marker, filters=f(ip=prefix))
    assert [r.name for r in rows] == ["b"]
    rows, marker = env.servers.list_servers(ZUUL, limit=1, marker=marker, filters=f(ip=prefix))
    assert [r.name for r in rows] == ["a"]
    rows, marker = env.servers.list_servers(ZUUL, limit=5, filters=f(ip=prefix,
                                                                     flavor="ci.small"))
    assert [r.name for r in rows] == ["c", "b"] and marker is None
