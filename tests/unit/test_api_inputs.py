"""Input that answered 500 (issue 15): lone surrogates, deep nesting, integers past 64 bits,
wrong types the routes did not check. Each answers 400 in the service's own error shape and
wording, and the OpenAPI document describes every write route's body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.api_env import Api, api

__all__ = ["api"]

DEEP = "[" * 5000 + "]" * 5000
BIG = 2**70
SERVER = {"name": "s", "flavorRef": "ci.8g", "imageRef": "11111111-2222-3333-4444-555555555555"}


def send(api: Api, method: str, path: str, body: Any, admin: bool = False,
         content_type: str = "application/json") -> Any:
    raw = body if isinstance(body, str) else json.dumps(body)
    r = api.client.request(method, path, content=raw.encode(), headers={
        **(api.admin if admin else api.member), "Content-Type": content_type})
    return r


def nova(r: Any) -> str:
    assert r.status_code == 400, r.text
    message: str = r.json()["badRequest"]["message"]
    return message


# ---- generic: every route, whatever its body ------------------------------------------------

WRITES = [("POST", "/compute/v2.1/servers", False), ("POST", "/compute/v2.1/os-keypairs", False),
          ("POST", "/compute/v2.1/flavors", True),
          ("PUT", "/compute/v2.1/os-quota-sets/p", True),
          ("POST", "/image/v2/images", False), ("POST", "/network/v2.0/ports", False),
          ("POST", "/baremetal/v1/nodes", True), ("POST", "/identity/v3/projects", True)]


@pytest.mark.parametrize(("method", "path", "admin"), WRITES)
def test_a_lone_surrogate_is_a_400(api: Api, method: str, path: str, admin: bool) -> None:
    r = send(api, method, path, '{"name": "\\ud800", "x": {"name": "\\udfff"}}', admin)
    assert r.status_code == 400, r.text
    assert "lone surrogate" in r.text


def test_a_surrogate_pair_is_one_character(api: Api) -> None:
    r = send(api, "POST", "/compute/v2.1/os-keypairs",
             '{"keypair": {"name": "k\\ud83d\\ude00"}}')
    assert "surrogate" not in r.text  # refused by the name rule, not as broken Unicode
    assert nova(r) == "Keypair name contains unsafe characters or is empty."


@pytest.mark.parametrize(("method", "path", "admin"), WRITES)
def test_deep_nesting_is_a_400(api: Api, method: str, path: str, admin: bool) -> None:
    r = send(api, method, path, DEEP, admin)
    assert r.status_code == 400, r.text
    assert "nests deeper than 32 levels" in r.text
    shallow = send(api, method, path, '{"a": ' + "[" * 40 + "]" * 40 + "}", admin)
    assert shallow.status_code == 400 and "nests deeper" in shallow.text


@pytest.mark.parametrize(("method", "path", "admin"), WRITES)
def test_integers_past_64_bits_are_a_400(api: Api, method: str, path: str, admin: bool
                                         ) -> None:
    r = send(api, method, path, f'{{"min_ram": {BIG}, "x": {"9" * 5000}}}', admin)
    assert r.status_code == 400, r.text
    assert "integer outside 64 bits" in r.text


def test_nan_and_infinity_are_not_json(api: Api) -> None:
    for raw in ('{"min_ram": NaN}', '{"min_ram": -Infinity}', '{"min_ram": 1e999}'):
        r = send(api, "POST", "/image/v2/images", raw)
        assert r.status_code == 400, r.text


def test_a_big_integer_in_a_query_is_a_400(api: Api) -> None:
    r = api.client.get(f"/ops/v1/events?after={BIG}", headers=api.admin)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "A value in the request is out of range."


# ---- compute: Nova's wording ------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "kind"), [
    ("availability_zone", 5, "string"), ("imageRef", {"a": 1}, "string"),
    ("key_name", [], "string"), ("metadata", "x", "object"), ("min_count", "many", "integer"),
    ("networks", 7, "array")])
def test_server_fields_of_the_wrong_type(api: Api, field: str, value: Any, kind: str) -> None:
    message = nova(send(api, "POST", "/compute/v2.1/servers",
                        {"server": {**SERVER, field: value}}))
    assert message.startswith(f"Invalid input for field/attribute {field}. Value: "), message
    if field != "networks":
        assert message.endswith(f"is not of type '{kind}'"), message


def test_a_server_without_a_name(api: Api) -> None:
    body = {k: v for k, v in SERVER.items() if k != "name"}
    message = nova(send(api, "POST", "/compute/v2.1/servers", {"server": body}))
    assert message.startswith("Invalid input for field/attribute server. Value: {")
    assert message.endswith("'name' is a required property")


def test_flavor_sizes_past_the_integer_columns(api: Api) -> None:
    message = nova(send(api, "POST", "/compute/v2.1/flavors",
                        {"flavor": {"name": "huge", "vcpus": 2**40, "ram": 1}}, admin=True))
    assert message == ("Invalid input for field/attribute vcpus. Value: 1099511627776. "
                       "1099511627776 is greater than the maximum of 2147483647")
    message = nova(send(api, "POST", "/compute/v2.1/flavors",
                        {"flavor": {"name": "f", "vcpus": 1, "ram": 1, "colour": "red"}},
                        admin=True))
    assert message.endswith("Additional properties are not allowed ('colour' was unexpected)")


def test_quota_values(api: Api) -> None:
    message = nova(send(api, "PUT", "/compute/v2.1/os-quota-sets/p",
                        {"quota_set": {"instances": 2**40}}, admin=True))
    assert "greater than the maximum of 2147483647" in message
    message = nova(send(api, "PUT", "/compute/v2.1/os-quota-sets/p",
                        {"quota_set": {"cores": "lots"}}, admin=True))
    # Nova's schema: an integer or a string of one ("10"), so a word fails the pattern
    assert message.endswith("'lots' does not match '^-?[0-9]+$'")


def test_a_host_disabled_reason_must_be_a_string(api: Api) -> None:
    message = nova(send(api, "PUT", "/compute/v2.1/os-services/disable-log-reason",
                        {"host": "h", "binary": "nova-compute", "disabled_reason": 5},
                        admin=True))
    assert message == ("Invalid input for field/attribute disabled_reason. Value: 5. "
                       "5 is not of type 'string'")


def test_console_output_length(api: Api) -> None:
    message = nova(send(api, "POST", "/compute/v2.1/servers/nope/action",
                        {"os-getConsoleOutput": {"length": "abc"}}))
    assert message.endswith("'abc' is not of type 'integer'")


# ---- the other services' wording ------------------------------------------------------------

@pytest.mark.parametrize("field", ["properties", "extra", "driver_info"])
def test_baremetal_object_fields(api: Api, field: str) -> None:
    r = send(api, "POST", "/baremetal/v1/nodes", {"driver": "fake", field: "x"}, admin=True)
    assert r.status_code == 400, r.text
    fault = json.loads(r.json()["error_message"])["faultstring"]
    assert fault == (f"Invalid input for field/attribute {field}. Value: x. "
                     f"'x' is not of type 'object'")


def test_baremetal_patch_values_have_the_fields_types(api: Api) -> None:
    r = send(api, "POST", "/baremetal/v1/nodes", {"driver": "fake", "name": "n1"}, admin=True)
    assert r.status_code == 201, r.text
    for path, value in (("/properties", 5), ("/extra", ["a"]), ("/name", {"a": 1})):
        r = send(api, "PATCH", "/baremetal/v1/nodes/n1",
                 [{"op": "replace", "path": path, "value": value}], admin=True)
        assert r.status_code == 400, r.text
        assert "Invalid input for field/attribute " + path[1:] in r.text
    r = send(api, "PATCH", "/baremetal/v1/nodes/n1",
             [{"op": "add", "path": "/properties/cpus", "value": 8}], admin=True)
    assert r.status_code == 200 and r.json()["properties"] == {"cpus": 8}


def test_neutron_wording(api: Api) -> None:
    def message(port: Any) -> str:
        r = send(api, "POST", "/network/v2.0/ports", {"port": port})
        assert r.status_code == 400, r.text
        return str(r.json()["NeutronError"]["message"])

    assert message({"network_id": 5}) == ("Invalid input for network_id. Reason: 5 is not of "
                                          "type 'string'.")
    assert message({"device_id": "x"}) == ("Failed to parse request. Required attribute "
                                           "'network_id' not specified")
    assert message({"network_id": "n", "b": 1, "a": 2}) == "Unrecognized attribute(s) 'b, a'"


def test_glance_wording(api: Api) -> None:
    r = send(api, "POST", "/image/v2/images", {"name": 5})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("Provided object does not match schema 'image': "
                                            "5 is not of type 'string'")
    r = send(api, "POST", "/image/v2/images", {"name": "i", "min_ram": "5"})
    assert r.status_code == 400 and "'5' is not of type 'integer'" in r.text
    r = send(api, "POST", "/image/v2/images", {"name": "i", "os_distro": 7})
    assert r.status_code == 400 and "7 is not of type 'string'" in r.text
    r = send(api, "POST", "/image/v2/images", {"name": "i", "os_distro": "debian"})
    assert r.status_code == 201 and r.json()["os_distro"] == "debian"
    image = r.json()["id"]
    r = send(api, "PATCH", f"/image/v2/images/{image}", [{"op": "replace", "path": 5}],
             content_type="application/openstack-images-v2.1-json-patch")
    assert r.status_code == 400
    assert "does not match schema 'image patch': 5 is not of type 'string'" in r.text


# ---- the OpenAPI document -------------------------------------------------------------------

def test_every_openstack_write_route_has_a_described_body(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    bodiless = {("post", "/image/v2/images/{image_id}/actions/{action}"),
                ("put", "/image/v2/images/{image_id}/tags/{tag}"),
                ("put", "/image/v2/images/{image_id}/file"),  # the data: a byte stream
                ("put", "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"),
                ("post", "/hardware/v1/join")}
    missing = []
    for path, item in doc["paths"].items():
        for method in ("post", "put", "patch"):
            if method in item and (method, path) not in bodiless and \
                    not path.startswith("/agent/") and "requestBody" not in item[method]:
                missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_every_route_that_reads_a_body_decodes_it_safely(api: Api) -> None:
    from infracloud.api.bodies import JSONRoute

    plain = [r.path for r in api.app.routes if getattr(r, "methods", None) and
             {"POST", "PUT", "PATCH"} & r.methods and not isinstance(r, JSONRoute)]
    assert plain == []
