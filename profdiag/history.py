"""A history of diagnoses in one SQLite file (or a shared PostgreSQL database given as a
``postgresql://`` URL, see history_pg.py), for trends across commits and notebooks.

Library code only (no printing). ``record`` stores a diagnosis dict (``Diagnosis.to_dict()``)
with its labels; ``list_runs``, ``get``, ``trend`` and ``open`` read it back as DataFrames or
plain dicts. The store is versioned by ``meta.schema_version``: an older history is migrated
forward on open, a newer one is refused. Writers use WAL, ``BEGIN IMMEDIATE``, a busy timeout
and retries, so concurrent ``--record`` from several processes loses nothing.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import random
import re
import sqlite3
import statistics
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import orjson

from . import report_model
from .errors import TraceFormatError, UsageError
from .history_path import (  # re-exported: where the history lives
    DEFAULT_DB as DEFAULT_DB,
    ENV_DB as ENV_DB,
    default_db as default_db,
    resolve_db as resolve_db,
)
from .report_model import Report

ReportLike = Report | Mapping[str, Any]

SCHEMA_VERSION = 1
APP_ID = "profdiag"
KINDS = ("report", "gate")
BUSY_TIMEOUT_S = 30.0
RETRY_FOR_S = 120.0  # give up on a lock only after this long (then the error is real)

_SQLITE_MAGIC = b"SQLite format 3\x00"
T = TypeVar("T")

# The columns of `runs` that list_runs returns, in order (recorded_at is stored, shown in
# listings, and never part of a rendered diagnosis).
RUN_COLUMNS = [
    "id", "recorded_at", "kind", "labels", "mode", "bottleneck", "status", "overhead_share",
    "busy_share", "step_ms", "step_ms_prefill", "step_ms_decode", "observed_gemm_calls",
    "expected_gemm_calls", "format", "device", "trace_path", "content_hash",
]


# ---------------------------------------------------------------------------------------------
# schema and migrations

def _migrate_to_1(conn: sqlite3.Connection) -> None:
    """v1: runs, run_labels, metrics (meta is created by the caller)."""
    for stmt in (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            recorded_at TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('report', 'gate')),
            trace_path TEXT,
            content_hash TEXT NOT NULL,
            labels_key TEXT NOT NULL,
            format TEXT, device TEXT,
            mode TEXT, mode_confidence REAL,
            bottleneck TEXT, status TEXT,
            overhead_share REAL, busy_share REAL,
            step_ms REAL, step_ms_prefill REAL, step_ms_decode REAL,
            observed_gemm_calls INTEGER, expected_gemm_calls INTEGER,
            diagnosis_schema INTEGER,
            diagnosis BLOB NOT NULL,
            UNIQUE (content_hash, kind, labels_key)
        )""",
        "CREATE INDEX runs_recorded_at ON runs (recorded_at)",
        """CREATE TABLE run_labels (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (run_id, key)
        )""",
        "CREATE INDEX run_labels_kv ON run_labels (key, value)",
        """CREATE TABLE metrics (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            metric TEXT NOT NULL, value REAL,
            PRIMARY KEY (run_id, metric)
        )""",
        "CREATE INDEX metrics_metric ON metrics (metric)",
    ):
        conn.execute(stmt)


# version -> the step that brings a history at version-1 up to it. To add v2: write
# _migrate_to_2 (ALTER TABLE / backfill from the stored diagnosis JSON), add it here and bump
# SCHEMA_VERSION; old histories are upgraded in one transaction the next time they are opened.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_to_1}


def _is_lock_error(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)


def _retry(fn: Callable[[], T]) -> T:
    """Call ``fn``, retrying with jittered backoff while SQLite says the database is locked."""
    deadline = time.monotonic() + RETRY_FOR_S
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.5)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (take the write lock up front, so no upgrade deadlock) ... COMMIT."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    return [r[0] for r in rows]


