"""Logs: one JSON object per line (or plain text for humans), with the request id of the
request being served on every line it causes.

Python warnings from libraries (a deprecation in asyncssh's imports, say) never reach a user's
terminal as raw lines: `capture_warnings`, called first thing by the `infracloud` command,
routes them through logging, each once. Until a process configures its log they are held
(a bounded number); `configure` then writes them as log lines, and a one-shot command that
logs nothing drops them with the process."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "infracloud_request_id", default=None
)

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


_HELD_MAX = 100
# a captured warning reads "path:line: Category: message\n  source line": the same warning
# raised at several places (a deprecated name used on five lines of a library) is told once
_WARNING_TEXT = re.compile(r"^.*?:\d+: (?P<text>\w+: .*)$", re.MULTILINE)


class _Once(logging.Filter):
    """Lets each warning (category and message, wherever it was raised) through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        m = _WARNING_TEXT.search(text)
        key = m["text"] if m else text
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _Held(logging.Handler):
    """Warnings raised before the log is configured, kept until it is."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < _HELD_MAX:
            self.records.append(record)


def capture_warnings() -> None:
    """Send Python's warnings to the `py.warnings` logger, each once, held until `configure`."""
    logging.captureWarnings(True)
    log = logging.getLogger("py.warnings")
    if not any(isinstance(f, _Once) for f in log.filters):
        log.addFilter(_Once())
    if not any(isinstance(h, _Held) for h in log.handlers):
        log.addHandler(_Held())
        log.propagate = False


def _release_warnings() -> None:
    """From now on warnings go to the configured log: first the ones held until now."""
    log = logging.getLogger("py.warnings")
    held = [h for h in log.handlers if isinstance(h, _Held)]
    for h in held:
        log.removeHandler(h)
    log.propagate = True
    for record in (r for h in held for r in h.records):
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and value is not None and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s%(rid)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


def configure(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own access log is replaced by ours (api.middleware), which carries request ids.
    logging.getLogger("uvicorn.access").disabled = True
    # alembic, and the HTTP clients inside the services (the pool's openstacksdk and token
    # checks), log every step at info: only their warnings are worth a line
    for noisy in ("alembic", "httpx", "keystoneauth", "openstack", "stevedore",
                  "asyncssh"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    _release_warnings()
