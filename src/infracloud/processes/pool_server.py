"""Run the node pool: `infracloud pool --config pool.yaml` (its own API server and database),
or inside the demo's controller (`attach`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response

from infracloud import __version__
from infracloud.api import errors
from infracloud.api import metrics as metrics_api
from infracloud.api import pool as pool_api
from infracloud.api.middleware import RequestIdMiddleware
from infracloud.core.errors import ConfigError
from infracloud.ops import metrics as ops_metrics
from infracloud.pool.auth import IdentityTokens, Open, StaticToken, TokenCheck
from infracloud.pool.cloud import Cloud
from infracloud.pool.config import PoolConfig, Provider
from infracloud.pool.probe import Prober
from infracloud.pool.records import PoolStore
from infracloud.pool.service import PoolService
from infracloud.pool.stats import Stats, client_from_env
from infracloud.processes.runtime import _Server, check_port_free, run_until_signal, uvicorn_config
from infracloud.store import Database

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")


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


def attach(app: FastAPI, pool: PoolService, auth: TokenCheck) -> None:
    app.state.pool = pool
    app.state.pool_auth = auth
    app.include_router(pool_api.router)


def create_pool_app(pool: PoolService, auth: TokenCheck) -> FastAPI:
    app = FastAPI(title="infracloud pool", version=__version__, docs_url="/docs",
                  redoc_url=None, openapi_url="/openapi.json")
    errors.install(app)
    attach(app, pool, auth)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

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
    pool = build_pool(config, config_file)
    server = _Server(uvicorn_config(create_pool_app(pool, auth), config.listen, config.tls))
    scheme = "https" if config.tls else "http"
    url = f"{scheme}://{config.listen.host}:{config.listen.port}"

    async def main() -> None:
        pool.start()

        async def announce() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.02)
            if server.started:
                log.info("pool serving", extra={"url": url})
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
        pool.stop()
    if not server.started:
        raise ConfigError(f"the pool could not start on {config.listen.host}:"
                          f"{config.listen.port}")
