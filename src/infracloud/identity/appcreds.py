"""Application credentials: a user delegates (some of) their roles on one project to a secret
that CI systems such as nodepool put in clouds.yaml instead of a password."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock, as_utc
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.core.ids import new_id
from infracloud.identity.auth import Authenticator, Named, TokenInfo
from infracloud.identity.passwords import Hasher
from infracloud.store import Database
from infracloud.store.generations import IDENTITY
from infracloud.store.models import ApplicationCredential, ApplicationCredentialRole, Role


@dataclass(frozen=True)
class AppCred:
    id: str
    name: str
    user_id: str
    project_id: str
    description: str
    expires_at: dt.datetime | None
    unrestricted: bool
    roles: tuple[Named, ...]
    secret: str | None = None  # only right after creation


class AppCreds:
    def __init__(self, db: Database, auth: Authenticator, hasher: Hasher, clock: Clock) -> None:
        self.db = db
        self.auth = auth
        self.hasher = hasher
        self.clock = clock

    def create(self, caller: TokenInfo, name: str, *, secret: str | None = None,
               description: str = "", expires_at: dt.datetime | None = None,
               roles: list[dict[str, str]] | None = None, unrestricted: bool = False) -> AppCred:
        if caller.project is None:
            raise Forbidden("An application credential needs a project-scoped token.")
        if caller.payload.app_cred_id and not caller.app_cred_unrestricted:
            raise Forbidden("A restricted application credential cannot create another one.")
        if expires_at is not None and as_utc(expires_at) <= self.clock.now():
            raise BadRequest("expires_at must be in the future.")
        chosen = self._pick_roles(caller, roles)
        secret = secret or secrets.token_urlsafe(48)
        hashed = self.hasher.hash(secret)
        cred_id = new_id()
        try:
            with self.db.write() as s:
                if s.scalar(select(ApplicationCredential.id).where(
                        ApplicationCredential.user_id == caller.user.id,
                        ApplicationCredential.name == name)):
                    raise Conflict(f"Conflict occurred attempting to store "
                                   f"application_credential - Duplicate name, {name}.")
                s.add(ApplicationCredential(
                    id=cred_id, name=name, user_id=caller.user.id,
                    project_id=caller.project.id, secret_hash=hashed, description=description,
                    expires_at=expires_at, unrestricted=unrestricted,
                    created_at=self.clock.now()))
                s.flush()
                s.add_all(ApplicationCredentialRole(application_credential_id=cred_id,
                                                    role_id=r.id) for r in chosen)
        except IntegrityError:
            raise Conflict(f"Conflict occurred attempting to store application_credential - "
                           f"Duplicate name, {name}.") from None
        return AppCred(cred_id, name, caller.user.id, caller.project.id, description,
                       expires_at, unrestricted, tuple(chosen), secret)

    def list_for(self, user_id: str, name: str | None = None) -> list[AppCred]:
        q = select(ApplicationCredential).where(ApplicationCredential.user_id == user_id)
        if name is not None:
            q = q.where(ApplicationCredential.name == name)
        with self.db.read() as s:
            creds = list(s.scalars(q.order_by(ApplicationCredential.name)))
            roles = self._roles_of(s, [c.id for c in creds])
        return [self._view(c, roles.get(c.id, ())) for c in creds]

    def get(self, user_id: str, cred_id: str) -> AppCred:
        with self.db.read() as s:
            cred = s.get(ApplicationCredential, cred_id)
            if cred is None or cred.user_id != user_id:
                raise NotFound(f"Could not find Application Credential: {cred_id}.")
            roles = self._roles_of(s, [cred.id])
        return self._view(cred, roles.get(cred.id, ()))

    def delete(self, user_id: str, cred_id: str) -> None:
        with self.db.write() as s:
            cred = s.get(ApplicationCredential, cred_id)
            if cred is None or cred.user_id != user_id:
                raise NotFound(f"Could not find Application Credential: {cred_id}.")
            self.db.generations.touch(s, IDENTITY)
            s.delete(cred)

    def _pick_roles(self, caller: TokenInfo, wanted: list[dict[str, str]] | None) -> list[Named]:
        """Roles default to all of the caller's; asked-for roles must be ones the caller holds."""
        if not wanted:
            return list(caller.roles)
        by_id = {r.id: r for r in caller.roles}
        by_name = {r.name: r for r in caller.roles}
        chosen: dict[str, Named] = {}
        for ref in wanted:
            role = by_id.get(ref.get("id", "")) or by_name.get(ref.get("name", ""))
            if role is None:
                raise Forbidden(f"You cannot delegate a role you do not hold: "
                                f"{ref.get('name') or ref.get('id')}.")
            chosen[role.id] = role
        return list(chosen.values())

    @staticmethod
    def _roles_of(s: Session, cred_ids: list[str]) -> dict[str, tuple[Named, ...]]:
        out: dict[str, list[Named]] = {}
        rows = s.execute(
            select(ApplicationCredentialRole.application_credential_id, Role.id, Role.name)
            .join(Role, Role.id == ApplicationCredentialRole.role_id)
            .where(ApplicationCredentialRole.application_credential_id.in_(cred_ids)))
        for cid, rid, rname in rows:
            out.setdefault(cid, []).append(Named(rid, rname, None))
        return {k: tuple(sorted(v, key=lambda r: r.name)) for k, v in out.items()}

    @staticmethod
    def _view(c: ApplicationCredential, roles: tuple[Named, ...]) -> AppCred:
        return AppCred(c.id, c.name, c.user_id, c.project_id, c.description,
                       as_utc(c.expires_at) if c.expires_at else None, c.unrestricted, roles)
