"""AMD rocprof outputs: rocprof v1 (results.csv / .json / .db), rocprofv3 (CSV files or a
folder of them, JSON) and rocpd SQLite (rocprofv3's default output since ROCm 7.0).

Every flavour maps onto the canonical table the same way: kernels "kernel", HIP/HSA/RCCL API
calls "runtime" (name = the API function), copies "memcpy", roctx ranges "annotation".
Kernel names lose rocprof's code-object suffixes (" [clone .kd]", ".kd", "(.kd)"). rocprof
grid sizes count work-items; the table stores blocks (grid / workgroup per dimension), as CUDA
does. Devices are GPU ordinals (the n-th GPU agent), not HSA agent ids, which count CPUs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pandas as pd

from ...errors import TraceFormatError
from ...trace import Trace
from .. import nsys_sqlite as _sql
from .._io import Input
from ._common import _csv_flavour, _first_line, _read_bytes, clean_kernel_names
from .rocpd import _parse_rocpd
from .v1_csv import _parse_v1_csv
from .v1_db import _parse_v1_db
from .v1_json import _is_v1_json_head, _parse_v1_json
from .v3_csv import _parse_v3_csv, _v3_files, _v3_siblings
from .v3_json import _parse_v3_json

FORMAT = "rocprof"


# ============================================================================ sniffing
def sniff(source: Path | Input, head: bytes | None = None) -> bool:
    with Input.using(source) as src:
        if src.is_dir:
            return bool(_v3_files(src.path))
        head = src.head() if head is None else head
        if _sql.looks_like_sqlite(head):
            try:
                with _sql.open_db(src) as con:
                    return _sqlite_flavour(_sql.table_names(con), con) is not None
            except (sqlite3.Error, OSError):  # a bomb or truncated gzip is reported
                return False
    text = head.lstrip()
    if text.startswith(b"{"):
        return b'"rocprofiler-sdk-tool"' in head or _is_v1_json_head(head)
    return _csv_flavour(_first_line(head)) is not None


def _sqlite_flavour(tables: set[str], con: sqlite3.Connection) -> str | None:
    if "rocpd_kernel_dispatch" in tables or "rocpd_region" in tables:
        return "rocpd"
    for t in ("KERN", "OPS"):
        if t in tables and "BeginNs" in _sql.columns(con, t):
            return "v1"
    return None


# ============================================================================ parse
def parse(source: Path | Input) -> Trace:
    path = source.path if isinstance(source, Input) else Path(source)
    if not path.exists():
        raise TraceFormatError("no such file or directory", str(path))
    with Input.using(source) as src:
        return _parse(src)


def _parse(src: Input) -> Trace:
    path = src.path
    if src.is_dir:
        files = _v3_files(path)
        if not files:
            raise TraceFormatError("directory holds no rocprofv3 *_kernel_trace.csv, "
                                   "*_memory_copy_trace.csv or *_api_trace.csv files", str(path))
        return _parse_v3_csv(path, files)
    head = src.head()
    if _sql.looks_like_sqlite(head):
        return _parse_sqlite(src)
    if head.lstrip().startswith(b"{"):
        return _parse_json(src)
    flavour = _csv_flavour(_first_line(head))
    if flavour == "v1":
        return _parse_v1_csv(src)
    if flavour is not None:
        return _parse_v3_csv(path, _v3_siblings(path), src)
    raise TraceFormatError("not a rocprof output (expected results.csv/.json/.db, a rocprofv3 "
                           "CSV/JSON or a rocpd database)", str(path))


# ============================================================================ JSON dispatch
def _parse_json(src: Input) -> Trace:
    path = src.path
    raw = _read_bytes(src)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TraceFormatError(f"invalid JSON ({exc})", str(path)) from None
    if isinstance(doc, dict) and isinstance(doc.get("rocprofiler-sdk-tool"), list):
        return _parse_v3_json(path, doc["rocprofiler-sdk-tool"])
    if isinstance(doc, dict) and "traceEvents" in doc:
        return _parse_v1_json(path, doc)
    raise TraceFormatError("JSON is neither a rocprofv3 ('rocprofiler-sdk-tool') nor a "
                           "rocprof v1 ('traceEvents') output", str(path))


# ============================================================================ SQLite: rocpd / v1
def _parse_sqlite(src: Input) -> Trace:
    path = src.path
    try:
        with _sql.open_db(src) as con:
            tables = _sql.table_names(con)
            flavour = _sqlite_flavour(tables, con)
            if flavour == "rocpd":
                return _parse_rocpd(con, tables, path)
            if flavour == "v1":
                return _parse_v1_db(con, tables, path)
            raise TraceFormatError("SQLite file is not a rocprof output (no rocpd_* tables or "
                                   "rocprof v1 KERN/OPS table)", str(path))
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise _sql._db_error(exc, path) from None


__all__ = ["FORMAT", "sniff", "parse", "clean_kernel_names"]
