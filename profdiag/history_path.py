"""Where the history lives: a SQLite file or a postgresql:// URL (``history_pg``).

Kept apart from ``history`` so that every command's ``prepare`` (which protects the
history database from being written over) resolves it without importing sqlite3 and the
history's code."""

from __future__ import annotations

import os
from pathlib import Path

from .history_pg import is_pg

DEFAULT_DB = Path(".profdiag") / "history.db"
ENV_DB = "PROFDIAG_DB"


def default_db() -> Path:
    """The history path: $PROFDIAG_DB, else ./.profdiag/history.db."""
    env = os.environ.get(ENV_DB)
    return Path(env) if env else DEFAULT_DB


def resolve_db(db: str | os.PathLike[str] | None) -> Path:
    """The SQLite path, or a postgresql:// URL kept as text (see history_pg)."""
    target = db if db else os.environ.get(ENV_DB)
    if is_pg(target):
        return target  # type: ignore[return-value]
    return Path(db) if db else default_db()
