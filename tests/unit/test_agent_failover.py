"""An agent given several controllers (`--controller URL,URL`) fails over: a controller that
refuses connections or answers 502/503/504 is skipped, the agent stays with the one that
answers, and comes back to the first when the second dies; so does the pool's token check
(`auth.identity-url` with several URLs). No network: httpx.MockTransport plays the
controllers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from infracloud.agent.drivers.fake import FakeDriver
from infracloud.agent.runner import Agent, HostInfo
from infracloud.clients import http
from infracloud.pool.auth import IdentityTokens
from infracloud.pool.config import Auth

A, B = "https://c1.test:8774", "https://c2.test:8774"


class Controllers:
    """Two controllers behind one MockTransport: each one up, refusing, or answering 503."""

    def __init__(self) -> None:
        self.state = {"c1.test": "up", "c2.test": "up"}
        self.seen: list[tuple[str, str, str]] = []  # (controller, method, path) it answered
        self.generation = -1  # what the last answer gave (-1: none yet)
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if self.state[host] == "refusing":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if self.state[host] == "503":
            return httpx.Response(503, text="no server is available")
        self.seen.append((host, request.method, request.url.path))
        if (request.method, request.url.path) == ("POST", "/agent/v1/hosts"):
            assert b'"name":"compute-1"' in request.read().replace(b" ", b"")  # body resent
            return httpx.Response(201, json={"host": {"id": "h-1"}, "poll_seconds": 20})
        if (request.method, request.url.path) == ("GET", "/identity/v3/auth/tokens"):
            return httpx.Response(200, json={"token": {"project": {"name": "zuul"},
                                                       "roles": [{"name": "member"}]}})
        if (request.method, request.url.path) == ("GET", "/agent/v1/hosts/h-1/desired"):
            # the agent sends back the generation the last answer gave, whoever gave it
            assert request.url.params["generation"] == str(self.generation)
            self.generation += 1
            return httpx.Response(200, json={"generation": self.generation,
                                             "instances": []})
        return httpx.Response(404)

    def answered(self) -> list[tuple[str, str, str]]:
        seen, self.seen = self.seen, []
        return seen


@pytest.fixture
def controllers() -> Controllers:
    return Controllers()


def agent_of(controllers: Controllers, tmp_path: Path, urls: str) -> Agent:
    return Agent(urls, "agent-token-for-tests-0123456789", FakeDriver(),
                 HostInfo("compute-1", 4, 4096, 40), tmp_path, poll_wait=0,
                 transport=controllers.transport)


def test_the_agent_registers_and_polls_through_the_second_then_comes_back_to_the_first(
        controllers: Controllers, tmp_path: Path) -> None:
    agent = agent_of(controllers, tmp_path, f"{A}, {B}/")
    try:
        assert agent.controllers == [A, B]
        controllers.state["c1.test"] = "refusing"
        agent.register()
        assert agent.host_id == "h-1"
        agent.step(0)
        agent.step(0)
        assert controllers.answered() == [
            ("c2.test", "POST", "/agent/v1/hosts"),
            ("c2.test", "GET", "/agent/v1/hosts/h-1/desired"),
            ("c2.test", "GET", "/agent/v1/hosts/h-1/desired")]
        # the first comes back: the agent stays with the second, which works
        controllers.state["c1.test"] = "up"
        agent.step(0)
        assert controllers.answered() == [("c2.test", "GET", "/agent/v1/hosts/h-1/desired")]
        # the second dies: the agent goes back to the first, and stays there
        controllers.state["c2.test"] = "refusing"
        agent.step(0)
        controllers.state["c2.test"] = "up"
        agent.step(0)
        assert controllers.answered() == [
            ("c1.test", "GET", "/agent/v1/hosts/h-1/desired"),
            ("c1.test", "GET", "/agent/v1/hosts/h-1/desired")]
    finally:
        agent.close()


def test_a_503_from_haproxy_or_a_controller_is_tried_at_the_next(
        controllers: Controllers, tmp_path: Path) -> None:
    agent = agent_of(controllers, tmp_path, f"{A},{B}")
    try:
        controllers.state["c1.test"] = "503"
        agent.register()
        assert controllers.answered() == [("c2.test", "POST", "/agent/v1/hosts")]
    finally:
        agent.close()


def test_with_every_controller_down_the_agent_sees_the_last_failure(
        controllers: Controllers, tmp_path: Path) -> None:
    agent = agent_of(controllers, tmp_path, f"{A},{B}")
    try:
        controllers.state.update({"c1.test": "refusing", "c2.test": "refusing"})
        with pytest.raises(httpx.ConnectError):
            agent.register()
        controllers.state.update({"c1.test": "503", "c2.test": "503"})
        with pytest.raises(httpx.HTTPStatusError) as failed:
            agent.register()
        assert failed.value.response.status_code == 503
        assert controllers.answered() == []
    finally:
        agent.close()


def test_one_url_is_not_wrapped_and_urls_outside_the_base_go_as_they_are(
        controllers: Controllers) -> None:
    with http.client("test", base_url=A, transport=controllers.transport) as single:
        assert single._transport is controllers.transport
    controllers.state["c1.test"] = "refusing"
    with http.client("test", base_url=A + "/agent/v1", also=[B + "/agent/v1"],
                     transport=controllers.transport) as failing_over:
        assert failing_over.get("/elsewhere").status_code == 404
        assert controllers.answered() == [("c2.test", "GET", "/agent/v1/elsewhere")]
        with pytest.raises(httpx.ConnectError):  # not under the base URL: no failover
            failing_over.get(A + "/identity/v3")


def test_split_urls() -> None:
    assert http.split_urls("https://a/, https://b") == ["https://a", "https://b"]
    assert http.split_urls(["https://a"]) == ["https://a"]
    with pytest.raises(http.ClientError):
        http.split_urls(" , ")


def test_the_pool_checks_tokens_at_the_identity_url_that_answers(
        controllers: Controllers) -> None:
    auth = Auth.model_validate({"identity-url": [f"{A}/identity", f"{B}/identity/"]})
    assert auth.identity_url is not None
    tokens = IdentityTokens(auth.identity_url, transport=controllers.transport)
    try:
        controllers.state["c1.test"] = "refusing"
        assert tokens.check("token-1").requestor == "zuul"
        controllers.state.update({"c1.test": "up", "c2.test": "503"})
        assert tokens.check("token-2").requestor == "zuul"
        assert controllers.answered() == [("c2.test", "GET", "/identity/v3/auth/tokens"),
                                          ("c1.test", "GET", "/identity/v3/auth/tokens")]
    finally:
        tokens.close()
