"""Run a controller: build the services, serve the API with uvicorn, and run the background
duties this controller holds the leases of (site/duties.py) until stopped."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from fastapi import FastAPI

from infracloud.api.app import create_app
from infracloud.core import lifecycle
from infracloud.core.errors import ConfigError
from infracloud.core.settings import ControllerConfig, ListenConfig, TLSConfig
from infracloud.site.services import Services, build_services

log = logging.getLogger(__name__)


def check_port_free(host: str, port: int,
                    hint: str = "is another controller running? choose another with --port"
                    ) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"{host}:{port} is already in use ({hint})") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def bootstrap_admin(services: Services) -> None:
    b = services.config.bootstrap
    if b.admin_password_file is None:
        return
    try:
        password = b.admin_password_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"bootstrap.admin_password_file: cannot read "
                          f"{b.admin_password_file}: {exc.strerror}") from None
    if not password:
        raise ConfigError(f"bootstrap.admin_password_file {b.admin_password_file} is empty")
    with services.db.startup_lock():  # several controllers starting together
        services.identity.ensure_account(b.admin_user, password, b.admin_project, "admin")


class _Server(uvicorn.Server):
    on_shutdown: Callable[[], None] | None = None
    drain_seconds = 0.0

    async def drain(self) -> None:
        """Serve on for `drain_seconds` while /readyz says the controller is stopping, so
        that the balancer moves the new requests elsewhere first (a second Ctrl-C cuts it
        short)."""
        log.info("controller draining: /readyz answers 404, stopping in %g s",
                 self.drain_seconds)
        lifecycle.draining.set()
        deadline = asyncio.get_running_loop().time() + self.drain_seconds
        while not self.force_exit and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.drain_seconds > 0 and self.started:
            await self.drain()
        lifecycle.stopping.set()  # the pool's and the events' long-polls answer now
        if self.on_shutdown is not None:
            self.on_shutdown()  # long-polls answer now instead of holding the shutdown
        # Idle keep-alive connections are dropped at once: a TLS close waits up to 30 s for
        # a client that is not reading. Requests in flight still finish (graceful timeout).
        for conn in list(self.server_state.connections):
            cycle = getattr(conn, "cycle", None)
            transport = getattr(conn, "transport", None)
            if transport is not None and (cycle is None or cycle.response_complete):
                transport.abort()
        await super().shutdown(sockets)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it), as uvicorn would choose."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def uvicorn_config(app: FastAPI, listen: ListenConfig, tls: TLSConfig | None
                   ) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=listen.host.strip("[]"), port=listen.port, log_config=None,
        access_log=False, proxy_headers=False, server_header=False, timeout_keep_alive=30,
        timeout_graceful_shutdown=30, ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None)


def run_until_signal(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main` on the event loop; SIGINT and SIGTERM are a normal stop."""
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal; both end
    # up here as KeyboardInterrupt, which is a normal stop (exit code 0).
    try:
        with lifecycle.stop_on_signals(), asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except KeyboardInterrupt:
        pass


def serve(config: ControllerConfig, *, services: Services | None = None,
          on_ready: Callable[[Services], None] | None = None,
          extend: Callable[[FastAPI], None] | None = None,
          on_stop: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM. `on_ready` runs once the socket accepts connections;
    `extend` adds routes to the app (the demo's pool); `on_stop` runs when the shutdown
    begins (the demo's CI load stops starting jobs)."""
    check_port_free(config.listen.host, config.listen.port)
    services = services or build_services(config)
    bootstrap_admin(services)
    services.duties.start()  # takes the free duties' leases now, renews them from here on
    if services.duties.holds("maintenance"):
        services.maintenance(backups=False)
    app = create_app(services)
    if extend is not None:
        extend(app)
    server = _Server(uvicorn_config(app, config.listen, config.tls))
    server.drain_seconds = config.listen.drain_seconds
    signals = services.signals

    def shutting_down() -> None:
        signals.close()
        if on_stop is not None:
            on_stop()

    server.on_shutdown = shutting_down

    async def main() -> None:
        services.signals.bind(asyncio.get_running_loop())

        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.02)
            log.info("controller serving", extra={"url": services.base_url,
                                                  "site": config.site})
            services.start_background()
            if on_ready:
                on_ready(services)

        ready = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            ready.cancel()

    try:
        run_until_signal(main)
    finally:
        services.close()
    if not server.started:
        raise ConfigError(f"the controller could not start on {config.listen.host}:"
                          f"{config.listen.port} (see the log above)")
