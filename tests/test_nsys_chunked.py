"""The chunked integer reader of Nsight Systems exports (parsers/_sqlite.read_int_columns) and
the typed fast path built on it: chunk boundaries, NULLs, missing StringIds, empty tables,
and the general read_sql path taking over for any value that is not an integer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profdiag import schema
from profdiag.errors import TraceFormatError
from profdiag.parsers import _sqlite, nsys_sqlite

from helpers import FIXTURES

K = nsys_sqlite.K_KERNEL
R = nsys_sqlite.K_RUNTIME
NA_STREAM = 0xFFFFFFFF


def _export(path: Path, kernels: list[tuple], runtime: list[tuple],
            strings: list[tuple[int, str]] | None = None) -> Path:
    """A small export: StringIds, kernels (start, end, demangledName, shortName, deviceId,
    streamId, correlationId, globalPid, grid x/y/z, block x/y/z, graphNodeId) and runtime
    calls (start, end, nameId, correlationId, globalTid)."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL)")
    con.executemany("INSERT INTO StringIds VALUES (?, ?)", strings or [])
    con.execute(f"""CREATE TABLE {K} (start INTEGER NOT NULL, "end" INTEGER NOT NULL,
        demangledName INTEGER, shortName INTEGER, deviceId INTEGER, streamId INTEGER,
        correlationId INTEGER, globalPid INTEGER, gridX INTEGER, gridY INTEGER, gridZ INTEGER,
        blockX INTEGER, blockY INTEGER, blockZ INTEGER, graphNodeId INTEGER)""")
    con.executemany(f"INSERT INTO {K} VALUES ({', '.join('?' * 15)})", kernels)
    con.execute(f"""CREATE TABLE {R} (start INTEGER NOT NULL, "end" INTEGER NOT NULL,
        nameId INTEGER, correlationId INTEGER, globalTid INTEGER)""")
    con.executemany(f"INSERT INTO {R} VALUES (?, ?, ?, ?, ?)", runtime)
    con.commit()
    con.close()
    return path


PID = 4242 << 24  # globalPid/globalTid carry the pid in bits 24-47
STRINGS = [(1, "gemm_kernel<float>"), (2, "gemm"), (3, "cudaLaunchKernel_v7000"),
           (4, "cudaMemcpyAsync")]
KERNELS = [
    # start, end, name, short, dev, stream, corr, pid, grid, block, graph node
    (100, 150, 1, 2, 0, 7, 10, PID, 4, 2, 1, 128, 1, 1, None),
    (160, 150, 1, 2, 0, NA_STREAM, 11, PID, 4, 2, 1, 128, 1, 1, 5),  # end < start: dur 0
    (200, 260, None, None, None, 7, None, None, None, 2, 1, 256, 1, 1, None),  # NULLs
    (300, 340, 99, 2, 1, 8, 13, PID, 1, 1, 1, 32, 2, 1, None),  # id 99 not in StringIds
    (350, 390, 1, 2, 0, 7, 14, PID, 8, 1, 1, 128, 1, 1, None),
]
RUNTIME = [
    (90, 99, 3, 10, PID | 17),
    (155, 158, 3, 11, PID | 17),
    (190, 195, None, None, PID | 18),  # NULL name and correlation
    (295, 299, 4, 13, PID | 17),
    (345, 349, 77, 14, None),  # unknown name id, NULL thread
]


def _both_paths(path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
                ) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    monkeypatch.setattr(nsys_sqlite._Db, "chunk_rows", chunk)
    fast = nsys_sqlite.parse(path)
    with monkeypatch.context() as m:
        m.setattr(nsys_sqlite, "_kernels_fast", lambda *a: None)
        m.setattr(nsys_sqlite, "_runtime_fast", lambda *a: None)
        slow = nsys_sqlite.parse(path)
    return fast.events, slow.events, fast.meta.warnings, slow.meta.warnings