def _read_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The history's schema_version; None for an empty database; error for a foreign one."""
    tables = _user_tables(conn)
    if not tables:
        return None
    if "meta" not in tables:
        raise TraceFormatError(f"not a profdiag history: it holds other tables "
                               f"({', '.join(tables[:5])}{', ...' if len(tables) > 5 else ''})",
                               str(path))
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError:
        raise TraceFormatError("not a profdiag history: its meta table is not ours",
                               str(path)) from None
    if meta.get("app") != APP_ID or "schema_version" not in meta:
        raise TraceFormatError("not a profdiag history: its meta table is not ours", str(path))
    try:
        return int(meta["schema_version"])
    except (TypeError, ValueError):
        raise TraceFormatError(f"bad schema_version {meta['schema_version']!r} in history",
                               str(path)) from None


def _check_not_newer(version: int | None, path: Path) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise UsageError(f"history schema_version {version} is newer than this profdiag "
                         f"supports (schema_version {SCHEMA_VERSION}); upgrade profdiag",
                         str(path))


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    version = _read_version(conn, path)
    _check_not_newer(version, path)
    if version == SCHEMA_VERSION:
        return

    def migrate() -> None:
        with _transaction(conn):
            current = _read_version(conn, path)  # another process may have just done it
            _check_not_newer(current, path)
            if current is None:
                conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute("INSERT INTO meta VALUES ('app', ?)", (APP_ID,))
                current = 0
            for v in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](conn)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))

    _retry(migrate)


@contextmanager
def _connect(db: str | os.PathLike[str] | None, create: bool) -> Iterator[sqlite3.Connection]:
    """An open, schema-checked connection; every SQLite failure becomes a one-line error."""
    from . import history_pg

    path = resolve_db(db)
    if history_pg.is_pg(path):
        with history_pg.connect(str(path)) as pg:
            _ensure_schema(pg, history_pg.redact(str(path)))  # type: ignore[arg-type]
            yield pg  # type: ignore[misc]
        return
    if path.is_dir():
        raise UsageError("is a directory, not a history database", str(path))
    if not path.exists():
        if not create:
            raise UsageError("no history here yet (record one with `profdiag report --record`"
                             " or pass --db)", str(path))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create history directory: {exc.strerror}",
                             str(path)) from None
    else:
        try:
            with path.open("rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise UsageError(f"cannot read history: {exc.strerror}", str(path)) from None
        if head and head != _SQLITE_MAGIC:
            raise TraceFormatError("not a SQLite database (not a profdiag history)", str(path))
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise UsageError(f"cannot open history: {exc}", str(path)) from None
    with closing(conn):
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = _retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            if mode is None:
                raise sqlite3.DatabaseError("cannot set WAL journal mode")
            conn.execute("PRAGMA foreign_keys = ON")
            _ensure_schema(conn, path)
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_lock_error(exc):
                raise UsageError(f"history is locked by another process: {exc}",
                                 str(path)) from None
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TraceFormatError(f"corrupt or unreadable history database: {msg}",
                                   str(path)) from None


# ---------------------------------------------------------------------------------------------
# what is stored of a diagnosis

def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)):
        f = float(x)
        return f if f == f and f not in (float("inf"), float("-inf")) else None
    return None


def _median_ms(values: list[Any]) -> float | None:
    nums = [v for v in (_num(x) for x in values) if v is not None]
    return round(statistics.median(nums) / 1e6, 6) if nums else None


def _report(data: ReportLike) -> Report:
    """The typed report of a stored diagnosis (report_model.load: a gate run's extra "gate"
    key, and keys a newer minor version added, are ignored; missing keys read as unknown)."""
    return report_model.load(data)


