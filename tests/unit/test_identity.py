"""The identity service on SQLite and PostgreSQL: authentication, scoping, revocation,
application credentials, grants. Time is a FakeClock: nothing sleeps."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import select

from infracloud.core.clock import FakeClock
from infracloud.core.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
)
from infracloud.core.secrets import SecretBox
from infracloud.identity.auth import Ref
from infracloud.identity.service import IdentityService
from infracloud.identity.tokens import KeyRing
from infracloud.store.models import FernetKey


@pytest.fixture
def zuul(identity: IdentityService):  # type: ignore[no-untyped-def]
    return identity.ensure_account("zuul", "zuul-pw", "zuul", "member")


def login(identity: IdentityService, user: str = "zuul", password: str = "zuul-pw",
          project: str | None = "zuul"):  # type: ignore[no-untyped-def]
    scope = Ref(name=project, domain_name="Default") if project else None
    return identity.auth.password(Ref(name=user, domain_name="Default"), password, scope)


def test_password_login_gives_a_scoped_token_with_implied_roles(identity, zuul) -> None:
    info = login(identity)
    assert info.user.name == "zuul" and info.project and info.project.name == "zuul"
    assert sorted(r.name for r in info.roles) == ["member", "reader"]
    again = identity.auth.validate(info.token)
    assert again.user.id == zuul.user_id and again.project.id == zuul.project_id


@pytest.mark.parametrize("user,password", [("zuul", "wrong"), ("nobody", "zuul-pw"), ("", "x")])
def test_bad_credentials_are_401(identity, zuul, user, password) -> None:
    with pytest.raises(Unauthorized):
        login(identity, user, password)


def test_user_by_id_and_project_by_id(identity, zuul) -> None:
    info = identity.auth.password(Ref(id=zuul.user_id), "zuul-pw", Ref(id=zuul.project_id))
    assert info.project.id == zuul.project_id


def test_unknown_domain_is_401(identity, zuul) -> None:
    with pytest.raises(Unauthorized):
        identity.auth.password(Ref(name="zuul", domain_name="Other"), "zuul-pw", None)


def test_no_scope_uses_the_default_project(identity, zuul) -> None:
    info = login(identity, project=None)
    assert info.project is not None and info.project.id == zuul.project_id


def test_explicit_unscoped_token_has_no_project_or_roles(identity, zuul) -> None:
    info = identity.auth.password(Ref(name="zuul"), "zuul-pw", None, unscoped=True)
    assert info.project is None and info.roles == ()


def test_scope_to_a_project_without_a_role_is_401(identity, zuul) -> None:
    identity.directory.create_project("other")
    with pytest.raises(Unauthorized):
        login(identity, project="other")


def test_disabled_user_cannot_log_in_and_loses_tokens(identity, zuul) -> None:
    info = login(identity)
    identity.directory.update_user(zuul.user_id, enabled=False)
    with pytest.raises(Unauthorized):
        identity.auth.validate(info.token)
    with pytest.raises(Unauthorized):
        login(identity)


def test_disabled_project_invalidates_its_tokens(identity, zuul) -> None:
    info = login(identity)
    identity.directory.update_project(zuul.project_id, enabled=False)
    with pytest.raises(Unauthorized):
        identity.auth.validate(info.token)


def test_token_expires(identity, zuul, clock: FakeClock) -> None:
    info = login(identity)
    clock.advance(identity.config.token_expiration - 1)
    identity.auth.validate(info.token)
    clock.advance(2)
    with pytest.raises(Unauthorized):
        identity.auth.validate(info.token)


def test_revoked_token_and_tokens_rescoped_from_it_are_rejected(identity, zuul) -> None:
    parent = login(identity)
    child = identity.auth.rescope(parent.token, Ref(name="zuul"))
    other = login(identity)
    identity.auth.revoke(parent)
    for token in (parent.token, child.token):
        with pytest.raises(Unauthorized):
            identity.auth.validate(token)
    assert identity.auth.validate(other.token).user.id == zuul.user_id


def test_rescoped_token_keeps_the_expiry_and_chains_audit_ids(identity, zuul, clock) -> None:
    parent = login(identity)
    clock.advance(100)
    child = identity.auth.rescope(parent.token, None)
    assert child.payload.expires_at == parent.payload.expires_at
    assert child.payload.audit_ids[1] == parent.payload.audit_ids[0]
    assert child.payload.methods == ("token", "password")


def test_password_change_revokes_old_tokens_only(identity, zuul, clock) -> None:
    old = login(identity)
    clock.advance(1)
    identity.directory.update_user(zuul.user_id, password="new-pw")
    clock.advance(1)
    with pytest.raises(Unauthorized):
        identity.auth.validate(old.token)
    with pytest.raises(Unauthorized):
        login(identity)
    fresh = login(identity, password="new-pw")
    assert identity.auth.validate(fresh.token).user.id == zuul.user_id


def test_removing_the_last_role_invalidates_the_token(identity, zuul) -> None:
    info = login(identity)
    member = identity.directory.find_role("member")
    identity.directory.revoke_grant(zuul.project_id, zuul.user_id, member.id)
    with pytest.raises(Unauthorized):
        identity.auth.validate(info.token)


def test_token_made_with_a_pruned_key_is_rejected(identity, zuul, db, clock) -> None:
    info = login(identity)
    identity.keys.rotate()
    identity.keys.rotate()
    identity.keys.rotate()  # the key that made `info` is pruned (max_active_keys = 3)
    with pytest.raises(Unauthorized):
        identity.auth.validate(info.token)


def test_garbage_tokens_are_401(identity) -> None:
    for junk in ("", "abc", "gAAAAA" + "x" * 100, "ü" * 10):
        with pytest.raises(Unauthorized):
            identity.auth.validate(junk)


def test_application_credential_login(identity, zuul, clock) -> None:
    owner = login(identity)
    cred = identity.appcreds.create(owner, "nodepool", roles=[{"name": "member"}])
    assert cred.secret and [r.name for r in cred.roles] == ["member"]
    by_id = identity.auth.application_credential(cred.id, None, cred.secret, None)
    by_name = identity.auth.application_credential(None, "nodepool", cred.secret,
                                                   Ref(name="zuul", domain_id="default"))
    for info in (by_id, by_name):
        assert info.project.id == zuul.project_id
        assert {r.name for r in info.roles} == {"member", "reader"}
        assert info.payload.methods == ("application_credential",)
    with pytest.raises(Unauthorized):
        identity.auth.application_credential(cred.id, None, "wrong", None)
    with pytest.raises(Forbidden):
        identity.auth.rescope(by_id.token, None)


def test_deleting_an_application_credential_kills_its_tokens(identity, zuul) -> None:
    owner = login(identity)
    cred = identity.appcreds.create(owner, "nodepool")
    info = identity.auth.application_credential(cred.id, None, cred.secret, None)
    identity.appcreds.delete(zuul.user_id, cred.id)
    with pytest.raises(Unauthorized):
        identity.auth.validate(info.token)
    with pytest.raises(NotFound):
        identity.appcreds.get(zuul.user_id, cred.id)


def test_application_credential_expiry_caps_the_token(identity, zuul, clock) -> None:
    owner = login(identity)
    expires = clock.now() + dt.timedelta(seconds=600)
    cred = identity.appcreds.create(owner, "short", expires_at=expires)
    info = identity.auth.application_credential(cred.id, None, cred.secret, None)
    assert info.payload.expires_at == expires
    clock.advance(601)
    with pytest.raises(Unauthorized):
        identity.auth.application_credential(cred.id, None, cred.secret, None)


def test_application_credential_cannot_delegate_roles_the_user_lacks(identity, zuul) -> None:
    owner = login(identity)
    with pytest.raises(Forbidden):
        identity.appcreds.create(owner, "greedy", roles=[{"name": "admin"}])
    identity.appcreds.create(owner, "dup")
    with pytest.raises(Conflict):
        identity.appcreds.create(owner, "dup")


def test_restricted_application_credential_cannot_make_another(identity, zuul) -> None:
    owner = login(identity)
    cred = identity.appcreds.create(owner, "restricted")
    info = identity.auth.application_credential(cred.id, None, cred.secret, None)
    with pytest.raises(Forbidden):
        identity.appcreds.create(info, "child")


def test_duplicate_names_conflict(identity, zuul) -> None:
    with pytest.raises(Conflict):
        identity.directory.create_project("zuul")
    with pytest.raises(Conflict):
        identity.directory.create_user("zuul")
    with pytest.raises(Conflict):
        identity.directory.create_role("member")


def test_effective_grants_include_implied_roles(identity, zuul) -> None:
    d = identity.directory
    direct = d.list_grants(user_id=zuul.user_id)
    effective = d.list_grants(user_id=zuul.user_id, effective=True)
    names = {r.id: r.name for r in d.list_roles()}
    assert [names[g.role_id] for g in direct] == ["member"]
    assert sorted(names[g.role_id] for g in effective) == ["member", "reader"]
    assert {g.implied_by for g in effective} == {None, d.find_role("member").id}


def test_builtin_roles_cannot_be_deleted(identity) -> None:
    with pytest.raises(Forbidden):
        identity.directory.delete_role(identity.directory.find_role("admin").id)
    custom = identity.directory.create_role("heat_stack_owner")
    identity.directory.delete_role(custom.id)
    with pytest.raises(NotFound):
        identity.directory.get_role(custom.id)


def test_grant_to_missing_things_is_404(identity, zuul) -> None:
    member = identity.directory.find_role("member").id
    with pytest.raises(NotFound):
        identity.directory.grant("nope", zuul.user_id, member)
    with pytest.raises(NotFound):
        identity.directory.grant(zuul.project_id, "nope", member)


def test_other_domains_are_refused(identity) -> None:
    with pytest.raises(BadRequest):
        identity.directory.create_project("x", domain_id="elsewhere")


def test_ensure_account_is_idempotent_and_keeps_data(identity) -> None:
    first = identity.ensure_account("ci", "pw1", "ci", "member")
    second = identity.ensure_account("ci", "pw1", "ci", "member")
    assert first == second
    assert len(identity.directory.list_grants(user_id=first.user_id)) == 1
    identity.ensure_account("ci", "pw2", "ci", "member")
    login(identity, "ci", "pw2", "ci")


def test_deleting_a_user_kills_tokens_and_grants(identity, zuul) -> None:
    info = login(identity)
    identity.directory.delete_user(zuul.user_id)
    with pytest.raises(Unauthorized):
        identity.auth.validate(info.token)
    assert identity.directory.list_grants(project_id=zuul.project_id) == []


def test_another_controller_sees_rotated_keys(identity, zuul, db, identity_config, clock) -> None:
    """Two controllers over one database: a token made after controller A rotated its keys is
    accepted by controller B, which has not reloaded yet."""
    other = IdentityService(db, identity_config, clock, box=identity.keys.box)
    other.start()
    identity.keys.rotate()
    info = login(identity)
    other.keys._loaded_at = 0  # B last loaded long ago
    assert other.auth.validate(info.token).user.id == zuul.user_id


def test_a_copy_of_the_database_cannot_forge_a_token(identity, zuul, db, tmp_path) -> None:
    """The token keys are stored encrypted with the site's secret key file: the rows alone
    decrypt no token (so cannot make one), and another key file opens none of them."""
    info = login(identity)
    identity.keys.rotate()
    with db.read() as s:
        stored = list(s.scalars(select(FernetKey.key)))
    assert len(stored) == 2
    for value in stored:
        with pytest.raises(ValueError):
            Fernet(value.encode())
    assert identity.auth.validate(info.token).user.id == zuul.user_id
    with pytest.raises(ConfigError, match="key file is not the one"):
        KeyRing(db, identity.clock, SecretBox(tmp_path / "another.key")).load()


def test_keys_stored_in_clear_are_sealed_at_start(db, identity_config, clock,
                                                  secret_box) -> None:
    """A site upgraded from a version that kept its token keys in clear: the next start
    encrypts them, and the tokens they made stay valid."""
    clear = Fernet.generate_key().decode()
    with db.write() as s:
        s.add(FernetKey(key=clear, created_at=clock.now()))
    old = MultiFernet([Fernet(clear.encode())])
    identity = IdentityService(db, identity_config, clock, box=secret_box)
    identity.start()
    with db.read() as s:
        (stored,) = s.scalars(select(FernetKey.key))
    assert stored != clear and secret_box.decrypt(stored) == clear
    payload = identity.keys.decrypt(old.encrypt(b'{"u":"x","m":[0],"p":null,"i":1,"e":2,'
                                                b'"a":["a"]}').decode().rstrip("="))
    assert payload.user_id == "x"


def test_maintenance_rotates_when_due_and_purges_old_events(identity, zuul, clock) -> None:
    info = login(identity)
    identity.auth.revoke(info)
    clock.advance(identity.config.key_rotation_hours * 3600 + 1)
    identity.maintenance()
    from sqlalchemy import func, select

    from infracloud.store.models import FernetKey, RevocationEvent

    with identity.db.read() as s:
        assert s.scalar(select(func.count()).select_from(FernetKey)) == 2
        assert s.scalar(select(func.count()).select_from(RevocationEvent)) == 0
