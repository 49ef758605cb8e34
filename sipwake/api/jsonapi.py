"""JSON in, JSON errors out: what every API handler needs from a hostile request.

Errors have one shape, `{"error": <code>, "field": <name or null>, "detail": <text>}`,
so an app developer always learns which field was wrong and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.typedefs import LooseHeaders

log = logging.getLogger("sipwake.api")

_ERRORS: dict[int, Callable[..., web.HTTPError]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    410: web.HTTPGone,
    413: partial(web.HTTPRequestEntityTooLarge, 0),
    422: web.HTTPUnprocessableEntity,
    503: web.HTTPServiceUnavailable,
}


def api_error(
    status: int, error: str, detail: str, field: str | None = None, /, *,
    headers: LooseHeaders | None = None, **extra: Any,
) -> web.HTTPError:
    """Every error the API answers: an exception for a handler to raise (aiohttp sends
    it as the response), its body `{"error", "field", "detail"}` plus `extra` keys."""
    body = json.dumps({"error": error, "field": field, "detail": detail, **extra})
    return _ERRORS[status](headers=headers, text=body, content_type="application/json")


def invalid(field: str, detail: str) -> web.HTTPError:
    """422: the body parsed, but `field` is missing, of the wrong type or out of range."""
    return api_error(422, "invalid", detail, field)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)  # json.loads would silently keep the last one
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object: 413 beyond `limit` bytes, 400 when it is
    not JSON or not an object. Never reads more than `limit + 1` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise api_error(413, "too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():  # also bounds chunked bodies
        size += len(chunk)
        if size > limit:
            raise api_error(413, "too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        value = json.loads(raw, object_pairs_hook=_object, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise api_error(400, "bad_json", str(exc), exc.key) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        log.info("%s %s: body is not JSON: %s", request.method, request.path, exc)
        raise api_error(400, "bad_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise api_error(400, "bad_json", "body must be a JSON object")
    return value

