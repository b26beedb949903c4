"""``hookgate new-plugin``: write a complete plugin package from the templates shipped with hookgate.

    hookgate new-plugin NAME [--kind guard|observer|middleware|cache|provider|surface] [--directory DIR]

The package is what a plugin author would otherwise copy by hand (the lesson of simonw/llm's
``llm-plugin`` cookiecutter): ``pyproject.toml`` with the ``hookgate`` entry point and
``dependencies = ["hookgate"]``, one module with the plugin class, its config model and the hooks
of its kind (public surface only), a README, tests that pass as generated through the ``hookgate_*``
fixtures, a GitHub Actions workflow and a ``.gitignore``. It installs with ``pip install -e``.

The templates are package data (``hookgate/plugin_templates``): ``common/`` for what every package
has, and one directory per kind with its module, its tests and a ``kind.toml`` of README
paragraphs, with two optional keys: ``listed_in``, the ``[gateway]`` list that enables the kind
(default ``pipeline``), and ``test_client``, what its tests talk to the gateway with (default the
openai SDK). Placeholders are ``{{name}}``; a path part starting ``dot-`` stands for one starting
``.`` (packaging tools skip hidden files), ``package`` for the import package, and ``.tmpl`` keeps
templates from being imported, byte-compiled or collected as tests.

The ``surface`` kind (a client-facing API of its own, ``register_surfaces``) is enabled in
``[gateway] surfaces`` rather than the pipeline: its ``kind.toml`` says so, and the README, the
pyproject comment and this command's "next" lines follow it.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["KINDS", "PluginNames", "TemplateError", "add_command", "hookgate_requirement", "listed_in", "render", "write_package"]

KINDS: dict[str, str] = {
    "guard": "checks requests before anything else happens (before_request): reject, enrich, stamp headers",
    "observer": "watches every request without changing it (the request_finished event, background writes)",
    "middleware": "wraps the provider call (call_provider), placed by a declared rule",
    "cache": "answers repeated requests (cache_lookup, after_response), scoped per client",
    "provider": "the model behind some model names (register_providers), JSON and streams",
    "surface": "a client-facing API of its own (register_surfaces), enabled in [gateway] surfaces",
}
"""The kinds of plugin a template exists for, and what each does."""

DEFAULT_KIND = "guard"

_TOKEN = re.compile(r"\{\{(\w+)\}\}")
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_RESERVED = frozenset({"gateway", "config", "plugins", "models"})
"""Names that would clash with a plugins.toml section or a ``HOOKGATE_`` variable of the core."""


class TemplateError(ValueError):
    """The package cannot be written (a bad name, a directory in the way); the message says why."""


@dataclass(frozen=True, slots=True)
class PluginNames:
    """Every name a plugin package needs, derived from the one its author gives."""

    plugin: str
    """The entry point's name: what plugins.toml lists (``word_guard``)."""
    distribution: str
    """What pip installs (``hookgate-word-guard``), and the default directory."""
    package: str
    """The import package (``hookgate_word_guard``)."""
    class_name: str
    """The plugin class (``WordGuard``); its config model is ``WordGuardConfig``."""
    header: str
    """The plugin's name in response headers (``word-guard``)."""
    env: str
    """Its settings' environment prefix without ``HOOKGATE_`` and ``__`` (``WORD_GUARD``)."""

    @classmethod
    def of(cls, name: str) -> PluginNames:
        """From ``word-guard``, ``word_guard`` or ``hookgate-word-guard``.

        :raises TemplateError: the name is not lower-case words joined by ``-`` or ``_``, or it
            would clash with the core's own configuration.
        """
        bare = re.sub(r"^hookgate[-_]", "", name.strip())
        if not _NAME.match(bare) or len(bare) > 40:
            raise TemplateError(
                f"plugin name {name!r}: use lower-case words (letters and digits) joined by - or _, at most 40 characters, "
                "e.g. word-guard"
            )
        words = re.split(r"[-_]", bare)
        plugin = "_".join(words)
        if plugin in _RESERVED:
            raise TemplateError(f"plugin name {name!r}: {plugin!r} is a section of plugins.toml; choose another name")
        return cls(
            plugin=plugin,
            distribution="hookgate-" + "-".join(words),
            package="hookgate_" + plugin,
            class_name="".join(word.capitalize() for word in words),
            header="-".join(words),
            env=plugin.upper(),
        )


# ------------------------------------------------------------------------------- rendering ---


