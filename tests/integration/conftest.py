from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Running, start_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One demo site (TLS, embedded SQLite) shared by the API tests."""
    running = start_demo(Path(tmp_path_factory.mktemp("demo")))
    yield running
    assert running.stop() == 0, "".join(running.lines)
