"""``hookgate new-plugin`` writes a package that works as generated: for every kind, its own tests
pass (run with pytest in its directory, installed the way pip would: a .dist-info with its entry
point), it imports only the public surface, its pyproject declares the entry point and depends on
hookgate alone, its README gives the one install command the docs give, and its CI workflow is
valid. The same tutorial through pip in a fresh virtualenv is tests/test_tutorial.py."""
from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from hookgate import plugin_template
from hookgate.cli import main
from hookgate.config import DEFAULT_SURFACES
from hookgate.plugin_template import KINDS, PluginNames, TemplateError, listed_in, render, write_package
from public_surface import import_problems


def fake_install(site: Path, package_dir: Path, names: PluginNames) -> None:
    """What ``pip install -e`` leaves for importlib.metadata: a .dist-info naming the entry point
    (the directory's name spells the distribution with underscores, as wheels do)."""
    info = site / f"{names.distribution.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {names.distribution}\nVersion: 0.1.0\n")
    pyproject = tomllib.loads((package_dir / "pyproject.toml").read_text())
    entry_points = pyproject["project"]["entry-points"]["hookgate"]
    (info / "entry_points.txt").write_text("[hookgate]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without HOOKGATE_ settings (a stray one would fail start-up)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("HOOKGATE_", "PYTEST_"))}, **extra}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_generated_tests_pass_as_generated(tmp_path, kind):
    names = PluginNames.of(f"made-{kind}")
    package_dir = tmp_path / names.distribution
    write_package(names, kind, package_dir)
    fake_install(tmp_path / "site", package_dir, names)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
        cwd=package_dir,
        env=clean_environment(PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{package_dir}", CI="true"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    defined = len(re.findall(r"^def test_", (package_dir / "tests" / f"test_{names.plugin}.py").read_text(), flags=re.M))
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= defined >= 3 and not re.search(r"skipped|failed|error", summary), summary


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_package_uses_only_the_public_surface(tmp_path, kind):
    names = PluginNames.of("surface-check")
    written = write_package(names, kind, tmp_path / "package")
    for path in written:
        if path.suffix == ".py":
            assert import_problems(path) == [], f"{kind}: {path.name}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_pyproject_has_the_entry_point_and_depends_on_hookgate_alone(kind):
    names = PluginNames.of("word-filter")
    files = render(names, kind)
    project = tomllib.loads(files["pyproject.toml"])["project"]
    assert project["name"] == "hookgate-word-filter"
    assert project["dependencies"] == ["hookgate"]
    assert project["entry-points"]["hookgate"] == {"word_filter": "hookgate_word_filter:WordFilter"}
    assert set(files) == {
        "pyproject.toml",
        "README.md",
        ".gitignore",
        ".github/workflows/test.yml",
        "hookgate_word_filter/__init__.py",
        "tests/test_word_filter.py",
    }
    for path, text in files.items():
        assert not re.search(r"\{\{\w", text), f"{kind}: a placeholder is left in {path}"


def test_the_readme_gives_the_one_install_command_the_tutorial_gives():
    """Issue 19 item 9: hookgate comes from its checkout, so pip needs both in one command."""
    tutorial = (ROOT / "docs" / "writing_plugins.md").read_text()
    assert "pip install -e path/to/hookgate -e ./hookgate-word-filter" in tutorial
    for kind in KINDS:
        readme = render(PluginNames.of("word-filter"), kind)["README.md"]
        assert "pip install -e path/to/hookgate -e ./hookgate-word-filter" in readme
        assert "No matching distribution found for hookgate" in readme


def test_the_ci_workflow_installs_in_one_command_and_runs_pytest():
    workflow = yaml.safe_load(render(PluginNames.of("word-filter"), "guard", requirement="hookgate @ git+https://example.org/hookgate@abc")[".github/workflows/test.yml"])
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) == {"push", "pull_request"}
    steps = workflow["jobs"]["test"]["steps"]
    install, test = steps[-2], steps[-1]
    assert install["run"] == "python -m pip install \"$REQUIREMENT\" -e '.[test]'"
    assert install["env"]["REQUIREMENT"] == "${{ vars.HOOKGATE_REQUIREMENT || 'hookgate @ git+https://example.org/hookgate@abc' }}"
    assert test["run"] == "python -m pytest"


def test_the_workflow_installs_hookgate_from_where_this_one_came(monkeypatch):
    git = {"url": "https://github.com/acme/hookgate", "vcs_info": {"vcs": "git", "commit_id": "0123abc"}}
    monkeypatch.setattr(plugin_template, "_direct_url", lambda: git)
    assert plugin_template.hookgate_requirement() == "hookgate @ git+https://github.com/acme/hookgate@0123abc"
    monkeypatch.setattr(plugin_template, "_direct_url", lambda: {"url": "file:///home/me/hookgate", "dir_info": {"editable": True}})
    assert plugin_template.hookgate_requirement() == "hookgate"  # a local path means nothing on a CI machine


@pytest.mark.parametrize(
    ("given", "plugin", "distribution", "package", "class_name"),
    [
        ("word-guard", "word_guard", "hookgate-word-guard", "hookgate_word_guard", "WordGuard"),
        ("word_guard", "word_guard", "hookgate-word-guard", "hookgate_word_guard", "WordGuard"),
        ("hookgate-pii-scrub2", "pii_scrub2", "hookgate-pii-scrub2", "hookgate_pii_scrub2", "PiiScrub2"),
    ],
)
def test_names_follow_from_the_one_given(given, plugin, distribution, package, class_name):
    names = PluginNames.of(given)
    assert (names.plugin, names.distribution, names.package, names.class_name) == (plugin, distribution, package, class_name)


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("WordGuard", "use lower-case words"),
        ("2fast", "use lower-case words"),
        ("word--guard", "use lower-case words"),
        ("a" * 41, "at most 40 characters"),
        ("gateway", "is a section of plugins.toml"),
    ],
)
def test_a_bad_name_is_refused_saying_why(given, reason):
    with pytest.raises(TemplateError, match=reason):
        PluginNames.of(given)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(["new-plugin", *args])
        code = 0
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_writes_the_package_and_says_what_next(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "rate-note", "--kind", "middleware")
    assert (code, err) == (0, "")
    assert (tmp_path / "hookgate-rate-note" / "hookgate_rate_note" / "__init__.py").is_file()
    assert "wrote a middleware plugin, 'rate_note', to hookgate-rate-note/" in out
    assert re.search(r"pip install -e \S+ -e hookgate-rate-note", out)


