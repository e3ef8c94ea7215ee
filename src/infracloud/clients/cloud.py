"""A small client for infracloud's own commands (`infracloud hardware`, `capacity`): logs in
with a cloud from clouds.yaml, as the openstack CLI does, and calls the controller.
`infracloud pool` uses the login alone (`password_login`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from infracloud.clients import http
from infracloud.clients.http import ClientError
from infracloud.core.errors import BadRequest

CLOUDS_FILES = (Path("clouds.yaml"), Path.home() / ".config/openstack/clouds.yaml",
                Path("/etc/openstack/clouds.yaml"))


def _clouds_file() -> Path:
    env = os.environ.get("OS_CLIENT_CONFIG_FILE")
    if env:
        return Path(env)
    for path in CLOUDS_FILES:
        if path.exists():
            return path
    raise ClientError("no clouds.yaml: set OS_CLIENT_CONFIG_FILE (the demo writes one; "
                      "`source var/demo/infracloud.env`)")


def cloud_entry(cloud: str | None, clouds_file: Path | None = None
                ) -> tuple[str, dict[str, Any]]:
    path = clouds_file or _clouds_file()
    try:
        clouds = (yaml.safe_load(path.read_text()) or {}).get("clouds") or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ClientError(f"{path}: cannot read: {exc}") from None
    name = cloud or os.environ.get("INFRACLOUD_ADMIN_CLOUD") or os.environ.get("OS_CLOUD")
    if not name:
        raise ClientError("which cloud? pass --os-cloud or set INFRACLOUD_ADMIN_CLOUD")
    if name not in clouds:
        raise ClientError(f"cloud {name!r} is not in {path} (clouds: {', '.join(clouds)})")
    return name, clouds[name]


@dataclass(frozen=True)
class Login:
    """A password login to a clouds.yaml cloud: its Keystone token and catalog, and how to
    verify the cloud's TLS (its `cacert` file, else its `verify` setting)."""

    cloud: str
    token: str
    verify: Any  # str (a CA file) or bool
    catalog: list[dict[str, Any]]


def password_login(cloud: str | None, timeout: float = 30, *,
                   clouds_file: Path | None = None) -> Login:
    """Log in to a cloud of clouds.yaml with its password, as the openstack CLI does."""
    name, entry = cloud_entry(cloud, clouds_file)
    auth = entry.get("auth") or {}
    verify: Any = entry.get("cacert") or entry.get("verify", True)
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": auth.get("username"), "password": auth.get("password"),
        "domain": {"name": auth.get("user_domain_name", "Default")}}}},
        "scope": {"project": {"name": auth.get("project_name"), "domain": {
            "name": auth.get("project_domain_name", "Default")}}}}}
    url = str(auth.get("auth_url", "")).rstrip("/")
    with http.client("cli", verify=verify, timeout=timeout) as c:
        try:
            r = c.post(f"{url}/v3/auth/tokens", json=body)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the controller at {url}: {exc}") from None
    if r.status_code != 201:
        raise ClientError(f"login to cloud {name!r} failed: HTTP {r.status_code}")
    return Login(name, r.headers["X-Subject-Token"], verify,
                 r.json()["token"].get("catalog", []))


class Client:
    def __init__(self, cloud: str | None = None, timeout: float = 30, *,
                 clouds_file: Path | None = None, url: str | None = None,
                 cacert: Path | None = None) -> None:
        """Logs in to `cloud` (or $INFRACLOUD_ADMIN_CLOUD / $OS_CLOUD); with `url` and no
        cloud, calls the controller at `url` without a token (the open operations views)."""
        if url and not (cloud or os.environ.get("INFRACLOUD_ADMIN_CLOUD")
                        or os.environ.get("OS_CLOUD")):
            self.http = http.client("cli", verify=cacert or True, timeout=timeout)
            self.base = url.rstrip("/")
            return
        login = password_login(cloud, timeout, clouds_file=clouds_file)
        self.http = http.client("cli", verify=login.verify, timeout=timeout)
        self.http.headers["X-Auth-Token"] = login.token
        self.base = self._endpoint(login.catalog, "baremetal", login.cloud
                                   ).removesuffix("/baremetal")

    @staticmethod
    def _endpoint(catalog: list[dict[str, Any]], kind: str, cloud: str) -> str:
        for service in catalog:
            if service.get("type") == kind:
                for ep in service.get("endpoints", []):
                    if ep.get("interface") == "public":
                        return str(ep["url"]).rstrip("/")
        raise ClientError(f"cloud {cloud!r} has no {kind} service in its catalog")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.raw(method, path, **kwargs)
        return r.json() if r.content else None

    def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer of a successful call, whatever its type (CSV, PNG)."""
        headers = {"X-OpenStack-Ironic-API-Version": "latest"} if path.startswith(
            "/baremetal") else {}
        try:
            r = self.http.request(method, self.base + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"{method} {path}: {exc}") from None
        if r.status_code >= 400:
            raise BadRequest(f"{method} {path}: HTTP {r.status_code}: {_message(r)}")
        return r

    def stream(self, path: str, **kwargs: Any) -> Iterator[str]:
        """The lines of a streamed GET (JSON lines exports)."""
        try:
            with self.http.stream("GET", self.base + path, **kwargs) as r:
                if r.status_code >= 400:
                    r.read()
                    raise BadRequest(f"GET {path}: HTTP {r.status_code}: {_message(r)}")
                yield from r.iter_lines()
        except httpx.HTTPError as exc:
            raise ClientError(f"GET {path}: {exc}") from None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(body, dict) and "error_message" in body:
        try:
            return str(json.loads(body["error_message"]).get("faultstring"))
        except (ValueError, AttributeError):
            return str(body["error_message"])
    for value in body.values() if isinstance(body, dict) else []:
        if isinstance(value, dict) and "message" in value:
            return str(value["message"])
    return r.text[:300]
