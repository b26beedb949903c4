"""The ``hookgate`` command line: a contract that scripts and deployments rely on.

    hookgate serve [--config PATH] [--host HOST] [--port PORT]
    hookgate plugins [--config PATH] [--json]
    hookgate check-config PATH
    hookgate <plugin command> ...      commands plugins add (entry-point group ``hookgate.commands``)

The config path defaults to ``$HOOKGATE_CONFIG``, else ``./plugins.toml`` when it exists, else
the built-in defaults (logging, in-memory cache, the ``echo`` demo model). A bad configuration
exits with status 1 and one line naming the file, section, key and reason.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

__all__ = ["main"]

EXIT_CONFIG = 1


COMMANDS_GROUP = "hookgate.commands"
"""Entry-point group for commands that plugins add: ``keys = "my_plugin.cli:main"`` makes
``hookgate keys ...`` call ``main(["..."])`` with the remaining arguments."""


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugin_commands = _plugin_commands()
    if argv and argv[0] in plugin_commands:
        plugin_commands[argv[0]].load()(argv[1:])
        return
    parser = _parser(sorted(plugin_commands))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    args.run(args)


def _plugin_commands() -> dict[str, Any]:
    from importlib.metadata import entry_points

    builtins = {"serve", "plugins", "check-config"}
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in builtins}


def _parser(plugin_commands: Sequence[str] = ()) -> argparse.ArgumentParser:
    epilog = f"commands added by plugins: {', '.join(plugin_commands)}" if plugin_commands else None
    parser = argparse.ArgumentParser(prog="hookgate", description="An LLM gateway whose every feature is a plugin.", epilog=epilog)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="plugins.toml to use (default: $HOOKGATE_CONFIG or ./plugins.toml)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, or $HOOKGATE_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080, or $HOOKGATE_PORT)")
    serve.set_defaults(run=_serve)

    plugins = commands.add_parser("plugins", help="list installed plugins, the pipeline, hook order and config schemas")
    plugins.add_argument("--config", help="plugins.toml to resolve the pipeline from")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(run=_plugins)

    check = commands.add_parser("check-config", help="validate a plugins.toml without starting")
    check.add_argument("path", help="the file to check")
    check.set_defaults(run=_check_config)
    return parser


def _config_path(given: str | None) -> str | None:
    if given:
        return given
    if os.environ.get("HOOKGATE_CONFIG"):
        return os.environ["HOOKGATE_CONFIG"]
    return "plugins.toml" if Path("plugins.toml").is_file() else None


def _fail(message: str) -> NoReturn:
    print(f"hookgate: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def _build(path: str | None, overrides: dict[str, Any] | None = None):
    """Load the config and resolve the pipeline, or exit with one clear message."""
    from .config import ConfigError, load_config
    from .gateway import Gateway
    from .registry import PluginLoadError
    from .runner import PipelineError

    try:
        config = load_config(path, overrides=overrides)
        return config, Gateway(config)
    except ConfigError as exc:
        _fail(str(exc))
    except (PipelineError, PluginLoadError) as exc:
        _fail(f"{path or '<built-in defaults>'}: [gateway] pipeline: {exc}")


def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from .logs import configure_logging
    from .server import create_app

    path = _config_path(args.config)
    config, _ = _build(path, {"host": args.host, "port": args.port})
    configure_logging(config.gateway.log_level, config.gateway.log_format)
    app = create_app(config)
    loop = _new_event_loop()

    import structlog

    log = structlog.get_logger("hookgate")

    def announce(_message: str) -> None:
        log.info("listening", url=f"http://{config.gateway.host}:{config.gateway.port}", pipeline=list(config.pipeline))

    web.run_app(
        app,
        host=config.gateway.host,
        port=config.gateway.port,
        handler_cancellation=True,  # a client that goes away cancels its handler and the upstream call
        access_log=None,  # the request_log plugin owns request logging
        print=announce,
        loop=loop,
    )


def _new_event_loop():
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _check_config(args: argparse.Namespace) -> None:
    config, gateway = _build(args.path)
    models = ", ".join(sorted(model for model, _ in gateway.model_ids())) or "none"
    print(f"{args.path}: OK")
    print(f"pipeline: {' -> '.join(config.pipeline) or '(empty)'}")
    print(f"models: {models}")


def _plugins(args: argparse.Namespace) -> None:
    from .registry import installed_plugins

    path = _config_path(args.config)
    config, gateway = _build(path)
    installed = installed_plugins()
    position = {name: i + 1 for i, name in enumerate(config.pipeline)}
    effective = {p.name: p.config for p in config.plugins}
    report = {
        "config": config.source,
        "pipeline": list(config.pipeline),
        "hooks": {hook: names for hook, names in gateway.runner.order().items()},
        "plugins": [
            {
                "name": name,
                "distribution": plugin.distribution,
                "version": plugin.version,
                "entry_point": plugin.reference,
                "enabled": name in position,
                "position": position.get(name),
                "description": plugin.description,
                "config_schema": plugin.config_model().model_json_schema(),
                "config": _masked(effective[name]) if name in effective else None,
            }
            for name, plugin in sorted(installed.items(), key=lambda item: (position.get(item[0], 10**6), item[0]))
        ],
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"config: {report['config']}")
    print(f"pipeline: {' -> '.join(report['pipeline']) or '(empty)'}\n")
    print("installed plugins:")
    for plugin in report["plugins"]:
        state = f"enabled #{plugin['position']}" if plugin["enabled"] else ("disabled" if plugin["name"] in config.disabled else "not in pipeline")
        print(f"  {plugin['name']:<16} {state:<16} {plugin['distribution']} {plugin['version']}  {plugin['description']}")
    print("\nhook order:")
    for hook, names in report["hooks"].items():
        print(f"  {hook:<18} {' -> '.join(names) if names else '-'}")
    print("\nconfig schemas:")
    for plugin in report["plugins"]:
        print(f"  [plugins.{plugin['name']}]   (env: HOOKGATE_{plugin['name'].upper()}__<KEY>)")
        for field, spec in plugin["config_schema"].get("properties", {}).items():
            kind = spec.get("type") or "/".join(s.get("type", "?") for s in spec.get("anyOf", [])) or "object"
            default = f" = {json.dumps(spec['default'], default=str)}" if "default" in spec else ""
            print(f"    {field}: {kind}{default}  {spec.get('description', '')}")


def _masked(config: Any) -> dict[str, Any]:
    """Effective values with secrets masked (pydantic's SecretStr dumps as '**********')."""
    return json.loads(config.model_dump_json())
