"""The one way infracloud makes outbound HTTP clients (`client`): every client says who it is
(`User-Agent: infracloud/<version> (<component>)`), has timeouts, verifies TLS the same way (a
CA file, or a bool: `tls_verify`) and retries a connection that could not be made (the
transport's `retries`: connect errors only, never a request that reached the peer). Tests pass
`transport` (an `httpx.MockTransport`) to see what is sent without a server.

A client given `also` (other URLs that serve what `base_url` serves: several controllers)
fails over (`Failover`): a request whose connection cannot be made, or that a proxy answers
502, 503 or 504, is sent to the next URL, and the client stays with the one that answered."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from infracloud.core.errors import InfracloudError

TIMEOUT = 30.0  # seconds for each of connect, read, write and pool, unless told otherwise
CONNECT_TIMEOUT = 10.0  # a peer that does not accept in 10 s is down, whatever the read wait
RETRIES = 2  # connection attempts after the first (refused, reset, timed out while connecting)
FAILOVER_STATUSES = frozenset({502, 503, 504})  # a proxy's or a controller's "not me, not now"

log = logging.getLogger(__name__)


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


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """`URL[,URL...]` (or a list of them) as a list of URLs without a trailing slash."""
    parts = urls.split(",") if isinstance(urls, str) else list(urls)
    found = [u.strip().rstrip("/") for u in parts if u.strip()]
    if not found:
        raise ClientError("no URL given")
    return found


class Failover(httpx.BaseTransport):
    """Sends each request to the first of `urls` that takes it, starting with the one that
    answered last. A request is written for `urls[0]` (the client's base URL); its prefix is
    swapped for the URL in use. Another URL is tried when the connection cannot be made
    (refused, timed out while connecting) or the answer is 502/503/504; when every URL fails,
    the last answer (or error) is the caller's."""

    def __init__(self, urls: Sequence[str], inner: httpx.BaseTransport) -> None:
        self.urls = [httpx.URL(u.rstrip("/") + "/") for u in urls]
        self.inner = inner
        self.current = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if len(self.urls) == 1:
            return self.inner.handle_request(request)
        primary = str(self.urls[0])
        url = str(request.url)
        if not url.startswith(primary) and url + "/" != primary:
            return self.inner.handle_request(request)  # not under the base URL: as it is
        rest = url[len(primary):]
        request.read()  # a body is sent again to the next URL
        with self._lock:
            start = self.current
        failure: httpx.TransportError | None = None
        response: httpx.Response | None = None
        for step in range(len(self.urls)):
            index = (start + step) % len(self.urls)
            target = httpx.URL(str(self.urls[index]).rstrip("/") + ("/" + rest if rest else ""))
            headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"]
            attempt = httpx.Request(request.method, target, headers=headers,
                                    content=request.content, extensions=request.extensions)
            if response is not None:
                response.close()
            response, failure = None, None
            try:
                response = self.inner.handle_request(attempt)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure = exc
                log.warning("%s: cannot connect (%s), trying the next URL", target.host, exc)
                continue
            if response.status_code not in FAILOVER_STATUSES:
                with self._lock:
                    self.current = index
                return response
            log.warning("%s answered %s, trying the next URL", target.host,
                        response.status_code)
        if response is not None:
            return response
        assert failure is not None
        raise failure

    def close(self) -> None:
        self.inner.close()


def client(component: str, *, verify: str | Path | bool | ssl.SSLContext = True,
           timeout: float | httpx.Timeout = TIMEOUT, retries: int = RETRIES,
           base_url: str = "", also: Sequence[str] = (),
           headers: Mapping[str, str] | None = None,
           transport: httpx.BaseTransport | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx client for `component` (e.g. "agent", "alerts"). `transport` replaces the
    network (then `verify` and `retries` are the transport's business). `also`: other base
    URLs that serve what `base_url` serves, failed over to (`Failover`)."""
    if transport is None:
        context = tls_verify(verify)  # also for the proxies of the environment
        transport = httpx.HTTPTransport(verify=context, retries=retries)
        kwargs.update(verify=context)
    else:  # all of it goes to `transport`, none to a proxy of the environment
        kwargs.update(trust_env=False)
    if also:
        transport = Failover([base_url, *also], transport)
    return httpx.Client(base_url=base_url, timeout=timeouts(timeout), transport=transport,
                        headers={"User-Agent": user_agent(component), **(headers or {})},
                        **kwargs)
