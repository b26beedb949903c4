"""docs/writing_plugins.md, run literally in a fresh virtualenv: generate the package, install it
and hookgate with the tutorial's one pip command, enable it in the tutorial's plugins.toml, check
the config, send the tutorial's requests through a running ``hookgate serve``, and run the
generated package's own tests with pytest. The commands are read from the page itself, so the
page cannot drift from what works.

Fast and bounded: a fresh virtualenv installing hookgate's dependencies from PyPI takes minutes,
so the venv is made with ``--system-site-packages --without-pip`` and a ``.pth`` line naming this
test's own site-packages (a venv made from inside a venv inherits the base interpreter's
site-packages, not the venv's: the ``.pth`` supplies them). Every dependency is then already
installed and pip builds only the two editable packages (its build isolation fetches setuptools,
as the tutorial's command would). ``pip`` in the venv is this environment's pip, run as
``python -m pip`` by a two-line shim, so the page's ``pip install`` line runs as written. Step 1 of
the page needs hookgate installed: it runs with this environment's (the same checkout). Each step
has a timeout; the whole takes about a minute on two shared cores.

Marked ``venv`` (``-m 'not venv'`` leaves it out of a quick local run); it runs by default and in
CI, and never skips: a failure to make the venv is a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from servers import free_port, wait_healthy

pytestmark = pytest.mark.venv

TUTORIAL = (ROOT / "docs" / "writing_plugins.md").read_text()
STEP_SECONDS = 300


def section(number: int) -> str:
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", TUTORIAL, flags=re.M | re.S)
    assert match, f"docs/writing_plugins.md has no section {number}"
    return match.group(0)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def command(text: str, starts: str) -> str:
    lines = [line.strip() for block in blocks(text, "bash") for line in block.splitlines() if line.strip().startswith(starts)]
    assert len(lines) == 1, f"expected one `{starts}…` command in the tutorial, found {lines}"
    return lines[0].split("  #")[0].strip()


def make_venv(path: Path) -> Path:
    """A venv that sees this environment's packages (see the module docstring); its ``bin``."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)], check=True, timeout=STEP_SECONDS)
    [own] = (path / "lib").glob("python3*/site-packages")
    (own / "inherited-test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = path / "bin" / "pip"
    pip.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
    pip.chmod(0o755)
    return path / "bin"


def environment(bin_dir: Path, **extra: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKGATE_", "PYTEST_", "VIRTUAL_ENV", "PYTHONPATH"))}
    return {**kept, "PATH": f"{bin_dir}{os.pathsep}{kept.get('PATH', '')}", "VIRTUAL_ENV": str(bin_dir.parent), **extra}


def shell(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_SECONDS)
    assert result.returncode == 0, f"`{line}` exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_tutorial_works_in_a_fresh_virtualenv(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    # 1. Generate the package (with the hookgate this test runs: the page's "hookgate installed").
    generate = command(section(1), "hookgate new-plugin ")
    name = generate.split()[2]
    subprocess.run([sys.executable, "-m", "hookgate", *generate.split()[1:]], cwd=work, check=True, timeout=60, capture_output=True)
    package = work / f"hookgate-{name}"
    assert (package / "pyproject.toml").is_file()

    # 2. Install: the page's one command, into a fresh venv, with the checkout in place of path/to/hookgate.
    bin_dir = make_venv(tmp_path / "venv")
    env = environment(bin_dir)
    install = command(section(2), "pip install -e path/to/hookgate")
    shell(install.replace("path/to/hookgate", str(ROOT)), work, env)
    listed = shell("hookgate plugins", work, env).stdout
    assert re.search(rf"^  {name.replace('-', '_')}\s+not in pipeline\s+hookgate-{name} 0\.1\.0", listed, flags=re.M), listed

    # 4. Enable it, check the config, serve, send the page's requests.
    [toml] = [block for block in blocks(section(4), "toml")]
    (work / "plugins.toml").write_text(toml)
    assert shell(command(section(4), "hookgate check-config"), work, env).stdout.startswith("plugins.toml: OK")
    port = free_port()
    serve = subprocess.Popen(
        ["bash", "-c", f"exec {command(section(4), 'hookgate serve')}"],
        cwd=work,
        env={**env, "HOOKGATE_PORT": str(port)},  # the documented variable: 8080 may be taken on a shared machine
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port, serve, timeout=60)
        [client] = blocks(section(4), "python")
        (work / "client.py").write_text(client.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
        printed = shell("python client.py", work, env).stdout.splitlines()
        assert printed == ["echo: hello", "content_blocked"]
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()

    # 6. The generated package's own tests pass, run as the page says.
    tested = shell(command(section(6), f"cd hookgate-{name}"), work, environment(bin_dir, CI="true"))
    summary = tested.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"failed|error|skipped", summary), tested.stdout[-3000:]


def _copy_of_the_checkout(target: Path) -> Path:
    ignored = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "results")
    shutil.copytree(ROOT, target, ignore=ignored)
    return target


def test_a_wheel_of_hookgate_ships_the_templates_and_generates_from_them(tmp_path):
    """The templates are package data: a regular (non-editable) install generates packages too."""
    source = _copy_of_the_checkout(tmp_path / "hookgate")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "wheels"), str(source)],
        check=True,
        timeout=STEP_SECONDS,
        capture_output=True,
    )
    [wheel] = (tmp_path / "wheels").glob("hookgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("guard", "observer", "middleware", "cache", "provider", "surface"):
        assert f"hookgate/plugin_templates/{kind}/kind.toml" in names
        assert f"hookgate/plugin_templates/{kind}/package/__init__.py.tmpl" in names
    assert "hookgate/plugin_templates/common/dot-github/workflows/test.yml.tmpl" in names
    bin_dir = make_venv(tmp_path / "venv")
    env = environment(bin_dir)
    shell(f"pip install --quiet --no-deps {wheel}", tmp_path, env)
    located = shell("python -c 'import hookgate; print(hookgate.__file__)'", tmp_path, env).stdout.strip()
    assert located.startswith(str(tmp_path / "venv")), located  # the wheel's copy, not the checkout
    shell("hookgate new-plugin from-wheel --kind cache", tmp_path, env)
    assert (tmp_path / "hookgate-from-wheel" / "hookgate_from_wheel" / "__init__.py").is_file()
    assert (tmp_path / "hookgate-from-wheel" / ".github" / "workflows" / "test.yml").is_file()
