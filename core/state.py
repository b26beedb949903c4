"""Typed keys for what one plugin tells another about a request.

In the manner of aiohttp's ``AppKey``/``RequestKey``: a fact two parties share is a
:class:`StateKey` declared once, in a public module, with its value type and a docstring, and
read and written as ``ctx[KEY]``. There are no string keys in a shared dict, so a misspelt key is
a ``NameError`` at import, not a silent ``None``, and a type checker sees what each fact holds.

The facts built-in plugins share are declared in :mod:`hookgate.facts`; a plugin that keeps
private state per request declares its own key, unexported, next to its code::

    _LOOKUP = StateKey("memory_cache.lookup", Lookup)

    ctx[_LOOKUP] = Lookup(...)
    lookup = ctx.get(_LOOKUP)

Plugins say which facts they produce and read in their :mod:`hookgate.rules`, so the core can
refuse at start-up a pipeline where a fact is read but never produced, or read before it is.
"""
from __future__ import annotations

from typing import Any, Generic, TypeVar, final

__all__ = ["StateKey"]

T = TypeVar("T")


@final
class StateKey(Generic[T]):
    """The name and type of one fact about a request.

    Keys compare and hash by identity (two keys with one name are two keys), which also makes
    ``ctx[KEY]`` a plain dict lookup.

    :param name: shown in errors, ``hookgate plugins`` and docs: ``"<plugin or area>.<fact>"``.
    :param type: the type of the value (documentation and introspection; not checked at run time).
    :param doc: one sentence: what the value means, who produces it and when.
    """

    __slots__ = ("name", "type", "doc")

    def __init__(self, name: str, type: Any, doc: str = "") -> None:  # noqa: A002 - mirrors aiohttp's AppKey(name, t)
        self.name = name
        self.type = type
        self.doc = doc

    def __repr__(self) -> str:
        kind = getattr(self.type, "__name__", None) or repr(self.type)
        return f"<StateKey {self.name}: {kind}>"
