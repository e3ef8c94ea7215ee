"""The pool's configuration file (YAML, nodepool's key names where nodepool has the setting):
providers reached through a clouds.yaml cloud, their pools of labels, the labels' min-ready,
and the requestors' shares of capacity when demand exceeds it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infracloud.core.settings import ListenConfig, TLSConfig

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Label(_Section):
    name: str = Field(pattern=NAME)
    min_ready: int = Field(0, ge=0, alias="min-ready", description="nodes kept ready")
    max_ready_age: int = Field(0, ge=0, alias="max-ready-age",
                               description="seconds a ready node may wait; 0: no limit")


class DiskImage(_Section):
    name: str = Field(pattern=NAME)
    file: Path = Field(description="local image file, uploaded to every provider that uses it")
    disk_format: str = Field("qcow2", alias="disk-format")
    container_format: str = Field("bare", alias="container-format")


class PoolLabel(_Section):
    name: str = Field(pattern=NAME, description="a label defined under `labels`")
    image: str | None = Field(None, min_length=1,
                              description="image name or id already on the provider")
    diskimage: str | None = Field(None, description="a `diskimages` entry the pool uploads")
    flavor: str = Field(min_length=1, alias="flavor-name")
    network: str | None = Field(None, description="network name; default: the provider's")
    key_name: str | None = Field(None, alias="key-name")
    username: str = Field("root", description="the SSH user CI systems log in as")
    connection_port: int = Field(22, ge=1, le=65535, alias="connection-port")

    @model_validator(mode="after")
    def _one_image(self) -> PoolLabel:
        if (self.image is None) == (self.diskimage is None):
            raise ValueError(f"label {self.name}: give exactly one of image and diskimage")
        return self


class ProviderPool(_Section):
    name: str = Field("main", pattern=NAME)
    max_servers: int | None = Field(None, ge=0, alias="max-servers")
    host_key_checking: bool = Field(True, alias="host-key-checking",
                                    description="wait for SSH and record the host keys")
    labels: list[PoolLabel] = Field(min_length=1)


class Provider(_Section):
    name: str = Field(pattern=NAME)
    cloud: str = Field(min_length=1, description="cloud name in clouds.yaml")
    region: str | None = Field(None, alias="region-name")
    clouds_file: Path | None = Field(None, alias="clouds-file",
                                     description="default: OS_CLIENT_CONFIG_FILE or the usual "
                                     "places")
    max_servers: int = Field(10, ge=0, alias="max-servers",
                             description="0 drains the provider: no new launches")
    boot_timeout: float = Field(120, gt=0, alias="boot-timeout",
                                description="seconds from ACTIVE to SSH answering")
    launch_timeout: float = Field(3600, gt=0, alias="launch-timeout",
                                  description="seconds from create to ACTIVE")
    launch_retries: int = Field(3, ge=1, le=20, alias="launch-retries")
    max_concurrency: int = Field(16, ge=1, le=256, alias="max-concurrency",
                                 description="API calls in flight at once")
    status_interval: float = Field(1.0, gt=0, le=60, alias="status-interval",
                                   description="seconds between server-list polls while "
                                   "launching or deleting")
    pools: list[ProviderPool] = Field(min_length=1)

    def pool_label(self, label: str) -> tuple[ProviderPool, PoolLabel] | None:
        for pool in self.pools:
            for pl in pool.labels:
                if pl.name == label:
                    return pool, pl
        return None


class Requestor(_Section):
    name: str = Field(pattern=NAME)
    share: float = Field(1.0, gt=0, description="weight in the fair share of capacity")


class Auth(_Section):
    static_token_file: Path | None = Field(
        None, alias="static-token-file", description="a file holding the one token accepted")
    identity_url: str | list[str] | None = Field(
        None, alias="identity-url",
        description="Keystone base URL (…/identity): tokens are validated there and the "
        "requestor is the token's project; several (a list, or URL,URL): the next is asked "
        "when one refuses or answers 502/503/504")
    cacert: Path | None = Field(None, description="CA to trust for identity-url")

    @model_validator(mode="after")
    def _one(self) -> Auth:
        if (self.static_token_file is None) == (self.identity_url is None):
            raise ValueError("auth: give exactly one of static-token-file and identity-url")
        return self


class Alerts(_Section):
    """The pool's health rules (the log, /pool/v1/alerts and, when set, a webhook)."""

    interval: float = Field(10, gt=0, le=3600, description="seconds between rule checks")
    webhook_url: str | None = Field(None, alias="webhook-url",
                                    description="JSON POST of every firing and resolved")
    webhook_timeout: float = Field(5, gt=0, le=60, alias="webhook-timeout")
    request_wait_minutes: float = Field(
        10, gt=0, alias="request-wait-minutes",
        description="alert on requests waiting longer than this")
    launch_failure_rate: float = Field(
        0.2, ge=0, le=1, alias="launch-failure-rate",
        description="alert when more of a provider's launches in the window failed")
    launch_window_minutes: float = Field(15, gt=0, le=24 * 60, alias="launch-window-minutes")
    launch_min_count: int = Field(5, ge=1, alias="launch-min-count",
                                  description="launches needed before the rate is judged")


class PoolConfig(_Section):
    name: str = Field("infracloud", pattern=NAME,
                      description="names this pool in the metadata of what it creates")
    listen: ListenConfig = Field(default_factory=lambda: ListenConfig(port=8450))
    tls: TLSConfig | None = None
    database: str | None = Field(None, description="SQLAlchemy URL; default: pool.db beside "
                                 "this file")
    auth: Auth | None = Field(None, description="required to serve the API beyond loopback")
    cleanup_interval: float = Field(60, gt=0, alias="cleanup-interval",
                                    description="seconds between leak scans (servers, ports)")
    diskimages: list[DiskImage] = Field(default_factory=list)
    labels: list[Label] = Field(min_length=1)
    providers: list[Provider] = Field(min_length=1)
    requestors: list[Requestor] = Field(default_factory=list)
    default_share: float = Field(1.0, gt=0, alias="default-share",
                                 description="share of requestors not listed")
    alerts: Alerts = Field(default_factory=Alerts)
    public_lists: bool = Field(
        False, alias="public-lists",
        description="serve /node-list and /request-list (every project's nodes: addresses, "
        "SSH ports) to anyone, as nodepool's web app does; else a token, scoped to its "
        "project")

    @model_validator(mode="after")
    def _consistent(self) -> PoolConfig:
        for kind, names in (("label", [label.name for label in self.labels]),
                            ("provider", [p.name for p in self.providers]),
                            ("requestor", [r.name for r in self.requestors])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique: {', '.join(dupes)}")
        known = {label.name for label in self.labels}
        images = {d.name for d in self.diskimages}
        for p in self.providers:
            for pool in p.pools:
                for pl in pool.labels:
                    if pl.name not in known:
                        raise ValueError(f"provider {p.name}, pool {pool.name}: label "
                                         f"{pl.name} is not defined under labels")
                    if pl.diskimage is not None and pl.diskimage not in images:
                        raise ValueError(f"provider {p.name}, pool {pool.name}: diskimage "
                                         f"{pl.diskimage} is not defined under diskimages")
        return self

    def diskimage(self, name: str) -> DiskImage:
        return next(d for d in self.diskimages if d.name == name)

    def label(self, name: str) -> Label | None:
        return next((label for label in self.labels if label.name == name), None)

    def shares(self) -> dict[str, float]:
        return {r.name: r.share for r in self.requestors}

    def providers_for(self, label: str) -> list[Provider]:
        return [p for p in self.providers
                if any(pl.name == label for pool in p.pools for pl in pool.labels)]