@pytest.mark.parametrize("chunk", [1, 2, 3, 1 << 16])
def test_fast_path_builds_the_general_paths_table(tmp_path, monkeypatch, chunk):
    path = _export(tmp_path / "t.sqlite", KERNELS, RUNTIME, STRINGS)
    fast, slow, fast_warn, slow_warn = _both_paths(path, monkeypatch, chunk)
    assert fast.equals(slow)
    assert list(fast.dtypes.astype(str)) == list(slow.dtypes.astype(str))
    assert fast_warn == slow_warn
    assert schema.validate(fast) == []
    k = fast[fast["kind"] == "kernel"].reset_index(drop=True)
    # by start: 100, 160, 200, 300, 350
    assert k["start_ns"].tolist() == [100, 160, 200, 300, 350]
    assert k["dur_ns"].tolist() == [50, 0, 60, 40, 40]
    assert k["name"].tolist() == ["gemm_kernel<float>", "gemm_kernel<float>", pd.NA, pd.NA,
                                  "gemm_kernel<float>"]
    assert k["short_name"].tolist() == ["gemm", "gemm", pd.NA, "gemm", "gemm"]
    assert k["stream"].tolist() == [7, pd.NA, 7, 8, 7]  # 0xFFFFFFFF is no stream
    assert k["device"].tolist() == [0, 0, pd.NA, 1, 0]
    assert k["pid"].tolist() == [4242, 4242, pd.NA, 4242, 4242]
    assert k["grid"].tolist() == ["4,2,1", "4,2,1", pd.NA, "1,1,1", "8,1,1"]
    assert k["block"].tolist() == ["128,1,1", "128,1,1", "256,1,1", "32,2,1", "128,1,1"]
    assert k["graph_launch"].tolist() == [False, True, False, False, False]
    r = fast[fast["kind"] == "runtime"].reset_index(drop=True)
    # the _v7000 suffix dropped; NULL and unknown ids have no name
    assert r["name"].tolist() == ["cudaLaunchKernel", "cudaLaunchKernel", pd.NA,
                                  "cudaMemcpyAsync", pd.NA]
    assert r["tid"].tolist() == [17, 17, 18, 17, pd.NA]
    assert r["correlation"].tolist() == [10, 11, pd.NA, 13, 14]
    assert "2 kernels have no name in StringIds" in fast_warn


def test_text_real_and_blob_values_take_the_general_path(tmp_path, monkeypatch):
    # (INTEGER affinity stores '260' and 260.0 as the integer 260: only a value that is no
    # integer stays text or real)
    rows = [*KERNELS[:2], (200, 260.0, *KERNELS[2][2:])]
    path = _export(tmp_path / "t.sqlite", rows, RUNTIME, STRINGS)
    fast, slow, _, _ = _both_paths(path, monkeypatch, 2)
    assert fast.equals(slow)
    assert fast.loc[fast["start_ns"] == 200, "dur_ns"].tolist() == [60]
    con = sqlite3.connect(path)
    for bad in ("1.5", "x'00ff'", "'abc'", "'12'"):
        con.execute(f"UPDATE {R} SET correlationId = CAST({bad} AS BLOB) WHERE rowid = 3"
                    if bad == "'12'" else
                    f"UPDATE {R} SET correlationId = {bad} WHERE rowid = 3")
        con.commit()
        assert _sqlite.read_int_columns(con, R, "r", {"c": "r.correlationId"},
                                        chunk_rows=2) is None, bad
    con.execute(f"UPDATE {R} SET correlationId = 'abc' WHERE rowid = 3")
    con.commit()
    con.close()
    # the general path's typed coercion then names the table, column and row
    monkeypatch.setattr(nsys_sqlite._Db, "chunk_rows", 2)
    with pytest.raises(TraceFormatError, match=rf"{R}\.correlationId row 3"):
        nsys_sqlite.parse(path)


