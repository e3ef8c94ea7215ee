"""`infracloud pool`'s helpers: host key fingerprints, ages, and how the client turns the
pool's HTTP errors into errors with the server's message."""

from __future__ import annotations

import datetime as dt

import asyncssh
import httpx
import pytest

from infracloud.cli.pool import age, fingerprint, host_key
from infracloud.clients.cloud import ClientError
from infracloud.core.errors import Conflict, Unauthorized
from infracloud.pool.client import PoolClient, PoolError


def test_fingerprint_is_ssh_keygens() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = key.export_public_key("openssh").decode().strip()  # with a comment
    assert fingerprint(line) == key.get_fingerprint("sha256")
    summary = host_key([" ".join(line.split()[:2]), "ssh-rsa AAAA"])
    assert summary == "ssh-ed25519 " + key.get_fingerprint("sha256")[:19]
    assert host_key([]) == "-"
    assert host_key(["ssh-rsa not*base64"]) == "(not a key)"
    with pytest.raises(ValueError):
        fingerprint("ssh-rsa")


def test_age() -> None:
    now = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert age("2025-01-02T03:04:00Z", now) == "5s"
    assert age("2025-01-02T02:00:00Z", now) == "1h"
    assert age("2024-12-30T03:04:05Z", now) == "3d"
    assert age(None, now) == "-"


def test_client_errors_carry_the_servers_message() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-Auth-Token"] == "tok"
        if request.url.raw_path == b"/pool/v1/requests/a%2Fb":
            return httpx.Response(409, json={"error": {"code": 409, "message": "It is done."}})
        if request.url.path.endswith("/release"):
            return httpx.Response(401, json={"error": {"message": "The token is not valid."}})
        return httpx.Response(502, text="bad gateway")

    with PoolClient("http://pool", "tok", transport=httpx.MockTransport(answer),
                    retry_for=0) as client:
        with pytest.raises(Conflict, match=r"^It is done\.$"):
            client.cancel_request("a/b")  # one path segment, quoted
        with pytest.raises(Unauthorized, match=r"^The token is not valid\.$"):
            client.release("0001")
        with pytest.raises(PoolError, match="HTTP 502: bad gateway") as info:
            client.list_nodes()
        assert info.value.status == 502


def test_client_unreachable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with PoolClient("http://pool", transport=httpx.MockTransport(down), retry_for=0) as client, \
            pytest.raises(ClientError, match="cannot reach the pool at http://pool"):
        client.list_labels()


def test_client_tries_a_lost_answer_again_with_the_same_idempotency_key() -> None:
    """The connection broke after the request was sent, then a process that just lost its seat
    said 503: the third try is answered, and all three carried one Idempotency-Key (the pool
    makes one request of them). A 409 is an answer: never tried again."""
    seen: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.headers.get("Idempotency-Key")))
        if request.method == "DELETE":
            return httpx.Response(409, json={"error": {"message": "It is done."}})
        if len(seen) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if len(seen) == 2:
            return httpx.Response(503, headers={"Retry-After": "0"},
                                  json={"error": {"message": "ask again"}})
        return httpx.Response(201, json={"request": {"id": "req-1", "state": "requested"}})

    with PoolClient("http://pool", transport=httpx.MockTransport(answer),
                    retry_wait=0.01) as client:
        assert client.create_request(["small"])["id"] == "req-1"
        keys = {key for _, key in seen}
        assert len(seen) == 3 and len(keys) == 1 and None not in keys
        assert client.retries == 2
        with pytest.raises(Conflict):
            client.cancel_request("req-1")
        assert len(seen) == 4


def test_client_with_two_urls_goes_to_the_one_that_answers() -> None:
    hosts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "pool1":
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, json={"labels": []})

    with PoolClient("http://pool1:8450, http://pool2:8450/",
                    transport=httpx.MockTransport(answer)) as client:
        assert client.list_labels() == []
        assert client.list_labels() == []
    assert hosts == ["pool1", "pool2", "pool2"]  # it stays with the one that answered
