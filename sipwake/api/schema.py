"""Pieces of the OpenAPI document: each resource module describes its own paths with
these, and openapi.py puts them together. Body schemas are never written here: they
are generated from the Structs the handlers validate and reply with (`components`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from sipwake.api.jsonapi import Error

Json = dict[str, Any]

REF = "#/components/schemas/{name}"
USER_AUTH: list[Json] = [{"digestAuth": []}, {"basicAuth": []}, {"bearerAuth": []}]
SERVICE_AUTH: list[Json] = [{"serviceAuth": []}]


def ref(kind: type[msgspec.Struct]) -> Json:
    return {"$ref": REF.format(name=kind.__name__)}


def returns(body: type[msgspec.Struct] | Json, description: str) -> Json:
    """A response carrying a JSON `body` (a Struct, or a schema written out)."""
    schema = body if isinstance(body, dict) else ref(body)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> Json:
    return returns(Error, description)


def request(kind: type[msgspec.Struct], required: bool = True) -> Json:
    return {"required": required, "content": {"application/json": {"schema": ref(kind)}}}


def query(name: str, schema: Json, description: str = "") -> Json:
    param: Json = {"name": name, "in": "query", "schema": schema}
    if description:
        param["description"] = description
    return param


UNAUTHORIZED: Json = {
    **error("No or bad credentials. `WWW-Authenticate` offers Digest (MD5, SHA-256), "
            "Basic and Bearer."),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}  # fmt: skip
SERVICE_UNAUTHORIZED = error(
    "No or wrong service token (always, while `[http] api_token` is not set). No "
    "`WWW-Authenticate`."
)


def components(kinds: Iterable[type[msgspec.Struct]]) -> Json:
    """JSON Schemas of `kinds` (and the Structs they hold), as msgspec writes them, made
    fit for readers: a string enum says it is a string, a pattern ends in `$`
    (ECMA-262) rather than Python's `\\Z`, a docstring is one paragraph, and a Struct's
    `schema_extra` is merged in."""
    kinds = list(kinds)
    _, schemas = msgspec.json.schema_components(kinds, ref_template=REF)
    for kind in kinds:
        schemas[kind.__name__].update(getattr(kind, "schema_extra", {}))
    for schema in schemas.values():  # a docstring's line breaks are the code's, not prose
        if "description" in schema:
            schema["description"] = " ".join(schema["description"].split())
    _tidy(schemas)
    return schemas


def _tidy(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _tidy(item)
    if not isinstance(node, dict):
        return
    enum = node.get("enum")
    if isinstance(enum, list) and "type" not in node and all(isinstance(v, str) for v in enum):
        node["type"] = "string"
    pattern = node.get("pattern")
    if isinstance(pattern, str) and pattern.endswith("\\Z"):
        node["pattern"] = pattern[:-2] + "$"
    for value in node.values():
        _tidy(value)
