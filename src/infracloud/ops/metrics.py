"""The process's Prometheus metrics: what the code observes as it runs (API latency, scheduler
decisions, launch times, failures, BMC calls, the pool's launches). They live in this module's
own registry (`REGISTRY`, not prometheus_client's global one), so tests that build many
services in one process never collide; `/metrics` renders it beside the collectors that read
the database and the pool at scrape time (ops/collectors.py).

Every label takes values from a small closed set (route templates, state names, reasons,
drivers): never an id, a name a user chose, or free text. docs/metrics.md lists them all."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

T = TypeVar("T")

# no `_created` series: Prometheus does not need them and they double every counter
disable_created_metrics()
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
# why a server went to ERROR
# the BMC interfaces' methods (hardware/bmc/base.py)
BMC_CALLS = frozenset({"validate", "get_power", "set_power", "reboot", "get_boot_device",
                       "set_boot_device", "insert_media", "eject_media", "inspect"})
FAILURE_REASONS = ("no_valid_host", "no_address", "driver_error", "spawn_timeout", "host_lost",
                   "vanished")

API_SECONDS = Histogram(
    "infracloud_api_request_seconds", "API requests by method, route template and status.",
    ["method", "route", "status"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
SCHEDULER_SECONDS = Histogram(
    "infracloud_scheduler_decision_seconds",
    "Time to choose a host and claim room on it for one server.", registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
LAUNCH_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800)
SERVER_LAUNCH_SECONDS = Histogram(
    "infracloud_server_launch_seconds",
    "Seconds from a server's create request to the stage (active: its agent reports it "
    "running).", ["stage"], registry=REGISTRY, buckets=LAUNCH_BUCKETS)
SERVER_FAILURES = Counter(
    "infracloud_server_failures", "Servers that went to ERROR, by reason.", ["reason"],
    registry=REGISTRY)
BMC_SECONDS = Histogram(
    "infracloud_bmc_call_seconds", "BMC calls (each attempt) by driver and call.",
    ["driver", "call"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
BMC_ERRORS = Counter(
    "infracloud_bmc_errors", "BMC calls (each attempt) that failed, by driver and call.",
    ["driver", "call"], registry=REGISTRY)
POOL_LAUNCH_SECONDS = Histogram(
    "infracloud_pool_launch_seconds",
    "Seconds from a pool node's launch to the stage (ready: ACTIVE, SSH answers, host keys "
    "read), by provider.", ["provider", "stage"], registry=REGISTRY, buckets=LAUNCH_BUCKETS)
POOL_LAUNCH_FAILURES = Counter(
    "infracloud_pool_launch_failures",
    "Pool launches that did not give a ready node, by provider and reason (quota: the cloud "
    "refused for quota or capacity, a wait; unknown: a real failure, retried).",
    ["provider", "reason"], registry=REGISTRY)
POOL_REQUEST_SECONDS = Histogram(
    "infracloud_pool_request_seconds",
    "Seconds from a node request to its end, by how it ended (fulfilled, failed, cancelled).",
    ["state"], registry=REGISTRY, buckets=(*LAUNCH_BUCKETS, 3600, 7200))

API_WRITES_UNAUTHENTICATED = Counter(
    "infracloud_api_writes_unauthenticated",
    "API writes answered without a valid token (refused): not recorded as events.",
    registry=REGISTRY)
API_EVENTS_DROPPED = Counter(
    "infracloud_api_events_dropped",
    "API events dropped because the queue to the database was full (ops.events_queue).",
    registry=REGISTRY)

for _reason in FAILURE_REASONS:  # every reason shows, at 0, before it first happens
    SERVER_FAILURES.labels(reason=_reason)


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """The API middleware's observer: `route` is the matched route's template (None when no
    route matched: "other"), so ids never become label values."""
    API_SECONDS.labels(method=method if method in METHODS else OTHER, route=route or OTHER,
                       status=str(status)).observe(seconds)


@contextmanager
def scheduler_decision() -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        SCHEDULER_SECONDS.observe(time.perf_counter() - started)


def server_active(seconds: float) -> None:
    SERVER_LAUNCH_SECONDS.labels(stage="active").observe(max(seconds, 0.0))


def server_failed(reason: str, count: int = 1) -> None:
    if reason not in FAILURE_REASONS:
        raise ValueError(f"unknown server failure reason {reason!r}")
    if count:
        SERVER_FAILURES.labels(reason=reason).inc(count)


def bmc_call(driver: str, fn: Callable[..., T], *args: Any) -> T:
    """Make one BMC call, timed, its errors counted (`call` is the interface method's name)."""
    call = getattr(fn, "__name__", OTHER)
    call = call if call in BMC_CALLS else OTHER
    started = time.perf_counter()
    try:
        return fn(*args)
    except Exception:
        BMC_ERRORS.labels(driver=driver, call=call).inc()
        raise
    finally:
        BMC_SECONDS.labels(driver=driver, call=call).observe(time.perf_counter() - started)


def pool_launch(provider: str, subkey: str, seconds: float) -> None:
    """A pool launch ended; `subkey` is nodepool's (ready, error.quota, error.unknown)."""
    if subkey == "ready":
        POOL_LAUNCH_SECONDS.labels(provider=provider, stage="ready").observe(seconds)
    else:
        POOL_LAUNCH_FAILURES.labels(provider=provider,
                                    reason=subkey.removeprefix("error.")).inc()


def pool_request(state: str, seconds: float) -> None:
    POOL_REQUEST_SECONDS.labels(state=state).observe(max(seconds, 0.0))
