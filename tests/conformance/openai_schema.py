"""Validate a JSON body against one schema of OpenAI's published OpenAPI description.

The description (``openai-openapi.json`` beside this module, spec version 2.3.0) says
``openapi: 3.1.0`` but still writes two OpenAPI 3.0 keywords that JSON Schema 2020-12 reads
differently, so they are translated once, when the file is loaded:

* ``nullable: true`` means "or null": it becomes ``"null"`` in ``type`` (and ``None`` in
  ``enum``), or, where there is no ``type`` to extend (a ``$ref``, an ``anyOf``...), an
  ``anyOf`` of the schema and ``{"type": "null"}``. That covers a stream chunk's ``usage``
  (``{"$ref": CompletionUsage, "nullable": true}``), which the live API and the official SDK
  send as ``null`` on every chunk but the last.
* ``exclusiveMinimum: true`` / ``exclusiveMaximum: true`` beside ``minimum`` / ``maximum`` is
  the 3.0 boolean form; 2020-12 wants the bound itself.

    errors_for("CreateChatCompletionStreamResponse", chunk)  # [] when it conforms
    errors_for("ErrorResponse", {"error": {"message": "no"}})
    # -> ["error: 'type' is a required property", "error: 'param' is a required property", ...]

Command line, from the repository root:
``python -m tests.conformance.openai_schema CreateChatCompletionResponse body.json``.
"""
from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .reporting import problems

__all__ = ["SPEC_PATH", "errors_for", "schema_names", "spec_version"]

SPEC_PATH: Final = Path(__file__).with_name("openai-openapi.json")
"""OpenAI's OpenAPI description, vendored (see README.md in this folder for its source)."""

_SPEC_URI: Final = "urn:hookgate:openai-openapi"
_ANNOTATIONS: Final = frozenset(
    {"description", "title", "default", "example", "examples", "deprecated", "x-oaiMeta", "x-oaiTypeLabel"}
)
"""Keywords that constrain nothing: a schema made only of these already accepts null."""


def errors_for(schema_name: str, body: Any) -> list[str]:
    """Every way ``body`` breaks ``#/components/schemas/<schema_name>``, as ``"path: reason"``
    lines ordered by path; an empty list when it conforms.

    Raises ``KeyError`` for a name the description does not define, so a typo cannot pass."""
    return problems(_validator(schema_name), body)


def schema_names() -> frozenset[str]:
    """The names ``errors_for`` accepts (the description's ``components.schemas``)."""
    return frozenset(_spec()["components"]["schemas"])


def spec_version() -> str:
    """The description's ``info.version`` (``"2.3.0"`` for the vendored file)."""
    return str(_spec()["info"]["version"])


# ---------------------------------------------------------------------------------------------
# Loading: once per process, translated to JSON Schema 2020-12
# ---------------------------------------------------------------------------------------------


@functools.cache
def _spec() -> dict[str, Any]:
    with SPEC_PATH.open("rb") as file:
        return _translate(json.load(file))


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(_SPEC_URI, Resource(contents=_spec(), specification=DRAFT202012))


@functools.cache
def _validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in _spec()["components"]["schemas"]:
        raise KeyError(f"OpenAI spec {spec_version()} has no schema named {schema_name!r}")
    # Refs inside the description ("#/components/schemas/...") resolve against _SPEC_URI.
    return Draft202012Validator({"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}, registry=_registry())


def _translate(node: Any) -> Any:
    """The 2020-12 reading of an OpenAPI 3.0-flavoured schema tree (a new tree)."""
    if isinstance(node, list):
        return [_translate(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: _translate(value) for key, value in node.items()}
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(schema.get(exclusive), bool):
            if schema.pop(exclusive) and bound in schema:
                schema[exclusive] = schema.pop(bound)
    # A bool, not a schema: "nullable" may also be the name of a property in `properties`.
    if isinstance(schema.get("nullable"), bool) and schema.pop("nullable"):
        return _or_null(schema)
    return schema


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
    elif isinstance(kind, list):
        schema["type"] = [*kind, "null"] if "null" not in kind else kind
    elif not (set(schema) - _ANNOTATIONS):
        return schema  # no constraint at all: null is already accepted
    else:
        # `$ref`, `anyOf`, `oneOf`, `allOf`...: nothing to add "null" to, so offer it beside.
        annotations = {key: schema.pop(key) for key in list(schema) if key in _ANNOTATIONS}
        return {**annotations, "anyOf": [schema, {"type": "null"}]}
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    return schema


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> int:
    """``openai_schema.py SCHEMA FILE.json``: print the problems, exit 1 if there are any."""
    schema_name, path = list(argv if argv is not None else sys.argv[1:])
    found = errors_for(schema_name, json.loads(Path(path).read_text()))
    print("\n".join(found) or f"{path} conforms to {schema_name} (OpenAI spec {spec_version()})")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
