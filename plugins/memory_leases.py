"""Keeping the leases of requests in flight alive: one task renews them all.

A request that adds a turn holds its conversation's lease from ``before_request`` to the end of
its answer, which for a long stream can outlast the lease. Rather than a timer per request, one
task renews every held lease each ``every`` seconds (a third of the lease's life, so a renewal can
fail twice before the lease lapses). A lease whose request ended is dropped first, so it is never
renewed after its release; one that the store no longer holds (an outage outlasted it) is
dropped, and its request learns at append time that another request took the conversation.
"""
from __future__ import annotations

import asyncio

import structlog

from hookgate.conversations import ConversationStore, ConversationStoreUnavailable, Lease
from hookgate.logs import IntervalLog
from hookgate.tasks import stop_task

log = structlog.get_logger("hookgate.memory")


class LeaseKeeper:
    """The leases held by this process's requests, renewed together."""

    def __init__(self, store: ConversationStore, every: float) -> None:
        self.store = store
        self.every = every
        self._held: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None
        self._trouble = IntervalLog(log, "memory_lease_renewal_failed", 60.0)

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, lease: Lease) -> None:
        self._held[lease.token] = lease

    def drop(self, lease: Lease) -> None:
        self._held.pop(lease.token, None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="memory.leases")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            leases = list(self._held.values())
            results = await asyncio.gather(*(self.store.renew(lease) for lease in leases), return_exceptions=True)
            for lease, renewed in zip(leases, results):
                if renewed is False:
                    self.drop(lease)
                elif isinstance(renewed, ConversationStoreUnavailable):
                    self._trouble.warning(held=len(leases))
                elif isinstance(renewed, BaseException):
                    log.error("memory_lease_renewal_crashed", exc_info=renewed)