def step_ms_by_phase(data: ReportLike) -> dict[str, float]:
    """Median step wall time in ms: '' over all steps, and one entry per phase."""
    rep = _report(data)
    steps = rep.steps
    out: dict[str, float] = {}
    overall = _median_ms([s.wall_ns for s in steps])
    if overall is not None:
        out[""] = overall
    for phase in sorted({s.phase for s in steps if s.phase}):
        med = _median_ms([s.wall_ns for s in steps if s.phase == phase])
        if med is not None:
            out[phase] = med
    for ph in rep.phases:  # mixed traces: the phase summary when steps lack one
        if ph.name and ph.name not in out:
            med = _median_ms([ph.median_step_ns])
            if med is not None:
                out[ph.name] = med
    return out


def _status(data: ReportLike) -> str | None:
    """The worst check status (fail > warn > pass), or a gate's own pass/fail."""
    # the gate result a `gate --record` run stores beside the report is not part of it
    gate = data.get("gate") if isinstance(data, Mapping) else None
    if isinstance(gate, Mapping):
        if isinstance(gate.get("status"), str):
            return str(gate["status"])
        if isinstance(gate.get("passed"), bool):
            return "pass" if gate["passed"] else "fail"
    statuses = {c.status for c in _report(data).checks}
    for s in ("fail", "warn", "pass"):
        if s in statuses:
            return s
    return None


def summarize(data: ReportLike) -> dict[str, Any]:
    """The per-run columns kept beside the stored diagnosis (what listings and filters use)."""
    rep = _report(data)
    steps = step_ms_by_phase(rep)
    overhead_share = _num(rep.overhead.overhead_share)
    if overhead_share is None:
        overhead_share = _num(rep.categories.get("overhead"))
    stated_schema = not isinstance(data, Mapping) or "schema_version" in data
    return {
        "format": rep.source.format,
        "device": rep.source.device,
        "mode": rep.mode.value,
        "mode_confidence": _num(rep.mode.confidence),
        "bottleneck": rep.bottleneck.value,
        "status": _status(data),
        "overhead_share": overhead_share,
        "busy_share": _num(rep.breakdown.busy_share),
        "step_ms": steps.get(""),
        "step_ms_prefill": steps.get("prefill"),
        "step_ms_decode": steps.get("decode"),
        "observed_gemm_calls": _int(rep.kernel_counts.observed_gemm_calls),
        "expected_gemm_calls": _int(rep.kernel_counts.expected_gemm_calls),
        "diagnosis_schema": rep.schema_version if stated_schema else None,
    }


def _int(x: Any) -> int | None:
    v = _num(x)
    return int(v) if v is not None else None


def metrics_of(data: ReportLike) -> dict[str, float]:
    """Mode-independent numeric metrics of one diagnosis, by name (see docs/history.md)."""
    rep = _report(data)
    s = summarize(data)
    out: dict[str, Any] = {
        "overhead_share": s["overhead_share"],
        "busy_share": s["busy_share"],
        "mode_confidence": s["mode_confidence"],
        "gemm_calls": s["observed_gemm_calls"],
        "gemm_calls.expected": s["expected_gemm_calls"],
    }
    out["gemm_calls.missing"] = rep.kernel_counts.missing
    for phase, ms in step_ms_by_phase(rep).items():
        out["step_ms" + (f".{phase}" if phase else "")] = ms
    for cat, share in rep.categories.items():
        out[f"category.{cat}"] = share
    bd = rep.breakdown
    for key, ns in (("window_ms", bd.window_ns), ("busy_ms", bd.busy_ns),
                    ("idle_ms", bd.idle_ns)):
        v = _num(ns)
        out[key] = round(v / 1e6, 6) if v is not None else None
    oh = rep.overhead
    for key, value in (("kernels", oh.kernels), ("kernels_per_step", oh.kernels_per_step),
                       ("launch_calls_per_step", oh.launch_calls_per_step),
                       ("launch_api_mean_ns", oh.launch_api_mean_ns),
                       ("mean_kernel_ns", oh.mean_kernel_ns),
                       ("short_kernel_share", oh.short_kernel_share),
                       ("graph_replayed_share", oh.graph_replayed_share),
                       ("sync_calls", oh.sync_calls)):
        out[f"overhead.{key}"] = value
    out["checks.fail"] = sum(1 for c in rep.checks if c.status == "fail")
    out["checks.warn"] = sum(1 for c in rep.checks if c.status == "warn")
    comm = rep.communication
    if comm.calls:
        out["communication.exposed_share"] = comm.exposed_share
        out["communication.overlapped_share"] = comm.overlapped_share
        v = _num(comm.exposed_ns)
        out["communication.exposed_ms"] = round(v / 1e6, 6) if v is not None else None
        for kind, row in comm.by_type.items():
            busbw = _num(row.busbw_bytes_per_s)
            out[f"communication.{kind}.busbw_gbps"] = (
                round(busbw / 1e9, 3) if busbw is not None else None)
    roof = rep.roofline
    if roof is not None and roof.available:
        for cls, summary in roof.summary.items():
            out[f"roofline.{cls}.median_efficiency"] = summary.median_efficiency
    return {k: float(v) for k, v in sorted(out.items()) if _num(v) is not None}


