"""Reading client JSON defensively: each helper returns the value with the type a translation
needs, or raises :class:`InvalidRequest` naming the parameter, so bad input is a 400 that says
where, never a ``TypeError`` deep in a translation (which the edge would turn into a 500)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import orjson

from ..errors import InvalidRequest, UpstreamError

__all__ = ["as_bool", "as_int", "as_list", "as_mapping", "as_number", "as_str", "json_object", "malformed", "optional_str"]


def as_mapping(value: Any, param: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):  # JSON objects; typing.Mapping checks cost 10x more on the hot path
        raise InvalidRequest(f"Invalid value for '{param}': expected an object.", param=param)
    return value


def as_list(value: Any, param: str, limit: int) -> Sequence[Any]:
    """A JSON array of at most ``limit`` elements (the bound that keeps the loop over it short)."""
    if not isinstance(value, list):
        raise InvalidRequest(f"Invalid value for '{param}': expected an array.", param=param)
    if len(value) > limit:
        raise InvalidRequest(f"'{param}' has {len(value)} elements; at most {limit} are accepted.", param=param)
    return value


def as_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid value for '{param}': expected a string.", param=param)
    return value


def optional_str(value: Any, param: str) -> str | None:
    return None if value is None else as_str(value, param)


def as_int(value: Any, param: str, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidRequest(f"Invalid value for '{param}': expected an integer >= {minimum}.", param=param)
    return value


def as_number(value: Any, param: str) -> float | int:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidRequest(f"Invalid value for '{param}': expected a number.", param=param)
    return value


def as_bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"Invalid value for '{param}': expected a boolean.", param=param)
    return value


def json_object(arguments: Any) -> dict[str, Any] | None:
    """A tool call's JSON arguments as an object; None when they are not one."""
    if not isinstance(arguments, str):
        return None
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def malformed(provider: str, what: str) -> UpstreamError:
    """The 502 for an upstream answer a translation cannot read."""
    return UpstreamError(f"The {provider} upstream sent {what}.", code="upstream_malformed")
