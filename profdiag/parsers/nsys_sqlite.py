"""Nsight Systems SQLite export (``nsys export --type sqlite``), plain or gzipped; ``.nsys-rep``.

Tables and columns are probed with ``PRAGMA table_info`` (their set changes between nsys
versions: 2022.x creates every table, 2024.x+ only the ones it fills, greenContextId is new,
EXPORT_META_DATA became META_DATA_EXPORT). The kernel and runtime tables are read by the
chunked integer reader of ``_sqlite`` (names as StringIds ids, mapped once per distinct id);
a table it cannot read, and the small ones, by one ``read_sql_query`` -- no per-row Python
either way. ``parse(source, compact=True)`` builds the compact table (``schema.compact``)
itself: string columns as sorted Categoricals straight from the ids, no string per row.

A ``.nsys-rep`` report is converted with ``nsys export`` when nsys is installed.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..errors import MissingDependencyError, TraceFormatError
from ..trace import DeviceInfo, Trace, TraceMeta
from . import _coerce
from ._io import Input
from ._sqlite import (  # noqa: F401 (re-exported for the rocprof parser)
    CHUNK_ROWS,
    IntColumn,
    bound_message,
    columns,
    connect,
    open_db,
    read_int_columns,
    sqlite_file,
    table_names,
)

FORMAT = "nsys"
# parse(source, compact=True) builds the compact table itself (profdiag.parsers.parse)
PARSES_COMPACT = True

SQLITE_MAGIC = b"SQLite format 3\x00"
_NSYS_TABLE_RE = re.compile(r"^(CUPTI_ACTIVITY_KIND_|TARGET_INFO_)")

K_KERNEL = "CUPTI_ACTIVITY_KIND_KERNEL"
K_MEMCPY = "CUPTI_ACTIVITY_KIND_MEMCPY"
K_MEMSET = "CUPTI_ACTIVITY_KIND_MEMSET"
K_RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
K_SYNC = "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"
K_GRAPH = "CUPTI_ACTIVITY_KIND_GRAPH_TRACE"
NVTX = "NVTX_EVENTS"

# Fallbacks for exports without ENUM_* tables (2022.x). Values from the 2024/2025 ENUM tables.
_MEMCPY_KIND = {0: "Unknown", 1: "HtoD", 2: "DtoH", 3: "HtoA", 4: "AtoH", 5: "AtoA", 6: "AtoD",
                7: "DtoA", 8: "DtoD", 9: "HtoH", 10: "PtoP", 11: "HtoD (Unified)",
                12: "DtoH (Unified)", 13: "DtoD (Unified)"}
_MEM_KIND = {0: "Pageable", 1: "Pinned", 2: "Device", 3: "Array", 4: "Managed",
             5: "Device Static", 6: "Managed Static", 7: "Unknown"}
_SYNC_TYPE = {0: "Unknown", 1: "Event sync", 2: "Stream wait sync", 3: "Stream sync",
              4: "Context sync"}
# ENUM_NSYS_EVENT_TYPE ids of NVTX ranges (push/pop and start/end); marks (34) have no end.
_NVTX_RANGE_TYPES = (59, 60)
_NA_STREAM = 0xFFFFFFFF
# columns of the activity queries that must hold integers (checked by _coerce)
_API_VERSION = re.compile(r"_v[0-9]+\Z")
_INT_COLUMNS = ("start", "end", "deviceId", "streamId", "correlationId", "globalPid",
                "globalTid", "tid", "bytes", "copyKind", "srcKind", "dstKind", "memKind",
                "syncType", "graphId", "graph")


# ---------------------------------------------------------------------------- SQLite access
# Untrusted-file access (read-only, tables only, bounded work, WAL, one bounded inflation)
# lives in _sqlite and is shared with the rocprof parser.


def looks_like_sqlite(head: bytes) -> bool:
    return head.startswith(SQLITE_MAGIC)


def _is_nsys_tables(tables: set[str]) -> bool:
    return "StringIds" in tables or any(_NSYS_TABLE_RE.match(t) for t in tables)


# ---------------------------------------------------------------------------- sniff
def sniff(source: Path | Input, head: bytes | None = None) -> bool:
    """SQLite with nsys tables (StringIds, CUPTI_ACTIVITY_KIND_*, TARGET_INFO_*), or a .nsys-rep."""
    with Input.using(source) as src:
        if looks_like_sqlite(src.head() if head is None else head):
            try:
                with open_db(src) as con:
                    return _is_nsys_tables(table_names(con))
            except (sqlite3.Error, OSError):  # a bomb or truncated gzip is reported
                return False
        return src.path.suffix == ".nsys-rep" and src.path.is_file()


# ---------------------------------------------------------------------------- parse
def parse(source: Path | Input, compact: bool = False) -> Trace:
    """The export's canonical Trace; ``compact``: its event table in compact form
    (``schema.compact``), the string columns built as sorted Categoricals straight from the
    StringIds codes the reader holds (no string per row)."""
    with Input.using(source) as src:
        return _parse(src, compact)


def _parse(src: Input, compact: bool = False) -> Trace:
    path = src.path
    if path.suffix == ".nsys-rep" and not _starts_with_sqlite(path):
        return _parse_report(path, compact)
    try:
        with open_db(src) as con:
            return _parse_connection(con, path, compact)
    except sqlite3.DatabaseError as exc:
        raise _db_error(exc, path) from None
    except pd.errors.DatabaseError as exc:  # pandas wraps sqlite3 errors in its own class
        raise _db_error(exc, path) from None


def _db_error(exc: BaseException, path: Path) -> TraceFormatError:
    if "interrupted" in str(exc):
        return TraceFormatError("SQLite queries ran past the work bound: the file makes simple "
                                "reads explode (a hostile or corrupt export?)", str(path))
    if "malformed" in str(exc) or "disk image" in str(exc) or "not a database" in str(exc):
        return TraceFormatError(f"truncated or corrupt SQLite export ({_one_line(exc)}); "
                                "export it again with `nsys export --type sqlite`", str(path))
    return TraceFormatError(f"unreadable SQLite file ({_one_line(exc)}); "
                            "the export may be truncated or corrupt", str(path))


def _starts_with_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == SQLITE_MAGIC


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())


def _parse_report(path: Path, compact: bool = False) -> Trace:
    out = path.with_suffix(".sqlite")
    command = f"nsys export --type sqlite --output {out} {path}"
    nsys = shutil.which("nsys")
    if nsys is None:
        raise MissingDependencyError(
            f"reading a .nsys-rep needs Nsight Systems' nsys on PATH; run `{command}` "
            "and pass the .sqlite file instead", str(path))
    with tempfile.TemporaryDirectory(prefix="profdiag-nsys-") as tmp:
        target = Path(tmp) / (path.stem + ".sqlite")
        try:
            proc = subprocess.run(
                [nsys, "export", "--type", "sqlite", "--output", str(target), str(path)],
                capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise TraceFormatError(f"`{command}` failed: {_one_line(exc)}", str(path)) from None
        if proc.returncode != 0 or not target.exists():
            tail = _one_line(proc.stderr or proc.stdout)[-300:]
            raise TraceFormatError(f"`{command}` failed (exit {proc.returncode}): {tail}",
                                   str(path))
        trace = parse(target, compact)
    trace.meta.path = str(path)
    return trace


class _Db:
    """Probed schema of one export: which tables/columns exist."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con
        self.tables = table_names(con)
        self._cols: dict[str, set[str]] = {}

    def has(self, table: str) -> bool:
        return table in self.tables

    def cols(self, table: str) -> set[str]:
        if table not in self._cols:
            self._cols[table] = columns(self.con, table) if table in self.tables else set()
        return self._cols[table]

    path: Path | str = "?"
    # build the compact table (string columns as sorted Categoricals of the StringIds codes)
    compact: bool = False
    # rows per chunk query of the integer reader (tests set a tiny one)
    chunk_rows: int = CHUNK_ROWS

    def query(self, sql: str, ids: tuple[str, ...] = ()) -> pd.DataFrame:
        """Run ``sql`` and pass the frame through the typed coercion step: integer columns
        are checked (a bad value is an error naming the file, table, column and row) and
        names made text (except the ``ids`` columns: StringIds ids the caller maps)."""
        df = pd.read_sql_query(sql, self.con)
        m = re.search(r"\bFROM\s+(\w+)", sql)
        table = m.group(1) if m else "query"
        _coerce.int_columns(df, _INT_COLUMNS, self.path, table)
        return _coerce.text_columns(df, tuple(c for c in ("name", "short_name", "grid", "block")
                                              if c not in ids))

    def id_names(self, table: str, alias: str, col: str) -> dict[Any, str | None]:
        """{raw value of ``table.col``: its StringIds text} for each distinct value, by the
        same LEFT JOIN the row queries used to run per row (so SQLite's comparison rules
        still decide what matches), but over distinct ids only. NULL ids are _NULL_ID."""
        sql = (f'SELECT DISTINCT COALESCE({alias}.{col}, {_NULL_ID}) AS id, s.value AS value '
               f'FROM {table} {alias} LEFT JOIN StringIds s ON s.id = {alias}.{col}')
        out: dict[Any, str | None] = {}
        for raw, value in self.con.execute(sql):
            out.setdefault(raw, _coerce.text(value))
        out[_NULL_ID] = None
        return out

    def ints(self, table: str, alias: str, exprs: dict[str, str]) -> dict[str, IntColumn] | None:
        """read_int_columns of ``exprs`` over ``table``, in chunks of ``chunk_rows``."""
        return read_int_columns(self.con, table, alias, exprs, chunk_rows=self.chunk_rows)

    def names_of(self, ids: np.ndarray, table: str, alias: str, col: str
                 ) -> dict[Any, str | None]:
        """{id: StringIds text} for the distinct integer ``ids`` read from ``table.col``:
        looked up by primary key, a batch of ids per query, when StringIds.id is an INTEGER
        PRIMARY KEY (every export: an integer then matches exactly as the row join did);
        else by id_names' join over the table."""
        info = self.con.execute('PRAGMA table_info("StringIds")').fetchall()
        if not any(r[1] == "id" and r[5] and str(r[2]).upper() == "INTEGER" for r in info):
            return self.id_names(table, alias, col)
        out: dict[Any, str | None] = {}
        wanted = [int(i) for i in ids if i != _NULL_ID]
        for at in range(0, len(wanted), 500):
            batch = wanted[at:at + 500]
            marks = ", ".join("?" * len(batch))
            for raw, value in self.con.execute(
                    f"SELECT id, value FROM StringIds WHERE id IN ({marks})", batch):
                out.setdefault(raw, _coerce.text(value))
        out[_NULL_ID] = None
        return out

    def enum(self, table: str, fallback: dict[int, str]) -> dict[int, str]:
        """ENUM_* table as {id: label} when present, else the built-in map."""
        if self.has(table) and {"id", "label"} <= self.cols(table):
            rows = self.con.execute(f'SELECT id, label FROM "{table}"').fetchall()
            out = {_coerce.int_or_none(i): _coerce.text(lbl) or "" for i, lbl in rows}
            out.pop(None, None)
            if out:
                return out  # type: ignore[return-value]
        return dict(fallback)


