"""The ``hookgate`` command line: a contract that scripts and deployments rely on.

    hookgate serve [--config PATH] [--host HOST] [--port PORT] [--workers N] [--pid-file PATH]
    hookgate reload (--pid-file PATH | --pid N) [--timeout SECONDS]
    hookgate plugins [--config PATH] [--json]
    hookgate check-config PATH [--strict]
    hookgate <plugin command> ...      commands plugins add (entry-point group ``hookgate.commands``)
    hookgate new-plugin NAME [--kind KIND] [--directory DIR]   write a plugin package to start from

The config path defaults to ``$HOOKGATE_CONFIG``, else ``./plugins.toml`` when it exists, else
the built-in defaults (logging, in-memory cache, the ``echo`` demo model). A bad configuration
exits with status 1 and one line naming the file, section, key and reason; so does an address
``serve`` cannot listen on (a busy port). ``reload`` waits for the server's verdict and exits 1
with its reason when the new configuration was rejected (3 when none came in time).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

__all__ = ["main"]

EXIT_CONFIG = 1
EXIT_NO_OUTCOME = 3


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

    builtins = {"serve", "plugins", "check-config", "reload", "new-plugin"}
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in builtins}


def _parser(plugin_commands: Sequence[str] = ()) -> argparse.ArgumentParser:
    epilog = f"commands added by plugins: {', '.join(plugin_commands)}" if plugin_commands else None
    parser = argparse.ArgumentParser(prog="hookgate", description="An LLM gateway whose every feature is a plugin.", epilog=epilog)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="plugins.toml to use (default: $HOOKGATE_CONFIG or ./plugins.toml)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, or $HOOKGATE_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080, or $HOOKGATE_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="processes serving the one port (SO_REUSEPORT), each with its own event loop")
    serve.add_argument("--pid-file", help="write the server's process id here, for `hookgate reload`")
    serve.set_defaults(run=_serve)

    reload = commands.add_parser("reload", help="make a running server re-read its plugins.toml (SIGHUP)")
    reload.add_argument("--pid-file", help="the file `hookgate serve --pid-file` wrote")
    reload.add_argument("--pid", type=int, help="the server's process id")
    reload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the outcome (default 60)")
    reload.set_defaults(run=_reload)

    plugins = commands.add_parser("plugins", help="list installed plugins, the pipeline, hook order and config schemas")
    plugins.add_argument("--config", help="plugins.toml to resolve the pipeline from")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(run=_plugins)

    from .plugin_template import add_command as add_new_plugin  # its own module: hookgate.plugin_template

    add_new_plugin(commands)

    check = commands.add_parser("check-config", help="validate a plugins.toml without starting")
    check.add_argument("path", help="the file to check")
    check.add_argument("--strict", action="store_true", help="fail on warnings too (a table or variable configuring a plugin that is not in the pipeline)")
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
    from .logs import configure_logging
    from .reload_status import status_path

    path = _config_path(args.config)
    overrides = {"host": args.host, "port": args.port}
    config, _ = _build(path, overrides)
    configure_logging(config.gateway.log_level, config.gateway.log_format)
    if args.workers < 1:
        _fail("--workers must be at least 1")
    status = status_path(args.pid_file, os.getpid())
    with _pid_file(args.pid_file, status):
        if args.workers == 1:
            _run_server(path, overrides, reuse_port=False, config=config, status=status)
        else:
            _listen(config.gateway.host, config.gateway.port, reuse_port=True).close()  # a busy port: one line, no workers
            _run_workers(args.workers, path, overrides, status)


def _run_server(path: str | None, overrides: dict[str, Any], *, reuse_port: bool, config: Any = None, status: Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads the configuration (its outcome goes to
    ``status`` for ``hookgate reload``)."""
    import asyncio
    import signal

    import structlog
    from aiohttp import web

    from .logs import ConnectionFloodLog
    from .pipelines import Pipelines, ReloadFailed
    from .reload_status import ReloadStatus, write_status
    from .server import PIPELINES, create_app

    if config is None:
        config, _ = _build(path, overrides)
    # Bound before the app starts: a busy port is one line and an exit, not plugins started and
    # stopped again around a traceback; "listening" is logged once the socket really is bound.
    sock = _listen(config.gateway.host, config.gateway.port, reuse_port=reuse_port)
    grace = config.gateway.shutdown_grace_seconds
    app = create_app(config, pipelines=lambda gateway: Pipelines.from_file(gateway, path, overrides, grace_seconds=grace))
    log = structlog.get_logger("hookgate")
    counts = {"responses": 0, "reloads": 0}

    def record(outcome: ReloadStatus) -> None:
        if status is not None:
            write_status(status, outcome)

    async def reload() -> None:
        try:
            await app[PIPELINES].reload(app)
            outcome = ReloadStatus(os.getpid(), counts["reloads"] + 1, "reloaded")
        except ReloadFailed as exc:  # logged with its reason; the running pipeline stays
            outcome = ReloadStatus(os.getpid(), counts["reloads"] + 1, "rejected", str(exc))
        counts["reloads"] += 1
        await asyncio.to_thread(record, outcome)

    async def listen_for_reload(app: web.Application) -> None:
        await asyncio.to_thread(record, ReloadStatus(os.getpid(), 0, "started"))
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))

    async def count_response(_request: web.Request, _response: web.StreamResponse) -> None:
        counts["responses"] += 1

    async def draining(app: web.Application) -> None:
        # aiohttp has stopped accepting connections; running requests get the grace period.
        log.info("draining", in_flight=app[PIPELINES].current.in_flight, grace_seconds=grace)

    async def drained(app: web.Application) -> None:
        counts["unfinished"] = app[PIPELINES].current.in_flight  # what the grace period cut off

    app.on_startup.append(listen_for_reload)
    app.on_response_prepare.append(count_response)
    app.on_shutdown.append(draining)
    app.on_cleanup.insert(0, drained)  # before the plugins are shut down

    def announce(_message: str) -> None:
        log.info("listening", url=f"http://{config.gateway.host}:{config.gateway.port}", pid=os.getpid(), pipeline=list(config.pipeline))

    loop = _new_event_loop()
    # A connection flood: one line per interval for failed accept()s and broken connections,
    # not a traceback each.
    loop.set_exception_handler(ConnectionFloodLog(log))
    try:
        web.run_app(
            app,
            sock=sock,
            shutdown_timeout=grace,  # SIGTERM: stop accepting, let running requests and streams finish
            handler_cancellation=True,  # a client that goes away cancels its handler and the upstream call
            lingering_time=config.gateway.body_read_timeout_seconds,  # the unread rest of a body refused early
            access_log=None,  # the request_log plugin owns request logging
            print=announce,
            loop=loop,
        )
    finally:
        sock.close()
    log.info("stopped", pid=os.getpid(), responses=counts["responses"], unfinished=counts.get("unfinished", 0), reloads=counts["reloads"])


