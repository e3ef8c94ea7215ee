"""A client for the node pool's HTTP API (`/pool/v1`, see `infracloud.api.pool`), used by
`infracloud pool ...`. Every method returns the JSON object the API answers with (the node,
request or provider dicts of `infracloud.pool.service`); an HTTP error raises the matching
`infracloud.core.errors` error with the server's message, and a pool that cannot be reached
raises `infracloud.clients.cloud.ClientError`.

Several pool processes (one active, others standing by) are reached through one load-balanced
URL or a list of them ("URL,URL": each call goes to the first that takes it, staying with the
one that answered). A call is tried again, for up to `retry_for` seconds, when its answer was
lost (the connection broke after it was sent, a proxy's 502/504) or the pool said 503 (a
process that just lost its seat, honouring Retry-After); a call that reached no pool at all is
tried again for `CONNECT_RETRY_FOR` seconds. A new request carries an Idempotency-Key, the same
on every try, so a retry never makes a second request."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from infracloud.clients import http
from infracloud.clients.http import ClientError
from infracloud.core import errors
from infracloud.core.errors import InfracloudError

MAX_WAIT = 60.0  # the API's cap on `wait`
RETRY_FOR = 30.0  # seconds a call whose answer was lost is tried again (a takeover: < 15 s)
CONNECT_RETRY_FOR = 5.0  # seconds a call that reached no pool at all is tried again
RETRY_WAIT = 0.5  # seconds before the first retry, doubled up to MAX_RETRY_WAIT
MAX_RETRY_WAIT = 2.0
RETRY_STATUSES = frozenset({502, 503, 504})
ERRORS: dict[int, type[InfracloudError]] = {
    400: errors.BadRequest, 401: errors.Unauthorized, 403: errors.Forbidden,
    404: errors.NotFound, 409: errors.Conflict, 503: errors.ServiceUnavailable}


class PoolError(InfracloudError):
    """An HTTP error of the pool without a class of its own; `status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def error_for(status: int, message: str) -> InfracloudError:
    cls = ERRORS.get(status)
    return cls(message) if cls is not None else PoolError(message, status)


def _message(r: httpx.Response) -> str:
    """The `error.message` of the pool's error body, else something short."""
    try:
        body = r.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    text = r.text.strip()[:300]
    return f"HTTP {r.status_code}" + (f": {text}" if text else "")


def _seg(value: str) -> str:
    """One path segment: a node, request or provider name never reaches another route."""
    return quote(value, safe="")


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return max(0.0, float(r.headers.get("Retry-After", "")))
    except ValueError:
        return None


class PoolClient:
    """`url`: the pool's URL, or several ("URL,URL"); `cacert`: a CA file to trust (default:
    the system's CAs); False: do not verify (a cloud's `verify: false`). `retry_for`: seconds
    a call whose answer was lost is tried again (0: never)."""

    def __init__(self, url: str, token: str | None = None,
                 cacert: str | Path | bool | None = None, timeout: float = 30, *,
                 transport: httpx.BaseTransport | None = None, retry_for: float = RETRY_FOR,
                 retry_wait: float = RETRY_WAIT) -> None:
        headers = {"X-Auth-Token": token} if token else {}
        first, *others = http.split_urls(url)
        self.url = ",".join([first, *others])
        self.timeout = timeout
        self.retry_for, self.retry_wait = retry_for, retry_wait
        self.retries = 0  # calls tried again, all told (a requestor's figure)
        self.http = http.client("pool-client", base_url=first, also=others,
                                verify=True if cacert is None else cacert, timeout=timeout,
                                headers=headers, transport=transport)

    def call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
             ) -> Any:
        start = time.monotonic()
        tries = 0
        while True:
            wait = min(self.retry_wait * 2 ** tries, MAX_RETRY_WAIT)
            try:
                r = self.http.request(method, path, timeout=timeout or self.timeout, **kwargs)
            except httpx.HTTPError as exc:
                failure: InfracloudError = ClientError(
                    f"cannot reach the pool at {self.url}: {exc}")
                reached = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                limit = self.retry_for if reached else min(self.retry_for, CONNECT_RETRY_FOR)
            else:
                if r.status_code < 400:
                    break
                failure = error_for(r.status_code, _message(r))
                if r.status_code not in RETRY_STATUSES:
                    raise failure
                wait = _retry_after(r) or wait
                limit = self.retry_for
            if time.monotonic() + wait - start > limit:
                raise failure
            time.sleep(wait)
            tries += 1
            self.retries += 1
        try:
            return r.json() if r.content else None
        except ValueError:
            raise ClientError(f"{method} {path}: the pool at {self.url} did not answer "
                              f"JSON (is it a pool?)") from None

    # ---- requests ---------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", "/pool/v1")
        return answer

    def status(self) -> dict[str, Any]:
        """Which pool process is active, which stand by, and the answering one's role."""
        return dict(self.call("GET", "/pool/v1/status")["status"])

    def create_request(self, labels: list[str], requestor: str | None = None,
                       priority: int = 0, key: str | None = None) -> dict[str, Any]:
        """`key`: the Idempotency-Key (a new one by default; the same on every retry)."""
        body: dict[str, Any] = {"labels": labels, "priority": priority}
        if requestor:
            body["requestor"] = requestor
        headers = {"Idempotency-Key": key or uuid.uuid4().hex}
        return dict(self.call("POST", "/pool/v1/requests", json=body,
                              headers=headers)["request"])

    def get_request(self, request_id: str, wait: float = 0) -> dict[str, Any]:
        """The request; with `wait` (seconds, at most 60), once it is fulfilled, failed or
        cancelled, or when the time is up."""
        wait = min(max(wait, 0.0), MAX_WAIT)
        params = {"wait": f"{wait:g}"} if wait else {}
        return dict(self.call("GET", f"/pool/v1/requests/{_seg(request_id)}", params=params,
                              timeout=self.timeout + wait)["request"])

    def cancel_request(self, request_id: str) -> dict[str, Any]:
        return dict(self.call("DELETE", f"/pool/v1/requests/{_seg(request_id)}")["request"])

    def list_requests(self, history: bool = False) -> list[dict[str, Any]]:
        params = {"history": "true"} if history else {}
        return list(self.call("GET", "/pool/v1/requests", params=params)["requests"])

    # ---- nodes --------------------------------------------------------------------------------

    def list_nodes(self, label: str | None = None, state: str | None = None
                   ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("label", label), ("state", state)) if v is not None}
        return list(self.call("GET", "/pool/v1/nodes", params=params)["nodes"])

    def get_node(self, node_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/pool/v1/nodes/{_seg(node_id)}")["node"])

    def release(self, node_id: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/pool/v1/nodes/{_seg(node_id)}/release")["node"])

    def hold(self, node_id: str, reason: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/pool/v1/nodes/{_seg(node_id)}/hold",
                              json={"reason": reason})["node"])

    # ---- labels and providers -----------------------------------------------------------------

    def list_labels(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/pool/v1/labels")["labels"])

    def list_providers(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/pool/v1/providers")["providers"])

    def drain(self, provider: str, reason: str | None = None) -> dict[str, Any]:
        return dict(self.call("POST", f"/pool/v1/providers/{_seg(provider)}/drain",
                              json={"reason": reason})["provider"])

    def undrain(self, provider: str) -> dict[str, Any]:
        answer = self.call("POST", f"/pool/v1/providers/{_seg(provider)}/undrain")
        return dict(answer["provider"])

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PoolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_on_node(node: dict[str, Any], client_key: Any, command: str,
                timeout: float = 60) -> str:
    """Log in to a pool node over SSH as its user, trusting only the host keys the pool
    recorded for it, run `command` (a non-zero exit raises) and return its output.
    `client_key`: a private key file or an asyncssh key."""
    import asyncio

    import asyncssh

    host, port = node["interface_ip"], node["ssh_port"]
    where = host if port == 22 else f"[{host}]:{port}"
    known = asyncssh.import_known_hosts("".join(f"{where} {k}\n" for k in node["host_keys"]))
    key = str(client_key) if isinstance(client_key, Path) else client_key

    async def run() -> str:
        async with asyncssh.connect(host, port, username=node["username"], client_keys=[key],
                                    known_hosts=known, connect_timeout=20) as conn:
            result = await conn.run(command, check=True, timeout=timeout)
            return str(result.stdout)

    return asyncio.run(run())