def _parse_connection(con: sqlite3.Connection, path: Path, compact: bool = False) -> Trace:
    db = _Db(con)
    db.path = path
    db.compact = compact
    if not _is_nsys_tables(db.tables):
        raise TraceFormatError(
            "SQLite file is not an Nsight Systems export (no StringIds, CUPTI_ACTIVITY_KIND_* "
            "or TARGET_INFO_* tables)", str(path))
    gpu_tables = [t for t in (K_KERNEL, K_MEMCPY, K_MEMSET, K_GRAPH) if db.has(t)]
    if not gpu_tables:
        raise TraceFormatError(
            "Nsight Systems export has no GPU activity tables (no CUPTI_ACTIVITY_KIND_KERNEL, "
            "_MEMCPY or _MEMSET): was it captured with --trace=cuda?", str(path))
    warnings: list[str] = []
    has_strings = db.has("StringIds")
    if not has_strings:
        warnings.append("no StringIds table: kernel and API names are unavailable")
    elif not {"id", "value"} <= db.cols("StringIds"):
        has_strings = False
        warnings.append("StringIds has no id/value columns: kernel and API names are "
                        "unavailable")
    elif not _unique_string_ids(db):
        # every name is a join on StringIds.id: duplicate ids would multiply the rows
        raise TraceFormatError("StringIds holds duplicate ids: not an intact Nsight Systems "
                               "export", str(path))

    parts = [
        _kernels(db, warnings, has_strings),
        _graph_launches(db, warnings),
        _memcpy(db, warnings),
        _memset(db, warnings),
        _runtime(db, warnings, has_strings),
        _sync(db, warnings),
        _nvtx(db, warnings, has_strings),
    ]
    if compact:
        # the kernel and runtime fast paths build compact parts; the general read_sql paths
        # and the small tables (memcpy, memset, sync, NVTX) are compacted here, part by part
        parts = [schema.compact(p) if p is not None and not schema.is_compact(p) else p
                 for p in parts]
    # the stacked table replaces the parts column by column
    events = schema.concat(parts, consume=True)
    del parts
    if compact and not schema.is_compact(events):
        events = schema.compact(events)  # no rows: the typed empty table
    meta = _meta(db, path, warnings)
    return Trace(events, meta)


