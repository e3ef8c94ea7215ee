"""Private flavors and extra specs in the compute services, as nova has them: who sees a
private flavor, who may boot it, the `is_public` list semantics, extra-spec validation, and
writes reaching another controller's flavor cache. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from infracloud.compute.flavor_access import FlavorAccess
from infracloud.compute.flavors import FlavorService
from infracloud.core.clock import FakeClock
from infracloud.core.errors import BadRequest, Conflict, NotFound
from infracloud.store import Database
from tests.unit.compute_env import ADMIN, CI, ZUUL, Env, env_fixture  # noqa: F401


def names(found: list) -> set[str]:  # type: ignore[type-arg]
    return {f.name for f in found}


def test_a_private_flavor_is_its_projects_only(env: Env) -> None:
    env.host("h0")
    access = FlavorAccess(env.flavors)
    env.flavors.create(ADMIN, name="gpu", vcpus=2, ram_mb=2048, disk_gb=10, flavor_id="gpu",
                       is_public=False)
    with pytest.raises(NotFound):
        env.flavors.get_visible(ZUUL, "gpu")
    with pytest.raises(BadRequest, match="Flavor gpu could not be found"):
        env.boot(name="x", flavor="gpu")
    assert "gpu" not in names(access.listing(ZUUL, None))
    assert access.add(ADMIN, "gpu", "p-zuul") == ["p-zuul"]
    with pytest.raises(Conflict, match="Flavor access already exists"):
        access.add(ADMIN, "gpu", "p-zuul")
    assert env.flavors.get_visible(ZUUL, "gpu").name == "gpu"
    assert env.boot(name="x", flavor="gpu").state == "spawning"
    assert "gpu" in names(access.listing(ZUUL, None))
    assert "gpu" not in names(access.listing(CI, None))  # another project
    assert "gpu" in names(access.listing(ZUUL, "false"))  # non-admins: the filter is ignored
    assert access.access(ADMIN, "gpu") == ["p-zuul"]
    with pytest.raises(NotFound, match="Access list not available for public flavors"):
        access.access(ADMIN, "ci.8g")
    assert access.remove(ADMIN, "gpu", "p-zuul") == []
    with pytest.raises(NotFound, match="Flavor access not found"):
        access.remove(ADMIN, "gpu", "p-zuul")
    with pytest.raises(BadRequest):
        env.boot(name="y", flavor="gpu")


def test_a_deleted_flavors_access_list_goes_with_it(env: Env) -> None:
    access = FlavorAccess(env.flavors)
    env.flavors.create(ADMIN, name="once", vcpus=1, ram_mb=64, disk_gb=1, flavor_id="once",
                       is_public=False)
    access.add(ADMIN, "once", "p-zuul")
    env.flavors.delete(ADMIN, "once")
    env.flavors.create(ADMIN, name="once", vcpus=1, ram_mb=64, disk_gb=1, flavor_id="once",
                       is_public=False)  # the same id again: a new flavor, nobody's yet
    assert access.access(ADMIN, "once") == []
    with pytest.raises(NotFound):
        env.flavors.get_visible(ZUUL, "once")


def test_admins_list_public_by_default_private_on_request_all_with_none(env: Env) -> None:
    access = FlavorAccess(env.flavors)
    env.flavors.create(ADMIN, name="hidden", vcpus=1, ram_mb=64, disk_gb=1, is_public=False)
    public = names(access.listing(ADMIN, None))
    assert "hidden" not in public and "ci.8g" in public
    assert names(access.listing(ADMIN, "false")) == {"hidden"}
    assert names(access.listing(ADMIN, "None")) == public | {"hidden"}
    assert names(access.listing(ADMIN, "True")) == public
    with pytest.raises(BadRequest, match=r"Invalid is_public filter \[maybe\]"):
        access.listing(ADMIN, "maybe")


def test_extra_specs_keys_and_values_as_nova_validates_them(env: Env) -> None:
    access = FlavorAccess(env.flavors)
    assert access.set_specs(ADMIN, "ci.8g", {"hw:cpu_policy": "dedicated", "n": 2}) == {
        "hw:cpu_policy": "dedicated", "n": "2"}
    assert access.specs(ZUUL, "ci.8g") == {"hw:cpu_policy": "dedicated", "n": "2"}
    assert access.spec(ZUUL, "ci.8g", "n") == "2"
    for bad in ({"": "x"}, {"a/b": "x"}, {"k" * 256: "x"}, {"k": "v" * 256}, {"k": None},
                {"k": True}, {"k": ["list"]}):
        with pytest.raises(BadRequest):
            access.set_specs(ADMIN, "ci.8g", bad)
    access.delete_spec(ADMIN, "ci.8g", "n")
    with pytest.raises(NotFound, match=r"Flavor ci\.8g has no extra specs with key n\."):
        access.spec(ADMIN, "ci.8g", "n")
    with pytest.raises(NotFound, match="has no extra specs with key n"):
        access.delete_spec(ADMIN, "ci.8g", "n")
    with pytest.raises(NotFound):
        access.set_specs(ADMIN, "no-such-flavor", {"a": "b"})


def test_spec_and_access_writes_reach_another_controllers_cache(db: Database, db_url: str
                                                                 ) -> None:
    """Controller B cached the flavor; A's writes move the flavors' generation, so B (which
    checks on every use here) serves the new extra specs and the new access list."""
    a_db, b_db = (Database(db_url, cache_check_seconds=0) for _ in range(2))
    try:
        a, b = FlavorService(a_db, FakeClock()), FlavorService(b_db, FakeClock())
        a.create(ADMIN, name="p", vcpus=1, ram_mb=64, disk_gb=1, flavor_id="p",
                 is_public=False)
        assert b.get("p").extra_specs in (None, {})  # cached by B
        FlavorAccess(a).set_specs(ADMIN, "p", {"trait:CUSTOM_GPU": "required"})
        assert b.get("p").extra_specs == {"trait:CUSTOM_GPU": "required"}
        FlavorAccess(a).add(ADMIN, "p", "p-zuul")
        assert b.get_visible(ZUUL, "p").name == "p"
        FlavorAccess(a).remove(ADMIN, "p", "p-zuul")
        with pytest.raises(NotFound):
            b.get_visible(ZUUL, "p")
    finally:
        a_db.dispose()
        b_db.dispose()
