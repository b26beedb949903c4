"""What a plugin's source imports from hookgate, checked against the public surface.

``hookgate.PUBLIC_MODULES`` and their ``__all__`` are what a plugin may use; a plugin's own helper
modules share its name as a prefix (``guardrails_masking`` may import ``guardrails_detectors``).
Used for the built-in plugins (tests/test_contract.py), the cookbook (tests/test_cookbook.py) and
the packages ``hookgate new-plugin`` writes (tests/test_plugin_template.py).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import hookgate

__all__ = ["import_problems", "public_names"]

_INTERNAL = ("server", "gateway", "runner", "exchange", "pipelines")


def public_names() -> dict[str, set[str]]:
    """Every public module and the names of its ``__all__``."""
    names = {}
    for module_name in hookgate.PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # a public module whose optional dependency is not installed
        names[module_name] = set(getattr(module, "__all__", ()))
    return names


def import_problems(path: Path) -> list[str]:
    """Each import of ``path`` outside the public surface, as a sentence."""
    public = public_names()
    own = path.stem
    problems = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hookgate":
            module = node.module
            if module.startswith(("hookgate.plugins.", "hookgate.providers.")):
                other = module.rsplit(".", 1)[1]
                if not (own.startswith(other) or other.startswith(own)):  # a plugin's own helper modules share its name
                    problems.append(f"imports another plugin's module {module}")
                continue
            root = next((m for m in sorted(public, key=len, reverse=True) if module == m or module.startswith(m + ".")), None)
            if root is None:
                problems.append(f"imports {module}, which is not a public module")
                continue
            if module == root:
                package = hasattr(importlib.import_module(module), "__path__")
                for alias in node.names:
                    submodule = importlib.util.find_spec(f"{module}.{alias.name}") if package else None
                    if alias.name not in public[root] and submodule is None:  # a public package's modules are public
                        problems.append(f"imports {module}.{alias.name}, which is not in its __all__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hookgate.") and alias.name.split(".")[1] in _INTERNAL:
                    problems.append(f"imports {alias.name}")
    return problems
