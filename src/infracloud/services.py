"""The services of one controller, built from its configuration. The API and the CLI take what
they need from here; nothing here knows about HTTP."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from infracloud.core.clock import Clock
from infracloud.core.settings import ControllerConfig
from infracloud.identity.service import IdentityService
from infracloud.images.data import ImageData
from infracloud.images.service import ImageService
from infracloud.images.store import FilesystemStore
from infracloud.store import Database


@dataclass
class Services:
    config: ControllerConfig
    db: Database
    identity: IdentityService
    images: ImageService
    image_data: ImageData
    clock: Clock

    @property
    def base_url(self) -> str:
        return self.config.base_url()

    def maintenance(self) -> None:
        """Periodic housekeeping of every service (runs in a worker thread)."""
        self.identity.maintenance()
        self.image_data.maintenance()

    def close(self) -> None:
        self.image_data.close()
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
    holder = config.controller_id or f"{socket.gethostname()}:{config.listen.port}"
    images = ImageService(db, config.images, clock)
    image_data = ImageData(db, images, FilesystemStore(config.images.store_path),
                           config.images, clock, holder)
    image_data.recover()
    return Services(config=config, db=db, identity=identity, images=images,
                    image_data=image_data, clock=clock)
