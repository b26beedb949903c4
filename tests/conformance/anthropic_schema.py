"""Validate a JSON body against one of Anthropic's Messages wire shapes.

The shapes live in ``anthropic-messages.schema.json`` beside this module, generated from the
``anthropic`` SDK's pydantic types by ``generate_anthropic_schema.py`` with unknown fields
forbidden: a body passes only if every field in it is one the SDK knows. Shape names are the
SDK's type names:

* ``Message``: a ``POST /v1/messages`` answer;
* ``RawMessageStartEvent``, ``RawContentBlockStartEvent``, ``RawContentBlockDeltaEvent``,
  ``RawContentBlockStopEvent``, ``RawMessageDeltaEvent``, ``RawMessageStopEvent`` (or their
  union ``RawMessageStreamEvent``), and ``PingEvent``: the ``data`` of each stream event;
  :data:`STREAM_EVENTS` maps an SSE ``event:`` name to its shape;
* ``MessageTokensCount``: a ``POST /v1/messages/count_tokens`` answer;
* ``ErrorResponse``: an error body ``{"type": "error", "error": {"type", "message"}}``, also
  the ``data`` of an in-stream ``error`` event.

    anthropic_errors_for("Message", body)  # [] when it conforms
"""
from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .reporting import problems

__all__ = ["SCHEMA_PATH", "STREAM_EVENTS", "anthropic_errors_for", "anthropic_shape_names", "sdk_version"]

SCHEMA_PATH: Final = Path(__file__).with_name("anthropic-messages.schema.json")
"""The generated shapes (regenerate with ``python tests/conformance/generate_anthropic_schema.py``)."""

_SCHEMA_URI: Final = "urn:hookgate:anthropic-messages"


def anthropic_errors_for(name: str, body: Any) -> list[str]:
    """Every way ``body`` breaks the shape ``name``, as ``"path: reason"`` lines ordered by
    path; an empty list when it conforms.

    Raises ``KeyError`` for a name the schema does not define, so a typo cannot pass."""
    return problems(_validator(name), body)


def anthropic_shape_names() -> frozenset[str]:
    """The names ``anthropic_errors_for`` accepts."""
    return frozenset(_document()["shapes"])


def sdk_version() -> str:
    """The ``anthropic`` SDK version the shipped shapes were generated from."""
    return str(_document()["x-generated-from"]["anthropic"])


@functools.cache
def _document() -> dict[str, Any]:
    with SCHEMA_PATH.open("rb") as file:
        return json.load(file)


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    document = _document()
    if name not in document["shapes"]:
        raise KeyError(f"no Anthropic shape named {name!r}; known: {', '.join(sorted(document['shapes']))}")
    registry = Registry().with_resource(_SCHEMA_URI, Resource(contents=document, specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{_SCHEMA_URI}#/shapes/{name}"}, registry=registry)


STREAM_EVENTS: Final[Mapping[str, str]] = MappingProxyType(dict(_document()["x-stream-events"]))
"""SSE ``event:`` name (``message_start``, ``ping``, ``error``...) → the shape of its ``data``."""
