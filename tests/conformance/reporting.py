"""One way to report schema violations for every validator here: ``"path: reason"`` lines."""
from __future__ import annotations

from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

__all__ = ["problems"]

_MESSAGE_LIMIT: Final = 300  # characters of one problem; jsonschema quotes whole instances


def problems(validator: Draft202012Validator, body: Any) -> list[str]:
    """Every violation of ``body``, ordered by where it is (``<body>`` for the top level,
    ``choices.0.delta`` below it); an empty list when it conforms."""
    errors = sorted(validator.iter_errors(body), key=lambda e: tuple(str(p) for p in e.absolute_path))
    return [_describe(error) for error in errors]


def _describe(error: ValidationError) -> str:
    reason = error.message
    if error.context:
        # "is not valid under any of the given schemas" alone does not say what to fix: name the
        # deepest problem among the alternatives (the deepest got furthest into the body).
        closest = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
        reason = f"{reason} (closest: {_where(closest)}: {closest.message})"
    return f"{_where(error)}: {_shorten(reason)}"


def _where(error: ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<body>"


def _shorten(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