def test_the_command_refuses_what_would_go_wrong_in_one_line(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "notes", "--directory", str(tmp_path / "taken"))
    assert code == 1 and err == f"hookgate: error: {tmp_path / 'taken'} already exists and is not an empty directory; choose another --directory\n"
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    # The example package installs a plugin named word_guard: a second one could never be enabled.
    code, _, err = run_cli(capsys, "word-guard", "--directory", str(tmp_path / "new"))
    assert code == 1 and "a plugin named 'word_guard' is already installed (by hookgate-example-plugin)" in err
    assert not (tmp_path / "new").exists()
    code, _, err = run_cli(capsys, "Bad Name", "--directory", str(tmp_path / "bad"))
    assert code == 1 and err.count("\n") == 1 and "use lower-case words" in err


def test_the_kinds_are_listed_in_the_help(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and all(f"  {kind} " in out for kind in KINDS)
    code, _, err = run_cli(capsys, "x", "--kind", "gateway")
    assert code == 2 and "invalid choice: 'gateway'" in err and all(kind in err for kind in KINDS)


def test_the_command_says_where_a_surface_is_enabled(tmp_path, capsys):
    code, out, err = run_cli(capsys, "one-line", "--kind", "surface", "--directory", str(tmp_path / "one-line"))
    assert (code, err) == (0, "")
    assert 'list "one_line" in [gateway] surfaces of plugins.toml (it replaces the default list: keep the APIs you serve)' in out
    code, out, _ = run_cli(capsys, "one-guard", "--directory", str(tmp_path / "one-guard"))
    assert code == 0 and 'list "one_guard" in [gateway] pipeline of plugins.toml, then' in out


def readme_plugins_toml(readme: str) -> str:
    [toml] = re.findall(r"```toml\n# plugins.toml\n(.*?)```", readme, flags=re.S)
    return toml


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_readme_enables_the_plugin_where_the_gateway_looks_for_it(tmp_path, kind):
    """The README's plugins.toml, read by `hookgate plugins` with the package installed, enables
    the plugin: in the pipeline, or (a surface) in [gateway] surfaces, the defaults kept."""
    names = PluginNames.of(f"listed-{kind}")
    package_dir = tmp_path / names.distribution
    write_package(names, kind, package_dir)
    fake_install(tmp_path / "site", package_dir, names)
    toml = readme_plugins_toml((package_dir / "README.md").read_text())
    (tmp_path / "plugins.toml").write_text(toml)
    where = listed_in(kind)
    assert names.plugin in tomllib.loads(toml)["gateway"][where]
    assert f'list "{names.plugin}" in [gateway] {where}.' in (package_dir / "pyproject.toml").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "hookgate", "plugins", "--config", "plugins.toml", "--json"],
        cwd=tmp_path,
        env=clean_environment(PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{package_dir}"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    [plugin] = [plugin for plugin in report["plugins"] if plugin["name"] == names.plugin]
    if where == "surfaces":
        assert plugin["surface"] and not plugin["enabled"]
        assert set(DEFAULT_SURFACES) <= set(report["surfaces"]), "the README's list replaces the default one: it keeps the built-in APIs"
    else:
        assert plugin["enabled"] and not plugin["surface"]


def test_the_surface_readmes_example_is_what_the_gateway_answers(tmp_path, monkeypatch, hookgate_start_gateway):
    """The generated surface serves its README's example request, with its README's plugins.toml,
    beside the built-in APIs the README keeps."""
    names = PluginNames.of("readme-example-api")
    write_package(names, "surface", tmp_path / "package")
    readme = (tmp_path / "package" / "README.md").read_text()
    monkeypatch.syspath_prepend(str(tmp_path / "package"))
    plugin = getattr(importlib.import_module(names.package), names.class_name)
    gateway = hookgate_start_gateway(readme_plugins_toml(readme), plugins={names.plugin: plugin})
    path, body, answer = re.search(r"^POST (/\S+) (\{.*\})\n\s+-> 200 (\{.*\})$", readme, flags=re.M).groups()
    request = urllib.request.Request(gateway.url + path, data=body.encode(), method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read()) == json.loads(answer)
    chat = gateway.openai().chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello"}])
    assert chat.choices[0].message.content == "echo: hello"


def test_the_tutorials_excerpts_are_the_generated_code():
    """Every line docs/writing_plugins.md shows of the package (section 3) is in what
    ``hookgate new-plugin word-filter`` writes: the tutorial's names match its files."""
    tutorial = (ROOT / "docs" / "writing_plugins.md").read_text()
    shown = re.search(r"^## 3\. .*?(?=^## )", tutorial, flags=re.M | re.S).group(0)
    files = render(PluginNames.of("word-filter"), "guard")

    def flat(text: str) -> str:
        return re.sub(r",\)", ")", "".join(text.split()))

    for language, path in (("toml", "pyproject.toml"), ("python", "hookgate_word_filter/__init__.py")):
        generated = flat(files[path])
        excerpts = re.findall(rf"```{language}\n(.*?)```", shown, flags=re.S)
        assert excerpts, language
        for line in (line for excerpt in excerpts for line in excerpt.splitlines() if line.strip()):
            assert flat(line) in generated, f"docs/writing_plugins.md shows a line {path} does not have: {line.strip()}"
