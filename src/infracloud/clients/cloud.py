"""A small client for infracloud's own commands (`infracloud hardware`, `capacity`, `status`):
logs in to a cloud as every OpenStack tool does (openstack.config: clouds.yaml and secure.yaml,
or the OS_* variables; passwords, application credentials, any keystoneauth plugin; region and
interface) and calls the controller. `infracloud pool` uses the login alone (`login`)."""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from infracloud.clients import http
from infracloud.clients.http import ClientError
from infracloud.core.errors import BadRequest

if TYPE_CHECKING:
    from keystoneauth1.access import AccessInfo
    from openstack.config.cloud_region import CloudRegion

__all__ = ["Client", "ClientError", "Login", "cloud_region", "cloud_verify", "login"]

DEMO = "the demo writes one: `source var/demo/infracloud.env`"
SEARCHED = "./clouds.yaml, ~/.config/openstack/ or /etc/openstack/"


def admin_cloud(cloud: str | None = None) -> str | None:
    """The cloud infracloud's admin commands use: --os-cloud, else $INFRACLOUD_ADMIN_CLOUD,
    else $OS_CLOUD."""
    return cloud or os.environ.get("INFRACLOUD_ADMIN_CLOUD") or os.environ.get("OS_CLOUD")


def cloud_region(cloud: str | None = None, *, clouds_file: Path | None = None,
                 timeout: float = 30) -> CloudRegion:
    """The configuration of `cloud` (or the admin cloud; or, with no name, the cloud the
    OS_* variables describe), as openstack.config reads it. $OS_CLIENT_CONFIG_FILE, or
    `clouds_file`, is the only clouds.yaml read when set."""
    import openstack.config
    import openstack.exceptions
    from keystoneauth1 import exceptions as ka

    only = clouds_file or os.environ.get("OS_CLIENT_CONFIG_FILE")
    try:
        config = openstack.config.OpenStackConfig(
            config_files=[str(only)] if only else None, app_name="infracloud",
            app_version=http.version())
    except openstack.exceptions.ConfigException as exc:
        raise ClientError(str(exc)) from None
    clouds = config.cloud_config["clouds"]
    from_env = config.envvar_key in clouds  # a file may not use that name
    path = config.config_filename
    in_file = sorted(set(clouds) - {config.envvar_key}) if path else []
    name = admin_cloud(cloud) or (config.envvar_key if from_env else None)
    where = f"no clouds.yaml at {only or SEARCHED}"
    if name is None:
        if path is None:
            raise ClientError(f"which cloud? {where} and no OS_AUTH_URL ({DEMO})")
        raise ClientError(f"which cloud? pass --os-cloud or set INFRACLOUD_ADMIN_CLOUD or "
                          f"OS_CLOUD (clouds in {path}: {', '.join(in_file)})")
    if name not in clouds:
        if path is None:
            raise ClientError(f"cloud {name!r} not found: {where} ({DEMO})")
        raise ClientError(f"cloud {name!r} is not in {path} (clouds: {', '.join(in_file)})")
    try:
        return config.get_one(name, api_timeout=timeout)
    except (openstack.exceptions.ConfigException, ka.ClientException) as exc:
        raise ClientError(f"cloud {name!r}: {exc}") from None


def cloud_verify(cloud: str | None, *, clouds_file: Path | None = None) -> str | bool:
    """How to verify the cloud's TLS: its CA file (`cacert`), else its `verify` setting."""
    verify = cloud_region(cloud, clouds_file=clouds_file).get_requests_verify_args()[0]
    return True if verify is None else verify


@dataclass(frozen=True)
class Login:
    """A login to a cloud: its Keystone token and catalog, and how to verify its TLS."""

    cloud: str
    token: str
    verify: str | bool  # a CA file, or whether to verify against the system's CAs
    region: CloudRegion
    access: AccessInfo

    def endpoint(self, service_type: str) -> str:
        """The service's URL: the cloud's `<service>_endpoint_override`, else the catalog's
        for the cloud's interface (default public) and region."""
        from keystoneauth1 import exceptions as ka

        url = self.region.get_endpoint(service_type)
        if not url and self.access.service_catalog is not None:
            try:
                url = self.access.service_catalog.url_for(
                    service_type=service_type,
                    interface=self.region.get_interface(service_type) or "public",
                    region_name=self.region.get_region_name(service_type) or None)
            except ka.EndpointNotFound:
                url = None
        if not url:
            raise ClientError(f"cloud {self.cloud!r} has no {service_type} service in its "
                              f"catalog")
        return str(url).rstrip("/")


def login(cloud: str | None = None, timeout: float = 30, *,
          clouds_file: Path | None = None) -> Login:
    """Log in to a cloud (see `cloud_region`) with its keystoneauth plugin."""
    from keystoneauth1 import exceptions as ka

    region = cloud_region(cloud, clouds_file=clouds_file, timeout=timeout)
    name = region.name
    url = (region.config.get("auth") or {}).get("auth_url", "")
    try:
        with _quiet("keystoneauth"):  # its warnings before the error say it again
            session = region.get_session()
            token = session.get_token()
            access = session.auth.get_access(session)  # type: ignore[union-attr]
    except ka.ClientException as exc:
        chain = _chain(exc)
        status = next((e.http_status for e in chain if isinstance(e, ka.HttpError)), None)
        if status is not None:
            raise ClientError(f"login to cloud {name!r} failed: HTTP {status}") from None
        if any(isinstance(e, ka.ConnectionError) for e in chain):
            raise ClientError(f"cannot reach the controller at {url}: {_reason(chain)}"
                              ) from None
        raise ClientError(f"login to cloud {name!r} failed: {exc}") from None
    if not token:
        raise ClientError(f"login to cloud {name!r} failed: no token")
    verify = region.get_requests_verify_args()[0]
    return Login(name, token, True if verify is None else verify, region, access)


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, down to the socket's error."""
    chain: list[BaseException] = []
    at: BaseException | None = exc
    while at is not None and at not in chain:
        chain.append(at)
        at = at.__cause__ or at.__context__
    return chain


def _reason(chain: list[BaseException]) -> str:
    """The system's word for why a connection failed ("[Errno 111] Connection refused", a
    certificate that does not verify), else the outermost message."""
    for e in reversed(chain):
        if isinstance(e, ssl.SSLError | OSError) and type(e).__module__ in ("builtins", "ssl"):
            return str(e)
    return str(chain[0])


class Client:
    def __init__(self, cloud: str | None = None, timeout: float = 30, *,
                 clouds_file: Path | None = None, url: str | None = None,
                 cacert: Path | None = None) -> None:
        """Logs in to `cloud` (or $INFRACLOUD_ADMIN_CLOUD / $OS_CLOUD, or the OS_* variables'
        cloud); with `url` and no cloud named, calls the controller at `url` without a token
        (the open operations views)."""
        if url and not admin_cloud(cloud):
            self.http = http.client("cli", verify=cacert or True, timeout=timeout)
            self.base = url.rstrip("/")
            return
        session = login(cloud, timeout, clouds_file=clouds_file)
        self.http = http.client("cli", verify=session.verify, timeout=timeout,
                                headers={"X-Auth-Token": session.token})
        self.base = session.endpoint("baremetal").removesuffix("/baremetal")

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
