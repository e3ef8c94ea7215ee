"""Caches that cross controllers, end to end: two controllers on one PostgreSQL database, driven
with openstacksdk. What a client changes through controller A, controller B stops answering from
its caches within `database.cache_check_seconds` (README, "How stale a controller can be"):
a deleted flavor cannot be booted, a revoked token is 401, a removed role is 403, a renamed
project shows its new name. B keeps validated tokens for a minute here
(`identity.validation_cache_seconds: 60`) and flavors for ever, so only the invalidation
through the database makes it see the changes in time."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from openstack import exceptions

from tests.conftest import create_pg_database
from tests.servers import Running, sdk, start_controller, wait_for, write_controller_config

CHECK_SECONDS = 1.0  # database.cache_check_seconds: the default, said here to be plain
SLACK = 4.0  # a loaded 2-core machine: generous, the bound is CHECK_SECONDS
NEVER = 20.0  # longer than the bound and slack, shorter than B's caches would last alone


@dataclass
class Pair:
    a: Running
    b: Running
    clouds: Path

    def conn(self, which: str, user: str = "admin", password: str = "admin-secret",
             project: str = "admin") -> Any:
        return sdk(self.clouds, which, auth={"username": user, "password": password,
                                            "project_name": project})


@pytest.fixture
def pair(tmp_path: Path, pg_admin_url: str) -> Iterator[Pair]:
    db = create_pg_database(pg_admin_url)
    running: list[Running] = []
    clouds: dict[str, Any] = {}
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            path, url = write_controller_config(
                folder, db, validation_cache_seconds=60,
                sections={"database": {"url": db, "cache_check_seconds": CHECK_SECONDS},
                          "hardware": {"secret_key_file": str(tmp_path / "secret.key")}})
            running.append(start_controller(path, url))
            clouds[name] = {"auth": {"auth_url": url + "/identity", "username": "admin",
                                     "password": "admin-secret", "project_name": "admin",
                                     "user_domain_name": "Default",
                                     "project_domain_name": "Default"},
                            "region_name": "vanilla", "identity_api_version": 3}
        (tmp_path / "clouds.yaml").write_text(yaml.safe_dump({"clouds": clouds}))
        yield Pair(running[0], running[1], tmp_path / "clouds.yaml")
    finally:
        for r in running:
            assert r.stop() == 0


def seen_within(what: str, probe: Callable[[], bool]) -> float:
    """Seconds from now (the change was answered) to the start of the first probe of B that
    shows it; fails when it takes longer than the bound and its slack."""
    changed = time.monotonic()
    started: list[float] = []

    def once() -> bool:
        started.append(time.monotonic())
        return probe()

    wait_for(what, once, timeout=NEVER, every=0.05)
    took = started[-1] - changed
    assert took <= CHECK_SECONDS + SLACK, f"{what}: {took:.2f} s"
    return took


def boot_answer(conn: Any, flavor: str) -> str:
    """What B answers to a boot with `flavor` and an image that does not exist (nothing is
    made): which of the two it could not find."""
    with pytest.raises(exceptions.BadRequestException) as refused:
        conn.compute.create_server(name="probe", flavor_id=flavor,
                                   image_id=str(uuid.uuid4()), networks="auto")
    return str(refused.value)


@pytest.mark.pg
def test_changes_through_one_controller_reach_the_other_within_the_bound(pair: Pair) -> None:
    admin_a, admin_b = pair.conn("a"), pair.conn("b")
    ci = admin_a.identity.create_project(name="ci")
    ci2 = admin_a.identity.create_project(name="ci2")
    zuul = admin_a.identity.create_user(name="zuul", password="zuul-pw", default_project_id=ci.id)
    member, reader = admin_a.identity.find_role("member"), admin_a.identity.find_role("reader")
    admin_a.identity.assign_project_role_to_user(ci, zuul, member)
    admin_a.identity.assign_project_role_to_user(ci, zuul, reader)
    admin_a.identity.assign_project_role_to_user(ci2, zuul, member)
    flavor = admin_a.compute.create_flavor(name="cache.drill", ram=512, vcpus=1, disk=1,
                                           id="cache-drill")

    # B learns each thing and caches it
    zuul_b = pair.conn("b", "zuul", "zuul-pw", "ci")
    victim = pair.conn("b", "zuul", "zuul-pw", "ci")
    on_ci2 = pair.conn("b", "zuul", "zuul-pw", "ci2")
    revoked, renamed = victim.auth_token, on_ci2.auth_token
    assert "Image" in boot_answer(zuul_b, flavor.id)  # the flavor was found: cached
    assert victim.compute.get("/flavors", allow_reauth=False).status_code == 200
    with pytest.raises(exceptions.NotFoundException):  # a member may delete: none such
        zuul_b.compute.delete_keypair("none-such", ignore_missing=False)
    assert admin_b.identity.validate_token(renamed).project["name"] == "ci2"

    took: dict[str, float] = {}
    admin_a.compute.delete_flavor(flavor)
    took["deleted flavor"] = seen_within(
        "B to refuse the deleted flavor",
        lambda: "Flavor cache-drill could not be found" in boot_answer(zuul_b, flavor.id))
    with pytest.raises(exceptions.NotFoundException):
        admin_b.compute.get_flavor(flavor.id)

    admin_a.identity.revoke_token(revoked)
    took["revoked token"] = seen_within(
        "B to refuse the revoked token", lambda: victim.compute.get(
            "/flavors", allow_reauth=False, raise_exc=False).status_code == 401)

    admin_a.identity.unassign_project_role_from_user(ci, zuul, member)

    def forbidden() -> bool:
        try:
            zuul_b.compute.delete_keypair("none-such", ignore_missing=False)
        except exceptions.ForbiddenException:
            return True
        except exceptions.NotFoundException:
            return False
        raise AssertionError("deleting a keypair that does not exist succeeded")

    took["removed role"] = seen_within("B to refuse the reader a member's action", forbidden)
    assert [k.name for k in zuul_b.compute.keypairs()] == []  # a reader still reads

    admin_a.identity.update_project(ci2, name="ci2-renamed")
    took["renamed project"] = seen_within(
        "B to show the project's new name",
        lambda: admin_b.identity.validate_token(renamed).project["name"] == "ci2-renamed")
    print("seen on the other controller after (s):",
          {k: round(v, 2) for k, v in took.items()})


@pytest.mark.pg
def test_flavor_access_and_extra_specs_reach_the_other_controller(pair: Pair) -> None:
    """A private flavor's access list and its extra specs, written through A, are what B
    answers within the bound, though B cached the flavor before."""
    admin_a, admin_b = pair.conn("a"), pair.conn("b")
    ci = admin_a.identity.create_project(name="ci-private")
    user = admin_a.identity.create_user(name="ci-user", password="ci-pw",
                                        default_project_id=ci.id)
    admin_a.identity.assign_project_role_to_user(ci, user, admin_a.identity.find_role("member"))
    flavor = admin_a.compute.create_flavor(name="private.drill", ram=512, vcpus=1, disk=1,
                                           id="private-drill", is_public=False)
    ci_b = pair.conn("b", "ci-user", "ci-pw", "ci-private")
    assert admin_b.compute.fetch_flavor_extra_specs(flavor.id).extra_specs == {}  # cached
    assert "Flavor private-drill could not be found" in boot_answer(ci_b, flavor.id)

    took: dict[str, float] = {}
    admin_a.compute.flavor_add_tenant_access(flavor.id, ci.id)
    took["access added"] = seen_within("B to let the project boot the private flavor",
                                       lambda: "Image" in boot_answer(ci_b, flavor.id))
    admin_a.compute.create_flavor_extra_specs(flavor.id, {"hw:cpu_policy": "dedicated"})
    took["extra spec"] = seen_within(
        "B to answer the new extra spec", lambda: ci_b.compute.fetch_flavor_extra_specs(
            flavor.id).extra_specs == {"hw:cpu_policy": "dedicated"})
    admin_a.compute.flavor_remove_tenant_access(flavor.id, ci.id)
    took["access removed"] = seen_within(
        "B to refuse the private flavor again",
        lambda: "Flavor private-drill could not be found" in boot_answer(ci_b, flavor.id))
    print("seen on the other controller after (s):",
          {k: round(v, 2) for k, v in took.items()})
