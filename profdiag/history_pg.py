"""PostgreSQL storage for the history (``--db postgresql://user@host/dbname``), via psycopg 3.

history.py speaks SQLite's dialect; ``PgConnection`` gives it the same small interface
(``execute``, ``executemany``, cursors with ``fetchone``/``fetchall``/``rowcount``/
``lastrowid``) over a psycopg connection and rewrites the few statements whose spelling
differs: ``?`` parameters, ``BEGIN IMMEDIATE`` (an advisory transaction lock, so concurrent
writers from many CI runners serialise as SQLite's writers do), ``AUTOINCREMENT``/``BLOB``,
``INSERT OR REPLACE``, ``sqlite_master`` and ``lastrowid`` (``RETURNING id``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import MissingDependencyError, SchedulerError, TraceFormatError

SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT_S = 10
# one advisory lock key for every profdiag writer of a database ("profdiag" as an int)
LOCK_KEY = int.from_bytes(b"profdiag", "big") & 0x7FFFFFFFFFFFFFFF


def is_pg(db: Any) -> bool:
    return isinstance(db, str) and db.startswith(SCHEMES)


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


_TYPES = ((re.compile(r"INTEGER PRIMARY KEY AUTOINCREMENT"), "BIGSERIAL PRIMARY KEY"),
          (re.compile(r"\bBLOB\b"), "BYTEA"), (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
          (re.compile(r"\bINTEGER\b"), "BIGINT"))


def translate(sql: str) -> str:
    """SQLite spelling -> PostgreSQL spelling for the statements history.py runs."""
    s = sql.strip()
    if s == "BEGIN IMMEDIATE":
        return "BEGIN"
    if s.startswith("CREATE TABLE"):
        for pattern, repl in _TYPES:
            s = pattern.sub(repl, s)
    m = re.match(r"INSERT OR REPLACE INTO meta VALUES \('(\w+)', \?\)", s)
    if m:
        s = (f"INSERT INTO meta VALUES ('{m.group(1)}', ?) ON CONFLICT (key) "
             "DO UPDATE SET value = EXCLUDED.value")
    if "sqlite_master" in s:
        s = ("SELECT table_name FROM information_schema.tables WHERE table_schema = "
             "current_schema() ORDER BY table_name")
    if s.startswith("INSERT INTO runs "):
        s += " RETURNING id"
    return s.replace("%", "%%").replace("?", "%s")


class PgCursor:
    def __init__(self, cur: Any, returning: bool) -> None:
        self._cur = cur
        self.lastrowid: int | None = None
        if returning:
            row = cur.fetchone()
            self.lastrowid = int(row[0]) if row else None

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def fetchone(self) -> Any:
        row = self._cur.fetchone()
        return None if row is None else tuple(_plain(v) for v in row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(_plain(v) for v in row) for row in self._cur.fetchall()]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


def _plain(v: Any) -> Any:
    return bytes(v) if isinstance(v, memoryview) else v


class PgConnection:
    """The subset of sqlite3.Connection that history.py uses, over psycopg (autocommit)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        stmt = translate(sql)
        if not params:  # psycopg reads %-escapes only when there are parameters
            stmt = stmt.replace("%%", "%")
        cur = self._conn.execute(stmt, list(params) if params else None)
        if stmt == "BEGIN":  # serialise writers like SQLite's BEGIN IMMEDIATE
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        return PgCursor(cur, stmt.endswith("RETURNING id"))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(translate(sql), [list(r) for r in rows])


@contextmanager
def connect(url: str) -> Iterator[PgConnection]:
    """An autocommit psycopg connection; unreachable server -> SchedulerError (exit 7)."""
    try:
        import psycopg
    except ImportError:
        raise MissingDependencyError("--db postgresql://... needs psycopg: "
                                     "pip install 'profdiag[postgres]'") from None
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchedulerError(f"cannot reach the history server: {first}", redact(url)) from None
    try:
        yield PgConnection(conn)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceFormatError(f"history database error: {first}", redact(url)) from None
    finally:
        conn.close()
