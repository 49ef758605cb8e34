"""JSON in, JSON out: what every API handler needs from a hostile request.

Each request and response body is declared once, as a msgspec `Struct`: `read_body`
validates a request against it, `reply` writes a response from it, and the OpenAPI
document publishes it (schema.py). String rules go through `text()`.

Errors have one shape, `{"error": <code>, "field": <name or null>, "detail": <text>}`
(`api_error`), so an app developer always learns which field was wrong and why.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import msgspec
import msgspec.inspect as mi
from aiohttp import web
from aiohttp.typedefs import LooseHeaders

log = logging.getLogger("sipwake.api")

S = TypeVar("S", bound=msgspec.Struct)


class Error(msgspec.Struct):
    """Every error the API answers has this shape; some add keys (a 409 names the
    other `device_id`)."""

    error: str
    field: Annotated[str | None, msgspec.Meta(description="the body field or parameter at fault")]
    detail: str


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
    it as the response), its body an `Error` plus `extra` keys."""
    body = json.dumps({**msgspec.to_builtins(Error(error, field, detail)), **extra})
    return _ERRORS[status](headers=headers, text=body, content_type="application/json")


def invalid(field: str | None, detail: str) -> web.HTTPError:
    """422: the body parsed, but `field` is missing, of the wrong type or out of range."""
    return api_error(422, "invalid", detail, field)


def reply(
    body: msgspec.Struct, status: int = 200, headers: LooseHeaders | None = None
) -> web.Response:
    """A response body as its Struct declares it: fields in declared order, UNSET ones
    left out."""
    return web.json_response(msgspec.to_builtins(body), status=status, headers=headers)


def view(kind: type[S], obj: object) -> S:
    """A response Struct filled from the attributes of the same names of `obj`."""
    return kind(**{name: getattr(obj, name) for name in kind.__struct_fields__})


def text(
    description: str = "", *, max_length: int | None = None, pattern: str = "", says: str = ""
) -> msgspec.Meta:
    """A string field's rules, for `Annotated[str, text(...)]`. A non-empty value must
    match `pattern` whole (the empty string always means "none"); `says` words a
    mismatch (else "does not match <pattern>")."""
    return msgspec.Meta(
        description=description or None,
        max_length=max_length,
        pattern=f"^(?:{pattern})?\\Z" if pattern else None,  # published with $ (schema.py)
        extra={"pattern": pattern, "says": says} if pattern else None,
    )


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


async def read_body(request: web.Request, kind: type[S], limit: int) -> S:
    """The request body as the Struct `kind` declares it (`read_json_object`, then
    `convert`)."""
    return convert(await read_json_object(request, limit), kind)


def convert(body: dict[str, Any], kind: type[S]) -> S:
    """A JSON object as the Struct `kind` declares it, or 422 naming the first field
    at fault: an unknown one, then the declared ones in order."""
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise invalid(*_explain(kind, body, exc)) from None


def _explain(
    kind: type[msgspec.Struct], body: dict[str, Any], exc: msgspec.ValidationError
) -> tuple[str | None, str]:
    """(field, why) for a body msgspec refused, worded from the declaration."""
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    names = [f.encode_name for f in info.fields]
    if info.forbid_unknown_fields:
        for name in body:
            if name not in names:
                return name, f"unknown field (accepted: {', '.join(names)})"
    for f in info.fields:
        if f.encode_name not in body:
            if f.required:
                return f.encode_name, "required"
        elif problem := _problem(f.type, body[f.encode_name]):
            return f.encode_name, problem
    said = str(exc)  # a rule the wording above does not know: msgspec's own words
    where = re.search(r"`\$\.([^`.\[]+)", said) or re.search(r"field `([^`]+)`", said)
    return (where.group(1) if where else None), said.split(" - at ")[0]


def _problem(t: mi.Type, value: Any) -> str | None:
    """What is wrong with `value` as a `t`, or None."""
    extra: dict[str, Any] = {}
    if isinstance(t, mi.Metadata):
        extra, t = t.extra or {}, t.type
    if isinstance(t, mi.UnionType):  # `X | None` (an `X | UnsetType` is just an `X` here)
        if value is None and any(isinstance(o, mi.NoneType) for o in t.types):
            return None
        problems = [_problem(o, value) for o in t.types if not isinstance(o, mi.NoneType)]
        return None if None in problems else problems[0]
    if isinstance(t, mi.BoolType):
        return None if isinstance(value, bool) else f"must be true or false, got {_a(value)}"
    if isinstance(t, mi.IntType):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer, got {_a(value)}"
        if (t.ge is not None and value < t.ge) or (t.le is not None and value > t.le):
            if t.le is None:
                return f"must be an integer of at least {t.ge}"
            if t.ge is None:
                return f"must be an integer of at most {t.le}"
            return f"must be an integer from {t.ge} to {t.le}"
        return None
    if isinstance(t, mi.StrType | mi.LiteralType) and not isinstance(value, str):
        return f"must be a string, got {_a(value)}"
    if isinstance(t, mi.LiteralType):
        if value in t.values:
            return None
        return f"must be one of {', '.join(map(str, t.values))}, got {value[:40]!r}"
    if isinstance(t, mi.StrType):
        if t.max_length is not None and len(value) > t.max_length:
            return f"longer than {t.max_length} characters"
        if t.pattern and not re.search(t.pattern, value):
            return extra.get("says") or f"does not match {extra.get('pattern', t.pattern)}"
        return None
    if isinstance(t, mi.ListType):
        if not isinstance(value, list):
            return f"must be a list, got {_a(value)}"
        for i, item in enumerate(value):
            if problem := _problem(t.item_type, item):
                return f"item {i}: {problem}"
        if t.max_length is not None and len(value) > t.max_length:
            return f"at most {t.max_length} items"
    return None


def _a(value: Any) -> str:
    """The JSON type of a value, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
