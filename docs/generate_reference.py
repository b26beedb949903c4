"""Write docs/reference.md from the public modules' ``__all__`` and docstrings.

    python docs/generate_reference.py

tests/test_reference.py fails when a public name is missing from the page; run this after adding
one (and edit the page's prose by hand if it needs more than each name's first docstring line).
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import hookgate
from hookgate import StateKey

HEADER = """# Reference: the public modules

Everything a plugin may import. A test (`tests/test_reference.py`) fails when a module of
`hookgate.PUBLIC_MODULES` or a name of its `__all__` is missing here; the built-in plugins import
nothing else (`tests/test_contract.py`). Each entry is the first line of the name's docstring
(regenerate with `python docs/generate_reference.py`); the source has the rest. The request
context's fields are in [request_context.md](request_context.md), every hook in
[plugin_hooks.md](plugin_hooks.md).
"""


def entry(name: str, obj: object) -> str:
    if isinstance(obj, StateKey):
        return f"- `{name}` (fact): {obj.doc.split('. ')[0].rstrip('.')}."
    kind = "class" if inspect.isclass(obj) else "function" if inspect.isfunction(obj) or inspect.isbuiltin(obj) else "value"
    doc = inspect.getdoc(obj) if kind != "value" else None
    return f"- `{name}` ({kind})" + (f": {doc.strip().splitlines()[0]}" if doc else "")


def main() -> None:
    lines = [HEADER]
    for module_name in hookgate.PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        lines += [f"## `{module_name}`", "", summary, ""]
        names = list(getattr(module, "__all__", ()))
        if not names:
            lines += ["Its submodules are public (each documents itself).", ""]
        for name in names:
            lines.append(entry(name, getattr(module, name)))
        if names:
            lines.append("")
    Path(__file__).with_name("reference.md").write_text("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    main()
