"""Compute hosts' credentials (compute.credentials): each opens its own host, rotation hands
over without a gap, deleting the host revokes them, and the site's agent token binds to the
first host that registers with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from infracloud.compute.credentials import AgentAuth, HostCredentials
from infracloud.compute.hosts import Registration
from infracloud.core.clock import FakeClock
from infracloud.core.errors import Forbidden, Unauthorized
from infracloud.core.secrets import SecretBox
from infracloud.store import Database
from infracloud.store.models import Host, HostCredential
from tests.unit.compute_env import Env

SITE_TOKEN = "site-agent-token-0123456789"


def reg(name: str) -> Registration:
    return Registration(name=name, driver="fake", vcpus=8, ram_mb=8192, disk_gb=80)


@pytest.fixture
def env(db: Database, clock: FakeClock) -> Env:
    return Env(db, clock)


@pytest.fixture
def creds(env: Env, tmp_path: Path) -> HostCredentials:
    return HostCredentials(env.db, SecretBox(tmp_path / "secret.key"), env.clock, SITE_TOKEN)


def test_a_credential_opens_its_own_host_only(env: Env, creds: HostCredentials) -> None:
    a, secret_a = creds.enrol(env.hosts, reg("a"))
    b, _ = creds.enrol(env.hosts, reg("b"))
    auth = creds.authenticate(secret_a)
    assert (auth.host_id, auth.host_name) == (a.id, "a")
    auth.may_use(a.id)
    with pytest.raises(Forbidden):
        auth.may_use(b.id)
    with pytest.raises(Forbidden, match="cannot register as b"):
        creds.register(env.hosts, reg("b"), auth)
    assert creds.register(env.hosts, reg("a"), auth).id == a.id
    with env.db.read() as s:  # stored hashed
        stored = set(s.scalars(select(HostCredential.secret_hash)))
    assert secret_a not in stored and len(stored) == 2
    for bad in (None, "", "not-a-credential-at-all"):
        with pytest.raises(Unauthorized):
            creds.authenticate(bad)


def test_enrolling_again_replaces_the_credential(env: Env, creds: HostCredentials) -> None:
    _, old = creds.enrol(env.hosts, reg("a"))
    _, new = creds.enrol(env.hosts, reg("a"))
    with pytest.raises(Unauthorized):
        creds.authenticate(old)
    assert creds.authenticate(new).host_name == "a"


def test_rotation_hands_the_successor_over_then_retires_the_old_one(
        env: Env, creds: HostCredentials) -> None:
    a, old = creds.enrol(env.hosts, reg("a"))
    assert creds.rotate() == 1
    first = creds.authenticate(old)  # still valid until the agent has used its successor
    again = creds.authenticate(old)  # every call answers the same successor
    assert first.successor and first.successor == again.successor
    assert creds.authenticate(first.successor) == AgentAuth(a.id, "a")
    with pytest.raises(Unauthorized):
        creds.authenticate(old)
    assert creds.authenticate(first.successor).successor is None


def test_deleting_the_host_revokes_its_credential(env: Env, creds: HostCredentials) -> None:
    _, secret = creds.enrol(env.hosts, reg("a"))
    with env.db.write() as s:
        s.delete(s.scalar(select(Host).where(Host.name == "a")))
    with pytest.raises(Unauthorized):
        creds.authenticate(secret)


def test_the_site_token_binds_to_the_first_host_that_registers(
        env: Env, creds: HostCredentials, tmp_path: Path) -> None:
    unbound = creds.authenticate(SITE_TOKEN)
    assert unbound.host_id is None
    joined, _ = creds.enrol(env.hosts, reg("joined"))
    with pytest.raises(Forbidden, match="has its own credential"):
        creds.register(env.hosts, reg("joined"), unbound)  # no hijack of a joined host
    a = creds.register(env.hosts, reg("a"), unbound)
    bound = creds.authenticate(SITE_TOKEN)
    assert bound.host_id == a.id
    with pytest.raises(Forbidden):
        creds.register(env.hosts, reg("b"), bound)
    with pytest.raises(Forbidden):
        bound.may_use(joined.id)
    assert creds.rotate() == 1  # the file's token is the operator's to change
    # another token in the file: the old one opens nothing any more
    changed = HostCredentials(env.db, creds.box, env.clock, "another-site-token-012345")
    with pytest.raises(Unauthorized):
        changed.authenticate(SITE_TOKEN)
    # the operator's choice: one token for every host
    shared = HostCredentials(env.db, creds.box, env.clock, SITE_TOKEN, shared=True)
    shared.authenticate(SITE_TOKEN).may_use(joined.id)


def test_the_agent_keeps_its_credential_and_takes_the_rotated_one(tmp_path: Path) -> None:
    """The agent side: the credential from the join is kept (0600) and used after a restart
    instead of the spent join token; a handed-over successor replaces it at once."""
    import json
    import stat

    import httpx

    from infracloud.agent.drivers.fake import FakeDriver
    from infracloud.agent.runner import Agent, HostInfo

    calls: list[tuple[str, str, str | None]] = []

    def controller(request: httpx.Request) -> httpx.Response:
        token = request.headers.get("X-Agent-Token")
        calls.append((request.method, request.url.path, token))
        if request.url.path.endswith("/join"):
            return httpx.Response(200, json={"host": {"id": "h-1", "name": "m1"},
                                             "agent_token": "cred-1", "poll_seconds": 1})
        if request.url.path.endswith("/hosts"):
            return httpx.Response(200, json={"host": {"id": "h-1", "name": "m1"}})
        headers = {"X-Agent-Credential": "cred-2"} if token == "cred-1" else {}
        return httpx.Response(200, headers=headers, json={"generation": 1, "instances": []})

    def agent() -> Agent:
        a = Agent("http://controller.invalid", "", FakeDriver(), HostInfo("ignored", 4, 4096,
                  40), tmp_path, join_token="j" * 32, credential_file=tmp_path / "cred.json")
        a.http = httpx.Client(base_url="http://controller.invalid/agent/v1",
                              headers=dict(a.http.headers), event_hooks={
                                  "response": [a._handover]},
                              transport=httpx.MockTransport(controller))
        return a

    first = agent()
    first.register()
    kept = tmp_path / "cred.json"
    assert json.loads(kept.read_text()) == {"name": "m1", "credential": "cred-1"}
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    first.step(0)
    first.step(0)
    assert [c[2] for c in calls[-2:]] == ["cred-1", "cred-2"]
    assert json.loads(kept.read_text())["credential"] == "cred-2"
    first.close()

    again = agent()  # a restart: no second join
    again.register()
    assert calls[-1] == ("POST", "/agent/v1/hosts", "cred-2")
    assert again.host.name == "m1"
    again.close()
