"""A deterministic example instance of a JSON Schema, for fake models and test doubles.

Why it exists: a fake model that is offered a tool or asked for ``response_format: json_schema``
must answer with JSON its caller can parse: the official SDK's ``.parse()`` and LangChain
validate the answer against the very pydantic model the schema came from. Random generators
(hypothesis-jsonschema) are for finding bugs; a test double needs the *same* valid answer every
time, without a dependency at run time. :func:`instance_for` is that: it walks the schema and
builds the simplest value that satisfies it, so the same schema always gives the same JSON.

It covers what pydantic's ``model_json_schema()``, the openai SDK's strict schemas and LangChain's
tool schemas use: ``$ref`` (local ``#/...`` pointers, recursion included), ``type`` (one or a
list), ``const``, ``enum``, ``examples``, ``anyOf``/``oneOf`` (the first branch; the ``null`` one
only where nesting must stop), ``allOf`` (merged), objects (every listed property, required ones
always, ``minProperties`` via ``additionalProperties``), arrays (``prefixItems``, ``items``,
``minItems``/``maxItems``, ``uniqueItems``), strings (``minLength``/``maxLength``, common
``format`` values, simple ``pattern`` regexes), numbers (``minimum``/``maximum``, exclusive
bounds, ``multipleOf``) and booleans. Keywords it does not understand (``not``,
``if``/``then``/``else``, ``patternProperties``) are ignored, so a schema built on them may get an
instance it rejects; :class:`SchemaTooComplex` is raised rather than producing a huge value.

    >>> instance_for({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    {'city': 'mock city'}
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_STRING_LENGTH", "SchemaTooComplex", "instance_for"]

MAX_DEPTH: Final = 64
"""Nesting beyond this raises :class:`SchemaTooComplex` (a schema that cannot stop recursing)."""
MAX_NODES: Final = 10_000
"""Values (objects, arrays, scalars) one instance may contain; a ``minItems: 1000000`` schema is
refused rather than built."""
MAX_STRING_LENGTH: Final = 100_000
"""Characters all the strings of one instance may hold together (``minLength`` included)."""

_SHALLOW_DEPTH: Final = 12
"""From this depth (or inside a ``$ref`` to a schema already being built) only what the schema
requires is built (no optional property, no array item beyond ``minItems``, the ``null`` branch
of an ``anyOf``), so recursive schemas end."""

_FORMATS: Final[Mapping[str, str]] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "mock@example.com",
    "idn-email": "mock@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/mock",
    "iri": "https://example.com/mock",
    "uri-reference": "/mock",
    "iri-reference": "/mock",
    "uri-template": "https://example.com/{mock}",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "json-pointer": "/mock",
    "relative-json-pointer": "0",
    "regex": ".*",
    "byte": "bW9jaw==",
}
"""A valid value per string ``format`` (RFC 3339 dates, RFC 5737/3849 documentation addresses)."""

_ANNOTATIONS: Final = frozenset({"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly"})
"""Keywords that constrain nothing: a schema of only these accepts any value."""

_TYPE_OF_KEYWORD: Final[Mapping[str, str]] = {
    "properties": "object",
    "required": "object",
    "additionalProperties": "object",
    "minProperties": "object",
    "items": "array",
    "prefixItems": "array",
    "minItems": "array",
    "maxItems": "array",
    "minLength": "string",
    "maxLength": "string",
    "pattern": "string",
    "format": "string",
    "minimum": "number",
    "maximum": "number",
    "exclusiveMinimum": "number",
    "exclusiveMaximum": "number",
    "multipleOf": "number",
}
"""What a schema without ``type`` describes, judged by its keywords."""


class SchemaTooComplex(ValueError):
    """The schema nests too deeply, demands too many values, or uses a ``$ref`` that does not
    resolve; the message names the JSON pointer of the part at fault."""


def instance_for(schema: Mapping[str, Any] | bool, *, name: str = "") -> Any:
    """The deterministic example instance of ``schema`` (see the module docstring for the rules).

    :param name: what the value is called (a tool or property name); strings are built from it
        (``"mock city"`` for a property ``city``), so an answer reads as what it stands for.
    :raises SchemaTooComplex: the schema cannot be instantiated within the module's bounds.
    """
    if isinstance(schema, bool):
        return "mock" if schema else None
    return _Builder(schema).build(schema, "#", name, 0, 0)


@dataclass(slots=True)
class _Builder:
    root: Mapping[str, Any]
    nodes: int = 0
    characters: int = 0
    building: list[str] = field(default_factory=list)
    """The ``$ref`` targets being built, outermost first: a repeat is recursion."""

    def build(self, schema: Any, pointer: str, name: str, depth: int, variant: int) -> Any:
        if depth > MAX_DEPTH:
            raise SchemaTooComplex(f"{pointer}: nested deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SchemaTooComplex(f"{pointer}: the instance would have more than {MAX_NODES} values")
        if schema is True or not isinstance(schema, Mapping):
            return _text("mock", name, variant)
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            return self._build_resolved(self._resolved(schema, pointer), pointer, name, depth, variant)
        if ref in self.building:
            depth = max(depth, _SHALLOW_DEPTH)  # a recursive $ref: build only what it requires
        self.building.append(ref)
        try:
            return self._build_resolved(self._resolved(schema, pointer), pointer, name, depth, variant)
        finally:
            self.building.pop()

    def _build_resolved(self, schema: Mapping[str, Any], pointer: str, name: str, depth: int, variant: int) -> Any:
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][variant % len(schema["enum"])]
        if isinstance(schema.get("examples"), list) and schema["examples"] and variant == 0:
            return schema["examples"][0]
        for keyword in ("anyOf", "oneOf"):
            branches = schema.get(keyword)
            if isinstance(branches, list) and branches:
                index = self._branch(branches, depth)
                return self.build(branches[index], f"{pointer}/{keyword}/{index}", name, depth + 1, variant)
        match _kind(schema):
            case "object":
                return self._object(schema, pointer, depth)
            case "array":
                return self._array(schema, pointer, name, depth)
            case "string":
                text = _string(schema, name, variant)
                self.characters += len(text)
                if self.characters > MAX_STRING_LENGTH:
                    raise SchemaTooComplex(f"{pointer}: the instance's strings would hold more than {MAX_STRING_LENGTH} characters")
                return text
            case "integer":
                return _number(schema, integer=True, variant=variant)
            case "number":
                return _number(schema, integer=False, variant=variant)
            case "boolean":
                return variant % 2 == 0
            case "null":
                return None
            case _:
                return _text("mock", name, variant)

    def _resolved(self, schema: Mapping[str, Any], pointer: str) -> Mapping[str, Any]:
        """``schema`` with its ``$ref`` followed and its ``allOf`` merged in."""
        seen = 0
        while isinstance(schema.get("$ref"), str):
            seen += 1
            if seen > MAX_DEPTH:
                raise SchemaTooComplex(f"{pointer}: $ref chain longer than {MAX_DEPTH}")
            target = self._pointer(schema["$ref"], pointer)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if siblings else target
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for index, part in enumerate(parts):
                if isinstance(part, Mapping):
                    _merge(merged, self._resolved(part, f"{pointer}/allOf/{index}"))
            schema = merged
        return schema

    def _pointer(self, ref: str, pointer: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            raise SchemaTooComplex(f"{pointer}: only local $ref are supported, got {ref[:100]!r}")
        node: Any = self.root
        for raw in ref[1:].split("/")[1:]:
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise SchemaTooComplex(f"{pointer}: $ref {ref[:100]!r} does not resolve")
        if node is True:
            return {}
        if not isinstance(node, Mapping):
            raise SchemaTooComplex(f"{pointer}: $ref {ref[:100]!r} is not a schema")
        return node

    def _branch(self, branches: list[Any], depth: int) -> int:
        """The first branch that says something (neither ``null`` nor an unconstrained ``{}``,
        which LangChain writes for a recursive model), else ``null``; past the shallow depth, a
        branch that ends the nesting (``null``, then one without ``$ref``) so recursion ends."""
        def is_null(branch: Any) -> bool:
            return isinstance(branch, Mapping) and branch.get("type") == "null"

        def is_unconstrained(branch: Any) -> bool:
            return branch is True or isinstance(branch, Mapping) and not (set(branch) - _ANNOTATIONS)

        if depth >= _SHALLOW_DEPTH:
            for index, branch in enumerate(branches):
                if is_null(branch):
                    return index
            for index, branch in enumerate(branches):
                if isinstance(branch, Mapping) and "$ref" not in branch:
                    return index
        for index, branch in enumerate(branches):
            if not is_null(branch) and not is_unconstrained(branch):
                return index
        for index, branch in enumerate(branches):
            if is_null(branch):
                return index
        return 0

    def _object(self, schema: Mapping[str, Any], pointer: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
        required = [key for key in schema.get("required") or () if isinstance(key, str)]
        shallow = depth >= _SHALLOW_DEPTH
        names = [key for key in properties if not shallow or key in required]
        names += [key for key in required if key not in properties]
        value: dict[str, Any] = {}
        for key in names:
            value[key] = self.build(properties.get(key, {}), f"{pointer}/properties/{key}", key, depth + 1, 0)
        extra_schema = schema.get("additionalProperties", True)
        wanted = schema.get("minProperties")
        if isinstance(wanted, int) and extra_schema is not False:
            extra = 0
            while len(value) < min(wanted, MAX_NODES):
                extra += 1
                key = f"mock_{extra}"
                if key not in value:
                    value[key] = self.build(extra_schema, f"{pointer}/additionalProperties", key, depth + 1, 0)
        return value

    def _array(self, schema: Mapping[str, Any], pointer: str, name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        low = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 0
        high = schema.get("maxItems") if isinstance(schema.get("maxItems"), int) else None
        count = max(low, len(prefix), 0 if depth >= _SHALLOW_DEPTH else 1)
        if high is not None:
            count = min(count, high)
        if items is False:
            count = min(count, len(prefix))
        if count > MAX_NODES:
            raise SchemaTooComplex(f"{pointer}: minItems {count} is over {MAX_NODES}")
        unique = schema.get("uniqueItems") is True
        values: list[Any] = []
        for index in range(count):
            if index < len(prefix):
                item_schema, item_pointer = prefix[index], f"{pointer}/prefixItems/{index}"
            else:
                item_schema, item_pointer = items, f"{pointer}/items"
            # Distinct variants keep uniqueItems arrays unique for strings, numbers and enums.
            values.append(self.build(item_schema, item_pointer, name, depth + 1, index if unique else 0))
        return values


def _merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
    """Merge an ``allOf`` part: properties and required lists combine, other keywords overwrite."""
    for key, value in part.items():
        if key == "properties" and isinstance(value, Mapping):
            into["properties"] = {**(into.get("properties") or {}), **value}
        elif key == "required" and isinstance(value, list):
            into["required"] = [*(into.get("required") or []), *(v for v in value if v not in (into.get("required") or []))]
        else:
            into[key] = value


def _kind(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        return next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    if isinstance(kind, str):
        return kind
    return next((implied for keyword, implied in _TYPE_OF_KEYWORD.items() if keyword in schema), None)


def _text(base: str, name: str, variant: int) -> str:
    text = f"{base} {name}".strip() if name else base
    return f"{text} {variant + 1}" if variant else text


def _string(schema: Mapping[str, Any], name: str, variant: int) -> str:
    low = schema.get("minLength") if isinstance(schema.get("minLength"), int) else 0
    high = schema.get("maxLength") if isinstance(schema.get("maxLength"), int) else None
    if low > MAX_STRING_LENGTH:
        raise SchemaTooComplex(f"minLength {low} is over {MAX_STRING_LENGTH}")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        matching = _matching_string(pattern, variant)
        if matching is not None:
            return matching
    text = _FORMATS.get(schema.get("format", ""), "") or _text("mock", name, variant)
    if len(text) < low:
        text += "x" * (low - len(text))
    if high is not None and len(text) > high:
        text = text[:high] if variant == 0 or high == 0 else (text[: max(0, high - 1)] + str(variant % 10))
    return text


def _number(schema: Mapping[str, Any], *, integer: bool, variant: int) -> int | float:
    """The smallest "nice" value in range: 1 (plus ``variant``) moved inside the bounds and onto
    ``multipleOf``."""
    low, high = _bound(schema, "minimum", "exclusiveMinimum", up=True), _bound(schema, "maximum", "exclusiveMaximum", up=False)
    step = schema.get("multipleOf") if isinstance(schema.get("multipleOf"), (int, float)) and schema.get("multipleOf") > 0 else None
    value: float = 1 + variant
    if low is not None and _outside(value, low, above=True):
        value = low[0] + (1 if integer else 0.5) if low[1] else low[0]
    if high is not None and _outside(value, high, above=False):
        value = high[0] - (1 if integer else 0.5) if high[1] else high[0]
        if low is not None and _outside(value, low, above=True):
            value = low[0] / 2 + high[0] / 2  # halves first: no overflow to infinity
    if step is not None:
        value = math.ceil(value / step) * step
        if high is not None and value > high[0]:
            value = math.floor(high[0] / step) * step
    if integer:
        rounded = math.ceil(value)
        if high is not None and (rounded > high[0] or high[1] and rounded == high[0]):
            rounded = math.floor(value)
        return int(rounded)
    return float(value)


def _outside(value: float, bound: tuple[float, bool], *, above: bool) -> bool:
    """Whether ``value`` breaks a lower (``above``) or upper bound."""
    limit, exclusive = bound
    if above:
        return value < limit or (exclusive and value == limit)
    return value > limit or (exclusive and value == limit)


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str, *, up: bool) -> tuple[float, bool] | None:
    """(bound, is_exclusive) from draft 2020-12 numbers or draft 4 boolean ``exclusive*``."""
    value = schema.get(inclusive)
    strict = schema.get(exclusive)
    if isinstance(strict, bool):
        return (value, strict) if isinstance(value, (int, float)) else None
    candidates = []
    if isinstance(value, (int, float)):
        candidates.append((value, False))
    if isinstance(strict, (int, float)):
        candidates.append((strict, True))
    if not candidates:
        return None
    # The tighter of the two bounds (an exclusive one wins a tie).
    return max(candidates, key=lambda c: (c[0], c[1])) if up else min(candidates, key=lambda c: (c[0], not c[1]))


def _matching_string(pattern: str, variant: int) -> str | None:
    """A short string matching a simple regex, or None when the pattern is beyond this walker."""
    try:
        compiled = re.compile(pattern)
        # The stdlib's own regex parser: no public module parses a regex into its parts.
        from re import _parser  # type: ignore[attr-defined]

        text = _walk(_parser.parse(pattern).data, variant)
    except (re.error, ImportError, RecursionError, _Unsupported, TypeError, ValueError, IndexError):
        return None
    return text if compiled.search(text) else None


class _Unsupported(Exception):
    pass


def _walk(items: list[tuple[Any, Any]], variant: int) -> str:
    from re import _constants as c  # type: ignore[attr-defined]

    out: list[str] = []
    for op, arg in items:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append("a" if chr(arg) != "a" else "b")
        elif op is c.ANY:
            out.append("a")
        elif op is c.IN:
            out.append(_class_member(arg, variant))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            low, _high, sub = arg
            piece = _walk(sub.data, variant)
            if len(piece) * low > MAX_STRING_LENGTH:
                raise _Unsupported("the pattern's shortest match is too long")
            out.append(piece * low)  # the fewest repetitions the regex allows
        elif op is c.SUBPATTERN:
            out.append(_walk(arg[-1].data, variant))
        elif op is c.BRANCH:
            out.append(_walk(arg[1][0].data, variant))
        elif op is c.AT:
            continue
        elif op is c.CATEGORY:
            out.append(_category_member(arg))
        else:
            raise _Unsupported(str(op))
        if sum(map(len, out)) > MAX_STRING_LENGTH:
            raise _Unsupported("the pattern's shortest match is too long")
    return "".join(out)


def _class_member(items: list[tuple[Any, Any]], variant: int) -> str:
    from re import _constants as c  # type: ignore[attr-defined]

    if items and items[0][0] is c.NEGATE:
        excluded = {chr(arg) for op, arg in items[1:] if op is c.LITERAL}
        return next(ch for ch in "abcdefghijklmnopqrstuvwxyz0123456789" if ch not in excluded)
    for op, arg in items:
        if op is c.LITERAL:
            return chr(arg)
        if op is c.RANGE:
            low, high = arg
            return chr(min(high, low + variant))
        if op is c.CATEGORY:
            return _category_member(arg)
    raise _Unsupported("empty character class")


def _category_member(category: Any) -> str:
    from re import _constants as c  # type: ignore[attr-defined]

    members = {
        c.CATEGORY_DIGIT: "0",
        c.CATEGORY_NOT_DIGIT: "a",
        c.CATEGORY_WORD: "a",
        c.CATEGORY_NOT_WORD: " ",
        c.CATEGORY_SPACE: " ",
        c.CATEGORY_NOT_SPACE: "a",
    }
    if category not in members:
        raise _Unsupported(str(category))
    return members[category]