def _listen(host: str, port: int, *, reuse_port: bool) -> Any:
    """A listening socket on ``host:port``, or exit with one line naming the address."""
    import socket

    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, protocol)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = "the address is already in use (another server on that port?)" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        _fail(f"cannot listen on {host}:{port}: {reason}")
    sock.setblocking(False)
    return sock


def _run_workers(count: int, path: str | None, overrides: dict[str, Any], status: Path) -> None:
    """Run ``count`` server processes on one port and relay signals to them."""
    import multiprocessing
    import signal
    import tempfile

    import shutil

    # prometheus-client's multiprocess mode needs one directory shared by the workers; one we
    # made ourselves is removed when they are gone.
    made_metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="hookgate-metrics-")
    from .reload_status import write_workers

    context = multiprocessing.get_context("spawn")
    statuses = [status.with_name(f"{status.name}.{i}") for i in range(count)]
    workers = [context.Process(target=_worker, args=(path, overrides, statuses[i]), name=f"hookgate-worker-{i}") for i in range(count)]
    write_workers(status, os.getpid(), statuses)
    for worker in workers:
        worker.start()

    relayed: set[int] = set()

    def relay(signum: int, _frame: Any) -> None:
        relayed.add(signum)
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, relay)
    try:
        for worker in workers:
            worker.join()
    finally:
        for worker_status in statuses:
            worker_status.unlink(missing_ok=True)
        if made_metrics_dir is not None:
            shutil.rmtree(made_metrics_dir, ignore_errors=True)
    # A worker stopped by the signal it was sent before its server was up stopped as asked.
    failed = {worker.name: worker.exitcode for worker in workers if worker.exitcode not in (0, *(-s for s in relayed))}
    if failed:
        print(f"hookgate: error: workers exited abnormally: {failed}", file=sys.stderr)
        raise SystemExit(1)


