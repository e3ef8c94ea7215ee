"""The OpenStack config drive: an ISO 9660 image labelled `config-2` holding
`openstack/<version>/{meta_data.json,network_data.json,user_data}` for `latest` and the dated
version `2012-08-10`, as nova makes it (genisoimage -J -r -V config-2). cloud-init and glean
mount it and read those paths, so the image carries Rock Ridge and Joliet names (plain
ISO 9660 names are upper case 8.3-ish and would not match).

`build` writes an image, `read` reads one back (the sandbox driver finds the SSH public keys
this way), `meta_data` and `network_data` make the two standard documents."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pycdlib

LABEL = "config-2"
VERSIONS = ("latest", "2012-08-10")

# real name -> plain ISO 9660 (interchange level 3) name; Rock Ridge and Joliet carry the
# real names, which are what every Linux reader uses.
_ISO_DIRS = {"openstack": "OPENSTACK", "latest": "LATEST", "2012-08-10": "2012_08_10"}
_ISO_FILES = {
    "meta_data.json": "META_DATA.JSON;1",
    "network_data.json": "NETWORK_DATA.JSON;1",
    "user_data": "USER_DATA.;1",
}


class ConfigDriveError(Exception):
    pass


@dataclass(frozen=True)
class ConfigDrive:
    meta_data: dict[str, Any]
    network_data: dict[str, Any]
    user_data: bytes | None


def _add_dir(iso: pycdlib.PyCdlib, parts: list[str]) -> None:
    iso.add_directory(
        iso_path="/" + "/".join(_ISO_DIRS[p] for p in parts),
        rr_name=parts[-1],
        joliet_path="/" + "/".join(parts),
    )


def _add_file(iso: pycdlib.PyCdlib, parts: list[str], name: str, data: bytes) -> None:
    iso.add_fp(
        io.BytesIO(data),
        len(data),
        iso_path="/" + "/".join(_ISO_DIRS[p] for p in parts) + "/" + _ISO_FILES[name],
        rr_name=name,
        joliet_path="/" + "/".join([*parts, name]),
    )


def build(path: Path, *, meta_data: Mapping[str, Any], network_data: Mapping[str, Any],
          user_data: bytes | None) -> None:
    """Write the config drive image to `path` (via a temporary file in the same folder,
    renamed into place, so a reader never sees half an image)."""
    files: dict[str, bytes] = {
        "meta_data.json": json.dumps(meta_data, sort_keys=True).encode(),
        "network_data.json": json.dumps(network_data, sort_keys=True).encode(),
    }
    if user_data is not None:
        files["user_data"] = user_data
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=LABEL, sys_ident="LINUX", joliet=3,
            rock_ridge="1.09", app_ident_str="infracloud")
    try:
        _add_dir(iso, ["openstack"])
        for version in VERSIONS:
            _add_dir(iso, ["openstack", version])
            for name, data in files.items():
                _add_file(iso, ["openstack", version], name, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".")
        try:
            with os.fdopen(fd, "wb") as out:
                iso.write_fp(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        iso.close()


def _get(iso: pycdlib.PyCdlib, rr_path: str) -> bytes | None:
    out = io.BytesIO()
    try:
        iso.get_file_from_iso_fp(out, rr_path=rr_path)
    except pycdlib.pycdlibexception.PyCdlibInvalidInput:
        return None
    return out.getvalue()


def read(path: Path, version: str = "latest") -> ConfigDrive:
    """Read a config drive made by `build` (or by nova: any image with Rock Ridge names)."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (OSError, pycdlib.pycdlibexception.PyCdlibException) as e:
        raise ConfigDriveError(f"cannot open config drive {path}: {e}") from e
    try:
        if not iso.has_rock_ridge():
            raise ConfigDriveError(f"config drive {path} has no Rock Ridge names")
        base = f"/openstack/{version}/"
        meta, net = _get(iso, base + "meta_data.json"), _get(iso, base + "network_data.json")
        if meta is None:
            raise ConfigDriveError(f"config drive {path} has no {base}meta_data.json")
        return ConfigDrive(
            meta_data=json.loads(meta),
            network_data=json.loads(net) if net is not None else {},
            user_data=_get(iso, base + "user_data"),
        )
    except ValueError as e:
        raise ConfigDriveError(f"config drive {path}: bad JSON: {e}") from e
    finally:
        iso.close()


def label(path: Path) -> str:
    """The volume label of an ISO image (what blkid would report), read with pycdlib."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        return iso.pvd.volume_identifier.decode().rstrip()
    finally:
        iso.close()


def meta_data(*, uuid: str, name: str, project_id: str, hostname: str | None = None,
              availability_zone: str = "nova", meta: Mapping[str, str] | None = None,
              public_keys: Mapping[str, str] | None = None,
              launch_index: int = 0) -> dict[str, Any]:
    """The standard meta_data.json. `public_keys` maps key pair names to OpenSSH public key
    lines ("ssh-ed25519 AAAA... comment")."""
    keys = dict(public_keys or {})
    return {
        "uuid": uuid,
        "name": name,
        "hostname": hostname or name,
        "availability_zone": availability_zone,
        "project_id": project_id,
        "launch_index": launch_index,
        "meta": {str(k): str(v) for k, v in (meta or {}).items()},
        "public_keys": keys,
        "keys": [{"name": k, "type": "ssh", "data": v} for k, v in keys.items()],
        "devices": [],
    }


def network_data(ip: str, prefix: int, gateway: str | None, mac: str,
                 dns: Iterable[str] = (), *, mtu: int = 1500, network_id: str = "",
                 link_id: str = "tap0") -> dict[str, Any]:
    """The standard network_data.json for one IPv4 interface with a static address."""
    netmask = str(IPv4Network(f"0.0.0.0/{prefix}").netmask)
    routes = ([{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gateway}]
              if gateway else [])
    dns = list(dns)
    return {
        "links": [{"id": link_id, "type": "phy", "ethernet_mac_address": mac, "mtu": mtu}],
        "networks": [{"id": "network0", "type": "ipv4", "link": link_id, "ip_address": ip,
                      "netmask": netmask, "routes": routes, "network_id": network_id,
                      "services": [{"type": "dns", "address": a} for a in dns]}],
        "services": [{"type": "dns", "address": a} for a in dns],
    }
