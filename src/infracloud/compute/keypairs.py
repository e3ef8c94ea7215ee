"""SSH keypairs of a user: imported public keys, or pairs generated here."""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select

from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from infracloud.store import Database
from infracloud.store.models import Keypair

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com")


MAX_PUBLIC_KEY = 16384  # characters: an RSA key of 16384 bits is about 2,800


def fingerprint(public_key: str) -> str:
    """The MD5 colon form nova shows, of a key that parses as the OpenSSH key it says it is."""
    if len(public_key) > MAX_PUBLIC_KEY:
        raise BadRequest(f"Keypair data is invalid: the public key is longer than "
                         f"{MAX_PUBLIC_KEY} characters.")
    parts = public_key.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise BadRequest("Keypair data is invalid: not an OpenSSH public key "
                         f"(types: {', '.join(KEY_TYPES)}).")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise BadRequest("Keypair data is invalid: the key is not base64.") from None
    if not parts[0].startswith("sk-"):  # security-key types: the library does not read them
        try:
            serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
        except (ValueError, UnsupportedAlgorithm):
            raise BadRequest("Keypair data is invalid: failed to generate fingerprint") from None
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


class KeypairService:
    def __init__(self, db: Database, clock: Clock, max_per_user: int = 100) -> None:
        self.db = db
        self.clock = clock
        self.max_per_user = max_per_user

    def create(self, caller: Caller, name: str, public_key: str | None,
               key_type: str = "ssh") -> tuple[Keypair, str | None]:
        """Import `public_key`, or generate a pair and return its private key once."""
        if not name or len(name) > 255 or not name.replace("-", "").replace("_", "").replace(
                ".", "").replace(" ", "").isalnum():
            raise BadRequest("Keypair name contains unsafe characters or is empty.")
        private = None
        if not public_key:
            key = ed25519.Ed25519PrivateKey.generate()
            private = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption()).decode()
            public_key = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                       serialization.PublicFormat.OpenSSH
                                                       ).decode() + f" {name}"
        public_key = public_key.strip()
        fp = fingerprint(public_key)
        with self.db.write() as s:
            if s.get(Keypair, (caller.user_id, name)) is not None:
                raise Conflict(f"Key pair '{name}' already exists.")
            count = s.scalar(select(func.count()).select_from(Keypair).where(
                Keypair.user_id == caller.user_id)) or 0
            if self.max_per_user >= 0 and count >= self.max_per_user:
                raise Forbidden(f"Quota exceeded for key_pairs: Requested 1, but already used "
                                f"{count} of {self.max_per_user} key_pairs")
            pair = Keypair(user_id=caller.user_id, name=name, public_key=public_key,
                           fingerprint=fp, type=key_type, created_at=self.clock.now())
            s.add(pair)
        return pair, private

    def list(self, caller: Caller) -> list[Keypair]:
        with self.db.read() as s:
            return list(s.scalars(select(Keypair).where(Keypair.user_id == caller.user_id)
                                  .order_by(Keypair.name)))

    def get(self, caller: Caller, name: str) -> Keypair:
        with self.db.read() as s:
            pair = s.get(Keypair, (caller.user_id, name))
        if pair is None:
            raise NotFound(f"Keypair {name} not found for user {caller.user_id}")
        return pair

    def delete(self, caller: Caller, name: str) -> None:
        with self.db.write() as s:
            pair = s.get(Keypair, (caller.user_id, name))
            if pair is None:
                raise NotFound(f"Keypair {name} not found for user {caller.user_id}")
            s.delete(pair)
