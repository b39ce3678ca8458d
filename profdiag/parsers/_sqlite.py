"""Untrusted SQLite access shared by the nsys and rocprof parsers.

A trace's SQLite file is input from someone else, so it is read as data only:

* opened read-only (``mode=ro``), with ``trusted_schema=OFF`` and ``query_only=ON``; a
  progress handler bounds the work of every query and the length of any value is capped;
* only real tables are listed (``sqlite_master`` type 'table', not virtual, without
  generated columns); views are never evaluated, except the trivial ``SELECT * FROM
  <table>`` (joined by ``UNION ALL``) views rocprofv3's rocpd files name their tables with;
* an export in WAL mode with its ``-wal`` file beside it is copied (database and WAL) to a
  temporary directory and opened there, so the rows in the WAL are read and the user's
  directory is left untouched (``immutable=1`` would skip them);
* a gzipped file is inflated against the InflateBudget of profdiag.io, once per
  ``_io.Input`` (profdiag.parsers.parse makes one for sniffing and parsing), into a
  temporary file removed when the Input closes, at exit and on SIGTERM; stale copies of dead
  processes are removed on the next inflation (the WAL copy and the inflation live in
  ``_io``).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from ._io import Input

# Longest string or blob a query may produce (a 1 MB kernel name is fine; a 1 GB
# printf() is not).
MAX_VALUE_BYTES = 64 << 20
# VM instructions between progress-handler calls, and the work bound: this many seconds of
# SQLite work per connection, at least, plus a second per 4 MB of file.
_TICK = 100_000
WORK_SECONDS_MIN = 120.0



class SafeConnection(sqlite3.Connection):
    """A connection that remembers when its work bound stopped a query."""

    interrupted_by_bound = False
    work_seconds = WORK_SECONDS_MIN


def _progress_handler(con: SafeConnection) -> callable[[], int]:  # type: ignore[valid-type]
    deadline = time.monotonic() + con.work_seconds

    def handler() -> int:
        if time.monotonic() > deadline:
            con.interrupted_by_bound = True
            return 1
        return 0

    return handler


def connect(path: Path, *, immutable: bool = True, size_hint: int = 0) -> SafeConnection:
    """Open a SQLite file read-only as untrusted data (see the module docstring)."""
    uri = Path(path).resolve().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    con = sqlite3.connect(uri, uri=True, factory=SafeConnection)
    assert isinstance(con, SafeConnection)
    con.work_seconds = max(WORK_SECONDS_MIN, size_hint / (4 << 20))
    for pragma in ("PRAGMA trusted_schema=OFF", "PRAGMA query_only=ON"):
        with contextlib.suppress(sqlite3.Error):
            con.execute(pragma)
    with contextlib.suppress(AttributeError, sqlite3.Error):
        # Connection.setlimit is Python >= 3.11 (the AttributeError above covers 3.10)
        con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)  # type: ignore[attr-defined,unused-ignore]
    con.set_progress_handler(_progress_handler(con), _TICK)
    return con


def bound_message(con: sqlite3.Connection) -> str | None:
    """The message for a query stopped by the work bound, else None."""
    if getattr(con, "interrupted_by_bound", False):
        return (f"SQLite queries ran past the work bound ({getattr(con, 'work_seconds', 0):.0f} s):"
                " the file makes simple reads explode (a hostile or corrupt export?)")
    return None


# ------------------------------------------------------------------ tables, never views
_VIEW_RE = re.compile(
    r"^\s*CREATE\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?[`\"\[]?[\w.]+[`\"\]]?\s+AS\s+(.*?);?\s*$",
    re.IGNORECASE | re.DOTALL)
_SELECT_ALL_RE = re.compile(r"^\s*SELECT\s+\*\s+FROM\s+[`\"\[]?(\w+)[`\"\]]?\s*$",
                            re.IGNORECASE)
_GENERATED_RE = re.compile(r"\bGENERATED\s+ALWAYS\b|\bAS\s*\(", re.IGNORECASE)


def _plain_tables(con: sqlite3.Connection) -> set[str]:
    out: set[str] = set()
    for name, sql in con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"):
        text = sql or ""
        if re.match(r"\s*CREATE\s+VIRTUAL\b", text, re.IGNORECASE):
            continue  # a virtual table runs a module's code
        if _GENERATED_RE.search(text) and _has_generated(con, name):
            continue  # generated columns are expressions evaluated on read
        out.add(name)
    return out


def _has_generated(con: sqlite3.Connection, table: str) -> bool:
    try:
        rows = con.execute(f'PRAGMA table_xinfo("{table}")').fetchall()
    except sqlite3.Error:
        return True
    return any(r[6] in (2, 3) for r in rows)


def _trivial_view_targets(sql: str) -> list[str] | None:
    """Tables of a view that is only ``SELECT * FROM t [UNION ALL SELECT * FROM u ...]``."""
    m = _VIEW_RE.match(sql or "")
    if not m:
        return None
    parts = re.split(r"\bUNION\s+ALL\b", m.group(1), flags=re.IGNORECASE)
    targets = []
    for part in parts:
        sm = _SELECT_ALL_RE.match(part)
        if not sm:
            return None
        targets.append(sm.group(1))
    return targets


def table_names(con: sqlite3.Connection) -> set[str]:
    """Names safe to read: real tables, and views that merely rename real tables."""
    tables = _plain_tables(con)
    names = set(tables)
    for name, sql in con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"):
        targets = _trivial_view_targets(sql)
        if targets and all(t in tables for t in targets):
            names.add(name)
    return names


def columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}


# ---------------------------------------------------------------- files: gzip and WAL
@contextlib.contextmanager
def sqlite_file(path: Path | Input) -> Iterator[tuple[Path, bool]]:
    """Yield (plain SQLite path, immutable?) for ``path``: itself, a WAL copy, or the
    (bounded) inflation of a gzipped file -- made once per Input (profdiag.parsers._io)."""
    with Input.using(path) as src:
        yield src.sqlite_file()


@contextlib.contextmanager
def open_db(path: Path | Input) -> Iterator[SafeConnection]:
    with sqlite_file(path) as (plain, immutable):
        try:
            size = os.path.getsize(plain)
        except OSError:
            size = 0
        con = connect(plain, immutable=immutable, size_hint=size)
        try:
            yield con
        finally:
            con.close()
