"""Who is asking: the gateway key a request was authenticated with."""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Mapping

__all__ = ["ClientKey", "credential_tenant"]


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A gateway key (virtual key) as an auth plugin resolved it; never the secret itself.

    An auth plugin returns it from its ``authenticate`` hook and the core stores it as
    :data:`hookgate.facts.CLIENT_KEY`; the limit, budget and usage plugins read their per-key
    settings from it, so a third-party auth plugin that returns one gets them too. A limit left
    at None means "the enforcing plugin's own default".
    """

    id: str
    """Public, stable name of the key (``team-a``): used in limits, the usage ledger and logs."""
    models: frozenset[str] | None = None
    """Public model names this key may use; None for every model."""
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_budget_usd: Decimal | None = None
    monthly_budget_usd: Decimal | None = None
    cache_namespace: str | None = None
    """Cache scope of the key's answers (keys sharing a namespace share cached answers);
    None for the key's own ``id``."""
    admin: bool = False
    """May call admin endpoints (``GET /v1/usage`` for every key…)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Free-form labels (team, owner…) for plugins and logs."""


@functools.lru_cache(maxsize=1024)
def credential_tenant(credential: str) -> str:
    """The tenant of a request presenting ``credential`` that no auth plugin recognised: a short
    hash (never the credential), so caches and limits can still keep clients apart.

    Memoised for the last 1,024 credentials: a client sends the same key on every request, and
    hashing it each time was about 1 % of a cache hit's CPU (py-spy). A pure function's cache,
    in memory only, like the process's other copies of the key."""
    return "key-" + hashlib.sha256(credential.encode()).hexdigest()[:16]