def test_reader_columns_nulls_and_chunk_edges(tmp_path):
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (a INTEGER, b INTEGER)")
    values = [(i * 10**12, None if i % 3 == 0 else -i) for i in range(10)]
    con.executemany("INSERT INTO t VALUES (?, ?)", values)
    con.commit()
    for chunk in (1, 3, 4, 10, 11):
        got = _sqlite.read_int_columns(con, "t", "t", {"a": "t.a", "b": "t.b", "s": "t.a + t.b"},
                                       chunk_rows=chunk)
        assert got is not None
        assert got["a"].int64().tolist() == [i * 10**12 for i in range(10)]
        assert got["a"].values.dtype == np.int64  # 9e12 does not fit int32
        assert got["b"].values.dtype == np.int32
        assert got["b"].null.tolist() == [i % 3 == 0 for i in range(10)]
        assert got["b"].int64().tolist() == [0 if i % 3 == 0 else -i for i in range(10)]
        assert got["s"].null.tolist() == [i % 3 == 0 for i in range(10)]
    # a real INT64_MIN is not mistaken for NULL: the general path keeps it
    con.execute(f"UPDATE t SET b = {-(2**63)} WHERE rowid = 2")
    assert _sqlite.read_int_columns(con, "t", "t", {"b": "t.b"}, chunk_rows=4) is None
    con.close()


def test_reader_sparse_rowids_and_empty_tables(tmp_path):
    path = tmp_path / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (a INTEGER)")
    con.execute("CREATE TABLE e (a INTEGER)")
    rowids = [1, 5, 2**40, 2**40 + 1, 2**62]  # far apart: walked by key, not by range
    con.executemany("INSERT INTO t (rowid, a) VALUES (?, ?)", [(r, i) for i, r in
                                                                 enumerate(rowids)])
    con.commit()
    got = _sqlite.read_int_columns(con, "t", "t", {"a": "t.a"}, chunk_rows=2)
    assert got is not None and got["a"].int64().tolist() == [0, 1, 2, 3, 4]
    empty = _sqlite.read_int_columns(con, "e", "e", {"a": "e.a"}, chunk_rows=2)
    assert empty is not None and len(empty["a"]) == 0 and len(empty["a"].null) == 0
    con.close()


def test_empty_tables_and_no_string_ids(tmp_path, monkeypatch):
    path = _export(tmp_path / "e.sqlite", [], [], STRINGS)
    fast, slow, fw, sw = _both_paths(path, monkeypatch, 2)
    assert fast.equals(slow) and len(fast) == 0 and fw == sw
    path = _export(tmp_path / "n.sqlite", KERNELS, RUNTIME, None)  # an empty StringIds
    fast, slow, fw, sw = _both_paths(path, monkeypatch, 2)
    assert fast.equals(slow) and fw == sw
    assert fast["name"].isna().all()


def test_real_exports_read_the_same_by_both_paths(monkeypatch):
    for name in ("seed_microbench.sqlite", "perlmutter-cloverleaf-cuda.sqlite.gz"):
        path = FIXTURES / "nsys" / name
        if not path.exists():
            pytest.skip(f"fixture {name} missing")
        fast, slow, fw, sw = _both_paths(path, monkeypatch, 1000)
        assert fast.equals(slow), name
        assert fw == sw, name
        assert (fast["kind"] == "kernel").sum() > 0


def test_string_columns_split_into_arrow_chunks_read_the_same(tmp_path, monkeypatch):
    # a string column's Arrow offsets hold 2 GiB: longer text is split into chunks (here of
    # 20 bytes), and the column reads the same
    path = _export(tmp_path / "t.sqlite", KERNELS, RUNTIME, STRINGS)
    whole = nsys_sqlite.parse(path).events
    monkeypatch.setattr(nsys_sqlite, "_CHUNK_TEXT", 20)
    split = nsys_sqlite.parse(path).events
    assert split.equals(whole)
    kernels = split[split["kind"] == "kernel"]
    # five kernel names of up to 18 bytes, 20 bytes a chunk: more than one chunk
    assert nsys_sqlite._coded_strings(np.array([0, 0, 0, 0, 0]), ["gemm_kernel<float>"]
                                      )._pa_array.num_chunks == 5
    assert kernels["name"].tolist()[0] == "gemm_kernel<float>"
