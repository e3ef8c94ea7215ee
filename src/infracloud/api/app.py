"""The controller's HTTP application: every router, the catalog of what is served, error shapes
and request ids."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from infracloud import __version__
from infracloud.api import (
    agent,
    alerts,
    baremetal,
    compute,
    compute_admin,
    compute_extensions,
    compute_images,
    compute_quotas,
    compute_servers,
    compute_usage,
    dashboard,
    errors,
    flavor_access,
    hardware,
    identity_admin,
    identity_auth,
    image,
    image_import,
    lifetimes,
    metrics,
    network,
    ops,
    reports,
    server_groups,
    volume,
)
from infracloud.api.catalog import Catalog, ServiceEntry
from infracloud.api.limits import BodyLimitMiddleware, LongPolls
from infracloud.api.middleware import RequestIdMiddleware
from infracloud.core import lifecycle
from infracloud.ops import metrics as ops_metrics
from infracloud.site.services import Services
from infracloud.store.outage import database_unreachable

# What this controller serves. The catalog lists these and only these.
SERVED = [ServiceEntry("identity", "keystone", "/identity", "Identity v3"),
          ServiceEntry("compute", "nova", "/compute/v2.1", "Compute v2.1"),
          ServiceEntry("image", "glance", "/image", "Image v2"),
          ServiceEntry("network", "neutron", "/network", "Network v2.0"),
          ServiceEntry("block-storage", "cinder", "/volume/v3/{project_id}",
                       "Block Storage v3 (limits only: no volumes)"),
          ServiceEntry("baremetal", "ironic", "/baremetal", "Bare Metal v1 (nodes)")]
READY_TIMEOUT = 2.0  # seconds /readyz waits for the database's answer



def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="infracloud controller", version=__version__, docs_url="/docs",
                  redoc_url=None, openapi_url="/openapi.json")
    app.state.services = services
    app.state.catalog = Catalog(services.base_url, services.config.region, SERVED)
    app.state.long_polls = LongPolls(services.config.limits.long_polls_per_client)
    errors.install(app)
    app.include_router(identity_auth.router)
    app.include_router(identity_admin.router)
    app.include_router(image.router)
    app.include_router(image_import.router)
    app.include_router(compute.router)
    app.include_router(compute_admin.router)
    app.include_router(compute_quotas.router)
    app.include_router(compute_usage.router)
    app.include_router(compute_extensions.router)
    app.include_router(server_groups.router)
    app.include_router(flavor_access.router)
    app.include_router(compute_servers.router)
    app.include_router(lifetimes.router)
    app.include_router(compute_images.router)
    app.include_router(network.router)
    app.include_router(volume.router)
    app.include_router(agent.router)
    app.include_router(baremetal.router)
    app.include_router(hardware.router)
    app.include_router(ops.router)
    app.include_router(reports.router)
    app.include_router(alerts.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """200 when this controller reaches its database now, else 503 with why: what a load
        balancer checks before it sends a request here. 404 while it drains before stopping:
        HAProxy's `http-check disable-on-404` then sends it no new request but lets those
        in flight finish (a 503 would mark it down and cut them)."""
        if lifecycle.draining.is_set():
            return JSONResponse({"status": "stopping", "reason": "the controller is stopping"},
                                status_code=404)
        reason = await database_unreachable(services.db, READY_TIMEOUT)
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)

    @app.get("/", include_in_schema=False)
    def root() -> dict[str, Any]:
        base = services.base_url
        return {"infracloud": __version__, "site": services.config.site,
                "region": services.config.region,
                "services": [{"type": e.type, "url": base + e.path} for e in SERVED]}

    # the body limit runs inside the request id's middleware: a 413 has an id and a log line
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.config.limits.max_body_bytes)
    app.add_middleware(RequestIdMiddleware, access_log=services.config.logging.access_log,
                       on_write=services.events.api_write,
                       observe=ops_metrics.observe_request)
    return app
