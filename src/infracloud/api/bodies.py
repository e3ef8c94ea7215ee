"""JSON request bodies, decoded the same way for every route: a body that no service can store
or walk answers 400 in the service's error shape before any handler sees it. Refused: a lone
UTF-16 surrogate in a string (`"\\ud800"`: not encodable as UTF-8, so neither storable nor
printable), nesting deeper than MAX_DEPTH, integers outside 64 bits (the widest database column),
NaN and infinities (not JSON). Every router declares `route_class=JSONRoute`, so the request a
handler and FastAPI's own body parsing read is a JSONRequest."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

MAX_DEPTH = 32
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_INT = 2**31 - 1  # Nova's db.MAX_INT: the limit of the integer columns (BigInteger aside)
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyError(HTTPException):
    """A 400 that FastAPI's body parsing passes on as it is (an HTTPException), rendered in the
    service's shape by errors.py."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=400, detail=message)


def _int(text: str) -> int:
    value = int(text) if len(text) <= 20 else INT_MAX + 1
    if not INT_MIN <= value <= INT_MAX:
        raise BodyError(f"The request body has an integer outside 64 bits ({text[:24]}"
                        f"{'...' if len(text) > 24 else ''}).")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"The request body has a number out of range ({text[:24]}).")
    return value


def _constant(text: str) -> Any:
    raise BodyError(f"The request body is not valid JSON: {text} is not a JSON value.")


def _check(value: Any) -> None:
    """Depth and lone surrogates, without recursion (the body may be deep)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise BodyError("The request body has a string that is not valid Unicode "
                                "(a lone surrogate escape such as \\ud800).")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise BodyError(f"The request body nests deeper than {MAX_DEPTH} levels.")
            if isinstance(item, dict):
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def decode(raw: bytes) -> Any:
    """The JSON value of a request body, or BodyError. Invalid JSON raises json's own
    JSONDecodeError (FastAPI answers it as a validation error, routes as a malformed body)."""
    try:
        value = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise BodyError(f"The request body nests deeper than {MAX_DEPTH} levels.") from None
    except UnicodeDecodeError:
        raise BodyError("The request body is not valid UTF-8.") from None
    _check(value)
    return value


class JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """A route whose handler, dependencies and body parsing read a JSONRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return route_handler