def _unique_string_ids(db: _Db) -> bool:
    info = db.con.execute('PRAGMA table_info("StringIds")').fetchall()
    if [r[1] for r in info if r[5]] == ["id"]:
        return True  # id is the primary key (every real export): unique by construction
    return db.con.execute("SELECT 1 FROM StringIds GROUP BY id HAVING COUNT(*) > 1 "
                          "LIMIT 1").fetchone() is None


# ---------------------------------------------------------------------------- helpers
# NULL ids are read as this value (so the id column stays integer, not float with NaN)
_NULL_ID = -(2**63)


def _id_expr(alias: str, col: str) -> str:
    return f"COALESCE({alias}.{col}, {_NULL_ID})"


def _mapped_names(ids: pd.Series, names: dict[Any, str | None],
                  transform: Any = None) -> pd.api.extensions.ExtensionArray:
    """The string column of ``ids`` looked up in ``names`` (then ``transform``ed), built from
    one entry per distinct id: millions of rows of a few thousand names cost a dictionary
    lookup per distinct id, not a string object per row."""
    codes, uniques = pd.factorize(ids, use_na_sentinel=True)
    values = [names.get(u) for u in (uniques.tolist() if hasattr(uniques, "tolist")
                                     else list(uniques))]
    if transform is not None:
        values = [transform(v) if v is not None else None for v in values]
    return _coded_strings(np.asarray(codes), values)


# most bytes of text in one Arrow chunk of a string column built here
_CHUNK_TEXT = 1 << 30


