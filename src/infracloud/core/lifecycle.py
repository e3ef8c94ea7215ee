"""The process is stopping: long-polls answer at once instead of holding the shutdown."""

from __future__ import annotations

import threading

stopping = threading.Event()
