"""The pool's configuration file (YAML, nodepool's key names where nodepool has the setting):
providers reached through a clouds.yaml cloud, their pools of labels, the labels' min-ready,
and the requestors' shares of capacity when demand exceeds it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Label(_Section):
    name: str = Field(pattern=NAME)
    min_ready: int = Field(0, ge=0, alias="min-ready", description="nodes kept ready")
    max_ready_age: int = Field(0, ge=0, alias="max-ready-age",
                               description="seconds a ready node may wait; 0: no limit")


class PoolLabel(_Section):
    name: str = Field(pattern=NAME, description="a label defined under `labels`")
    image: str = Field(min_length=1, description="image name or id on the provider")
    flavor: str = Field(min_length=1, alias="flavor-name")
    network: str | None = Field(None, description="network name; default: the provider's")
    key_name: str | None = Field(None, alias="key-name")
    username: str = Field("root", description="the SSH user CI systems log in as")


class ProviderPool(_Section):
    name: str = Field("main", pattern=NAME)
    max_servers: int | None = Field(None, ge=0, alias="max-servers")
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
    pools: list[ProviderPool] = Field(min_length=1)


class Requestor(_Section):
    name: str = Field(pattern=NAME)
    share: float = Field(1.0, gt=0, description="weight in the fair share of capacity")


class PoolConfig(_Section):
    labels: list[Label] = Field(min_length=1)
    providers: list[Provider] = Field(min_length=1)
    requestors: list[Requestor] = Field(default_factory=list)
    default_share: float = Field(1.0, gt=0, alias="default-share",
                                 description="share of requestors not listed")

    @model_validator(mode="after")
    def _consistent(self) -> PoolConfig:
        for kind, names in (("label", [label.name for label in self.labels]),
                            ("provider", [p.name for p in self.providers]),
                            ("requestor", [r.name for r in self.requestors])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique: {', '.join(dupes)}")
        known = {label.name for label in self.labels}
        for p in self.providers:
            for pool in p.pools:
                for pl in pool.labels:
                    if pl.name not in known:
                        raise ValueError(f"provider {p.name}, pool {pool.name}: label "
                                         f"{pl.name} is not defined under labels")
        return self

    def shares(self) -> dict[str, float]:
        return {r.name: r.share for r in self.requestors}

    def providers_for(self, label: str) -> list[Provider]:
        return [p for p in self.providers
                if any(pl.name == label for pool in p.pools for pl in pool.labels)]
