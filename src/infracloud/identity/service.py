"""The identity service: one object wiring keys, hashing, authentication and the directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from infracloud.core.clock import Clock
from infracloud.core.ids import new_id
from infracloud.core.secrets import SecretBox
from infracloud.core.settings import IdentityConfig
from infracloud.identity.appcreds import AppCreds
from infracloud.identity.auth import Authenticator
from infracloud.identity.directory import Directory
from infracloud.identity.passwords import Hasher
from infracloud.identity.policy import BUILTIN_ROLES, IMPLIED_ROLES
from infracloud.identity.tokens import KeyRing
from infracloud.store import Database
from infracloud.store.generations import IDENTITY
from infracloud.store.models import Project, Role, RoleImplication, User

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Account:
    user_id: str
    project_id: str


class IdentityService:
    def __init__(self, db: Database, config: IdentityConfig | None = None,
                 clock: Clock | None = None, *, box: SecretBox) -> None:
        """`box`: the site's secret key, which encrypts the token keys at rest."""
        self.db = db
        self.config = config or IdentityConfig()
        self.clock = clock or Clock()
        self.hasher = Hasher(self.config.password_hash)
        self.keys = KeyRing(db, self.clock, box, self.config.max_active_keys)
        self.auth = Authenticator(db, self.keys, self.hasher, self.config, self.clock)
        self.directory = Directory(db, self.auth, self.hasher, self.clock)
        self.appcreds = AppCreds(db, self.auth, self.hasher, self.clock)

    def start(self) -> None:
        """Call once the schema is migrated: makes sure the keys and built-in roles exist."""
        self.keys.ensure()
        self.ensure_builtin_roles()

    def maintenance(self) -> None:
        """Periodic: rotate keys when due, pick up keys other controllers made, purge events."""
        if self.keys.rotate_if_due(self.config.key_rotation_hours):
            log.info("rotated token keys", extra={"event": "identity.keys.rotated"})
        else:
            self.keys.load()
        self.auth.purge_revocations()

    def ensure_builtin_roles(self) -> None:
        with self.db.write() as s:
            existing = {r.name: r for r in s.scalars(select(Role))}
            for name in BUILTIN_ROLES:
                if name not in existing:
                    existing[name] = Role(id=new_id(), name=name)
                    s.add(existing[name])
                    self.db.generations.touch(s, IDENTITY)
            s.flush()
            for prior, implied in IMPLIED_ROLES:
                key = (existing[prior].id, existing[implied].id)
                if s.get(RoleImplication, key) is None:
                    s.add(RoleImplication(prior_role_id=key[0], implied_role_id=key[1]))
                    self.db.generations.touch(s, IDENTITY)

    def ensure_account(self, user: str, password: str, project: str, role: str,
                       *, reset_password: bool = True) -> Account:
        """Idempotent: a project, a user whose default project it is, and a role there. An
        existing user keeps its password unless `reset_password` and it no longer matches."""
        d = self.directory
        with self.db.read() as s:
            p = s.scalar(select(Project).where(Project.name == project))
            u = s.scalar(select(User).where(User.name == user))
        if p is None:
            p = d.create_project(project, description=f"{project} project")
        if u is None:
            u = d.create_user(user, password=password, default_project_id=p.id)
        elif reset_password and not self.hasher.verify(u.password_hash, password):
            d.update_user(u.id, password=password)
        d.grant(p.id, u.id, d.find_role(role).id)
        return Account(u.id, p.id)
