"""Projects, users, roles and role assignments: the plain Python API the HTTP layer and the CLI
both call. Changes that must end sessions (disable, password change) add revocation events, and
every change empties the token validations every controller caches (store.generations)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from infracloud.core.ids import new_id
from infracloud.identity.auth import Authenticator, resolve_domain
from infracloud.identity.passwords import Hasher
from infracloud.identity.policy import BUILTIN_ROLES
from infracloud.store import Database
from infracloud.store.generations import IDENTITY
from infracloud.store.models import DEFAULT_DOMAIN, Assignment, Project, Role, User

_UNSET: Any = object()
_Named = TypeVar("_Named", Project, User, Role)


@dataclass(frozen=True)
class Grant:
    user_id: str
    project_id: str
    role_id: str
    implied_by: str | None = None


class Directory:
    def __init__(self, db: Database, auth: Authenticator, hasher: Hasher, clock: Clock) -> None:
        self.db = db
        self.auth = auth
        self.hasher = hasher
        self.clock = clock

    @contextmanager
    def _change(self, what: str) -> Iterator[Session]:
        """A write transaction; a unique-key clash becomes 409, and once it commits validated
        tokens are looked at afresh (here at once, on other controllers within
        `database.cache_check_seconds`)."""
        try:
            with self.db.write() as s:
                self.db.generations.touch(s, IDENTITY)
                yield s
        except IntegrityError:
            raise Conflict(f"Conflict occurred attempting to store {what}.") from None

    # ---- projects ------------------------------------------------------------------------

    def create_project(self, name: str, *, description: str = "", enabled: bool = True,
                       domain_id: str | None = None, tags: list[str] | None = None) -> Project:
        domain = self._domain(domain_id)
        with self._change("project") as s:
            if s.scalar(select(Project.id).where(Project.name == name,
                                                 Project.domain_id == domain)):
                raise Conflict(f"Conflict occurred attempting to store project - "
                               f"it is not permitted to have two projects with the same name "
                               f"in the same domain : {name}.")
            project = Project(id=new_id(), name=name, domain_id=domain, description=description,
                              enabled=enabled, tags=list(tags or []), created_at=self.clock.now())
            s.add(project)
        return project

    def get_project(self, project_id: str) -> Project:
        return self._get(Project, project_id, "project")

    def find_project(self, name_or_id: str) -> Project:
        return self._find(Project, name_or_id, "project")

    def list_projects(self, *, name: str | None = None, enabled: bool | None = None,
                      domain_id: str | None = None, ids: list[str] | None = None
                      ) -> list[Project]:
        q = self._filtered(select(Project), Project, name=name, enabled=enabled,
                           domain_id=domain_id)
        if ids is not None:
            q = q.where(Project.id.in_(ids))
        with self.db.read() as s:
            return list(s.scalars(q))

    def update_project(self, project_id: str, **changes: Any) -> Project:
        with self._change("project") as s:
            project = s.get(Project, project_id)
            if project is None:
                raise NotFound(f"Could not find project: {project_id}.")
            for key in ("name", "description", "enabled", "tags"):
                if changes.get(key, _UNSET) is not _UNSET and changes[key] is not None:
                    setattr(project, key, changes[key])
            if changes.get("enabled") is False:
                self.auth.revoke_project(s, project_id)
        return project

    def delete_project(self, project_id: str) -> None:
        with self._change("project") as s:
            project = s.get(Project, project_id)
            if project is None:
                raise NotFound(f"Could not find project: {project_id}.")
            s.delete(project)
            self.auth.revoke_project(s, project_id)

    def projects_of_user(self, user_id: str) -> list[Project]:
        with self.db.read() as s:
            return list(s.scalars(
                select(Project).where(Project.id.in_(
                    select(Assignment.project_id).where(Assignment.user_id == user_id)))
                .order_by(Project.name)))

    # ---- users ---------------------------------------------------------------------------

    def create_user(self, name: str, *, password: str | None = None, enabled: bool = True,
                    email: str | None = None, description: str = "",
                    default_project_id: str | None = None, domain_id: str | None = None) -> User:
        domain = self._domain(domain_id)
        hashed = self.hasher.hash(password) if password else None
        with self._change("user") as s:
            if s.scalar(select(User.id).where(User.name == name, User.domain_id == domain)):
                raise Conflict(f"Conflict occurred attempting to store user - Duplicate entry "
                               f"found with name {name} at domain ID {domain}.")
            if default_project_id and s.get(Project, default_project_id) is None:
                raise BadRequest(f"Could not find project: {default_project_id}.")
            user = User(id=new_id(), name=name, domain_id=domain, password_hash=hashed,
                        enabled=enabled, email=email, description=description,
                        default_project_id=default_project_id,
                        password_changed_at=self.clock.now() if hashed else None,
                        created_at=self.clock.now())
            s.add(user)
        return user

    def get_user(self, user_id: str) -> User:
        return self._get(User, user_id, "user")

    def find_user(self, name_or_id: str) -> User:
        return self._find(User, name_or_id, "user")

    def list_users(self, *, name: str | None = None, enabled: bool | None = None,
                   domain_id: str | None = None) -> list[User]:
        with self.db.read() as s:
            return list(s.scalars(self._filtered(select(User), User, name=name,
                                                 enabled=enabled, domain_id=domain_id)))

    def update_user(self, user_id: str, **changes: Any) -> User:
        password = changes.pop("password", None)
        hashed = self.hasher.hash(password) if password else None
        with self._change("user") as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFound(f"Could not find user: {user_id}.")
            for key in ("name", "enabled", "email", "description", "default_project_id"):
                if changes.get(key, _UNSET) is not _UNSET and changes[key] is not None:
                    setattr(user, key, changes[key])
            if hashed:
                user.password_hash = hashed
                user.password_changed_at = self.clock.now()
            if hashed or changes.get("enabled") is False:
                self.auth.revoke_user(s, user_id)
        return user

    def change_password(self, user_id: str, original: str, new: str) -> None:
        user = self.get_user(user_id)
        if not self.hasher.verify(user.password_hash, original):
            raise Unauthorized("The request you have made requires authentication.")
        self.update_user(user_id, password=new)

    def delete_user(self, user_id: str) -> None:
        with self._change("user") as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFound(f"Could not find user: {user_id}.")
            s.delete(user)
            self.auth.revoke_user(s, user_id)

    # ---- roles ---------------------------------------------------------------------------

    def create_role(self, name: str, description: str = "") -> Role:
        with self._change("role") as s:
            if s.scalar(select(Role.id).where(Role.name == name)):
                raise Conflict(f"Conflict occurred attempting to store role - Duplicate entry "
                               f"found with name {name}.")
            role = Role(id=new_id(), name=name, description=description)
            s.add(role)
        return role

    def get_role(self, role_id: str) -> Role:
        return self._get(Role, role_id, "role")

    def find_role(self, name_or_id: str) -> Role:
        return self._find(Role, name_or_id, "role")

    def list_roles(self, *, name: str | None = None) -> list[Role]:
        with self.db.read() as s:
            return list(s.scalars(self._filtered(select(Role), Role, name=name)))

    def delete_role(self, role_id: str) -> None:
        with self._change("role") as s:
            role = s.get(Role, role_id)
            if role is None:
                raise NotFound(f"Could not find role: {role_id}.")
            if role.name in BUILTIN_ROLES:
                raise Forbidden(f"The role {role.name} is built in and cannot be deleted.")
            s.delete(role)

    # ---- grants --------------------------------------------------------------------------

    def grant(self, project_id: str, user_id: str, role_id: str) -> None:
        with self._change("role assignment") as s:
            self._check_grant_refs(s, project_id, user_id, role_id)
            if s.get(Assignment, (user_id, project_id, role_id)) is None:
                s.add(Assignment(user_id=user_id, project_id=project_id, role_id=role_id))

    def has_grant(self, project_id: str, user_id: str, role_id: str) -> bool:
        with self.db.read() as s:
            self._check_grant_refs(s, project_id, user_id, role_id)
            return s.get(Assignment, (user_id, project_id, role_id)) is not None

    def revoke_grant(self, project_id: str, user_id: str, role_id: str) -> None:
        with self._change("role assignment") as s:
            found = s.get(Assignment, (user_id, project_id, role_id))
            if found is None:
                raise NotFound(f"Could not find role assignment with role: {role_id}, "
                               f"user or group: {user_id}, project, domain, or system: "
                               f"{project_id}.")
            s.delete(found)

    def list_grants(self, *, user_id: str | None = None, project_id: str | None = None,
                    role_id: str | None = None, effective: bool = False) -> list[Grant]:
        q = select(Assignment)
        if user_id:
            q = q.where(Assignment.user_id == user_id)
        if project_id:
            q = q.where(Assignment.project_id == project_id)
        with self.db.read() as s:
            rows = list(s.scalars(q))
            implied = self.auth.implications(s) if effective else {}
        grants: dict[tuple[str, str, str], Grant] = {}
        for a in rows:
            grants[(a.user_id, a.project_id, a.role_id)] = Grant(a.user_id, a.project_id,
                                                                 a.role_id)
            stack = list(implied.get(a.role_id, ()))
            while stack:
                r = stack.pop()
                key = (a.user_id, a.project_id, r.id)
                if key not in grants:
                    grants[key] = Grant(a.user_id, a.project_id, r.id, implied_by=a.role_id)
                    stack.extend(implied.get(r.id, ()))
        result = [g for g in grants.values() if role_id is None or g.role_id == role_id]
        return sorted(result, key=lambda g: (g.project_id, g.user_id, g.role_id))

    def names(self, *, users: set[str], projects: set[str], roles: set[str]
              ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """id -> name for many ids at once (one query per kind)."""
        with self.db.read() as s:
            u = {i: n for i, n in s.execute(select(User.id, User.name).where(User.id.in_(users)))}
            p = {i: n for i, n in s.execute(select(Project.id, Project.name)
                                            .where(Project.id.in_(projects)))}
            r = {i: n for i, n in s.execute(select(Role.id, Role.name).where(Role.id.in_(roles)))}
        return u, p, r

    # ---- helpers -------------------------------------------------------------------------

    def _get(self, model: type[_Named], ident: str, label: str) -> _Named:
        with self.db.read() as s:
            found = s.get(model, ident)
        if found is None:
            raise NotFound(f"Could not find {label}: {ident}.")
        return found

    def _find(self, model: type[_Named], name_or_id: str, label: str) -> _Named:
        """By id, else by name (in the default domain for domain-owned resources)."""
        q = select(model).where(model.name == name_or_id)
        if hasattr(model, "domain_id"):
            q = q.where(model.domain_id == DEFAULT_DOMAIN)
        with self.db.read() as s:
            found = s.get(model, name_or_id) or s.scalar(q)
        if found is None:
            raise NotFound(f"Could not find {label}: {name_or_id}.")
        return found

    @staticmethod
    def _filtered(q: Select[Any], model: type[Any], **filters: Any) -> Select[Any]:
        """Equality filters; None means no filter. Ordered by name."""
        for key, value in filters.items():
            if value is not None:
                q = q.where(getattr(model, key) == value)
        return q.order_by(model.name)

    @staticmethod
    def _domain(domain_id: str | None) -> str:
        domain = resolve_domain(domain_id, None)
        if domain is None:
            raise BadRequest(f"Could not find domain: {domain_id}. "
                             f"infracloud has one domain, 'default'.")
        return domain

    @staticmethod
    def _check_grant_refs(s: Session, project_id: str, user_id: str, role_id: str) -> None:
        if s.get(Project, project_id) is None:
            raise NotFound(f"Could not find project: {project_id}.")
        if s.get(User, user_id) is None:
            raise NotFound(f"Could not find user: {user_id}.")
        if s.get(Role, role_id) is None:
            raise NotFound(f"Could not find role: {role_id}.")
