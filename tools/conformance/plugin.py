"""A pytest plugin (-p tools.conformance.plugin): tests the skip list says cannot run here
are marked skipped, with the list's reason. `fails:` entries run as any other test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tools.conformance import skiplist

SKIPS_ENV = "INFRACLOUD_CONFORMANCE_SKIPS"
RUN_SKIPPED_ENV = "INFRACLOUD_CONFORMANCE_RUN_SKIPPED"  # "1": run the `skip:` tests too


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = os.environ.get(SKIPS_ENV)
    if not path or os.environ.get(RUN_SKIPPED_ENV) == "1":
        return
    skips = skiplist.load(Path(path))
    for item in items:
        entry = skips.find(item.nodeid)
        if entry is not None and entry.kind == "skip":
            item.add_marker(pytest.mark.skip(reason=f"skip list: {entry.reason}"))