def _worker(path: str | None, overrides: dict[str, Any], status: Path) -> None:
    from .logs import configure_logging

    config, _ = _build(path, overrides)
    configure_logging(config.gateway.log_level, config.gateway.log_format)
    _run_server(path, overrides, reuse_port=True, config=config, status=status)


class _pid_file:
    """Write the process id to ``path`` while serving; remove it, and the reload status file,
    after."""

    def __init__(self, path: str | None, status: Path) -> None:
        self.path = Path(path) if path else None
        self.status = status

    def __enter__(self) -> None:
        if self.path is not None:
            self.path.write_text(f"{os.getpid()}\n")

    def __exit__(self, *exc: object) -> None:
        self.status.unlink(missing_ok=True)
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _reload(args: argparse.Namespace) -> None:
    """Send SIGHUP, then wait for the server's verdict (``hookgate.reload_status``)."""
    import signal
    import time

    from .reload_status import ReloadStatus, read_status, status_path

    if args.pid is not None:
        pid = args.pid
    elif args.pid_file:
        try:
            pid = int(Path(args.pid_file).read_text().strip())
        except (OSError, ValueError) as exc:
            _fail(f"{args.pid_file}: cannot read a process id ({exc})")
    else:
        _fail("say which server: --pid-file PATH (as given to `hookgate serve --pid-file`) or --pid N")
    found = read_status(status_path(args.pid_file if args.pid is None else None, pid))
    files = found if isinstance(found, list) else [status_path(args.pid_file if args.pid is None else None, pid)]
    before = {path: _sequence(read_status(path)) for path in files}
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        _fail(f"no process {pid}")
    if found is None:
        print(f"asked process {pid} to reload its configuration; it reports no outcome (its log says whether it did)")
        return
    give_up = time.monotonic() + args.timeout
    outcomes: dict[Path, ReloadStatus] = {}
    while len(outcomes) < len(files):
        for path in files:
            status = read_status(path)
            if isinstance(status, ReloadStatus) and status.sequence > before[path] and status.outcome != "started":
                outcomes[path] = status
        if len(outcomes) < len(files):
            if time.monotonic() > give_up:
                print(f"hookgate: error: process {pid} did not report the reload's outcome within {args.timeout:g} s", file=sys.stderr)
                raise SystemExit(EXIT_NO_OUTCOME)
            time.sleep(0.05)
    rejected = [status for status in outcomes.values() if status.outcome == "rejected"]
    if rejected:
        _fail(f"reload rejected, the running configuration stays: {rejected[0].reason}")
    print(f"process {pid} reloaded its configuration" + (f" ({len(files)} workers)" if isinstance(found, list) else ""))


def _sequence(status: object) -> int:
    return status.sequence if hasattr(status, "sequence") else -1  # type: ignore[attr-defined]


