"""Caches that cross controllers (store.generations): two controllers are two Database objects
on one database (SQLite file or PostgreSQL), each with the services that cache, and each with a
clock of its own that the test moves. What one changes, the other's caches drop within
`cache_check_seconds` of the commit (README, "How stale a controller can be"), and not later."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from infracloud.compute.flavors import FlavorService
from infracloud.core.clock import FakeClock
from infracloud.core.context import Caller
from infracloud.core.errors import NotFound, Unauthorized
from infracloud.core.secrets import SecretBox
from infracloud.core.settings import DatabaseConfig, IdentityConfig
from infracloud.identity.auth import Ref
from infracloud.identity.service import IdentityService
from infracloud.store import Database
from infracloud.store.generations import FLAVORS, IDENTITY, TOKEN_KEYS, Cache
from infracloud.store.models import CacheGeneration
from tests.conftest import FAST_HASH

INTERVAL = 1.0
ADMIN = Caller(user_id="admin", project_id="admin", roles=frozenset({"admin"}))


@dataclass
class Controller:
    db: Database
    clock: FakeClock  # this controller's: moves only when the test moves it

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


def controller(url: str, interval: float = INTERVAL) -> Controller:
    clock = FakeClock()
    return Controller(Database(url, cache_check_seconds=interval, monotonic=clock.monotonic),
                      clock)


@pytest.fixture
def pair(db: Database, db_url: str) -> Iterator[tuple[Controller, Controller]]:
    """Controllers A and B on the (migrated) database of `db`."""
    a, b = controller(db_url), controller(db_url)
    yield a, b
    a.db.dispose()
    b.db.dispose()


def flavors(c: Controller) -> FlavorService:
    return FlavorService(c.db, c.clock)


def generation(db: Database, name: str) -> int | None:
    with db.read() as s:
        return s.scalar(select(CacheGeneration.generation).where(CacheGeneration.name == name))


def test_a_deleted_flavor_is_gone_on_the_other_controller_at_the_bound(pair) -> None:
    """B cached the flavor; A deletes it at T. B may answer from its cache before T + interval
    (the check it made before T still holds), and never at or after T + interval."""
    a, b = pair
    fa, fb = flavors(a), flavors(b)
    fa.create(ADMIN, name="ci.small", vcpus=1, ram_mb=512, disk_gb=5, flavor_id="small")
    assert fb.get("small").name == "ci.small"  # B checked (its time 0) and cached it
    b.advance(0.3)
    fa.delete(ADMIN, "small")  # committed at T = B's 0.3
    b.advance(0.6)
    assert fb.get("small").name == "ci.small"  # 0.9: within the last check's interval
    b.advance(0.4)  # 1.3 = T + interval
    with pytest.raises(NotFound):
        fb.get("small")


def test_a_change_right_after_a_check_waits_a_whole_interval_and_no_more(pair) -> None:
    """The worst case of the bound: the change commits just after B's check began."""
    a, b = pair
    fa, fb = flavors(a), flavors(b)
    fa.create(ADMIN, name="ci.small", vcpus=1, ram_mb=512, disk_gb=5, flavor_id="small")
    fb.get("small")
    fa.delete(ADMIN, "small")
    b.advance(INTERVAL - 0.001)
    assert fb.get("small").name == "ci.small"
    b.advance(0.001)
    with pytest.raises(NotFound):
        fb.get("small")


def test_interval_zero_checks_on_every_use(db: Database, db_url: str) -> None:
    a, b = controller(db_url, 0), controller(db_url, 0)
    try:
        fa, fb = flavors(a), flavors(b)
        fa.create(ADMIN, name="ci.small", vcpus=1, ram_mb=512, disk_gb=5, flavor_id="small")
        fb.get("small")
        before = b.db.generations.checks
        fb.get("small")
        assert b.db.generations.checks == before + 1  # no time passed, still a check
        fa.delete(ADMIN, "small")
        with pytest.raises(NotFound):  # no time passes at all
            fb.get("small")
    finally:
        a.db.dispose()
        b.db.dispose()


