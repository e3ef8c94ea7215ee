"""requirements.lock and requirements-libvirt.lock (what `make test`, `make demo` and CI
install) keep up with pyproject.toml: every declared dependency is locked at a version its
range allows, with hashes. Edit a range without `make lock` and this fails."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked() -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    lines = [line for name in ("requirements.lock", "requirements-libvirt.lock")
             for line in (ROOT / name).read_text().splitlines()]
    for i, line in enumerate(lines):
        if m := PIN.match(line):
            assert line.rstrip().endswith("\\") and "--hash=sha256:" in lines[i + 1], line
            pins.setdefault(canonicalize_name(m[1]), []).append(m[2])
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    for name in ("build-requirements.in", "libvirt-requirements.in"):
        lines = (ROOT / "tools" / name).read_text().splitlines()
        reqs += [line for line in lines if line.strip() and not line.startswith("#")]
    return [Requirement(r) for r in reqs]


def test_every_dependency_is_locked_within_its_range() -> None:
    pins = locked()
    for req in declared():
        versions = pins.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is not in requirements.lock: run `make lock`"
        assert any(req.specifier.contains(v, prereleases=True) for v in versions), (
            f"requirements.lock has {req.name} {versions}, outside {req}: run `make lock`")
