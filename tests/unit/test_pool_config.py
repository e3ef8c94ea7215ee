"""The pool's configuration file: nodepool's key names, cross-checks, errors with lines."""

from __future__ import annotations

from pathlib import Path

from infracloud.core.settings import validate_file
from infracloud.pool.config import PoolConfig

GOOD = """
labels:
  - {name: ubuntu-noble, min-ready: 2, max-ready-age: 3600}
  - {name: fedora-43}
providers:
  - name: vanilla
    cloud: infracloud
    region-name: vanilla
    max-servers: 40
    boot-timeout: 60
    pools:
      - name: main
        labels:
          - {name: ubuntu-noble, image: ubuntu-noble, flavor-name: ci.8g, key-name: zuul}
  - name: chocolate
    cloud: chocolate
    max-servers: 0
    pools:
      - labels:
          - {name: ubuntu-noble, image: ubuntu-noble, flavor-name: ci.8g}
          - {name: fedora-43, image: fedora-43, flavor-name: ci.8g, username: fedora}
requestors:
  - {name: zuul, share: 3}
  - {name: copr}
"""


def test_a_nodepool_style_file_reads(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(GOOD)
    config, errors = validate_file(path, PoolConfig)
    assert errors == [] and isinstance(config, PoolConfig)
    vanilla, chocolate = config.providers
    assert vanilla.max_servers == 40 and vanilla.region == "vanilla"
    assert vanilla.pools[0].labels[0].flavor == "ci.8g"
    assert chocolate.max_servers == 0 and chocolate.launch_retries == 3
    assert config.labels[0].min_ready == 2
    assert config.shares() == {"zuul": 3.0, "copr": 1.0}
    assert [p.name for p in config.providers_for("fedora-43")] == ["chocolate"]
    assert [p.name for p in config.providers_for("ubuntu-noble")] == ["vanilla", "chocolate"]


def test_errors_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(GOOD.replace("max-servers: 40", "max-servers: -1")
                    .replace("boot-timeout: 60", "boot-timeot: 60"))
    _, errors = validate_file(path, PoolConfig)
    assert f"{path}:9: providers.0.max-servers: Input should be greater than or equal to 0" \
        in errors
    assert f"{path}:10: providers.0.boot-timeot: unknown setting" in errors


def test_undefined_labels_and_duplicates_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(GOOD.replace("{name: fedora-43}", "{name: ubuntu-noble}"))
    _, errors = validate_file(path, PoolConfig)
    assert len(errors) == 1 and "label names must be unique: ubuntu-noble" in errors[0]
    path.write_text(GOOD.replace("  - {name: fedora-43}\n", ""))
    _, errors = validate_file(path, PoolConfig)
    assert "label fedora-43 is not defined under labels" in errors[0]
