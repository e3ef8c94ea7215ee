"""Compute hosts' credentials. Each host has its own secret, bound to its id and stored as a
SHA-256: issued when its machine joins (trading the one-time join token), rotated by
`infracloud keys rotate`, deleted with the host (undeploy). An agent may read and report for
its own host only.

The site's agent token (`compute.agent_token_file`, for hosts started by hand) binds to the first
host that registers with it, unless `compute.agent_token_shared` says it opens every host.

Rotation hands over without a gap: the successor is stored (its hash, and the secret sealed with
the site's key); every call made with the current credential answers it in the
`X-Agent-Credential` header, and the first call made with the successor makes it the only one."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from infracloud.compute.hosts import HostService, Registration
from infracloud.core.clock import Clock
from infracloud.core.errors import Forbidden, Unauthorized
from infracloud.core.secrets import SecretBox
from infracloud.store import Database
from infracloud.store.models import Host, HostCredential

log = logging.getLogger(__name__)
ISSUED, FILE = "issued", "file"
HANDOVER_HEADER = "X-Agent-Credential"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class AgentAuth:
    """Who an agent's call is from: the host its credential opens (None: the site's agent
    token, not bound yet), or every host (`shared`)."""

    host_id: str | None
    host_name: str | None = None
    shared: bool = False
    successor: str | None = None  # a rotated credential the agent must use from now on

    def may_use(self, host_id: str) -> None:
        if self.shared:
            return
        if self.host_id is None:
            raise Forbidden("This agent token is not bound to a host yet: register first.")
        if self.host_id != host_id:
            raise Forbidden("This credential belongs to another compute host.")

    def may_register(self, name: str) -> None:
        if self.host_id is not None and self.host_name != name:
            raise Forbidden(f"This credential belongs to compute host {self.host_name}; it "
                            f"cannot register as {name}.")


class HostCredentials:
    def __init__(self, db: Database, box: SecretBox, clock: Clock, site_token: str | None,
                 shared: bool = False) -> None:
        self.db = db
        self.box = box
        self.clock = clock
        self.site_token = site_token
        self.shared = shared

    def _is_site_token(self, token: str) -> bool:
        return self.site_token is not None and hmac.compare_digest(
            token.encode(), self.site_token.encode())

    def authenticate(self, token: str | None) -> AgentAuth:
        if not token:
            raise Unauthorized("A valid X-Agent-Token is required.")
        site = self._is_site_token(token)
        if site and self.shared:
            return AgentAuth(None, shared=True)
        digest = secret_hash(token)
        with self.db.read() as s:
            found = s.execute(select(HostCredential, Host.name).join(
                Host, Host.id == HostCredential.host_id).where(or_(
                    HostCredential.secret_hash == digest,
                    HostCredential.next_hash == digest))).first()
        if found is None:
            if site:
                return AgentAuth(None)
            raise Unauthorized("A valid X-Agent-Token is required.")
        row, name = found
        if row.kind == FILE and not site:  # the file now holds another token
            raise Unauthorized("A valid X-Agent-Token is required.")
        if row.next_hash == digest:
            self._promote(row.id, digest)
        elif row.next_secret:
            return AgentAuth(row.host_id, name, successor=self.box.decrypt(row.next_secret))
        return AgentAuth(row.host_id, name)

    def _promote(self, credential_id: str, digest: str) -> None:
        with self.db.write() as s:
            s.execute(update(HostCredential).where(
                HostCredential.id == credential_id, HostCredential.next_hash == digest)
                .values(secret_hash=digest, next_hash=None, next_secret=None)
                .execution_options(synchronize_session=False))
        log.info("host credential rotated", extra={"event": "host.credential.rotated"})

    def _add(self, s: Session, host_id: str, kind: str, secret: str) -> None:
        s.add(HostCredential(id=uuid.uuid4().hex, host_id=host_id, kind=kind,
                             secret_hash=secret_hash(secret), created_at=self.clock.now()))

    def register(self, hosts: HostService, reg: Registration, auth: AgentAuth) -> Host:
        """An agent registers its host: the name its credential is bound to, or any name
        with the site's agent token, which then binds to that host (unless shared)."""
        auth.may_register(reg.name)
        if auth.host_id is not None or auth.shared:
            return hosts.register(reg)

        def bind(s: Session, host: Host) -> None:
            if s.scalar(select(HostCredential.id).where(HostCredential.host_id == host.id)):
                raise Forbidden(f"Compute host {host.name} has its own credential; the site's "
                                f"agent token cannot register as it.")
            assert self.site_token is not None
            self._add(s, host.id, FILE, self.site_token)
            try:
                s.flush()
            except IntegrityError:  # another host bound the token meanwhile
                raise Forbidden("The site's agent token is bound to another compute host.") \
                    from None
            log.warning("site agent token bound", extra={"host": host.name,
                                                         "event": "host.credential.bound"})

        return hosts.register(reg, bind=bind)

    def enrol(self, hosts: HostService, reg: Registration) -> tuple[Host, str]:
        """Register a host and issue its credential (which replaces any it had): at join,
        and for the demo's hosts. Returns the host and the secret, shown this once."""
        secret = secrets.token_urlsafe(32)

        def issue(s: Session, host: Host) -> None:
            s.execute(delete(HostCredential).where(HostCredential.host_id == host.id))
            self._add(s, host.id, ISSUED, secret)

        return hosts.register(reg, bind=issue), secret

    def rotate(self) -> int:
        """Give every issued credential a successor; returns how many."""
        now = self.clock.now()
        with self.db.write() as s:
            rows = list(s.scalars(select(HostCredential).where(HostCredential.kind == ISSUED)
                                  .with_for_update()))
            for row in rows:
                secret = secrets.token_urlsafe(32)
                row.next_hash = secret_hash(secret)
                row.next_secret = self.box.encrypt(secret)
                row.rotated_at = now
        return len(rows)

    @staticmethod
    def revoke(s: Session, host_id: str) -> None:
        s.execute(delete(HostCredential).where(HostCredential.host_id == host_id))
