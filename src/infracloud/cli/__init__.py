"""The `infracloud` command line: one module per command group, `main` the entry point."""

# first, before any library is imported: their warnings go through logging, never to the
# terminal as raw lines (ops.logging)
from infracloud.ops.logging import capture_warnings

capture_warnings()

from infracloud.cli.main import app, main  # noqa: E402

__all__ = ["app", "main"]
