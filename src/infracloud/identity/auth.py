"""Authentication: issue, validate and revoke tokens.

Validation reads the user, project and roles afresh (so disabling a user or removing a role takes
effect at once) unless this controller validated the same token less than
`validation_cache_seconds` ago. Any identity change empties that cache and the role
implications: on the controller that made it at once, on the others within
`database.cache_check_seconds` (store.generations).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, bindparam, delete, or_, select
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock, as_utc
from infracloud.core.errors import BadRequest, Forbidden, Unauthorized
from infracloud.core.settings import IdentityConfig
from infracloud.identity.passwords import Hasher
from infracloud.identity.policy import Caller
from infracloud.identity.throttle import LoginThrottle
from infracloud.identity.tokens import KeyRing, TokenPayload, new_audit_id
from infracloud.store import Database
from infracloud.store.generations import IDENTITY, TOKEN_KEYS
from infracloud.store.models import (
    DEFAULT_DOMAIN,
    ApplicationCredential,
    ApplicationCredentialRole,
    Assignment,
    Project,
    RevocationEvent,
    Role,
    RoleImplication,
    User,
)

UNAUTHORIZED = "The request you have made requires authentication."
DEFAULT_DOMAIN_NAME = "Default"
_CACHE_MAX = 20_000

_user, _project = User.__table__, Project.__table__
_assignment, _role, _event = Assignment.__table__, Role.__table__, RevocationEvent.__table__
_REVOKED = (
    select(_event.c.id)
    .where(or_(_event.c.audit_id.in_(bindparam("audits", expanding=True)),
               and_(_event.c.user_id == bindparam("uid"),
                    _event.c.issued_before >= bindparam("iat")),
               and_(_event.c.project_id == bindparam("pid"),
                    _event.c.issued_before >= bindparam("iat"))))
    .limit(1).scalar_subquery())
# A row per role the user holds on the project (one row with NULL roles when none).
_VALIDATE = (
    select(_user.c.name, _user.c.domain_id, _user.c.enabled,
           _project.c.name.label("p_name"), _project.c.domain_id.label("p_domain"),
           _project.c.enabled.label("p_enabled"), _role.c.id.label("role_id"),
           _role.c.name.label("role_name"), _REVOKED.label("revoked"))
    .select_from(
        _user.outerjoin(_project, _project.c.id == bindparam("pid"))
        .outerjoin(_assignment, and_(_assignment.c.user_id == _user.c.id,
                                     _assignment.c.project_id == _project.c.id))
        .outerjoin(_role, _role.c.id == _assignment.c.role_id))
    .where(_user.c.id == bindparam("uid")))


@dataclass(frozen=True)
class Ref:
    """A reference by id, or by name within a domain (given by id or name)."""

    id: str | None = None
    name: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None


@dataclass(frozen=True)
class Named:
    id: str
    name: str
    domain_id: str | None = DEFAULT_DOMAIN


@dataclass(frozen=True)
class TokenInfo:
    token: str
    payload: TokenPayload
    user: Named
    project: Named | None
    roles: tuple[Named, ...]
    app_cred_unrestricted: bool = True
    caller: Caller = field(init=False)

    def __post_init__(self) -> None:
        caller = Caller(
            user_id=self.user.id,
            project_id=self.project.id if self.project else None,
            roles=frozenset(r.name for r in self.roles),
        )
        object.__setattr__(self, "caller", caller)


def resolve_domain(domain_id: str | None, domain_name: str | None) -> str | None:
    """The only domain is `default` (named `Default`). Returns None for any other domain."""
    if domain_id is not None:
        return DEFAULT_DOMAIN if domain_id == DEFAULT_DOMAIN else None
    if domain_name is not None:
        return DEFAULT_DOMAIN if domain_name.lower() == DEFAULT_DOMAIN_NAME.lower() else None
    return DEFAULT_DOMAIN


class Authenticator:
    def __init__(
        self, db: Database, keys: KeyRing, hasher: Hasher, config: IdentityConfig, clock: Clock
    ) -> None:
        self.db = db
        self.keys = keys
        self.hasher = hasher
        self.config = config
        self.clock = clock
        self._cache: OrderedDict[str, tuple[TokenInfo, float]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._implied: dict[str, list[Named]] | None = None
        self._epoch = 0  # moved by every emptying: what was loaded before is not kept
        self.throttle = LoginThrottle(config.login_limit)
        db.generations.watch((IDENTITY, TOKEN_KEYS), self.invalidate_cache)

    # ---- issuing -------------------------------------------------------------------------

    def password(self, user: Ref, password: str, scope: Ref | None, unscoped: bool = False
                 ) -> TokenInfo:
        who = user.name or user.id or ""
        self.throttle.attempt(who)
        with self.db.read() as s:
            row = self._find_user(s, user)
            hashed = row.password_hash if row else None
        if not self.hasher.verify(hashed, password) or row is None or not row.enabled:
            raise Unauthorized(UNAUTHORIZED)
        self.throttle.succeeded(who)
        if hashed and self.hasher.needs_rehash(hashed):
            self._rehash(row.id, password)
        now = self.clock.now()
        with self.db.read() as s:
            project = self._scope(s, row, scope, unscoped)
            return self._issue(s, row, project, ("password",), now,
                               now + dt.timedelta(seconds=self.config.token_expiration),
                               (new_audit_id(),))

    def rescope(self, token: str, scope: Ref | None, unscoped: bool = False) -> TokenInfo:
        parent = self.validate(token)
        if parent.payload.app_cred_id:
            raise Forbidden("A token created from an application credential cannot be rescoped.")
        methods = tuple(dict.fromkeys(("token", *parent.payload.methods)))
        with self.db.read() as s:
            row = s.get(User, parent.user.id)
            assert row is not None  # validate() checked it
            project = self._scope(s, row, scope, unscoped)
            return self._issue(s, row, project, methods, self.clock.now(),
                               parent.payload.expires_at,
                               (new_audit_id(), parent.payload.audit_ids[-1]))

    def application_credential(self, cred_id: str | None, name: str | None, secret: str,
                               user: Ref | None) -> TokenInfo:
        if not cred_id and not (name and user):
            raise BadRequest("An application credential needs its id, or its name and its user.")
        who = cred_id or f"{(user.name or user.id) if user else ''}/{name}"
        self.throttle.attempt(who)
        with self.db.read() as s:
            cred: ApplicationCredential | None
            if cred_id:
                cred = s.get(ApplicationCredential, cred_id)
            else:
                owner = self._find_user(s, user) if user else None
                cred = None if owner is None else s.scalar(
                    select(ApplicationCredential).where(
                        ApplicationCredential.user_id == owner.id,
                        ApplicationCredential.name == name))
            hashed = cred.secret_hash if cred else None
        if not self.hasher.verify(hashed, secret) or cred is None:
            raise Unauthorized(UNAUTHORIZED)
        self.throttle.succeeded(who)
        now = self.clock.now()
        if cred.expires_at is not None and as_utc(cred.expires_at) <= now:
            raise Unauthorized(UNAUTHORIZED)
        expires = now + dt.timedelta(seconds=self.config.token_expiration)
        if cred.expires_at is not None:
            expires = min(expires, as_utc(cred.expires_at))
        with self.db.read() as s:
            row = s.get(User, cred.user_id)
            project = s.get(Project, cred.project_id)
            if row is None or not row.enabled or project is None or not project.enabled:
                raise Unauthorized(UNAUTHORIZED)
            return self._issue(s, row, project, ("application_credential",), now, expires,
                               (new_audit_id(),), cred)

    # ---- validating ----------------------------------------------------------------------

    def cached(self, token: str) -> TokenInfo | None:
        """The token's recent validation, if this controller has one and the caches need no
        check against other controllers' changes now (no I/O)."""
        if not self.db.generations.fresh():
            return None
        return self._hit(token)

    def _hit(self, token: str) -> TokenInfo | None:
        hit = self._cache.get(token)
        if hit is None or hit[1] <= time.monotonic():
            return None
        if hit[0].payload.expires_at <= self.clock.now():
            raise Unauthorized(UNAUTHORIZED)
        return hit[0]

    def validate(self, token: str) -> TokenInfo:
        self.db.generations.check()
        epoch = self._epoch
        hit = self._hit(token)
        if hit is not None:
            return hit
        payload = self.keys.decrypt(token)
        if payload.expires_at <= self.clock.now():
            raise Unauthorized(UNAUTHORIZED)
        info = self._load(token, payload)
        self._remember(info, epoch)
        return info

    def revoke(self, info: TokenInfo) -> None:
        """Revoke a token and every token rescoped from it."""
        with self.db.write() as s:
            self.db.generations.touch(s, IDENTITY)
            s.add(RevocationEvent(audit_id=info.payload.audit_ids[0],
                                  issued_before=self.clock.now(),
                                  expires_at=info.payload.expires_at))

    def revoke_user(self, s: Session, user_id: str) -> None:
        """Revoke every token of a user issued until now (password change, disable)."""
        s.add(RevocationEvent(user_id=user_id, **self._event_window()))

    def revoke_project(self, s: Session, project_id: str) -> None:
        s.add(RevocationEvent(project_id=project_id, **self._event_window()))

    def invalidate_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self._implied = None
            self._epoch += 1

    def purge_revocations(self) -> int:
        """Events outlive every token they could match by at most one token lifetime."""
        with self.db.write() as s:
            result = s.execute(delete(RevocationEvent).where(
                RevocationEvent.expires_at < self.clock.now()))
            return int(getattr(result, "rowcount", 0) or 0)

    # ---- internals -----------------------------------------------------------------------

    def _event_window(self) -> dict[str, dt.datetime]:
        now = self.clock.now()
        return {"issued_before": now,
                "expires_at": now + dt.timedelta(seconds=self.config.token_expiration)}

    def _remember(self, info: TokenInfo, epoch: int) -> None:
        """Keep a validation made under `epoch` (not if the cache was emptied meanwhile)."""
        ttl = self.config.validation_cache_seconds
        if ttl <= 0:
            return
        with self._cache_lock:
            if epoch != self._epoch:
                return
            self._cache[info.token] = (info, time.monotonic() + ttl)
            if len(self._cache) > _CACHE_MAX:
                self._cache.popitem(last=False)

    def _rehash(self, user_id: str, password: str) -> None:
        new_hash = self.hasher.hash(password)
        with self.db.write() as s:
            row = s.get(User, user_id)
            if row is not None:
                row.password_hash = new_hash

    def _find_user(self, s: Session, ref: Ref) -> User | None:
        if ref.id:
            return s.get(User, ref.id)
        domain = resolve_domain(ref.domain_id, ref.domain_name)
        if not ref.name or domain is None:
            return None
        return s.scalar(select(User).where(User.name == ref.name, User.domain_id == domain))

    def _scope(self, s: Session, user: User, scope: Ref | None, unscoped: bool) -> Project | None:
        if unscoped:
            return None
        if scope is None:
            # keystone: with no scope asked for, use the default project if the user has a role
            if user.default_project_id and self._roles(s, user.id, user.default_project_id):
                return s.get(Project, user.default_project_id)
            return None
        project: Project | None
        if scope.id:
            project = s.get(Project, scope.id)
        else:
            domain = resolve_domain(scope.domain_id, scope.domain_name)
            project = None if domain is None or not scope.name else s.scalar(
                select(Project).where(Project.name == scope.name, Project.domain_id == domain))
        if project is None or not project.enabled:
            raise Unauthorized(UNAUTHORIZED)
        return project

    def _issue(self, s: Session, user: User, project: Project | None, methods: tuple[str, ...],
               issued: dt.datetime, expires: dt.datetime, audit_ids: tuple[str, ...],
               cred: ApplicationCredential | None = None) -> TokenInfo:
        payload = TokenPayload(user_id=user.id, methods=methods,
                               project_id=project.id if project else None, issued_at=issued,
                               expires_at=expires, audit_ids=audit_ids,
                               app_cred_id=cred.id if cred else None)
        roles = self._token_roles(s, payload)
        if project is not None and not roles:
            raise Unauthorized(UNAUTHORIZED)
        return self._info(self.keys.encrypt(payload), payload, user, project, roles, cred)

    def _load(self, token: str, payload: TokenPayload) -> TokenInfo:
        """One round trip for the user, the project, the roles held there and whether a
        revocation event matches; one more for application-credential tokens."""
        with self.db.connect() as conn:
            rows = conn.execute(_VALIDATE, {
                "uid": payload.user_id, "pid": payload.project_id,
                "audits": list(payload.audit_ids), "iat": payload.issued_at}).all()
            if not rows or not rows[0].enabled or rows[0].revoked is not None:
                raise Unauthorized(UNAUTHORIZED)
            first = rows[0]
            project = None
            if payload.project_id:
                if first.p_name is None or not first.p_enabled:
                    raise Unauthorized(UNAUTHORIZED)
                project = Named(payload.project_id, first.p_name, first.p_domain)
            roles = self._expand([Named(r.role_id, r.role_name, None) for r in rows
                                  if r.role_id is not None], conn)
            unrestricted = True
            if payload.app_cred_id:
                roles, unrestricted = self._app_cred_roles(conn, payload.app_cred_id, roles)
        if project is not None and not roles:
            raise Unauthorized(UNAUTHORIZED)
        return TokenInfo(token=token, payload=payload,
                         user=Named(payload.user_id, first.name, first.domain_id),
                         project=project, roles=tuple(roles),
                         app_cred_unrestricted=unrestricted)

    def _app_cred_roles(self, conn: Session | Connection, cred_id: str, roles: list[Named]
                        ) -> tuple[list[Named], bool]:
        """The user's roles cut down to those the credential delegates (and what they imply).
        A deleted credential delegates nothing."""
        rows = conn.execute(
            select(ApplicationCredential.unrestricted, ApplicationCredentialRole.role_id)
            .join(ApplicationCredentialRole, ApplicationCredentialRole.application_credential_id
                  == ApplicationCredential.id)
            .where(ApplicationCredential.id == cred_id)).all()
        granted = {r.id for r in self._expand([Named(row.role_id, "") for row in rows], conn)}
        return [r for r in roles if r.id in granted], bool(rows and rows[0].unrestricted)

    @staticmethod
    def _info(token: str, payload: TokenPayload, user: User, project: Project | None,
              roles: list[Named], cred: ApplicationCredential | None) -> TokenInfo:
        return TokenInfo(
            token=token, payload=payload,
            user=Named(user.id, user.name, user.domain_id),
            project=Named(project.id, project.name, project.domain_id) if project else None,
            roles=tuple(roles),
            app_cred_unrestricted=cred.unrestricted if cred else True)

    def _token_roles(self, s: Session, payload: TokenPayload) -> list[Named]:
        if not payload.project_id:
            return []
        roles = self._roles(s, payload.user_id, payload.project_id)
        if payload.app_cred_id:
            roles, _ = self._app_cred_roles(s, payload.app_cred_id, roles)
        return roles

    def _roles(self, s: Session, user_id: str, project_id: str) -> list[Named]:
        """Effective roles of a user on a project: direct assignments and what they imply."""
        rows = s.execute(
            select(Role.id, Role.name).join(Assignment, Assignment.role_id == Role.id)
            .where(Assignment.user_id == user_id, Assignment.project_id == project_id)
        ).all()
        return self._expand([Named(r.id, r.name, None) for r in rows], s)

    def _expand(self, roles: list[Named], s: Session | Connection) -> list[Named]:
        implied = self.implications(s)
        seen: dict[str, Named] = {}
        stack = list(roles)
        while stack:
            role = stack.pop()
            if role.id in seen:
                continue
            seen[role.id] = role
            stack.extend(implied.get(role.id, ()))
        return sorted(seen.values(), key=lambda r: r.name)

    def implications(self, s: Session | Connection) -> dict[str, list[Named]]:
        self.db.generations.check(s)
        implied, epoch = self._implied, self._epoch
        if implied is None:
            implied = {}
            rows = s.execute(select(RoleImplication.prior_role_id, Role.id, Role.name).join(
                Role, Role.id == RoleImplication.implied_role_id)).all()
            for prior, rid, name in rows:
                implied.setdefault(prior, []).append(Named(rid, name, None))
            with self._cache_lock:
                if epoch == self._epoch:
                    self._implied = implied
        return implied