def test_one_query_reads_every_generation_at_most_once_an_interval(pair) -> None:
    """No N+1: however many caches and names, a check is one SELECT, and within the interval
    a cached read costs no query at all."""
    a, b = pair
    queries: list[str] = []
    event.listen(b.db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: queries.append(statement))
    caches = [Cache[str, str](b.db.generations, name) for name in (FLAVORS, IDENTITY,
                                                                  TOKEN_KEYS, "extra")]
    for name in (FLAVORS, IDENTITY, TOKEN_KEYS, "extra"):
        with a.db.write() as s:
            a.db.generations.touch(s, name)
    for cache in caches:
        assert cache.get("k", lambda k: "v") == "v"
    reads = [q for q in queries if q.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and "FROM cache_generations" in reads[0]
    b.advance(INTERVAL)
    for cache in caches:
        assert cache.get("k", lambda k: "loaded again") == "v"  # nothing moved: kept
    assert len([q for q in queries if q.lstrip().upper().startswith("SELECT")]) == 2


def test_many_threads_due_at_once_share_one_check(pair) -> None:
    """When the interval runs out under load, the requests waiting wait for one read of the
    counters (it started after they asked) instead of each making one."""
    _, b = pair
    gens = b.db.generations
    gens.check()
    b.advance(INTERVAL)
    start = threading.Barrier(8)

    def use() -> None:
        start.wait()
        gens.check()

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gens.checks == 2


def test_a_value_loaded_before_a_change_is_not_kept_after_the_drop(pair) -> None:
    """The race a plain dict loses: B loads the old row, A's change commits and B's check (in
    another thread) drops the cache, then B's load returns. What it loaded serves that one
    request (it began before the change) but is not kept."""
    a, b = pair
    fa, fb = flavors(a), flavors(b)
    fa.create(ADMIN, name="ci.small", vcpus=1, ram_mb=512, disk_gb=5, flavor_id="small")
    cache = fb._cache
    b.db.generations.check()

    def slow_load(key: str) -> object:
        old = fb._load(key)
        fa.delete(ADMIN, "small")
        b.advance(INTERVAL)
        b.db.generations.check()  # the other thread's check sees the delete
        return old

    assert cache.get("small", slow_load) is not None
    assert len(cache) == 0
    with pytest.raises(NotFound):
        fb.get("small")


def test_the_writer_drops_its_own_cache_at_commit_and_a_rollback_moves_nothing(pair) -> None:
    a, _ = pair
    fa = flavors(a)
    fa.create(ADMIN, name="ci.small", vcpus=1, ram_mb=512, disk_gb=5, flavor_id="small")
    fa.get("small")
    before = generation(a.db, FLAVORS)
    with pytest.raises(RuntimeError), a.db.write() as s:
        a.db.generations.touch(s, FLAVORS)
        raise RuntimeError("the write fails")
    assert generation(a.db, FLAVORS) == before
    assert len(fa._cache) == 1
    fa.delete(ADMIN, "small")  # no time passes: the writer needs no check
    assert generation(a.db, FLAVORS) == (before or 0) + 1
    with pytest.raises(NotFound):
        fa.get("small")


def test_only_a_write_transaction_can_move_a_counter(pair) -> None:
    a, _ = pair
    with pytest.raises(RuntimeError, match=r"db\.write"), a.db.read() as s:
        a.db.generations.touch(s, FLAVORS)


def test_what_was_cached_before_the_first_check_is_dropped(pair) -> None:
    _, b = pair
    cache = Cache[str, str](b.db.generations, FLAVORS)
    cache._data["stale"] = "from before any check"
    assert cache.get("stale", lambda k: "from the database") == "from the database"


def test_the_interval_setting() -> None:
    assert DatabaseConfig().cache_check_seconds == 1.0
    assert DatabaseConfig(cache_check_seconds=0).cache_check_seconds == 0
    with pytest.raises(ValueError):
        DatabaseConfig(cache_check_seconds=-1)
    with pytest.raises(ValueError):
        Database("sqlite://", cache_check_seconds=-1)


# ---- identity: token validations, roles, revocations, projects, token keys --------------------

@pytest.fixture
def identities(pair, secret_box: SecretBox) -> tuple[IdentityService, IdentityService]:
    """The identity services of A and B; B reuses a validation for a minute, so only the
    generations can make it look again."""
    config = IdentityConfig(password_hash=FAST_HASH, validation_cache_seconds=60)
    a, b = pair
    services = IdentityService(a.db, config, a.clock, box=secret_box), \
        IdentityService(b.db, config, b.clock, box=secret_box)
    for service in services:
        service.start()
    return services


def login(identity: IdentityService, user: str = "zuul", project: str = "ci") -> str:
    return identity.auth.password(Ref(name=user, domain_id="default"), "pw",
                                  Ref(name=project, domain_id="default")).token


def test_identity_changes_reach_the_other_controllers_validations(pair, identities) -> None:
    _, b = pair
    ia, ib = identities
    d = ia.directory
    account = ia.ensure_account("zuul", "pw", "ci", "member")
    d.grant(account.project_id, account.user_id, d.find_role("reader").id)
    other = ia.ensure_account("np", "pw", "ci2", "member")
    token, revoked, np_token = login(ia), login(ia), login(ia, "np", "ci2")
    for t in (token, revoked, np_token):
        ib.auth.validate(t)  # B checks and caches each
    assert {r.name for r in ib.auth.validate(token).roles} == {"member", "reader"}

    ia.auth.revoke(ia.auth.validate(revoked))
    d.revoke_grant(account.project_id, account.user_id, d.find_role("member").id)
    d.update_project(account.project_id, name="ci-renamed")
    d.update_project(other.project_id, enabled=False)
    b.advance(INTERVAL - 0.01)  # B's cache still answers (a minute of validation cache)
    assert ib.auth.validate(revoked).token == revoked
    assert ib.auth.cached(token) is not None

    b.advance(0.01)
    assert ib.auth.cached(token) is None  # the event loop sends it to a worker, which checks
    with pytest.raises(Unauthorized):
        ib.auth.validate(revoked)
    with pytest.raises(Unauthorized):
        ib.auth.validate(np_token)
    info = ib.auth.validate(token)
    assert {r.name for r in info.roles} == {"reader"}
    assert info.project is not None and info.project.name == "ci-renamed"


def test_a_pruned_token_key_stops_validating_on_the_other_controller(pair, identities) -> None:
    _, b = pair
    ia, ib = identities
    ia.ensure_account("zuul", "pw", "ci", "member")
    old = login(ib)
    ib.auth.validate(old)
    for _ in range(ia.config.max_active_keys):  # the key that signed `old` is pruned
        ia.keys.rotate()
    b.advance(INTERVAL)
    with pytest.raises(Unauthorized):
        ib.auth.validate(old)
    assert ia.auth.validate(login(ib)).user.name == "zuul"  # B signs with A's newest key


def test_a_database_that_cannot_be_read_fails_the_request_not_the_bound(tmp_path) -> None:
    """A check that cannot read the counters raises (the request fails) rather than serving
    the cache past the bound; the next use checks again."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    c = controller(url)
    c.db.migrate()
    fb = flavors(c)
    fb.ensure([])
    with c.db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE cache_generations RENAME TO gone")
    with pytest.raises(OperationalError, match="cache_generations"):
        fb.get("ci.8g")
    with c.db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE gone RENAME TO cache_generations")
    with pytest.raises(NotFound):
        fb.get("ci.8g")
    c.db.dispose()
