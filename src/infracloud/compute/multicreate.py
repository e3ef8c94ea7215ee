"""Multi-create's reservation ids: every server of one create request carries the same one
(nova's `r-` and eight characters), `return_reservation_id` answers it and the server list
filters by it."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.digits + string.ascii_lowercase


def new_reservation_id() -> str:
    return "r-" + "".join(secrets.choice(ALPHABET) for _ in range(8))