def render(names: PluginNames, kind: str, *, requirement: str = "hookgate") -> dict[str, str]:
    """The package's files, by path relative to its directory.

    :param requirement: what the CI workflow installs hookgate from by default (a pip
        requirement; see :func:`hookgate_requirement`).
    :raises TemplateError: ``kind`` has no template.
    """
    if kind not in KINDS:
        raise TemplateError(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    root = resources.files("hookgate") / "plugin_templates"
    values = {
        "plugin": names.plugin,
        "distribution": names.distribution,
        "package": names.package,
        "Class": names.class_name,
        "header": names.header,
        "ENV": names.env,
        "kind": kind,
        "hookgate_requirement": requirement,
        "route": f"/v1/{names.header}",
    }
    about = tomllib.loads((root / kind / "kind.toml").read_text(encoding="utf-8"))
    values["listed_in"] = str(about.get("listed_in", "pipeline"))
    values["test_client"] = about.get("test_client", "with the official `openai` SDK")
    for key, value in (("kind_phrase", about["phrase"]), *((k, about[k]) for k in ("summary", "about", "plugins_toml", "settings"))):
        values[key] = _substitute(value.strip(), values, f"{kind}/kind.toml")
    files: dict[str, str] = {}
    for base in (root / "common", root / kind):
        for relative, template in _templates(base):
            path = _target_path(relative, names)
            files[path] = _substitute(template.read_text(encoding="utf-8"), values, "/".join(relative))
    return files


def listed_in(kind: str) -> str:
    """The ``[gateway]`` list that enables a plugin of ``kind``: ``pipeline``, or ``surfaces`` for
    a client-facing API (which the gateway registers from that list, not from the pipeline)."""
    root = resources.files("hookgate") / "plugin_templates"
    return str(tomllib.loads((root / kind / "kind.toml").read_text(encoding="utf-8")).get("listed_in", "pipeline"))


def _templates(directory: Traversable, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    found = []
    for entry in sorted(directory.iterdir(), key=lambda item: item.name):
        if entry.is_dir():
            found += _templates(entry, (*prefix, entry.name))
        elif entry.name.endswith(".tmpl"):
            found.append(((*prefix, entry.name), entry))
    return found


def _target_path(relative: tuple[str, ...], names: PluginNames) -> str:
    parts = []
    for index, part in enumerate(relative):
        if index == len(relative) - 1:
            part = part.removesuffix(".tmpl")
            if part == "test_plugin.py":
                part = f"test_{names.plugin}.py"
        if index == 0 and part == "package":
            part = names.package
        if part.startswith("dot-"):
            part = "." + part[len("dot-") :]
        parts.append(part)
    return "/".join(parts)


def _substitute(text: str, values: dict[str, str], where: str) -> str:
    def value(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise TemplateError(f"template {where}: unknown placeholder {match.group(0)}") from None

    return _TOKEN.sub(value, text)


# --------------------------------------------------------------------------------- writing ---


def write_package(names: PluginNames, kind: str, directory: Path, *, requirement: str = "hookgate") -> list[Path]:
    """Write the package into ``directory`` (created; it must not exist or be empty).

    :returns: the files written.
    :raises TemplateError: ``directory`` is in the way, or another installed distribution has a
        plugin of that name.
    """
    _check_name_is_free(names)
    files = render(names, kind, requirement=requirement)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise TemplateError(f"{directory} already exists and is not an empty directory; choose another --directory")
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _check_name_is_free(names: PluginNames) -> None:
    from .registry import installed_plugins

    try:
        installed = installed_plugins().get(names.plugin)
    except Exception:  # an installation broken otherwise is not this command's to report
        return
    if installed is not None and installed.distribution.lower().replace("_", "-") != names.distribution:
        raise TemplateError(
            f"a plugin named {names.plugin!r} is already installed (by {installed.distribution}); "
            "two plugins of one name cannot be installed together: choose another name"
        )


def hookgate_requirement() -> str:
    """Where pip can get the hookgate this command runs from, for a CI machine: its Git
    repository and commit when it was installed from one, else ``hookgate`` (an index)."""
    direct = _direct_url()
    vcs = direct.get("vcs_info") if direct else None
    if isinstance(vcs, dict) and vcs.get("vcs") == "git" and str(direct.get("url", "")).startswith(("https://", "ssh://")):
        commit = vcs.get("commit_id") or vcs.get("requested_revision")
        return f"hookgate @ git+{direct['url']}" + (f"@{commit}" if commit else "")
    return "hookgate"


def hookgate_checkout() -> Path | None:
    """The local directory hookgate was installed from (``pip install -e PATH``), if any."""
    direct = _direct_url()
    url = str(direct.get("url", "")) if direct else ""
    if not url.startswith("file://"):
        return None
    path = Path(unquote(urlparse(url).path))
    return path if (path / "pyproject.toml").is_file() else None


def _direct_url() -> dict | None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        text = distribution("hookgate").read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------- the command ---


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``new-plugin`` to the ``hookgate`` command line."""
    kinds = "\n".join(f"  {kind:<11} {description}" for kind, description in KINDS.items())
    command = commands.add_parser(
        "new-plugin",
        help="write a complete plugin package (entry point, config model, hooks, tests, CI) to start from",
        description="Write a plugin package that installs with `pip install -e` and whose tests pass as generated.",
        epilog=f"kinds:\n{kinds}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("name", metavar="NAME", help="the plugin's name, e.g. word-guard (plugins.toml lists it as word_guard)")
    command.add_argument("--kind", choices=list(KINDS), default=DEFAULT_KIND, help=f"what the plugin does (default: {DEFAULT_KIND})")
    command.add_argument("--directory", metavar="DIR", help="where to write the package (default: ./hookgate-NAME); must not exist or be empty")
    command.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> None:
    try:
        names = PluginNames.of(args.name)
        directory = Path(args.directory) if args.directory else Path(names.distribution)
        written = write_package(names, args.kind, directory, requirement=hookgate_requirement())
    except (TemplateError, OSError) as exc:
        _fail(str(exc))
    print(f"wrote a {args.kind} plugin, {names.plugin!r}, to {directory}/:")
    for path in written:
        print(f"  {path}")
    checkout = hookgate_checkout()
    print("next:")
    print(f"  pip install -e {checkout or 'path/to/hookgate'} -e {directory}    # hookgate comes from its checkout: one command")
    print(f"  (cd {directory} && python -m pytest)")
    where = listed_in(args.kind)
    also = " (it replaces the default list: keep the APIs you serve)" if where == "surfaces" else ""
    print(f'  list "{names.plugin}" in [gateway] {where} of plugins.toml{also}, then: hookgate check-config plugins.toml')


def _fail(message: str) -> NoReturn:
    print(f"hookgate: error: {message}", file=sys.stderr)
    raise SystemExit(1)
