"""The documentation stays true: every hook is documented with its exact signature, every
example in docs/plugin_hooks.md runs, every hook is exercised by a test, and the README's first
example prints what a user expects."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types

import pytest

from conftest import ROOT
from hookgate import hookspecs

HOOKS_DOC = (ROOT / "docs" / "plugin_hooks.md").read_text()
HOOK_NAMES = [*hookspecs.STARTUP_HOOKS, *hookspecs.PHASE_HOOKS, *hookspecs.EVENT_HOOKS]


def documented_signature(name: str) -> str:
    spec = getattr(hookspecs, name)
    signature = inspect.signature(spec)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    prefix = "async def" if inspect.iscoroutinefunction(spec) else "def"
    return f"{prefix} {name}({params}) -> {signature.return_annotation}"


def test_every_hookspec_is_listed():
    declared = {name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, "hookgate_spec")}
    assert declared == set(HOOK_NAMES)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_is_documented_with_its_exact_signature(name):
    assert f"\n## {name}\n" in HOOKS_DOC, f"docs/plugin_hooks.md has no section for {name}"
    assert documented_signature(name) in HOOKS_DOC, f"docs/plugin_hooks.md: signature of {name} should read: {documented_signature(name)}"


def example_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", HOOKS_DOC, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(example_blocks())))
async def test_every_example_runs_in_a_gateway(gateway, index):
    module = types.ModuleType(f"doc_example_{index}")
    exec(compile(example_blocks()[index], f"docs/plugin_hooks.md example {index}", "exec"), module.__dict__)
    plugins = {
        name.lower(): value
        for name, value in vars(module).items()
        if isinstance(value, type) and value.__module__ == module.__name__
    }
    if not plugins:
        return  # an import-only snippet
    model = "shout" if "shoutprovider" in plugins else "echo"
    pipeline = ", ".join(f'"{name}"' for name in plugins)
    client = await gateway(f'[gateway]\npipeline = [{pipeline}, "echo"]', local=plugins)
    for _ in range(2):
        response = await client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert response.status == 200, await response.text()
    if "pingroute" in plugins:
        assert (await (await client.get("/ping")).json()) == {"pong": True}
    if "shortchat" in plugins:
        answer = await client.post("/v1/short", json={"model": "echo", "ask": "hello"})
        assert (await answer.json()) == {"answer": "echo: hello"}
        refused = await client.post("/v1/short", json={"model": "echo"})
        assert refused.status == 400 and (await refused.json()) == {"problem": "ask must be a string."}


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_is_exercised_by_a_test(name):
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py") if path.name != "test_docs.py")
    assert re.search(rf"def {name}\(", tests), f"no test implements {name}"


def readme_quickstart() -> str:
    """The first Python block of README.md: the first code a new user copies."""
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)[0]


def test_the_readme_quickstart_prints_both_answers_and_nothing_else(gateway_process):
    # Against `hookgate serve` on the repository's default plugins.toml, as the README runs it.
    served = gateway_process((ROOT / "plugins.toml").read_text())
    snippet = readme_quickstart()
    assert "http://127.0.0.1:8080/v1" in snippet
    ran = subprocess.run(
        [sys.executable, "-c", snippet.replace("http://127.0.0.1:8080", served.url)],
        capture_output=True, text=True, timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "echo: hello\necho: stream me\n"
