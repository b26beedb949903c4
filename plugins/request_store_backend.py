"""The one async interface both databases of ``request_store`` implement.

The writer, the pruner and the admin API talk to a :class:`RequestStoreBackend` and never to a
driver, so SQLite (the embedded default) and PostgreSQL (shared by every instance) are
interchangeable and tested against the same cases.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from .request_store_queries import RequestListQuery, RequestPage, Stats, StatsQuery
from .request_store_record import RequestRecord

__all__ = ["RequestStoreBackend", "StoreUnavailable"]


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or did not answer in time. The message names the
    backend and the failure's kind, never a connection string (it may hold a password)."""


@runtime_checkable
class RequestStoreBackend(Protocol):
    """Where request records are kept.

    ``open`` connects and applies pending migrations (under the database's lock); ``close``
    releases every connection and thread. ``insert`` writes one batch in one transaction: all
    of it or none. Reads never see a half-written batch. Every call is bounded in time by the
    backend's timeouts and raises :class:`StoreUnavailable` rather than hanging.
    """

    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def insert(self, records: Sequence[RequestRecord]) -> None: ...

    async def list_requests(self, query: RequestListQuery) -> RequestPage: ...

    async def get_request(self, request_id: str) -> RequestRecord | None: ...

    async def stats(self, query: StatsQuery) -> Stats: ...

    async def prune(self, before: datetime, *, batch: int = 5_000) -> int:
        """Delete rows older than ``before`` in batches; returns how many went."""
        ...

    async def schema_version(self) -> int:
        """The highest migration applied to the database."""
        ...
