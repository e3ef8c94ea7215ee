"""The services of one controller, built from its configuration. The API and the CLI take what
they need from here; nothing here knows about HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from infracloud.core.clock import Clock
from infracloud.core.settings import ControllerConfig
from infracloud.identity.service import IdentityService
from infracloud.store import Database


@dataclass
class Services:
    config: ControllerConfig
    db: Database
    identity: IdentityService
    clock: Clock

    @property
    def base_url(self) -> str:
        return self.config.base_url()

    def close(self) -> None:
        self.db.dispose()


def build_services(config: ControllerConfig, clock: Clock | None = None,
                   migrate: bool = True) -> Services:
    clock = clock or Clock()
    db = Database(config.database.url, pool_size=config.database.pool_size,
                  echo=config.database.echo)
    if migrate:
        db.migrate()
    identity = IdentityService(db, config.identity, clock)
    identity.start()
    return Services(config=config, db=db, identity=identity, clock=clock)