def _new_event_loop():
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _check_config(args: argparse.Namespace) -> None:
    config, gateway = _build(args.path)
    warnings = config.warnings
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if warnings and args.strict:
        more = f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""
        print(f"error: {warnings[0]}{more}; --strict refuses warnings", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    models = ", ".join(sorted(model for model, _ in gateway.model_ids())) or "none"
    print(f"{args.path}: OK")
    print(f"pipeline: {' -> '.join(config.pipeline) or '(empty)'}")
    print(f"surfaces: {', '.join(plugin.name for plugin in config.surfaces) or '(none)'}")
    print(f"models: {models}")


def _plugins(args: argparse.Namespace) -> None:
    from .introspection import pipeline_report
    from .registry import installed_plugins

    path = _config_path(args.config)
    config, gateway = _build(path)
    report = pipeline_report(config, gateway, installed_plugins())
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"config: {report['config']}")
    print(f"pipeline: {' -> '.join(report['pipeline']) or '(empty)'}")
    print(f"surfaces: {', '.join(report['surfaces']) or '(none)'}\n")
    print("installed plugins:")
    rows = []
    for plugin in report["plugins"]:
        if plugin["enabled"]:
            state = f"enabled #{plugin['position']}"
        elif plugin["surface"]:
            state = "surface"  # enabled in [gateway] surfaces
        else:
            state = "disabled" if plugin["name"] in config.disabled else "not in pipeline"
        rows.append((plugin["name"], state, f"{plugin['distribution']} {plugin['version']}", plugin["description"]))
    _print_columns(rows, indent="  ")
    print("\nhook order:")
    _print_columns([(hook, " -> ".join(names) if names else "-") for hook, names in report["hooks"].items()], indent="  ")
    if report["routes"]:
        print("\nload-balanced routes (live figures: GET /-/plugins on a running gateway):")
        for route in report["routes"]:
            print(f"  {route['model']}: strategy {route['strategy']}, state {route['state']}")
            _print_columns(
                [
                    (
                        d["name"], f"{d['provider']}/{d['model']}", f"tier {d['tier']}", f"weight {d['weight']:g}",
                        ", ".join(
                            f"{label} {d[key]}" for key, label in
                            (("requests_per_minute", "rpm"), ("tokens_per_minute", "tpm"), ("max_in_flight", "in flight ≤"))
                            if d[key] is not None
                        ) + (" (own endpoint)" if d["own_endpoint"] else ""),
                    )
                    for d in route["deployments"]
                ],
                indent="    ",
            )
    print("\nrules (checked at start-up):")
    ruled = [plugin for plugin in report["plugins"] if plugin["rules"]]
    for plugin in ruled:
        print(f"  {plugin['name']}:" + (f"  (roles: {', '.join(plugin['roles'])})" if plugin["roles"] else ""))
        for rule in plugin["rules"]:
            print(f"    {rule}")
    if not ruled:
        print("  -")
    print("\nconfig (effective values, secrets masked; schema defaults for plugins not enabled):")
    for plugin in report["plugins"]:
        print(f"  [plugins.{plugin['name']}]   (env: HOOKGATE_{plugin['name'].upper().replace('-', '_')}__<KEY>)")
        effective = plugin["config"] or {}
        fields = []
        for field, spec in plugin["config_schema"].get("properties", {}).items():
            kind = spec.get("type") or "/".join(s.get("type", "?") for s in spec.get("anyOf", [])) or "object"
            if field in effective:
                value = json.dumps(effective[field], default=str)
            else:
                value = json.dumps(spec["default"], default=str) if "default" in spec else "(required)"
            fields.append((field, kind, "= " + _clip(value, 60), spec.get("description", "")))
        _print_columns(fields, indent="    ")


def _print_columns(rows: list[tuple[str, ...]], *, indent: str) -> None:
    """Rows as aligned columns (the last one left ragged)."""
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print(indent + "  ".join(cells).rstrip())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
