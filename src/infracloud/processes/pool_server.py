"""Run the node pool: `infracloud pool --config pool.yaml` (its own API server and database),
or inside the demo's controller (`attach`). Several `infracloud pool` processes may share one
database (PostgreSQL): the seat (pool/seat.py) makes one of them active and the others stand
by, and swaps the face the API talks to when that changes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from infracloud import __version__
from infracloud.api import errors
from infracloud.api import metrics as metrics_api
from infracloud.api import pool as pool_api
from infracloud.api.middleware import RequestIdMiddleware
from infracloud.core.errors import ConfigError
from infracloud.core.settings import validate_file
from infracloud.ops import metrics as ops_metrics
from infracloud.pool.auth import IdentityTokens, Open, StaticToken, TokenCheck
from infracloud.pool.cloud import Cloud
from infracloud.pool.config import PoolConfig, Provider
from infracloud.pool.probe import Prober
from infracloud.pool.records import Fence, PoolStore
from infracloud.pool.seat import Seat
from infracloud.pool.service import PoolService
from infracloud.pool.standby import StandbyPool
from infracloud.pool.stats import Stats, client_from_env
from infracloud.processes.runtime import _Server, check_port_free, run_until_signal, uvicorn_config
from infracloud.store import Database
from infracloud.store.outage import database_unreachable

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")
READY_TIMEOUT = 2.0  # seconds /readyz waits for the database's answer


def openstack_cloud(provider: Provider) -> Cloud:
    from infracloud.pool.openstack import OpenStackCloud

    return OpenStackCloud(provider.name, provider.cloud, provider.region, provider.clouds_file,
                          connections=provider.max_concurrency)


def database_url(config: PoolConfig, config_file: Path | None) -> str:
    if config.database:
        return config.database
    where = config_file.resolve().parent if config_file else Path.cwd()
    return f"sqlite:///{where / 'pool.db'}"


def build_pool(config: PoolConfig, config_file: Path | None = None, *,
               db: Database | None = None,
               make_cloud: Callable[[Provider], Cloud] = openstack_cloud) -> PoolService:
    if db is None:
        db = Database(database_url(config, config_file))
        db.migrate()
    return PoolService(config, PoolStore(db, config.name), make_cloud, Prober(),
                       Stats(client_from_env()), config_file=config_file)


def pool_seat(config: PoolConfig, config_file: Path | None, db: Database,
              make_cloud: Callable[[Provider], Cloud] = openstack_cloud) -> Seat:
    """This process's seat among the pool processes on `db`. Each face is built from the
    config file as it is when the face is made (a standby that takes over reads it again)."""
    def current() -> PoolConfig:
        if config_file is None:
            return config
        fresh, errors = validate_file(config_file, PoolConfig)
        if isinstance(fresh, PoolConfig):
            return fresh
        log.error("pool config not read again (the one read at start is used): %s",
                  "; ".join(errors))
        return config

    def active(fence: Fence) -> PoolService:
        c = current()
        return PoolService(c, PoolStore(db, c.name, fence), make_cloud, Prober(),
                           Stats(client_from_env()), config_file=config_file)

    def standby() -> StandbyPool:
        c = current()
        return StandbyPool(c, PoolStore(db, c.name), make_cloud, Prober(), Stats(None),
                           config_file=config_file)

    host = socket.gethostname()
    where = f"{host}:{config.listen.port}"
    return Seat(db, config.name, f"{where}/{os.getpid()}", where, active, standby)



def token_check(config: PoolConfig) -> TokenCheck:
    auth = config.auth
    if auth is None:
        if config.listen.host not in LOOPBACK:
            raise ConfigError("auth: a pool that listens beyond loopback needs auth "
                              "(identity-url or static-token-file)")
        return Open()
    if auth.static_token_file is not None:
        try:
            return StaticToken.from_file(auth.static_token_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"auth.static-token-file: {exc}") from None
    assert auth.identity_url is not None
    return IdentityTokens(auth.identity_url, auth.cacert)


def attach(app: FastAPI, pool: PoolService, auth: TokenCheck, seat: Seat | None = None
           ) -> None:
    """`seat`: this process's among several; its face is the API's (swapped as it changes)."""
    app.state.pool = pool
    app.state.pool_auth = auth
    app.state.pool_seat = seat
    if seat is not None:
        seat.on_change = lambda face: setattr(app.state, "pool", face)
    app.include_router(pool_api.router)


def create_pool_app(pool: PoolService, auth: TokenCheck, seat: Seat | None = None) -> FastAPI:
    app = FastAPI(title="infracloud pool", version=__version__, docs_url="/docs",
                  redoc_url=None, openapi_url="/openapi.json")
    errors.install(app)
    attach(app, pool, auth, seat)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """200 when this process reaches the pool's database now (it then serves every call:
        an active process itself, a standby through the database), 503 with why not; `role`
        says which it is (no token: what a load balancer checks)."""
        face: PoolService = app.state.pool
        reason = await database_unreachable(face.store.db, READY_TIMEOUT)
        body = {"status": "ready" if reason is None else "unavailable", "role": face.role}
        if reason is not None:
            body["reason"] = reason
        return JSONResponse(body, status_code=200 if reason is None else 503)

    # open, as the controller's is by default (the pool's counts are no secret); the pool's
    # auth guards its API, and /metrics only reads
    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        return metrics_api.render(request)

    app.add_middleware(RequestIdMiddleware, access_log=False,
                       observe=ops_metrics.observe_request)
    return app


def serve_pool(config: PoolConfig, config_file: Path | None = None,
               on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the pool until SIGINT/SIGTERM."""
    check_port_free(config.listen.host, config.listen.port,
                    "is another pool running? set listen.port in the pool's config")
    auth = token_check(config)
    db = Database(database_url(config, config_file))
    db.migrate()
    seat = pool_seat(config, config_file, db)
    server = _Server(uvicorn_config(create_pool_app(seat.face, auth, seat), config.listen,
                                    config.tls))
    scheme = "https" if config.tls else "http"
    url = f"{scheme}://{config.listen.host}:{config.listen.port}"

    async def main() -> None:
        await asyncio.to_thread(seat.start)  # active at once when no other process is

        async def announce() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.02)
            if server.started:
                log.info("pool serving", extra={"url": url, "role": seat.role})
                if on_ready:
                    on_ready(url)

        ready = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            ready.cancel()

    try:
        run_until_signal(main)
    finally:
        seat.stop()
        db.dispose()
    if not server.started:
        raise ConfigError(f"the pool could not start on {config.listen.host}:"
                          f"{config.listen.port}")