def content_hash(trace_path: str | os.PathLike[str] | None, data: Mapping[str, Any]) -> str:
    """sha256 of the trace file's bytes (streamed); of the diagnosis JSON when there is no file."""
    h = hashlib.sha256()
    if trace_path is not None and Path(trace_path).is_file():
        with Path(trace_path).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    h.update(_dumps(data))
    return "json:" + h.hexdigest()


def _dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
                        | orjson.OPT_SERIALIZE_NUMPY, default=str)


def _labels_key(labels: Mapping[str, str]) -> str:
    return _dumps(dict(sorted(labels.items()))).decode()


def _utc_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# writing

def record(data: Mapping[str, Any], trace_path: str | os.PathLike[str] | None,
           labels: Mapping[str, str] | None = None, db: str | os.PathLike[str] | None = None,
           kind: str = "report", *, recorded_at: datetime | None = None) -> int:
    """Store a diagnosis dict with its labels; return the run id.

    The same trace bytes with the same labels and kind are stored once: recording them again
    returns the existing id.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown run kind {kind!r}; choose from {', '.join(KINDS)}")
    labels = {str(k): str(v) for k, v in (labels or {}).items()}
    for key in labels:
        if not key.strip():
            raise UsageError("a label needs a non-empty key")
    digest = content_hash(trace_path, data)
    labels_key = _labels_key(labels)
    summary = summarize(data)
    metrics = metrics_of(data)
    blob = zlib.compress(_dumps(dict(data)), 6)
    stamp = _utc_iso(recorded_at or datetime.now(timezone.utc))
    path_text = os.path.abspath(trace_path) if trace_path is not None else None
    cols = ["recorded_at", "kind", "trace_path", "content_hash", "labels_key", *summary,
            "diagnosis"]
    values = [stamp, kind, path_text, digest, labels_key, *summary.values(), blob]

    with _connect(db, create=True) as conn:
        def write() -> int:
            with _transaction(conn):
                row = conn.execute("SELECT id FROM runs WHERE content_hash = ? AND kind = ? "
                                   "AND labels_key = ?", (digest, kind, labels_key)).fetchone()
                if row:
                    return int(row[0])
                cur = conn.execute(f"INSERT INTO runs ({', '.join(cols)}) "
                                   f"VALUES ({', '.join('?' * len(cols))})", values)
                run_id = int(cur.lastrowid or 0)
                conn.executemany("INSERT INTO run_labels VALUES (?, ?, ?)",
                                 [(run_id, k, v) for k, v in sorted(labels.items())])
                conn.executemany("INSERT INTO metrics VALUES (?, ?, ?)",
                                 [(run_id, k, v) for k, v in metrics.items()])
                return run_id

        return _retry(write)


def delete(db: str | os.PathLike[str] | None, run_id: int) -> bool:
    """Remove one run (with its labels and metrics); True when it existed."""
    with _connect(db, create=False) as conn:
        def rm() -> bool:
            with _transaction(conn):
                conn.execute("DELETE FROM run_labels WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
                return conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

        return _retry(rm)


# ---------------------------------------------------------------------------------------------
# reading

_RELATIVE = re.compile(r"^(\d+)\s*([dhw])$")


def parse_when(value: str | date | datetime | None, end: bool = False) -> str | None:
    """A --since/--until value as a UTC ISO bound: a date (until: the whole day), a datetime,
    or a relative age like ``7d``, ``12h``, ``2w``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _utc_iso(value)
    if isinstance(value, date):
        day = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
        return _utc_iso(day + timedelta(days=1) - timedelta(microseconds=1) if end else day)
    text = str(value).strip()
    m = _RELATIVE.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        try:
            delta = {"d": timedelta(days=n), "h": timedelta(hours=n),
                     "w": timedelta(weeks=n)}[unit]
            return _utc_iso(datetime.now(timezone.utc) - delta)
        except (OverflowError, ValueError):
            raise UsageError(f"age {text!r} reaches before year 1; use a smaller age or a "
                             "date") from None
    try:
        if len(text) == 10:
            return parse_when(date.fromisoformat(text), end)
        return _utc_iso(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(f"cannot read date {text!r}; use YYYY-MM-DD, an ISO time or an age "
                         "like 7d") from None


def _where(labels: Mapping[str, str] | None, since: Any, until: Any, mode: str | None,
           verdict: str | None, kind: str | None,
           ids: list[int] | None = None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in sorted((labels or {}).items()):
        clauses.append("EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = r.id "
                       "AND l.key = ? AND l.value = ?)")
        params += [key, value]
    lo, hi = parse_when(since), parse_when(until, end=True)
    if lo:
        clauses.append("r.recorded_at >= ?")
        params.append(lo)
    if hi:
        clauses.append("r.recorded_at <= ?")
        params.append(hi)
    if mode:
        clauses.append("r.mode = ?")
        params.append(mode)
    if verdict:  # a bottleneck (compute/memory/overhead) or a status (pass/warn/fail)
        clauses.append("(r.bottleneck = ? OR r.status = ?)")
        params += [verdict, verdict]
    if kind:
        clauses.append("r.kind = ?")
        params.append(kind)
    if ids is not None:
        clauses.append(f"r.id IN ({', '.join('?' * len(ids))})")
        params += ids
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _labels_by_run(conn: sqlite3.Connection) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for run_id, key, value in conn.execute(
            "SELECT run_id, key, value FROM run_labels ORDER BY run_id, key"):
        out.setdefault(int(run_id), {})[key] = value
    return out


def _to_frame(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas as pd

    df = pd.DataFrame(rows, columns=columns)
    if "recorded_at" in df:
        # a corrupt timestamp (hand-edited or hostile database) shows as unknown
        df["recorded_at"] = pd.to_datetime(df["recorded_at"], utc=True, format="ISO8601",
                                           errors="coerce")
    return df


def list_runs(db: str | os.PathLike[str] | None = None,
              labels: Mapping[str, str] | None = None, since: Any = None, until: Any = None,
              mode: str | None = None, verdict: str | None = None,
              kind: str | None = None) -> Any:
    """Runs matching every filter, oldest first, as a DataFrame (columns: RUN_COLUMNS).

    ``labels`` must all match; ``since``/``until`` are dates, ISO times or ages (``7d``);
    ``verdict`` matches the bottleneck (compute, memory, overhead) or the worst check status
    (pass, warn, fail).
    """
    cols = [c for c in RUN_COLUMNS if c != "labels"]
    with _connect(db, create=False) as conn:
        where, params = _where(labels, since, until, mode, verdict, kind)
        cur = conn.execute(f"SELECT {', '.join('r.' + c for c in cols)} FROM runs r"
                           f"{where} ORDER BY r.id", params)
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        all_labels = _labels_by_run(conn)
    for row in rows:
        row["labels"] = all_labels.get(row["id"], {})
    return _to_frame(rows, RUN_COLUMNS)


def get(db: str | os.PathLike[str] | None, run_id: int) -> dict[str, Any]:
    """One run: ``{id, recorded_at, kind, labels, trace_path, content_hash, diagnosis}`` where
    ``diagnosis`` is the stored ``Diagnosis.to_dict()``, byte-for-byte what was recorded."""
    with _connect(db, create=False) as conn:
        row = conn.execute("SELECT id, recorded_at, kind, trace_path, content_hash, diagnosis "
                           "FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id} in the history", str(resolve_db(db)))
        labels = dict(conn.execute("SELECT key, value FROM run_labels WHERE run_id = ? "
                                   "ORDER BY key", (int(run_id),)).fetchall())
        try:
            diagnosis = orjson.loads(zlib.decompress(row[5]))
        except (zlib.error, orjson.JSONDecodeError, TypeError):
            raise TraceFormatError(f"run {run_id}: stored diagnosis is corrupt",
                                   str(resolve_db(db))) from None
    _check_stored(diagnosis, run_id, db)
    return {"id": int(row[0]), "recorded_at": row[1], "kind": row[2], "labels": labels,
            "trace_path": row[3], "content_hash": row[4], "diagnosis": diagnosis}


def metric_names(db: str | os.PathLike[str] | None = None) -> list[str]:
    """Every metric name stored in the history, sorted."""
    with _connect(db, create=False) as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT metric FROM metrics ORDER BY metric")]


def trend(db: str | os.PathLike[str] | None, metric: str, **filters: Any) -> Any:
    """One metric over the matching runs, oldest first: DataFrame of run_id, recorded_at,
    labels, mode, value (runs without the metric are left out). Filters as in list_runs."""
    cols = ["run_id", "recorded_at", "labels", "mode", "value"]
    with _connect(db, create=False) as conn:
        where, params = _where(filters.get("labels"), filters.get("since"),
                               filters.get("until"), filters.get("mode"),
                               filters.get("verdict"), filters.get("kind"))
        cur = conn.execute(
            "SELECT r.id, r.recorded_at, r.mode, m.value FROM runs r JOIN metrics m "
            f"ON m.run_id = r.id AND m.metric = ?{where.replace(' WHERE ', ' AND ', 1)} "
            "ORDER BY r.id", [metric, *params])
        rows = [{"run_id": r[0], "recorded_at": r[1], "mode": r[2], "value": r[3]}
                for r in cur.fetchall()]
        all_labels = _labels_by_run(conn)
    for row in rows:
        row["labels"] = all_labels.get(row["run_id"], {})
    return _to_frame(rows, cols)


def diagnoses(db: str | os.PathLike[str] | None = None,
              ids: list[int] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(run id, stored diagnosis dict) for the given runs (all when ``ids`` is None)."""
    with _connect(db, create=False) as conn:
        where, params = _where(None, None, None, None, None, None, ids)
        rows = conn.execute(f"SELECT r.id, r.diagnosis FROM runs r{where} ORDER BY r.id",
                            params).fetchall()
    for run_id, blob in rows:
        try:
            data = orjson.loads(zlib.decompress(blob))
        except (zlib.error, orjson.JSONDecodeError, TypeError):
            raise TraceFormatError(f"run {run_id}: stored diagnosis is corrupt",
                                   str(resolve_db(db))) from None
        _check_stored(data, run_id, db)
        yield int(run_id), data


def _check_stored(data: Any, run_id: int, db: str | os.PathLike[str] | None) -> None:
    """A stored diagnosis every reader can decode (report_model.load: older minors load),
    else one line naming the database, the run and the JSON path."""
    if not isinstance(data, dict):
        raise TraceFormatError(f"run {run_id}: stored diagnosis is not a report",
                               str(resolve_db(db)))
    try:
        report_model.load(data)
    except TraceFormatError as exc:
        raise TraceFormatError(f"run {run_id}: stored diagnosis: {exc.message}",
                               str(resolve_db(db))) from None


@dataclass
class History:
    """A history opened for a notebook: ``.runs``, ``.labels``, ``.metrics`` DataFrames.

    Each property reads the file again, so a notebook sees runs recorded since it opened it.
    """

    path: Path  # or a postgresql:// URL

    @property
    def runs(self) -> Any:
        return list_runs(self.path)

    @property
    def labels(self) -> Any:
        """run_id, key, value: one row per label."""
        import pandas as pd

        with _connect(self.path, create=False) as conn:
            rows = conn.execute("SELECT run_id, key, value FROM run_labels "
                                "ORDER BY run_id, key").fetchall()
        return pd.DataFrame(rows, columns=["run_id", "key", "value"])

    @property
    def metrics(self) -> Any:
        """run_id, metric, value: long format (``.pivot(index='run_id', columns='metric',
        values='value')`` gives one column per metric)."""
        import pandas as pd

        with _connect(self.path, create=False) as conn:
            rows = conn.execute("SELECT run_id, metric, value FROM metrics "
                                "ORDER BY run_id, metric").fetchall()
        return pd.DataFrame(rows, columns=["run_id", "metric", "value"])

    def list(self, **filters: Any) -> Any:
        return list_runs(self.path, **filters)

    def get(self, run_id: int) -> dict[str, Any]:
        return get(self.path, run_id)

    def trend(self, metric: str, **filters: Any) -> Any:
        return trend(self.path, metric, **filters)

    def metric_names(self) -> builtins.list[str]:
        return metric_names(self.path)

    def record(self, data: Mapping[str, Any], trace_path: Any,
               labels: Mapping[str, str] | None = None, kind: str = "report") -> int:
        return record(data, trace_path, labels=labels, db=self.path, kind=kind)


def open(db: str | os.PathLike[str] | None = None) -> History:  # noqa: A001 (the API name)
    """Open an existing history for notebooks: ``profdiag.history.open(db).runs``."""
    path = resolve_db(db)
    with _connect(path, create=False):
        pass  # validate now: a foreign or newer file fails here, not on first use
    return History(path)


# ---------------------------------------------------------------------------------------------
# a minimal diff of two stored diagnoses (used when profdiag.compare is not available)

def diff(before: ReportLike, after: ReportLike) -> dict[str, Any]:
    """What changed from ``before`` to ``after``: mode, bottleneck, shares, step ms, counts."""
    def pair(a: Any, b: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"before": a, "after": b}
        na, nb = _num(a), _num(b)
        if na is not None and nb is not None:
            out["delta"] = round(nb - na, 6)
            if na:
                out["ratio"] = round(nb / na, 6)
        return out

    sa, sb = summarize(before), summarize(after)
    ra, rb = _report(before), _report(after)
    cats = sorted(set(ra.categories) | set(rb.categories))
    steps_a, steps_b = step_ms_by_phase(ra), step_ms_by_phase(rb)
    ka, kb = ra.kernel_counts, rb.kernel_counts
    oa, ob = ra.overhead, rb.overhead
    return {
        "mode": pair(sa["mode"], sb["mode"]),
        "bottleneck": pair(sa["bottleneck"], sb["bottleneck"]),
        "status": pair(sa["status"], sb["status"]),
        "overhead_share": pair(sa["overhead_share"], sb["overhead_share"]),
        "busy_share": pair(sa["busy_share"], sb["busy_share"]),
        "categories": {c: pair(ra.categories.get(c), rb.categories.get(c)) for c in cats},
        "step_ms": {(p or "all"): pair(steps_a.get(p), steps_b.get(p))
                    for p in sorted(set(steps_a) | set(steps_b))},
        "kernel_counts": {
            "observed_gemm_calls": pair(ka.observed_gemm_calls, kb.observed_gemm_calls),
            "expected_gemm_calls": pair(ka.expected_gemm_calls, kb.expected_gemm_calls),
            "kernels": pair(oa.kernels, ob.kernels),
            "kernels_per_step": pair(oa.kernels_per_step, ob.kernels_per_step),
        },
    }
