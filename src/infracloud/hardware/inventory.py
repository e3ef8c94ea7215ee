"""Static inventories of a site's machines: infracloud's YAML (one file per site) and bifrost's
JSON/YAML (`{name: {driver, driver_info, nics, properties, ipv4_address, ...}}`). Both become
the same `Inventory`, validated with every error's place named."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infracloud.core.errors import BadRequest
from infracloud.core.settings import read_text, yaml_error

MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
ROLES = ("compute", "controller")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BmcSpec(_Model):
    driver: Literal["redfish", "ipmi", "fake"]
    address: str = Field(min_length=1, description="redfish: URL; ipmi: host[:port]; fake: name")
    username: str = "admin"
    password: str | None = Field(None, repr=False)
    password_env: str | None = Field(None, description="read the password from this variable")
    options: dict[str, Any] = Field(default_factory=dict)

    def resolved_password(self) -> str:
        if self.password is not None:
            return self.password
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise BadRequest(f"BMC {self.address}: the variable {self.password_env} is not "
                                 f"set")
            return value
        if self.driver == "fake":  # a simulated BMC takes the first password it is given
            return secrets.token_urlsafe(12)
        raise BadRequest(f"BMC {self.address}: a password (or password_env) is needed")


class Expected(_Model):
    cpus: int | None = Field(None, ge=1)
    memory_mb: int | None = Field(None, ge=1)
    disk_gb: int | None = Field(None, ge=1)
    cpu_arch: str | None = None


class MachineSpec(_Model):
    name: str = Field(pattern=NAME)
    bmc: BmcSpec
    macs: list[str] = Field(default_factory=list)
    ipv4_address: str | None = None
    expected: Expected = Expected()
    role: Literal["compute", "controller"] = "compute"

    @field_validator("macs")
    @classmethod
    def _macs(cls, value: list[str]) -> list[str]:
        out = [m.lower().replace("-", ":") for m in value]
        for m in out:
            if not MAC.match(m):
                raise ValueError(f"{m!r} is not a MAC address")
        return out


class Inventory(_Model):
    name: str = Field(pattern=NAME, description="the site")
    machines: list[MachineSpec]

    @model_validator(mode="after")
    def _unique(self) -> Inventory:
        seen: set[str] = set()
        for m in self.machines:
            if m.name in seen:
                raise ValueError(f"machine {m.name!r} is listed twice")
            seen.add(m.name)
        return self


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_infracloud(data: dict[str, Any]) -> dict[str, Any]:
    """`defaults` (optional) are merged under every machine."""
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise BadRequest("defaults: must be a mapping")
    machines = data.get("machines")
    if not isinstance(machines, list):
        raise BadRequest("machines: must be a list")
    return {"name": data.get("name"),
            "machines": [_merge(defaults, m) if isinstance(m, dict) else m for m in machines]}


def _bifrost_machine(key: str, item: dict[str, Any]) -> dict[str, Any]:
    driver = item.get("driver", "ipmi")
    info = item.get("driver_info") or {}
    info = info.get("power", info)  # older bifrost files nest the BMC under "power"
    props = item.get("properties") or {}
    if driver == "redfish":
        options = {k: info[k] for k in ("redfish_system_id",) if k in info}
        bmc = {"driver": "redfish", "address": info.get("redfish_address", ""),
               "username": info.get("redfish_username", "admin"),
               "password": info.get("redfish_password"),
               "options": {"system_id": options["redfish_system_id"]} if options else {}}
    elif driver in ("ipmi", "ipmitool"):
        address = str(info.get("ipmi_address", ""))
        if info.get("ipmi_port"):
            address = f"{address}:{info['ipmi_port']}"
        bmc = {"driver": "ipmi", "address": address,
               "username": info.get("ipmi_username", "admin"),
               "password": info.get("ipmi_password")}
    else:
        bmc = {"driver": driver, "address": info.get("address", key),
               "username": info.get("username", "admin"), "password": info.get("password")}

    def num(name: str) -> int | None:
        value = props.get(name)
        return int(value) if value not in (None, "") else None

    groups = item.get("host_groups") or []
    return {"name": item.get("name", key), "bmc": bmc,
            "macs": [n["mac"] for n in item.get("nics", []) if isinstance(n, dict) and "mac" in n],
            "ipv4_address": item.get("ipv4_address"),
            "expected": {"cpus": num("cpus"), "memory_mb": num("ram"),
                         "disk_gb": num("disk_size"), "cpu_arch": props.get("cpu_arch")},
            "role": "controller" if "controller" in groups else "compute"}


def _from_bifrost(data: dict[str, Any], site: str) -> dict[str, Any]:
    return {"name": site, "machines": [_bifrost_machine(k, v) for k, v in data.items()
                                       if isinstance(v, dict)]}


def parse(text: str, source: str, site: str | None = None) -> Inventory:
    """infracloud YAML (has `machines:`) or a bifrost inventory (name -> machine)."""
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise BadRequest(yaml_error(source, exc)) from None
    if not isinstance(data, dict):
        raise BadRequest(f"{source}: must hold a mapping")
    try:
        if "machines" in data:
            raw = _from_infracloud(data)
        else:
            raw = _from_bifrost(data, site or Path(source).stem)
        return Inventory.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise BadRequest(f"{source}: {where}: {first['msg']}{more}") from None
    except (BadRequest, TypeError, ValueError) as exc:
        raise BadRequest(f"{source}: {exc}") from None


def load(path: Path, site: str | None = None) -> Inventory:
    try:
        text = read_text(path)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return parse(text, str(path), site)