def _coded_strings(codes: np.ndarray, values: list[str | None], compact: bool = False
                   ) -> pd.api.extensions.ExtensionArray:
    """The string column whose row i is ``values[codes[i]]`` (missing where that is None or
    the code is -1), built by Arrow from the distinct values; ``compact``: as the sorted
    Categorical ``schema.compact_strings`` makes of it (``schema.coded_categorical``)."""
    if compact:
        return schema.coded_categorical(codes, values)
    import pyarrow as pa

    valid = np.array([v is not None for v in values] + [False], dtype=bool)[codes]
    text = pa.array([v if v is not None else "" for v in values], type=pa.string())
    # rows split into chunks of at most _CHUNK_TEXT bytes of text: a string array's 32-bit
    # offsets hold 2 GiB (10M kernels of 200-byte names are more)
    size = np.array([len(v.encode("utf-8", "surrogatepass")) if v is not None else 0
                     for v in values] + [0], dtype=np.int64)
    ends = np.cumsum(size[codes]) if len(codes) else np.zeros(0, dtype=np.int64)
    total = int(ends[-1]) if len(ends) else 0
    cuts = [0, *np.searchsorted(ends, np.arange(1, total // _CHUNK_TEXT + 1) * _CHUNK_TEXT,
                                "right").tolist(), len(codes)]
    chunks = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi > lo or len(cuts) == 2:
            index = pa.array(codes[lo:hi].astype(np.int32), mask=~valid[lo:hi])
            chunks.append(pa.DictionaryArray.from_arrays(index, text).dictionary_decode())
    out: pd.api.extensions.ExtensionArray = pd.arrays.ArrowStringArray(
        pa.chunked_array(chunks, type=pa.string()))
    return out


def _col(cols: set[str], alias: str, name: str, expr: str | None = None) -> str:
    """``expr AS name`` when the column exists, else ``NULL AS name``."""
    return f"{expr or f'{alias}.{name}'} AS {name}" if name in cols else f"NULL AS {name}"


def _pid(expr: str) -> str:
    return f"(({expr} >> 24) & 16777215)"


def _tid(expr: str) -> str:
    return f"({expr} & 16777215)"


def _ints(df: pd.DataFrame, col: str) -> Any:
    return pd.to_numeric(df[col], errors="coerce").astype("Int64").array if len(df) else []


def _base(df: pd.DataFrame, kind: str, name: Any) -> dict[str, Any]:
    """Columns every activity table shares."""
    start = pd.to_numeric(df["start"], errors="coerce")
    end = pd.to_numeric(df["end"], errors="coerce")
    dur = (end - start).clip(lower=0)
    return {
        "name": pd.array(name, dtype="string"),
        "kind": [kind] * len(df),
        "start_ns": start.fillna(0).astype("int64").to_numpy(),
        "dur_ns": dur.fillna(0).astype("int64").to_numpy(),
    }


def _missing(table: str, cols: set[str], wanted: tuple[str, ...], warnings: list[str]) -> None:
    gone = [c for c in wanted if c not in cols]
    if gone:
        warnings.append(f"{table} has no column(s) {', '.join(gone)}: left empty")


def _require(table: str, cols: set[str], needed: tuple[str, ...], warnings: list[str]) -> bool:
    gone = [c for c in needed if c not in cols]
    if gone:
        warnings.append(f"{table} lacks {', '.join(gone)}: its rows were skipped")
        return False
    return True


def _stream(df: pd.DataFrame) -> Any:
    s = pd.to_numeric(df["streamId"], errors="coerce")
    return pd.array(s.where(s != _NA_STREAM), dtype="Int64")


# ---------------------------------------------------------------------------- tables
def _kernels(db: _Db, warnings: list[str], strings: bool) -> pd.DataFrame | None:
    if not db.has(K_KERNEL):
        warnings.append(f"no {K_KERNEL} table: no kernels in this export")
        return None
    c = db.cols(K_KERNEL)
    if not _require(K_KERNEL, c, ("start", "end"), warnings):
        return None
    _missing(K_KERNEL, c, ("deviceId", "streamId", "correlationId", "globalPid", "gridX",
                           "blockX", "graphNodeId"), warnings)
    name_col = "demangledName" if "demangledName" in c else "shortName" if "shortName" in c else None
    if name_col != "demangledName":
        warnings.append(f"{K_KERNEL} has no demangledName: kernel names are short names")
    # names: ids read here, mapped once per distinct id (no StringIds join per row)
    name_expr = _id_expr("k", name_col) if strings and name_col else "NULL"
    short_expr = _id_expr("k", "shortName") if strings and "shortName" in c else "NULL"
    grid = ("k.gridX || ',' || k.gridY || ',' || k.gridZ"
            if {"gridX", "gridY", "gridZ"} <= c else "NULL")
    block = ("k.blockX || ',' || k.blockY || ',' || k.blockZ"
             if {"blockX", "blockY", "blockZ"} <= c else "NULL")
    fast = _kernels_fast(db, c, name_col if strings else None, strings and "shortName" in c)
    if fast is not None:
        if len(fast) and fast["name"].isna().any():
            warnings.append(f"{int(fast['name'].isna().sum())} kernels have no name in StringIds")
        return fast
    sql = f"""
        SELECT k.start AS start, k."end" AS "end", {name_expr} AS name, {short_expr} AS short_name,
               {_col(c, 'k', 'deviceId')}, {_col(c, 'k', 'streamId')},
               {_col(c, 'k', 'correlationId')},
               {_col(c, 'k', 'globalPid', _pid('k.globalPid'))},
               {grid} AS grid, {block} AS block,
               {'k.graphNodeId IS NOT NULL' if 'graphNodeId' in c else '0'} AS graph
        FROM {K_KERNEL} k"""
    df = db.query(sql, ids=("name", "short_name"))
    if strings and name_col:
        df["name"] = _mapped_names(df["name"], db.id_names(K_KERNEL, "k", name_col))
    if strings and "shortName" in c:
        df["short_name"] = _mapped_names(df["short_name"],
                                         db.id_names(K_KERNEL, "k", "shortName"))
    cols = _base(df, schema.KIND_KERNEL, df["name"])
    cols.update(
        short_name=df["short_name"].astype("string").array,
        device=_ints(df, "deviceId"),
        stream=_stream(df),
        pid=_ints(df, "globalPid"),
        correlation=_ints(df, "correlationId"),
        grid=df["grid"].astype("string").array,
        block=df["block"].astype("string").array,
        graph_launch=df["graph"].astype(bool).astype("boolean").array,
    )
    if len(df) and df["name"].isna().any():
        warnings.append(f"{int(df['name'].isna().sum())} kernels have no name in StringIds")
    return schema.from_columns(cols, n=len(df))


# ---------------------------------------------------------------------------- typed fast path
# Kernels and runtime calls (all but a few rows of an export) are read by read_int_columns
# into integer numpy columns, chunk by chunk; a table holding any value that is not an
# integer or NULL takes the general read_sql path above, whose typed coercion reports or
# converts it. Both build the same table.


def _start_dur(cols: dict[str, IntColumn]) -> tuple[np.ndarray, np.ndarray]:
    """start_ns and dur_ns as _base makes them: missing start 0, dur end - start clipped at
    0, 0 when either is missing."""
    start, end = cols.pop("start"), cols.pop("end")
    s = start.int64()  # already 0 where NULL (read_int_columns)
    dur = end.int64() - s
    np.maximum(dur, 0, out=dur)
    dur[start.null | end.null] = 0
    return s, dur


def _nullable(col: IntColumn, na: int | None = None) -> pd.arrays.IntegerArray:
    values = col.int64()
    mask = col.null if na is None else col.null | (values == na)
    return pd.arrays.IntegerArray(values, mask)


def _kind(kind: str, n: int) -> pd.Categorical:
    return pd.Categorical.from_codes(np.full(n, schema.ALL_KINDS.index(kind), dtype=np.int8),
                                     dtype=schema.KIND_DTYPE)


def _id_strings(db: _Db, ids: IntColumn, table: str, alias: str, col: str,
                transform: Any = None) -> pd.api.extensions.ExtensionArray:
    """The names of StringIds ``ids``, mapped once per distinct id (NULL and unknown ids
    missing), as _mapped_names makes them."""
    present = _dense_ids(ids)
    if present is not None:
        # ids of an export are small: a table indexed by id maps each row straight to its
        # code (one take; no hashing, no int64 copy of the ids)
        names = db.names_of(present, table, alias, col)
        values = [names.get(u) for u in present.tolist()]
        if transform is not None:
            values = [transform(v) if v is not None else None for v in values]
        by_id = np.full(int(present[-1]) + 1 if len(present) else 1, -1, dtype=np.int32)
        by_id[present] = np.arange(len(values), dtype=np.int32)
        codes = by_id[ids.values]
        codes[ids.null] = -1
        return _coded_strings(codes, values, db.compact)
    raw = np.where(ids.null, _NULL_ID, ids.int64())
    codes, uniques = pd.factorize(raw)
    names = db.names_of(np.asarray(uniques), table, alias, col)
    values = [names.get(u) for u in np.asarray(uniques).tolist()]
    if transform is not None:
        values = [transform(v) if v is not None else None for v in values]
    return _coded_strings(np.asarray(codes), values, db.compact)


def _dense_ids(ids: IntColumn) -> np.ndarray | None:
    """The distinct non-NULL ids of ``ids``, sorted, when they are non-negative and small
    enough (below twice the rows, plus 65,536) to index a table by; else None."""
    v = ids.values
    if not len(v):
        return None
    hi = int(v.max())
    if int(v.min()) < 0 or hi >= 2 * len(v) + (1 << 16):
        return None
    seen = np.zeros(hi + 1, dtype=bool)
    seen[v] = True
    if ids.null.any():  # NULL reads as 0: id 0 is present only if a non-NULL row has it
        seen[0] = bool(((v == 0) & ~ids.null).any())
    return np.flatnonzero(seen)


def _triples(x: IntColumn, y: IntColumn, z: IntColumn, compact: bool = False
             ) -> pd.api.extensions.ExtensionArray:
    """'x,y,z' per row (missing when any is NULL), as SQLite's ``x || ',' || y || ',' || z``
    of integers writes it, built once per distinct triple."""
    cx, ux = pd.factorize(x.values)
    cy, uy = pd.factorize(y.values)
    cz, uz = pd.factorize(z.values)
    cxy, uxy = pd.factorize(cx.astype(np.int64) * len(uy) + cy)
    code, uniq = pd.factorize(cxy.astype(np.int64) * len(uz) + cz)
    uniq = np.asarray(uniq, dtype=np.int64)
    pair = np.asarray(uxy, dtype=np.int64)[uniq // len(uz)]
    xs = np.asarray(ux)[pair // len(uy)].tolist()
    ys = np.asarray(uy)[pair % len(uy)].tolist()
    zs = np.asarray(uz)[uniq % len(uz)].tolist()
    values: list[str | None] = [f"{a},{b},{c}" for a, b, c in zip(xs, ys, zs)]
    code = np.where(x.null | y.null | z.null, -1, code)
    return _coded_strings(code, values, compact)


def _timed_rows(db: _Db, table: str, alias: str, exprs: dict[str, str], kind: str
                ) -> tuple[dict[str, IntColumn], int, dict[str, Any]] | None:
    """The integer columns ``exprs`` of ``table`` (None when it needs the general path), their
    row count, and the canonical columns every timed row has (kind, start_ns, dur_ns)."""
    got = db.ints(table, alias, exprs)
    if got is None:
        return None
    n = len(got["start"])
    start, dur = _start_dur(got)  # start and end taken out of got
    return got, n, {"kind": _kind(kind, n), "start_ns": start, "dur_ns": dur}


def _kernels_fast(db: _Db, c: set[str], name_col: str | None, short: bool
                  ) -> pd.DataFrame | None:
    exprs = {"start": "k.start", "end": 'k."end"'}
    if name_col:
        exprs["name"] = f"k.{name_col}"
    if short:
        exprs["short_name"] = "k.shortName"
    for col in ("deviceId", "streamId", "correlationId"):
        if col in c:
            exprs[col] = f"k.{col}"
    if "globalPid" in c:
        exprs["globalPid"] = _pid("k.globalPid")
    dims = {"grid": ("gridX", "gridY", "gridZ"), "block": ("blockX", "blockY", "blockZ")}
    for axes in dims.values():
        if set(axes) <= c:
            exprs.update({a: f"k.{a}" for a in axes})
    if "graphNodeId" in c:
        exprs["graph"] = "k.graphNodeId IS NOT NULL"
    read = _timed_rows(db, K_KERNEL, "k", exprs, schema.KIND_KERNEL)
    if read is None:
        return None
    got, n, cols = read
    if "name" in got:
        cols["name"] = _id_strings(db, got.pop("name"), K_KERNEL, "k", str(name_col))
    if "short_name" in got:
        cols["short_name"] = _id_strings(db, got.pop("short_name"), K_KERNEL, "k", "shortName")
    for key, col in (("device", "deviceId"), ("pid", "globalPid"),
                     ("correlation", "correlationId")):
        if col in got:
            cols[key] = _nullable(got.pop(col))
    if "streamId" in got:
        cols["stream"] = _nullable(got.pop("streamId"), _NA_STREAM)
    for key, axes in dims.items():
        if axes[0] in got:
            x, y, z = (got.pop(a) for a in axes)
            cols[key] = _triples(x, y, z, db.compact)
    graph = got["graph"].values != 0 if "graph" in got else np.zeros(n, dtype=bool)
    cols["graph_launch"] = pd.arrays.BooleanArray(graph, np.zeros(n, dtype=bool))
    return schema.from_columns(cols, n=n, compact=db.compact)


def _runtime_fast(db: _Db, c: set[str], mapped: bool) -> pd.DataFrame | None:
    exprs = {"start": "r.start", "end": 'r."end"'}
    if mapped:
        exprs["name"] = "r.nameId"
    if "correlationId" in c:
        exprs["correlationId"] = "r.correlationId"
    if "globalTid" in c:
        exprs["globalTid"] = _pid("r.globalTid")
        exprs["tid"] = "(r.globalTid & 16777215)"
    read = _timed_rows(db, K_RUNTIME, "r", exprs, schema.KIND_RUNTIME)
    if read is None:
        return None
    got, n, cols = read
    if "name" in got:
        # the _vNN suffix dropped once per distinct API name
        cols["name"] = _id_strings(db, got.pop("name"), K_RUNTIME, "r", "nameId",
                                   lambda v: _API_VERSION.sub("", v))
    for key, col in (("pid", "globalTid"), ("tid", "tid"), ("correlation", "correlationId")):
        if col in got:
            cols[key] = _nullable(got.pop(col))
    return schema.from_columns(cols, n=n, compact=db.compact)


def _graph_launches(db: _Db, warnings: list[str]) -> pd.DataFrame | None:
    """--cuda-graph-trace=graph: one row per whole-graph launch, no per-kernel detail."""
    if not db.has(K_GRAPH):
        return None
    c = db.cols(K_GRAPH)
    if not _require(K_GRAPH, c, ("start", "end"), warnings):
        return None
    sql = f"""
        SELECT g.start AS start, g."end" AS "end", {_col(c, 'g', 'graphId')},
               {_col(c, 'g', 'deviceId')}, {_col(c, 'g', 'streamId')},
               {_col(c, 'g', 'correlationId')}, {_col(c, 'g', 'globalPid', _pid('g.globalPid'))}
        FROM {K_GRAPH} g"""
    df = db.query(sql)
    if not len(df):
        return None
    warnings.append(
        f"{len(df)} CUDA graph launches were traced as whole graphs (--cuda-graph-trace=graph): "
        "per-kernel detail needs `nsys profile --cuda-graph-trace=node`")
    gid = pd.to_numeric(df["graphId"], errors="coerce").astype("Int64").astype("string")
    name = ("CUDA graph " + gid.fillna("?")).to_numpy()
    cols = _base(df, schema.KIND_KERNEL, name)
    cols.update(
        device=_ints(df, "deviceId"), stream=_stream(df), pid=_ints(df, "globalPid"),
        correlation=_ints(df, "correlationId"),
        graph_launch=pd.array([True] * len(df), dtype="boolean"),
    )
    return schema.from_columns(cols, n=len(df))


def _memcpy(db: _Db, warnings: list[str]) -> pd.DataFrame | None:
    if not db.has(K_MEMCPY):
        return None
    c = db.cols(K_MEMCPY)
    if not _require(K_MEMCPY, c, ("start", "end"), warnings):
        return None
    _missing(K_MEMCPY, c, ("copyKind", "bytes"), warnings)
    sql = f"""
        SELECT m.start AS start, m."end" AS "end", {_col(c, 'm', 'copyKind')},
               {_col(c, 'm', 'srcKind')}, {_col(c, 'm', 'dstKind')}, {_col(c, 'm', 'bytes')},
               {_col(c, 'm', 'deviceId')}, {_col(c, 'm', 'streamId')},
               {_col(c, 'm', 'correlationId')},
               {_col(c, 'm', 'globalPid', _pid('m.globalPid'))},
               {'m.graphNodeId IS NOT NULL' if 'graphNodeId' in c else '0'} AS graph
        FROM {K_MEMCPY} m"""
    df = db.query(sql)
    if not len(df):
        return None
    copy_kinds = _copy_kind_names(db)
    mem_kinds = db.enum("ENUM_CUDA_MEM_KIND", _MEM_KIND)
    kind = df["copyKind"].map(lambda v: copy_kinds.get(int(v), f"kind {int(v)}")
                              if pd.notna(v) else "")
    name = ("Memcpy " + kind).str.strip()
    both = df["srcKind"].notna() & df["dstKind"].notna()
    if both.any():
        src = df["srcKind"].map(lambda v: mem_kinds.get(int(v), "Unknown") if pd.notna(v) else "")
        dst = df["dstKind"].map(lambda v: mem_kinds.get(int(v), "Unknown") if pd.notna(v) else "")
        name = name.where(~both, name + " (" + src + " -> " + dst + ")")
    cols = _base(df, schema.KIND_MEMCPY, name)
    cols.update(
        device=_ints(df, "deviceId"), stream=_stream(df), pid=_ints(df, "globalPid"),
        correlation=_ints(df, "correlationId"), bytes=_ints(df, "bytes"),
        graph_launch=df["graph"].astype(bool).astype("boolean").array,
    )
    return schema.from_columns(cols, n=len(df))


def _copy_kind_names(db: _Db) -> dict[int, str]:
    """copyKind -> 'HtoD' style, from ENUM_CUDA_MEMCPY_OPER names when the export has them."""
    out = dict(_MEMCPY_KIND)
    if db.has("ENUM_CUDA_MEMCPY_OPER") and {"id", "name"} <= db.cols("ENUM_CUDA_MEMCPY_OPER"):
        for i, name in db.con.execute("SELECT id, name FROM ENUM_CUDA_MEMCPY_OPER"):
            m = re.fullmatch(r"CUDA_MEMCPY_KIND_(UVM_)?([A-Z])TO([A-Z])", str(name))
            key = _coerce.int_or_none(i)
            if m and key is not None:
                out[key] = f"{m.group(2)}to{m.group(3)}" + (" (Unified)" if m.group(1) else "")
    return out


def _memset(db: _Db, warnings: list[str]) -> pd.DataFrame | None:
    if not db.has(K_MEMSET):
        return None
    c = db.cols(K_MEMSET)
    if not _require(K_MEMSET, c, ("start", "end"), warnings):
        return None
    sql = f"""
        SELECT m.start AS start, m."end" AS "end", {_col(c, 'm', 'memKind')},
               {_col(c, 'm', 'bytes')}, {_col(c, 'm', 'deviceId')}, {_col(c, 'm', 'streamId')},
               {_col(c, 'm', 'correlationId')},
               {_col(c, 'm', 'globalPid', _pid('m.globalPid'))},
               {'m.graphNodeId IS NOT NULL' if 'graphNodeId' in c else '0'} AS graph
        FROM {K_MEMSET} m"""
    df = db.query(sql)
    if not len(df):
        return None
    mem_kinds = db.enum("ENUM_CUDA_MEM_KIND", _MEM_KIND)
    kind = df["memKind"].map(lambda v: mem_kinds.get(int(v), "Unknown") if pd.notna(v) else "")
    name = ("Memset (" + kind + ")").str.replace(" ()", "", regex=False)
    cols = _base(df, schema.KIND_MEMSET, name)
    cols.update(
        device=_ints(df, "deviceId"), stream=_stream(df), pid=_ints(df, "globalPid"),
        correlation=_ints(df, "correlationId"), bytes=_ints(df, "bytes"),
        graph_launch=df["graph"].astype(bool).astype("boolean").array,
    )
    return schema.from_columns(cols, n=len(df))


def _runtime(db: _Db, warnings: list[str], strings: bool) -> pd.DataFrame | None:
    if not db.has(K_RUNTIME):
        warnings.append(f"no {K_RUNTIME} table: CUDA API calls (launch overhead) are unavailable")
        return None
    c = db.cols(K_RUNTIME)
    if not _require(K_RUNTIME, c, ("start", "end"), warnings):
        return None
    name_expr = "NULL"
    mapped = strings and "nameId" in c
    if mapped:
        name_expr = _id_expr("r", "nameId")
    else:
        warnings.append(f"{K_RUNTIME} names are unavailable (no nameId/StringIds)")
    fast = _runtime_fast(db, c, mapped)
    if fast is not None:
        return fast if len(fast) else None
    sql = f"""
        SELECT r.start AS start, r."end" AS "end", {name_expr} AS name,
               {_col(c, 'r', 'correlationId')},
               {_col(c, 'r', 'globalTid', _pid('r.globalTid'))},
               {'(r.globalTid & 16777215)' if 'globalTid' in c else 'NULL'} AS tid
        FROM {K_RUNTIME} r"""
    df = db.query(sql, ids=("name",) if mapped else ())
    if not len(df):
        return None
    if mapped:
        # the _vNN suffix dropped once per distinct API name (as str.replace(r"_v\d+$")
        # did per row: RE2's \d and $ are ASCII digits and the very end)
        name = _mapped_names(df["name"], db.id_names(K_RUNTIME, "r", "nameId"),
                             lambda v: _API_VERSION.sub("", v))
    else:
        name = df["name"].astype("string").str.replace(r"_v\d+$", "", regex=True).array
    cols = _base(df, schema.KIND_RUNTIME, name)
    cols.update(pid=_ints(df, "globalTid"), tid=_ints(df, "tid"),
                correlation=_ints(df, "correlationId"))
    return schema.from_columns(cols, n=len(df))


def _sync(db: _Db, warnings: list[str]) -> pd.DataFrame | None:
    if not db.has(K_SYNC):
        return None
    c = db.cols(K_SYNC)
    if not _require(K_SYNC, c, ("start", "end"), warnings):
        return None
    sql = f"""
        SELECT s.start AS start, s."end" AS "end", {_col(c, 's', 'syncType')},
               {_col(c, 's', 'deviceId')}, {_col(c, 's', 'streamId')},
               {_col(c, 's', 'correlationId')},
               {_col(c, 's', 'globalPid', _pid('s.globalPid'))}
        FROM {K_SYNC} s"""
    df = db.query(sql)
    if not len(df):
        return None
    types = db.enum("ENUM_CUPTI_SYNC_TYPE", _SYNC_TYPE)
    name = df["syncType"].map(lambda v: types.get(int(v), f"Sync type {int(v)}")
                              if pd.notna(v) else "Synchronization")
    cols = _base(df, schema.KIND_SYNC, name)
    cols.update(device=_ints(df, "deviceId"), stream=_stream(df), pid=_ints(df, "globalPid"),
                correlation=_ints(df, "correlationId"))
    return schema.from_columns(cols, n=len(df))


def _nvtx_range_types(db: _Db) -> tuple[int, ...]:
    if db.has("ENUM_NSYS_EVENT_TYPE") and {"id", "name"} <= db.cols("ENUM_NSYS_EVENT_TYPE"):
        ids = tuple(i for i in (_coerce.int_or_none(r[0]) for r in db.con.execute(
            "SELECT id FROM ENUM_NSYS_EVENT_TYPE WHERE name IN "
            "('NvtxPushPopRange', 'NvtxStartEndRange')")) if i is not None)
        if ids:
            return ids
    return _NVTX_RANGE_TYPES


def _nvtx(db: _Db, warnings: list[str], strings: bool) -> pd.DataFrame | None:
    if not db.has(NVTX):
        return None
    c = db.cols(NVTX)
    if not _require(NVTX, c, ("start", "end"), warnings):
        return None
    text = "e.text" if "text" in c else "NULL"
    join = ""
    if strings and "textId" in c:
        join = " LEFT JOIN StringIds t ON t.id = e.textId"
        text = f"COALESCE({text}, t.value)"
    where = 'e."end" IS NOT NULL'
    if "eventType" in c:
        where += f" AND e.eventType IN ({', '.join(map(str, _nvtx_range_types(db)))})"
    sql = f"""
        SELECT e.start AS start, e."end" AS "end", {text} AS name,
               {_col(c, 'e', 'globalTid', _pid('e.globalTid'))},
               {'(e.globalTid & 16777215)' if 'globalTid' in c else 'NULL'} AS tid
        FROM {NVTX} e {join} WHERE {where}"""
    df = db.query(sql)
    if not len(df):
        return None
    cols = _base(df, schema.KIND_ANNOTATION, df["name"].fillna(""))
    cols.update(pid=_ints(df, "globalTid"), tid=_ints(df, "tid"))
    return schema.from_columns(cols, n=len(df))


# ---------------------------------------------------------------------------- metadata
def _meta(db: _Db, path: Path, warnings: list[str]) -> TraceMeta:
    devices: list[DeviceInfo] = []
    if db.has("TARGET_INFO_GPU"):
        c = db.cols("TARGET_INFO_GPU")
        fields = ["id", "name", "smCount", "totalMemory", "computeMajor", "computeMinor"]
        sel = ", ".join(f'"{f}"' if f in c else f"NULL AS {f}" for f in fields)
        seen: set[int] = set()
        for i, (gid, name, sms, mem, major, minor) in enumerate(
                db.con.execute(f"SELECT {sel} FROM TARGET_INFO_GPU")):
            gid, sms, mem = (_coerce.int_or_none(v) for v in (gid, sms, mem))
            major, minor = _coerce.int_or_none(major), _coerce.int_or_none(minor)
            index = gid if gid is not None else i
            if index in seen:
                continue
            seen.add(index)
            devices.append(DeviceInfo(
                index=index, name=_coerce.text(name) or "",
                sm_count=sms if sms is not None and sms > 0 else None,
                memory_bytes=mem if mem is not None and mem > 0 else None,
                compute_capability=f"{major}.{minor or 0}" if major is not None else None,
                vendor="nvidia"))
    else:
        warnings.append("no TARGET_INFO_GPU table: the GPU model is unknown")
    base = None
    if db.has("TARGET_INFO_SESSION_START_TIME") and "utcEpochNs" in db.cols(
            "TARGET_INFO_SESSION_START_TIME"):
        row = db.con.execute("SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME").fetchone()
        base = _coerce.int_or_none(row[0]) if row else None
    options: dict[str, Any] = {}
    for table in ("META_DATA_EXPORT", "EXPORT_META_DATA"):
        if db.has(table) and {"name", "value"} <= db.cols(table):
            meta = dict(db.con.execute(f"SELECT name, value FROM {table}").fetchall())
            for key, opt in (("EXPORT_PRODUCT_VERSION", "nsys_version"),
                             ("EXPORT_SCHEMA_VERSION", "export_schema_version")):
                if key in meta:
                    options[opt] = str(meta[key])
            break
    if db.has("META_DATA_CAPTURE") and {"name", "value"} <= db.cols("META_DATA_CAPTURE"):
        row = db.con.execute("SELECT value FROM META_DATA_CAPTURE WHERE name LIKE "
                             "'%CUDA_GRAPH_TRACE_OPTIONS:MODE' LIMIT 1").fetchone()
        if row:
            options["cuda_graph_trace"] = str(row[0])
            if str(row[0]).lower() == "graph" and not db.has(K_GRAPH):
                warnings.append("CUDA graphs were traced as whole graphs: per-kernel detail "
                                "needs `nsys profile --cuda-graph-trace=node`")
    return TraceMeta(format=FORMAT, path=str(path), devices=devices, warnings=warnings,
                     options=options, base_time_ns=base)
