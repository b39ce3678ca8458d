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
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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


# ------------------------------------------------------------- integer columns in chunks
# Rows per query of read_int_columns: a few MB of text per column and query, whatever the
# table's size.
CHUNK_ROWS = 1 << 16
# NULL is read as this value and told apart from a real INT64_MIN by SQLite's count(expr).
_NULL_INT = -(2**63)


class IntColumn:
    """One integer result column: ``values`` (0 where NULL, int32 when every value fits)
    and ``null`` (True where SQLite gave NULL)."""

    __slots__ = ("null", "values")

    def __init__(self, values: np.ndarray, null: np.ndarray) -> None:
        self.values = values
        self.null = null

    def __len__(self) -> int:
        return len(self.values)

    def int64(self) -> np.ndarray:
        return self.values.astype(np.int64, copy=False)


def _narrow(values: np.ndarray) -> np.ndarray:
    if len(values) and values.min() >= -(2**31) and values.max() < 2**31:
        return values.astype(np.int32)
    return values


def read_int_columns(con: sqlite3.Connection, table: str, alias: str, exprs: dict[str, str],
                     *, chunk_rows: int = CHUNK_ROWS) -> dict[str, IntColumn] | None:
    """``SELECT <exprs> FROM table alias`` in rowid order, read straight into integer numpy
    columns, ``chunk_rows`` rows per query: SQLite writes each column of a chunk as one
    comma-separated text (``group_concat``) that numpy parses in C, so no Python object is
    made per row or value and the memory is the columns' plus one chunk's text.

    None when the general path must read the table instead: a value that is not an integer
    or NULL (text, real, blob: the caller's typed coercion reports or converts it), a real
    INT64_MIN (the NULL marker), or a table without rowids. The work bound and value cap of
    the connection apply to every chunk query as to any other."""
    names = list(exprs)
    quoted = f'"{table}"'
    try:
        lo, hi, total = con.execute(
            f"SELECT min({alias}.rowid), max({alias}.rowid), count(*) FROM {quoted} {alias}"
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise
        return None  # no rowid (a WITHOUT ROWID table)
    parts: list[list[np.ndarray]] = [[] for _ in names]
    nulls: list[list[np.ndarray]] = [[] for _ in names]
    if total:
        if not isinstance(lo, int) or not isinstance(hi, int):
            return None
        # rowid ranges when the rowids are dense (every export); a keyset walk otherwise
        dense = hi - lo <= 2 * total + chunk_rows
        values = list(exprs.values()) if dense else [f"q.c{i}" for i in range(len(names))]
        # per column: how many values are integers, and all of them as one text (NULL, and
        # anything else, as the marker or its own text: the count check sends it away)
        aggs = ", ".join(f"total(typeof({e}) = 'integer'), "
                         f"group_concat(COALESCE({e}, {_NULL_INT}), ',')" for e in values)
        if dense:
            sql = (f"SELECT count(*), {aggs} FROM {quoted} {alias} "
                   f"WHERE {alias}.rowid >= ? AND {alias}.rowid < ?")
        else:
            inner = ", ".join(f"{e} AS c{i}" for i, e in enumerate(exprs.values()))
            sql = (f"SELECT count(*), {aggs}, max(q.rid) FROM "
                   f"(SELECT {alias}.rowid AS rid, {inner} FROM {quoted} {alias} "
                   f"WHERE {alias}.rowid > ? ORDER BY {alias}.rowid LIMIT ?) q")
        at = lo if dense else lo - 1
        factory = con.text_factory
        con.text_factory = bytes  # texts parsed as bytes: a blob's bytes cannot fail decoding
        try:
            while True:
                row = con.execute(sql, (at, at + chunk_rows) if dense else (at, chunk_rows)
                                  ).fetchone()
                count = int(row[0] or 0)
                if count:
                    for j in range(len(names)):
                        col = _parse_ints(row[2 + 2 * j], count)
                        if col is None:
                            return None  # a real, or a text or blob that reads as no integer
                        null = col == _NULL_INT
                        if int(row[1 + 2 * j]) + int(null.sum()) != count:
                            return None  # a text, real or blob value; or a real INT64_MIN
                        col[null] = 0
                        parts[j].append(_narrow(col))
                        nulls[j].append(null)
                if dense:
                    at += chunk_rows
                    if at > hi:
                        break
                elif not count:
                    break
                else:
                    at = row[-1]
        finally:
            con.text_factory = factory
    out: dict[str, IntColumn] = {}
    for j, name in enumerate(names):
        col_values = np.concatenate(parts[j]) if parts[j] else np.zeros(0, dtype=np.int32)
        null = np.concatenate(nulls[j]) if nulls[j] else np.zeros(0, dtype=bool)
        parts[j] = nulls[j] = []
        out[name] = IntColumn(col_values, null)
    return out


def _parse_ints(text: object, count: int) -> np.ndarray | None:
    """``count`` integers from SQLite's comma-separated text, else None."""
    if not isinstance(text, (bytes, str)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            col = np.fromstring(text, dtype=np.int64, sep=",")
        except ValueError:
            return None
    return col if len(col) == count else None
