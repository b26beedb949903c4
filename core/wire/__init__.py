"""Wire formats: pure translations between the APIs clients speak and the chat completions
shape the gateway's chain and most upstreams speak.

Everything here is plain dicts in, plain dicts out (async generators of dicts for streams), with
no I/O and no request context, so a surface plugin, a provider or a test can use it alike:

* :mod:`hookgate.wire.anthropic`: Anthropic Messages ⇄ OpenAI chat completions, both ways
  (calling an Anthropic upstream for a chat client; serving an Anthropic client from a chat
  upstream), requests, complete answers, streams and errors.
* :mod:`hookgate.wire.responses`: OpenAI Responses ⇄ chat completions: requests, complete
  answers, the typed Responses stream events, and the built-in tools only OpenAI runs.
* :mod:`hookgate.wire.limits`: the bounds every translation keeps to (:class:`WireLimits`).

Each module's docstring says what it maps, what it drops and why.
"""
from __future__ import annotations

from .limits import DEFAULT_LIMITS, WireLimits

__all__ = ["DEFAULT_LIMITS", "WireLimits"]
