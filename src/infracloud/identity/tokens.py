"""Fernet tokens.

A token is a Fernet-encrypted compact JSON payload: who, which project, which methods, when it
expires and its audit ids. Nothing is stored per token; revocation events are. The keys live in
the database so every controller of a site shares them, encrypted with the site's secret key file
(a copy of the database alone cannot forge a token); the newest key encrypts, every kept key
decrypts, so rotation never invalidates a live token. A rotation through one controller reaches
the others within `database.cache_check_seconds` (store.generations).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, func, select

from infracloud.core.clock import Clock, as_utc
from infracloud.core.errors import Unauthorized
from infracloud.core.secrets import SecretBox
from infracloud.store import Database
from infracloud.store.generations import TOKEN_KEYS
from infracloud.store.models import FernetKey

log = logging.getLogger(__name__)
METHODS = ("password", "token", "application_credential")
CLEAR_KEY_LENGTH = 44  # a Fernet key (32 bytes, url-safe base64); sealed ones are longer


@dataclass(frozen=True)
class TokenPayload:
    user_id: str
    methods: tuple[str, ...]
    project_id: str | None
    issued_at: dt.datetime
    expires_at: dt.datetime
    audit_ids: tuple[str, ...]
    app_cred_id: str | None = None

    def to_json(self) -> bytes:
        body = {
            "u": self.user_id,
            "m": [METHODS.index(m) for m in self.methods],
            "p": self.project_id,
            "i": round(self.issued_at.timestamp(), 6),
            "e": int(self.expires_at.timestamp()),
            "a": list(self.audit_ids),
        }
        if self.app_cred_id:
            body["c"] = self.app_cred_id
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TokenPayload:
        b = json.loads(raw)
        return cls(
            user_id=b["u"],
            methods=tuple(METHODS[i] for i in b["m"]),
            project_id=b.get("p"),
            issued_at=dt.datetime.fromtimestamp(b["i"], dt.UTC),
            expires_at=dt.datetime.fromtimestamp(b["e"], dt.UTC),
            audit_ids=tuple(b["a"]),
            app_cred_id=b.get("c"),
        )


def new_audit_id() -> str:
    """22 url-safe characters, like keystone's."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


class KeyRing:
    """The Fernet keys of a site, loaded from the database and reloaded when they change (on any
    controller) or when a token names a key this controller has not seen yet."""

    RELOAD_INTERVAL = 1.0

    def __init__(self, db: Database, clock: Clock, box: SecretBox,
                 max_active_keys: int = 3) -> None:
        self.db = db
        self.clock = clock
        self.box = box
        self.max_active_keys = max_active_keys
        self._lock = threading.Lock()
        self._fernet: MultiFernet | None = None
        self._loaded_at = 0.0
        self._stale = False
        db.generations.watch((TOKEN_KEYS,), self._changed)

    def _changed(self) -> None:
        self._stale = True

    def _current(self) -> MultiFernet:
        """The keys, reloaded first when another controller (or this one) changed them."""
        self.db.generations.check()
        if self._stale:
            self.load()
        assert self._fernet is not None, "KeyRing.load() first"
        return self._fernet

    def _new_key(self) -> FernetKey:
        return FernetKey(key=self.box.encrypt(Fernet.generate_key().decode()),
                         created_at=self.clock.now())

    def ensure(self) -> None:
        """Create the first key if the site has none, seal the keys an older version stored
        in clear, then load."""
        with self.db.write() as s:
            rows = list(s.scalars(select(FernetKey).with_for_update()))
            if not rows:
                s.add(self._new_key())
            clear = [row for row in rows if len(row.key) == CLEAR_KEY_LENGTH]
            for row in clear:
                row.key = self.box.encrypt(row.key)
            if clear or not rows:
                self.db.generations.touch(s, TOKEN_KEYS)
        if clear:
            log.warning("token keys stored in clear are now encrypted with the site's secret "
                        "key file", extra={"event": "identity.keys.sealed", "count": len(clear)})
        self.load()

    def load(self) -> None:
        self._stale = False  # a change while this reads marks it stale again
        with self.db.read() as s:
            keys = s.scalars(select(FernetKey.key).order_by(FernetKey.id.desc())).all()
        if not keys:
            raise RuntimeError("no Fernet keys: KeyRing.ensure() was not called")
        fernets = [Fernet(self.box.decrypt(k).encode()) for k in keys]
        with self._lock:
            self._fernet = MultiFernet(fernets)
            self._loaded_at = time.monotonic()

    def rotate(self) -> int:
        """Add a new primary key and prune the oldest beyond max_active_keys. Returns the count."""
        with self.db.write() as s:
            self.db.generations.touch(s, TOKEN_KEYS)
            s.add(self._new_key())
            s.flush()
            keep = s.scalars(
                select(FernetKey.id).order_by(FernetKey.id.desc()).limit(self.max_active_keys)
            ).all()
            s.execute(delete(FernetKey).where(FernetKey.id.not_in(keep)))
        self.load()
        return len(keep)

    def rotate_if_due(self, every_hours: float) -> bool:
        if every_hours <= 0:
            return False
        with self.db.read() as s:
            newest = s.scalar(select(func.max(FernetKey.created_at)))
        if newest is not None and self.clock.now() - as_utc(newest) < dt.timedelta(
            hours=every_hours
        ):
            return False
        self.rotate()
        return True

    def encrypt(self, payload: TokenPayload) -> str:
        return self._current().encrypt(payload.to_json()).decode().rstrip("=")

    def decrypt(self, token: str) -> TokenPayload:
        fernet = self._current()
        raw = (token + "=" * (-len(token) % 4)).encode()
        try:
            data = fernet.decrypt(raw)
        except (InvalidToken, ValueError, TypeError):
            if time.monotonic() - self._loaded_at < self.RELOAD_INTERVAL:
                raise Unauthorized("The request you have made requires authentication.") from None
            self.load()
            try:
                data = self._current().decrypt(raw)
            except (InvalidToken, ValueError, TypeError):
                raise Unauthorized(
                    "The request you have made requires authentication."
                ) from None
        try:
            return TokenPayload.from_json(data)
        except (ValueError, KeyError, IndexError, TypeError):
            raise Unauthorized("The request you have made requires authentication.") from None
