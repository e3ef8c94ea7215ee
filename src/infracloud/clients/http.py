"""The one way infracloud makes outbound HTTP clients (`client`): every client says who it is
(`User-Agent: infracloud/<version> (<component>)`), has timeouts, verifies TLS the same way (a
CA file, or a bool: `tls_verify`) and retries a connection that could not be made (the
transport's `retries`: connect errors only, never a request that reached the peer). Tests pass
`transport` (an `httpx.MockTransport`) to see what is sent without a server."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from infracloud.core.errors import InfracloudError

TIMEOUT = 30.0  # seconds for each of connect, read, write and pool, unless told otherwise
CONNECT_TIMEOUT = 10.0  # a peer that does not accept in 10 s is down, whatever the read wait
RETRIES = 2  # connection attempts after the first (refused, reset, timed out while connecting)


class ClientError(InfracloudError):
    """A command cannot talk to its peer (no cloud, no route, bad login, unusable CA file)."""

    status = 400


def version() -> str:
    try:
        return metadata.version("infracloud")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "0+unknown"


def user_agent(component: str) -> str:
    return f"infracloud/{version()} ({component})"


def tls_verify(verify: str | Path | bool | ssl.SSLContext) -> ssl.SSLContext | bool:
    """httpx's `verify` for a CA file (a clouds.yaml `cacert`), a bool (its `verify`), or a
    context made already. True is the system's trust store (what the operator installed)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str | Path):
        try:
            return ssl.create_default_context(cafile=str(verify))
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"CA file {verify}: cannot use it: {exc}") from None
    return ssl.create_default_context() if verify else False


def timeouts(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """`timeout` for reading, writing and waiting for a pooled connection; connecting gets at
    most CONNECT_TIMEOUT of it."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))


def client(component: str, *, verify: str | Path | bool | ssl.SSLContext = True,
           timeout: float | httpx.Timeout = TIMEOUT, retries: int = RETRIES,
           base_url: str = "", headers: Mapping[str, str] | None = None,
           transport: httpx.BaseTransport | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx client for `component` (e.g. "agent", "alerts"). `transport` replaces the
    network (then `verify` and `retries` are the transport's business)."""
    if transport is None:
        context = tls_verify(verify)  # also for the proxies of the environment
        transport = httpx.HTTPTransport(verify=context, retries=retries)
        kwargs.update(verify=context)
    else:  # all of it goes to `transport`, none to a proxy of the environment
        kwargs.update(trust_env=False)
    return httpx.Client(base_url=base_url, timeout=timeouts(timeout), transport=transport,
                        headers={"User-Agent": user_agent(component), **(headers or {})},
                        **kwargs)
