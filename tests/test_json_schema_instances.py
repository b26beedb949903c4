"""hookgate.testing.json_schema_instances: a valid, deterministic instance for the schemas that
applications hand a model (pydantic models, the openai SDK's strict schemas, LangChain's)."""
from __future__ import annotations

import datetime
import enum
import json
import uuid
from typing import Annotated, Literal

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field, StringConstraints

from hookgate.testing.json_schema_instances import MAX_NODES, SchemaTooComplex, instance_for


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    postcode: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}-\d{4,5}$")]


class Node(BaseModel):
    label: str
    children: list[Node]
    parent: Node | None = None


class Order(BaseModel):
    id: uuid.UUID
    placed_at: datetime.datetime
    day: datetime.date
    colour: Colour
    kind: Literal["retail", "wholesale"]
    quantity: int = Field(gt=0, le=10, multiple_of=3)
    price: float = Field(ge=0.5, lt=2.0)
    tags: set[str]
    pair: tuple[int, str]
    attributes: dict[str, int]
    address: Address
    backup: Address | None = None
    code: str = Field(min_length=8, max_length=8)
    tree: Node


SCHEMAS = {
    "pydantic": Order.model_json_schema(),
    "openai strict": to_strict_json_schema(Order),
    "recursive": Node.model_json_schema(),
    "draft-4 exclusive bounds": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1, "exclusiveMaximum": True},
    "minProperties": {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer"}},
    "unique enums": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 3, "uniqueItems": True},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]},
    "type list": {"type": ["null", "integer"], "minimum": 5},
    "const": {"const": {"fixed": [1, 2]}},
    "format": {"type": "object", "properties": {f: {"type": "string", "format": f} for f in ("email", "ipv4", "ipv6", "uri", "date-time", "uuid")}},
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_instance_is_valid_and_the_same_every_time(name):
    schema = SCHEMAS[name]
    value = instance_for(schema)
    jsonschema.validate(value, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert instance_for(schema) == value


@pytest.mark.parametrize("schema", [Order.model_json_schema(), to_strict_json_schema(Order)])
def test_the_pydantic_model_accepts_its_instance(schema):
    order = Order.model_validate(instance_for(schema))
    assert order.tree.children[0].children == [], "recursion stops after one level"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^(a{100000}){100000}$"},
        {"type": "number", "minimum": 1e308, "maximum": 1.5e308, "exclusiveMinimum": 1e308},
    ],
)
def test_hostile_bounds_give_a_bounded_finite_answer(schema):
    assert len(json.dumps(instance_for(schema), allow_nan=False)) < 1000  # allow_nan=False: inf would raise


def test_strings_are_named_after_what_they_stand_for():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    assert instance_for(schema) == {"city": "mock city"}


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "array", "items": {"type": "integer"}, "minItems": MAX_NODES + 1}, "minItems"),
        ({"type": "string", "minLength": 10**9}, "minLength"),
        ({"type": "array", "items": {"type": "string", "minLength": 50_000}, "minItems": 3}, "more than 100000 characters"),
        ({"$ref": "#/$defs/missing"}, "does not resolve"),
        ({"$ref": "https://example.com/schema.json"}, "only local"),
        ({"$defs": {"loop": {"type": "object", "properties": {"next": {"$ref": "#/$defs/loop"}}, "required": ["next"]}}, "$ref": "#/$defs/loop"}, "nested deeper"),
    ],
)
def test_a_schema_beyond_the_bounds_is_refused_not_built(schema, problem):
    with pytest.raises(SchemaTooComplex, match=problem):
        instance_for(schema)
