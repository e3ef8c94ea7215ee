"""Secrets at rest: Fernet-encrypted with the site's secret key, kept in a file beside the
database (not in it, so a copy of the database alone gives away neither the BMCs nor the token
signing keys nor the compute hosts' pending credentials). The file is made on first use with mode
0600; with PostgreSQL every controller of the site needs the same file. A database that lives
only in memory gets a key that lives only in memory."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from infracloud.core.errors import ConfigError
from infracloud.core.settings import ControllerConfig

SQLITE_PREFIX = "sqlite:///"


def key_path(config: ControllerConfig) -> Path | None:
    """The site's secret key file; None for an in-memory database."""
    configured = config.hardware.secret_key_file
    if configured is not None:
        return configured
    url = config.database.url
    if url.startswith(SQLITE_PREFIX) and ":memory:" not in url:
        return Path(url[len(SQLITE_PREFIX):]).with_name("bmc-secret.key")
    if url.startswith("sqlite:"):
        return None
    raise ConfigError("hardware.secret_key_file must be set when the database is not a SQLite "
                      "file (it encrypts the secrets stored in the database; give every "
                      "controller the same file)")


class SecretBox:
    """Loads (or makes) its key at first use. `source`: a controller config (the key file it
    names, or the default beside the SQLite database) or the key file itself."""

    def __init__(self, source: ControllerConfig | Path) -> None:
        self.source = source
        self._key: Fernet | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        return key_path(self.source) if isinstance(self.source, ControllerConfig) \
            else self.source

    @property
    def _fernet(self) -> Fernet:
        with self._lock:
            if self._key is None:
                path = self.path
                self._key = Fernet(Fernet.generate_key() if path is None
                                   else self._load_or_create(path))
            return self._key

    @staticmethod
    def _load_or_create(path: Path) -> bytes:
        """The key in the file; a new one if there is no file. The file appears complete or
        not at all (written aside, then linked), and when two controllers race, the first
        link wins and both use its key."""
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_bytes().strip()

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(f"cannot decrypt a stored secret with {self.path}: the key "
                              f"file is not the one it was encrypted with") from None
