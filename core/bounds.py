"""Bounds on what clients choose: strings a gateway quotes, and tables keyed by client input.

A client picks its model name, its ``user``, its bearer token, its headers. Whatever of that the
gateway quotes in an error, writes to a log, uses as a metric label or a Redis key, or keeps in
a table must have a size that does not depend on the client (DESIGN.md, invariant 12):

* :func:`clip` bounds a string before it is echoed, logged, labelled or stored: at most
  :data:`MAX_IDENTIFIER_CHARS` characters, printable (control characters escaped).
* :class:`RecentTable` is a dict bounded in entries, least recently used first out, whose entries
  idle for longer than a given time are dropped as the table is used: the shape of every
  per-key, per-token or per-model table a plugin keeps in memory.
"""
from __future__ import annotations

from collections import OrderedDict
from time import monotonic
from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["MAX_IDENTIFIER_CHARS", "clip", "RecentTable"]

MAX_IDENTIFIER_CHARS = 256
"""Longest client-chosen identifier (a model name, a ``user``) quoted or stored as it is; real
ones are far shorter (OpenAI's model ids are under 64 characters)."""

K = TypeVar("K")
V = TypeVar("V")


def clip(value: object, limit: int = MAX_IDENTIFIER_CHARS) -> str:
    """``value`` as printable text of at most ``limit`` characters (plus an ellipsis when cut).

    Cheap for the usual short ASCII name (returned as it is). Control and other non-printable
    characters are escaped (``\\n``, ``\\x00``) so a quoted name cannot forge a log line; the
    escaping is applied to the cut text and cut again, so it cannot grow past the bound either.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit and text.isprintable():
        return text
    cut = len(text) > limit
    text = text[:limit]
    if not text.isprintable():
        escaped = text.encode("unicode_escape").decode("ascii")
        cut = cut or len(escaped) > limit
        text = escaped[:limit]
    return text + "…" if cut else text


class RecentTable(Generic[K, V]):
    """A dict of at most ``max_entries``, dropping the least recently used entry first, and any
    entry not used for ``idle_seconds`` (checked as the table is used: no timer, amortised O(1)).

    For state kept per client-chosen key (a bearer token's rate-limit window, a route's circuit
    breaker): a flood of invented keys costs memory only while the keys are in use, and never
    more than ``max_entries`` of them.

    ``now`` arguments default to ``clock()``; give them when the caller already has the time (or
    a test drives it).
    """

    __slots__ = ("max_entries", "idle_seconds", "clock", "evicted", "_entries", "_high_water")

    def __init__(self, max_entries: int, idle_seconds: float | None = None, *, clock: Callable[[], float] = monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.evicted = 0
        """Entries dropped for room (not for idleness) so far: a sign the cap is too small."""
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._high_water = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K, now: float | None = None) -> V | None:
        """The entry for ``key`` (marking it used), or None."""
        now = self.clock() if now is None else now
        self.expire(now)
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries[key] = (now, found[1])
        self._entries.move_to_end(key)
        return found[1]

    def peek(self, key: K) -> V | None:
        """The entry for ``key`` without marking it used."""
        found = self._entries.get(key)
        return None if found is None else found[1]

    def setdefault(self, key: K, factory: Callable[[], V], now: float | None = None) -> V:
        """The entry for ``key`` (marking it used), made with ``factory()`` when there is none."""
        now = self.clock() if now is None else now
        value = self.get(key, now)
        if value is None:
            value = factory()
            self._entries[key] = (now, value)
            self._high_water = max(self._high_water, len(self._entries))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evicted += 1
        return value

    def pop(self, key: K) -> V | None:
        found = self._entries.pop(key, None)
        return None if found is None else found[1]

    def expire(self, now: float | None = None) -> None:
        """Drop the entries idle for longer than ``idle_seconds``."""
        if self.idle_seconds is None:
            return
        horizon = (self.clock() if now is None else now) - self.idle_seconds
        entries = self._entries
        while entries:
            used_at = next(iter(entries.values()))[0]
            if used_at > horizon:
                break
            entries.popitem(last=False)
        if self._high_water > 1024 and len(entries) * 4 < self._high_water:
            # A dict never shrinks its table on deletion: after a flood, copy what is left so the
            # memory goes back.
            self._entries = OrderedDict(entries)
            self._high_water = len(entries)

    def items(self) -> Iterator[tuple[K, V]]:
        """(key, entry), least recently used first; without marking them used."""
        for key, (_, value) in list(self._entries.items()):
            yield key, value
