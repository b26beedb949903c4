"""How ``hookgate reload`` learns whether the server applied the new configuration.

A signal carries no answer, so the server writes the outcome of each SIGHUP to a small status
file next to its pid file (``<pid file>.reload``; without one, ``hookgate-<pid>.reload`` in the
temporary directory: ``hookgate reload --pid N`` finds it there), replaced atomically: ``{"pid", "sequence", "outcome", "reason"}``, where
``sequence`` counts the reloads the process has finished and ``outcome`` is ``started``,
``reloaded`` or ``rejected``. ``hookgate reload`` reads the sequence, sends SIGHUP, and waits for
a higher one. Under ``--workers N`` the parent's file lists one file per worker
(``{"pid", "workers": [...]}``) and the command waits for every worker.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ReloadStatus", "status_path", "write_status", "read_status", "write_workers"]


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The last reload outcome of one server process."""

    pid: int
    sequence: int
    outcome: Literal["started", "reloaded", "rejected"]
    reason: str | None = None


def status_path(pid_file: str | Path | None, pid: int) -> Path:
    """Where the server of ``pid`` (started with ``pid_file``, if any) writes its outcomes."""
    if pid_file is not None:
        return Path(f"{pid_file}.reload")
    return Path(tempfile.gettempdir()) / f"hookgate-{pid}.reload"


def write_status(path: Path, status: ReloadStatus) -> None:
    """Replace ``path`` with ``status`` (a reader never sees half a file)."""
    _write(path, asdict(status))


def write_workers(path: Path, pid: int, workers: list[Path]) -> None:
    """The parent's file under ``--workers``: where each worker's outcomes are."""
    _write(path, {"pid": pid, "workers": [str(worker) for worker in workers]})


def read_status(path: Path) -> ReloadStatus | list[Path] | None:
    """The status in ``path``, the worker files it lists, or None (absent, or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("workers"), list):
        return [Path(worker) for worker in data["workers"]]
    try:
        return ReloadStatus(int(data["pid"]), int(data["sequence"]), data["outcome"], data.get("reason"))
    except (KeyError, TypeError, ValueError):
        return None


def _write(path: Path, data: dict[str, object]) -> None:
    # A fresh name opened with O_EXCL | O_NOFOLLOW: in a shared temporary directory a file or
    # symlink planted under a predictable name is refused, never written through.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps(data))
    os.replace(temporary, path)
