"""What a client asks of the response caches, read from its request headers.

``memory_cache`` and ``redis_cache`` both read these, so that with both enabled a client's
``Cache-Control`` means the same thing to each tier:

* ``Cache-Control: no-cache``: do not answer from the cache (``x-hookgate-cache: BYPASS``); the
  fresh answer still replaces the stored one.
* ``Cache-Control: no-store``: do not store this answer.
* ``x-hookgate-cache-ttl: <seconds>``: how long to keep this answer (each cache applies its own
  bounds). A value that is not a positive number is ignored, as HTTP caches ignore directives
  they cannot parse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

__all__ = ["CacheDirectives", "TTL_HEADER"]

TTL_HEADER = "x-hookgate-cache-ttl"
"""The request header giving an answer's time to live in seconds."""


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """A request's instructions to the caches."""

    no_cache: bool = False
    """Skip the lookup (the answer is fetched fresh, and may be stored)."""
    no_store: bool = False
    """Do not store the answer."""
    ttl_seconds: float | None = None
    """The client's time to live for this answer, or None for the cache's own."""

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> CacheDirectives:
        """Parse ``headers`` (every ``Cache-Control`` header when the mapping has several)."""
        getall = getattr(headers, "getall", None)
        controls = getall("Cache-Control", ()) if getall is not None else [headers.get("Cache-Control", "")]
        ttl_text = headers.get(TTL_HEADER)
        if not any(controls) and ttl_text is None:
            return _NONE
        directives = {part.split("=", 1)[0].strip().lower() for control in controls for part in control.split(",")}
        return cls("no-cache" in directives, "no-store" in directives, _positive_seconds(ttl_text))


def _positive_seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


_NONE = CacheDirectives()
