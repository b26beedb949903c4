"""``hookgate keys``: create, list and revoke gateway keys (the api_keys plugin's command line).

    hookgate keys create ID [--models M,M] [--rpm N] [--tpm N] [--daily-budget USD]
                            [--monthly-budget USD] [--cache-namespace NS] [--admin]
                            [--metadata K=V ...] [--redis-url URL] [--key-prefix PREFIX] [--toml]
                            [--config PATH]
    hookgate keys list   [--redis-url URL] [--key-prefix PREFIX]
    hookgate keys revoke ID [--redis-url URL] [--key-prefix PREFIX]
    hookgate keys hash   < key            the SHA-256 to put in plugins.toml for an existing key

``create`` prints the new key on standard output, once: it is stored nowhere, only its SHA-256
hash is (in Redis, or in the plugins.toml table printed on standard error with ``--toml``).
Redis defaults to ``$REDIS_URL`` and the prefix to the plugin's default, ``hookgate:keys``.
Every Redis write goes through :class:`~.api_keys_store.RedisKeyStore`, the very code the
plugin's ``/-/api/keys`` uses (same scripts, same records).

An id is a key's identity everywhere (its cache namespace, usage rows, limits and budget), so
``create`` refuses an id that plugins.toml already defines (``--config``, default
``$HOOKGATE_CONFIG`` or ``./plugins.toml``, as ``hookgate serve`` finds it) or that Redis holds.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import orjson
from pydantic import ValidationError

from .api_keys_store import KEY_ID_PATTERN, KEY_PREFIX, KeySettings, RedisKeyStore, generate_key, key_digest

__all__ = ["main", "KEY_PREFIX"]

T = TypeVar("T")


def main(argv: Sequence[str]) -> None:
    import redis

    args = _parser().parse_args(list(argv))
    if args.action is None:
        _parser().print_help()
        raise SystemExit(2)
    try:
        args.run(args)
    except redis.RedisError as exc:
        _fail(f"Redis failed: {type(exc).__name__}: {exc}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookgate keys", description="Manage gateway keys (the api_keys plugin).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    create = actions.add_parser("create", help="make a key, store its hash, print the key once")
    create.add_argument("id", help="the key's public id (letters, digits, '_', '.', '-')")
    create.add_argument("--models", help="comma-separated models the key may use (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--daily-budget", type=Decimal, help="USD per UTC day")
    create.add_argument("--monthly-budget", type=Decimal, help="USD per UTC month")
    create.add_argument("--cache-namespace", help="cache scope (default: the key id)")
    create.add_argument("--admin", action="store_true", help="may call admin endpoints")
    create.add_argument("--metadata", action="append", default=[], metavar="K=V", help="a label; repeatable")
    create.add_argument("--toml", action="store_true", help="print a plugins.toml table instead of storing in Redis")
    create.add_argument("--config", help="the plugins.toml whose key ids must not be reused (default: $HOOKGATE_CONFIG or ./plugins.toml)")
    _redis_options(create)
    create.set_defaults(run=_create)

    listing = actions.add_parser("list", help="list the keys stored in Redis (ids and settings)")
    _redis_options(listing)
    listing.set_defaults(run=_list)

    revoke = actions.add_parser("revoke", help="delete a key from Redis")
    revoke.add_argument("id")
    _redis_options(revoke)
    revoke.set_defaults(run=_revoke)

    digest = actions.add_parser("hash", help="print the SHA-256 of a key read from standard input")
    digest.set_defaults(run=_hash)
    return parser


def _redis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="default $REDIS_URL")
    parser.add_argument("--key-prefix", default="hookgate:keys", help="the api_keys plugin's key_prefix")


def _create(args: argparse.Namespace) -> None:
    if not KEY_ID_PATTERN.match(args.id):
        _fail(f"invalid key id {args.id!r}: letters, digits, '_', '.', '-' only (at most 64)")
    config = _config_path(args.config)
    if config is not None and args.id in _configured_ids(config):
        _fail(f"{config} already defines a key with id {args.id!r} ([plugins.api_keys.keys.{args.id}]); choose another id")
    try:
        settings = KeySettings(
            models=[m.strip() for m in args.models.split(",") if m.strip()] if args.models else None,
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
            daily_budget_usd=args.daily_budget,
            monthly_budget_usd=args.monthly_budget,
            cache_namespace=args.cache_namespace,
            admin=args.admin,
            metadata=dict(item.split("=", 1) for item in args.metadata if "=" in item),
        )
    except ValidationError as exc:
        _fail(f"invalid setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    if args.toml:
        key = generate_key()
        print(_toml_table(args.id, key_digest(key), settings), file=sys.stderr)
    else:
        created = _with_store(args, lambda store: store.create(args.id, settings))
        if created is None:
            _fail(f"a key with id {args.id!r} already exists (revoke it first)")
        key = created
        print(f"stored key {args.id!r} in Redis (only its SHA-256 hash); it is shown this once:", file=sys.stderr)
    print(key)


def _list(args: argparse.Namespace) -> None:
    for key_id, settings in _with_store(args, lambda store: store.list()):
        print(orjson.dumps({"id": key_id, **settings.model_dump(mode="json", exclude_defaults=True)}).decode())


def _revoke(args: argparse.Namespace) -> None:
    if _with_store(args, lambda store: store.revoke(args.id)) is None:
        _fail(f"no key with id {args.id!r}")
    print(f"revoked {args.id!r} (instances that saw it stop accepting it within their cache_seconds)", file=sys.stderr)


def _hash(args: argparse.Namespace) -> None:
    key = sys.stdin.readline().strip()
    if not key:
        _fail("no key on standard input")
    print(key_digest(key))


def _config_path(given: str | None) -> Path | None:
    if given:
        return Path(given)
    if os.environ.get("HOOKGATE_CONFIG"):
        return Path(os.environ["HOOKGATE_CONFIG"])
    return Path("plugins.toml") if Path("plugins.toml").is_file() else None


def _configured_ids(path: Path) -> set[str]:
    """The key ids ``[plugins.api_keys.keys.ID]`` of a plugins.toml (one line of error otherwise)."""
    try:
        document = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        _fail(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})")
    except UnicodeDecodeError:
        _fail(f"{path}: not UTF-8 text")
    except tomllib.TOMLDecodeError as exc:
        _fail(f"{path}: not valid TOML ({exc})")
    keys = document.get("plugins", {}).get("api_keys", {}).get("keys", {})
    return set(keys) if isinstance(keys, dict) else set()


def _with_store(args: argparse.Namespace, call: Callable[[RedisKeyStore], Awaitable[T]]) -> T:
    """Run one store operation on a Redis client of our own (the plugin's code, synchronously)."""
    if not args.redis_url:
        _fail("no Redis: pass --redis-url or set REDIS_URL (or use --toml to keep the key in plugins.toml)")
    from redis.asyncio import Redis

    async def run() -> Any:
        client = Redis.from_url(args.redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return await call(RedisKeyStore(client, args.key_prefix))
        finally:
            await client.aclose()

    return asyncio.run(run())


def _toml_table(key_id: str, digest: str, settings: KeySettings) -> str:
    lines = [f'[plugins.api_keys.keys."{key_id}"]', f'hash = "{digest}"']
    for name, value in settings.model_dump(mode="json", exclude_defaults=True).items():
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{orjson.dumps(str(k)).decode()} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def _fail(message: str) -> None:
    print(f"hookgate keys: error: {message}", file=sys.stderr)
    raise SystemExit(1)
