"""`GET /metrics`: Prometheus' text format. The process's metrics, the site's (read from the
database at scrape time, cached a few seconds) and the pool's when it runs in this process.
An operations view: open when `ops.public_read` is set, else a reader or admin token."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infracloud.api.deps import OpsReader
from infracloud.site.collectors import app_registry

router = APIRouter()


def registry(app: FastAPI) -> CollectorRegistry:
    """The app's registry, made on the first scrape (the pool may be attached after the app
    is made) and kept: the site collector's cache lives in it."""
    found: CollectorRegistry | None = getattr(app.state, "metrics_registry", None)
    if found is None:
        services = getattr(app.state, "services", None)
        found = app_registry(
            services.db if services else None, services.config.site if services else "",
            services.config.region if services else "", getattr(app.state, "pool", None))
        app.state.metrics_registry = found
    return found


def render(request: Request) -> Response:
    return Response(generate_latest(registry(request.app)), media_type=CONTENT_TYPE_LATEST)


# a plain def: the site's queries run in a worker thread, not on the event loop
@router.get("/metrics", dependencies=[OpsReader], include_in_schema=False)
def metrics(request: Request) -> Response:
    return render(request)
