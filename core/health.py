"""Readiness: what each plugin reports about its dependencies for ``GET /readyz``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Readiness"]


@dataclass(frozen=True, slots=True)
class Readiness:
    """One plugin's view of whether it can do its job.

    ``ok``: all good. ``degraded``: serving, but without something (a fail-open cache whose Redis
    is down, a provider without a key): ``/readyz`` still answers 200 and says so.
    ``unavailable``: requests that need this plugin will fail: ``/readyz`` answers 503, so a load
    balancer stops sending traffic here. ``detail`` says why, for people; never put a secret in it.
    """

    status: Literal["ok", "degraded", "unavailable"]
    detail: str = ""
