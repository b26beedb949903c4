"""Schema migrations of ``request_store``: a short ordered list of SQL files per dialect.

``plugins/data/request_store/<dialect>/NNNN_name.sql``, numbered from 0001 without gaps, each
applied once, in order, inside one transaction that also records it in
``request_store_schema_version`` (version, name, SHA-256 of the file). Each backend runs
:func:`pending` under its database's own lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
``pg_advisory_xact_lock``), so instances starting together apply every migration exactly once
and a loser of the race simply finds nothing left to do.

Why not alembic: it brings SQLAlchemy (a second database layer beside the async drivers this
store uses), an env.py and a revision graph, for one table whose history is linear. Plain SQL
files are reviewable as they will run, in each dialect's own words, and are ~60 lines to apply.

A database at a version newer than this code knows (a newer instance migrated first during a
rolling deploy) is accepted: migrations are additive, so older code keeps writing. An applied
file whose checksum changed is refused: the schema the code expects is no longer certain.
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

__all__ = ["Migration", "MigrationError", "load_migrations", "pending", "sql_statements", "VERSION_TABLE"]

VERSION_TABLE = "request_store_schema_version"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's schema cannot be brought to what this code expects."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: its version number, name, text and checksum."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(dialect: Literal["sqlite", "postgresql"]) -> tuple[Migration, ...]:
    """The migrations shipped for ``dialect``, in order; a gap or a stray file is an error."""
    folder = files("hookgate.plugins").joinpath("data", "request_store", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"{dialect} migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"{dialect} migrations must be numbered 1..n without gaps, found {[m.version for m in found]}")
    return tuple(found)


def pending(applied: Mapping[int, str], migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations still to apply, given ``applied`` (version -> checksum) from the database.

    Raises :class:`MigrationError` when an applied migration's file has changed since.
    """
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"request_store migration {migration.version:04d}_{migration.name} was changed after it was applied; "
                "restore the file and add a new migration instead"
            )
    return [m for m in migrations if m.version not in applied]


def sql_statements(script: str) -> list[str]:
    """Split a SQLite script into statements (``executescript`` would commit the open
    transaction, so the migration lock would not cover the whole file)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not all(line.strip().startswith("--") or not line.strip() for line in current.splitlines()):
        raise MigrationError("a migration ends with an incomplete statement (missing ';'?)")
    return statements
