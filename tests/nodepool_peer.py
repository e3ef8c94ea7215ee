"""nodepool 11's OpenStack adapter, built the way the launcher builds it: from a nodepool.yaml
loaded by nodepool itself, with the cloud taken from a clouds.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def adapter(clouds_yaml: Path, cloud: str, folder: Path, *, image: str = "ubuntu-noble",
            labels: list[dict[str, Any]] | None = None, **provider: Any) -> Any:
    from nodepool import config as npconfig
    from nodepool.driver.openstack.adapter import OpenStackAdapter

    conf = {
        "zookeeper-servers": [{"host": "127.0.0.1", "port": 2281}],
        "labels": [{"name": n["name"], "min-ready": 0} for n in labels or [
            {"name": "ubuntu-noble"}]],
        "providers": [{
            "name": "infracloud", "driver": "openstack", "cloud": cloud,
            "region-name": "RegionOne",
            "cloud-images": [{"name": "noble", "image-name": image, "username": "zuul"}],
            "pools": [{"name": "main", "max-servers": 4,
                       "labels": labels or [{"name": "ubuntu-noble", "cloud-image": "noble",
                                             "flavor-name": "ci.8g"}]}],
            **provider}],
    }
    path = folder / "nodepool.yaml"
    path.write_text(yaml.safe_dump(conf))
    # nodepool reads clouds.yaml through the environment; keep that to this construction
    previous = os.environ.get("OS_CLIENT_CONFIG_FILE")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds_yaml)
    try:
        return OpenStackAdapter(npconfig.loadConfig(str(path)).providers["infracloud"])
    finally:
        if previous is None:
            os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
        else:
            os.environ["OS_CLIENT_CONFIG_FILE"] = previous
