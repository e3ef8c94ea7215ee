"""The process is stopping: first draining (a controller tells its balancer so and serves on),
then stopping (long-polls answer at once instead of holding the shutdown); SIGINT and SIGTERM
stop a process the same way whatever it inherited."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

stopping = threading.Event()
# the controller will stop soon: /readyz says so (a balancer sends no new requests), while
# every request, new or in flight, is still served (listen.drain_seconds)
draining = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (a normal stop),
    even when the process started with them ignored (a script's background job, `nohup`)
    or SIGTERM would kill it without cleaning up (systemd, `kill`)."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
