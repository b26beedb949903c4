"""docs/reference.md and docs/request_context.md stay true: every public module and name, and
every field of the request context, is documented."""
from __future__ import annotations

import importlib
import re

import pytest

import hookgate
from conftest import ROOT
from hookgate import RequestContext

REFERENCE = (ROOT / "docs" / "reference.md").read_text()
CONTEXT = (ROOT / "docs" / "request_context.md").read_text()


def section(module: str) -> str:
    match = re.search(rf"^## `{re.escape(module)}`\n(.*?)(?=^## |\Z)", REFERENCE, flags=re.M | re.S)
    assert match, f"docs/reference.md has no section for {module}"
    return match.group(1)


@pytest.mark.parametrize("module", hookgate.PUBLIC_MODULES)
def test_every_public_name_is_in_the_reference(module):
    text = section(module)
    for name in getattr(importlib.import_module(module), "__all__", ()):
        assert f"- `{name}`" in text, f"docs/reference.md: {module}.{name} is not listed"


def test_every_field_of_the_request_context_is_documented():
    for field in RequestContext.__dataclass_fields__:
        if not field.startswith("_"):
            assert f"| `{field}` |" in CONTEXT, f"docs/request_context.md: no row for ctx.{field}"
