"""Property-based fuzzing of every route in the controller's own /openapi.json (schemathesis):
requests that fit the documented schemas, requests that break them, and valid requests with a
hostile value planted in their body (a lone surrogate, an integer past 64 bits, deep nesting,
any JSON where an object was expected), each sent as an admin and as a member: none may
answer 5xx. Bounded: a fixed number of examples per route, derandomized
(the same requests on every run), so it costs the same on every run (~30 s on 2 cores)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from infracloud.images import patch
from tests.unit.api_env import Api, api

__all__ = ["api"]

WRITE_EXAMPLES = 10  # per route and kind (valid, invalid, hostile)
READ_EXAMPLES = 3
SETTINGS = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))
# fixed, not fuzzed: the credentials (else nearly every request is a 401), the bare metal
# microversion (else a 406), and long-polls (which would wait)
FIXED_HEADERS = ("x-auth-token", "x-openstack-ironic-api-version", "openstack-api-version")
FIXED_QUERY = {"wait": 0}


@schemathesis.serializer(*patch.MEDIA_TYPES)
def _json_patch(ctx: Any, value: Any) -> bytes:
    """Glance's JSON-patch media types are JSON."""
    return json.dumps(value).encode()


# what JSON parsers let through and storage chokes on, planted anywhere in a valid body
DEEP = "\x00deep\x00"  # replaced by 33 to 5,000 nested arrays in the text sent
BAD = st.sampled_from(["\ud800", "a\udfff", 2**64, -(2**63) - 1, 10**30, DEEP])
HOSTILE = BAD | st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) |
    st.integers() | st.text(max_size=6) | BAD,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=3),
    max_leaves=6)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON value, the whole value first."""
    out = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        out += _paths(item, (*prefix, key))
    return out


def _planted(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _planted(value[path[0]], path[1:], new)
    return copy


def _send(api: Api, case: Any, token: dict[str, str], body: Any = None, depth: int = 0
          ) -> tuple[int, str]:
    kw = case.as_transport_kwargs(base_url="")
    headers = {k: v for k, v in (kw.get("headers") or {}).items()
               if k.lower() not in FIXED_HEADERS}
    headers.update(token)
    if case.operation.path.startswith("/baremetal"):
        headers["X-OpenStack-Ironic-API-Version"] = "latest"
    params = {**(kw.get("params") or {}),
              **{k: v for k, v in FIXED_QUERY.items() if k in (kw.get("params") or {})}}
    content, sent = kw.get("data"), kw.get("json")
    if body is not None:  # the hostile pass: raw JSON text, lone surrogates escaped
        sent = body
        text = json.dumps(body)
        content = text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()
        headers.setdefault("Content-Type", "application/json")
    if kw.get("cookies"):  # as a header: per-request cookies are deprecated in the client
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kw["cookies"].items())
    r = api.client.request(kw["method"], kw["url"], headers=headers, params=params,
                           json=kw.get("json") if body is None else None, content=content)
    deep = f" (arrays {depth} deep)" if body is not None and DEEP in json.dumps(body) else ""
    return r.status_code, f"{kw['method']} {kw['url']} {sent!r:.300}{deep} -> {r.text:.300}"


def _fuzz(api: Api, operation: Any, mode: GenerationMode | None, examples: int,
          answered: Counter[int]) -> list[str]:
    """`mode` None: valid requests with a hostile value planted in their body."""
    failures: list[str] = []
    try:
        strategy = operation.as_strategy(generation_mode=mode or GenerationMode.POSITIVE)
    except Exception as exc:  # a schema it cannot negate, say: nothing to send
        return [] if mode is GenerationMode.NEGATIVE else [f"{operation.label}: {exc}"]

    @given(case=strategy, as_admin=st.booleans(), data=st.data())
    @settings(SETTINGS, max_examples=examples)
    def run(case: Any, as_admin: bool, data: st.DataObject) -> None:
        body, depth = None, 0
        if mode is None:
            valid = case.body if isinstance(case.body, dict | list) else {}
            path = data.draw(st.sampled_from(_paths(valid)))
            body = _planted(valid, path, data.draw(HOSTILE))
            depth = data.draw(st.sampled_from([33, 200, 5000]))
        for token in ((api.admin, api.member) if as_admin else (api.member, api.admin)):
            status, what = _send(api, case, token, body, depth)
            answered[status // 100] += 1
            if status >= 500:
                failures.append(what)

    try:
        run()
    except Unsatisfiable:  # no request breaks this route's schema (all its parts are free)
        if mode is not GenerationMode.NEGATIVE:
            raise
    return failures


@pytest.fixture(scope="module")
def schema(api: Api) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api.app)


def test_no_route_answers_5xx_to_fuzzed_requests(api: Api, schema: Any) -> None:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 100  # the whole API, not an empty document
    failures: list[str] = []
    answered: Counter[int] = Counter()
    for op in operations:
        write = op.method.upper() in ("POST", "PUT", "PATCH")
        failures += _fuzz(api, op, GenerationMode.POSITIVE,
                          WRITE_EXAMPLES if write else READ_EXAMPLES, answered)
        if write:
            failures += _fuzz(api, op, GenerationMode.NEGATIVE, WRITE_EXAMPLES, answered)
            failures += _fuzz(api, op, None, WRITE_EXAMPLES, answered)
    assert failures == [], "\n".join(failures[:20])
    # the credentials work: most answers are not 401s, and many requests succeed
    assert answered[2] > 200 and answered[4] > 200, answered
