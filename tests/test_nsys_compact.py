"""The compact event table built by the Nsight Systems parser itself (``load(compact=True)``):
string columns as sorted Categoricals made from the StringIds codes, equal -- dtypes,
categories and codes -- to ``schema.compact`` of the canonical table; and ``schema.concat`` of
compact frames whose categories differ."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_nsys_chunked import KERNELS, RUNTIME, STRINGS, _export

import profdiag
from profdiag import parsers, schema
from profdiag.parsers import nsys_sqlite

from helpers import FIXTURES, shared_or_skip

SHARED_NSYS = ["traces/nsys/nsys_1b_T512_decode64.sqlite.gz",
               "traces/nsys/seed_microbench.sqlite",
               "samples/nsys/sqlite/perlmutter-cloverleaf-cuda.sqlite",
               "samples/nsys/sqlite/saxpy-mpi-cuda_nsys_perlmutter0.sqlite"]
FIXTURE_NSYS = sorted(p.name for p in (FIXTURES / "nsys").iterdir()
                      if p.name.endswith((".sqlite", ".sqlite.gz")))


def _assert_same_compact(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """``equals`` and, column by column, the same dtype; for Categoricals the same
    categories (and their dtype) and the same codes in the same integer type."""
    assert got.equals(want)
    assert list(got.columns) == list(want.columns)
    for col in want.columns:
        a, b = got[col], want[col]
        assert a.dtype == b.dtype and repr(a.dtype) == repr(b.dtype), col
        if isinstance(b.dtype, pd.CategoricalDtype):
            assert a.cat.categories.equals(b.cat.categories), col
            assert a.cat.categories.dtype == b.cat.categories.dtype, col
            assert a.cat.codes.dtype == b.cat.codes.dtype, col
            assert np.array_equal(a.cat.codes.to_numpy(), b.cat.codes.to_numpy()), col


def _check_export(path) -> None:
    canonical = profdiag.load(path)
    compact = profdiag.load(path, compact=True)
    assert not schema.is_compact(canonical.events) and schema.is_compact(compact.events)
    _assert_same_compact(compact.events, schema.compact(canonical.events))
    assert compact.meta.warnings == canonical.meta.warnings
    assert schema.validate(compact.events) == []
    assert schema.expand(compact.events).equals(canonical.events)


@pytest.mark.parametrize("rel", SHARED_NSYS)
def test_shared_exports_compact_load_equals_compacted_canonical(rel):
    _check_export(shared_or_skip(rel))


@pytest.mark.parametrize("name", FIXTURE_NSYS)
def test_fixture_exports_compact_load_equals_compacted_canonical(name):
    _check_export(FIXTURES / "nsys" / name)


def test_parse_asks_the_module_for_the_compact_table(monkeypatch, tmp_path):
    # nsys declares PARSES_COMPACT: parsers.parse hands compact=True to it, and the table it
    # returns is kept as is (no second, generic compaction)
    path = _export(tmp_path / "t.sqlite", KERNELS, RUNTIME, STRINGS)
    assert nsys_sqlite.PARSES_COMPACT is True
    calls = []
    real = nsys_sqlite.parse

    def spy(source, compact=False):
        calls.append(compact)
        return real(source, compact=compact)

    monkeypatch.setattr(nsys_sqlite, "parse", spy)
    monkeypatch.setattr(schema, "compact", lambda ev: pytest.fail("compacted generically"))
    events = parsers.parse(path, compact=True).events
    assert calls == [True] and schema.is_compact(events)
    monkeypatch.undo()
    assert not schema.is_compact(parsers.parse(path).events)


def _shifted(rows: list[tuple], cols: tuple[int, ...], offset: int) -> list[tuple]:
    return [tuple(v + offset if i in cols and v is not None else v for i, v in enumerate(r))
            for r in rows]


@pytest.mark.parametrize("chunk", [1, 3, 1 << 16])
@pytest.mark.parametrize("general", [False, True])
@pytest.mark.parametrize("offset", [0, 1 << 40])
def test_synthetic_export_by_either_path(tmp_path, monkeypatch, chunk, general, offset):
    # two ids of one text (1 and 5), two runtime names equal once their _vNN suffix is
    # dropped (3 and 6), ids missing from StringIds, NULL ids beside a real id 0 (NULL reads
    # as 0), and a kernel whose gridX is NULL (its "0,2,1" triple is no row's value, so no
    # category). Small ids are mapped by a table indexed by id, ids past 2**40 by factorize.
    strings = [*STRINGS, (5, "gemm_kernel<float>"), (6, "cudaLaunchKernel_v11000"),
               (0, "zero")]
    kernels = [*KERNELS, (400, 420, 5, 2, 0, 7, 15, 1 << 24, 4, 2, 1, 128, 1, 1, None)]
    runtime = [*RUNTIME, (395, 399, 6, 15, (1 << 24) | 17), (410, 415, 0, 16, None)]
    path = _export(tmp_path / "t.sqlite", _shifted(kernels, (2, 3), offset),
                   _shifted(runtime, (2,), offset), _shifted(strings, (0,), offset))
    monkeypatch.setattr(nsys_sqlite._Db, "chunk_rows", chunk)
    if general:
        monkeypatch.setattr(nsys_sqlite, "_kernels_fast", lambda *a: None)
        monkeypatch.setattr(nsys_sqlite, "_runtime_fast", lambda *a: None)
    canonical = nsys_sqlite.parse(path)
    compact = nsys_sqlite.parse(path, compact=True)
    ev = compact.events
    _assert_same_compact(ev, schema.compact(canonical.events))
    assert compact.meta.warnings == canonical.meta.warnings
    # by hand: the names of kernels and runtime calls, one category per distinct text
    assert list(ev["name"].cat.categories) == ["cudaLaunchKernel", "cudaMemcpyAsync",
                                               "gemm_kernel<float>", "zero"]
    assert list(ev["short_name"].cat.categories) == ["gemm"]
    assert list(ev["grid"].cat.categories) == ["1,1,1", "4,2,1", "8,1,1"]
    assert list(ev["block"].cat.categories) == ["128,1,1", "256,1,1", "32,2,1"]
    assert ev["op_name"].cat.categories.empty and (ev["op_name"].cat.codes == -1).all()
    # rows in start order: 90 r, 100 k, 155 r, 160 k, 190 r, 200 k, 295 r, 300 k, 345 r,
    # 350 k, 395 r, 400 k, 410 r
    assert ev["start_ns"].tolist() == [90, 100, 155, 160, 190, 200, 295, 300, 345, 350,
                                       395, 400, 410]
    assert ev["name"].cat.codes.tolist() == [0, 2, 0, 2, -1, -1, 1, -1, -1, 2, 0, 2, 3]
    assert ev["grid"].cat.codes.tolist() == [-1, 1, -1, 1, -1, -1, -1, 0, -1, 2, -1, 1, -1]
    assert ev["name"].cat.codes.dtype == np.int8


def test_empty_export_compact(tmp_path):
    path = _export(tmp_path / "e.sqlite", [], [], STRINGS)
    ev = nsys_sqlite.parse(path, compact=True).events
    assert len(ev) == 0
    _assert_same_compact(ev, schema.compact(nsys_sqlite.parse(path).events))


def test_coded_categorical_from_distinct_values():
    # values[codes[i]] per row; None and code -1 are missing; "b" twice and the unused "z"
    values = ["b", None, "a", "b", "z"]
    codes = np.array([0, 1, 2, 3, -1, 0, 2])
    got = schema.coded_categorical(codes, values)
    assert list(got.categories) == ["a", "b"]
    assert got.codes.tolist() == [1, -1, 0, 1, -1, 1, 0]
    want = schema.compact_strings(pd.array([values[c] if c >= 0 else None for c in codes],
                                           dtype="string"))
    assert got.dtype == want.dtype and got.codes.dtype == want.codes.dtype
    assert np.array_equal(got.codes, want.codes)


def _compact_frame(start: list[int], names: list[str | None]) -> pd.DataFrame:
    n = len(start)
    return schema.from_columns({
        "name": schema.compact_strings(pd.array(names, dtype="string")),
        "kind": ["kernel"] * n, "start_ns": np.array(start, dtype=np.int64),
        "dur_ns": np.ones(n, dtype=np.int64)}, n=n, compact=True)


def test_concat_unions_the_categories_of_compact_frames():
    a = _compact_frame([10, 30, 50], ["gemm", None, "attn"])  # categories attn, gemm
    b = _compact_frame([20, 40], ["copy", "gemm"])  # categories copy, gemm
    want = schema.compact(schema.concat([schema.expand(a), schema.expand(b)]))
    got = schema.concat([a, b])
    # union sorted: attn 0, copy 1, gemm 2; rows by start 10 20 30 40 50
    assert list(got["name"].cat.categories) == ["attn", "copy", "gemm"]
    assert got["name"].cat.codes.tolist() == [2, 1, -1, 2, 0]
    assert got["start_ns"].tolist() == [10, 20, 30, 40, 50]
    _assert_same_compact(got, want)
    # same categories in every part: codes stacked as they are
    c = _compact_frame([5, 45], ["gemm", "attn"])
    got = schema.concat([a, c])
    assert got["name"].cat.codes.tolist() == [1, 1, -1, 0, 0]
    _assert_same_compact(got, schema.compact(schema.concat([schema.expand(a),
                                                             schema.expand(c)])))


def test_concat_consumes_compact_frames_and_widens_the_codes():
    # 200 distinct names in all (int16 codes) from two parts of 100 each (int8 codes)
    a = _compact_frame(list(range(0, 200, 2)), [f"k{i:03d}" for i in range(0, 200, 2)])
    b = _compact_frame(list(range(1, 200, 2)), [f"k{i:03d}" for i in range(1, 200, 2)])
    assert a["name"].cat.codes.dtype == np.int8
    want = schema.compact(schema.concat([schema.expand(a), schema.expand(b)]))
    got = schema.concat([a, b], consume=True)
    assert len(a.columns) == 0 and len(b.columns) == 0
    assert got["name"].cat.codes.dtype == np.int16
    assert got["name"].cat.codes.tolist() == list(range(200))
    _assert_same_compact(got, want)


def test_dense_ids_tell_null_from_id_zero():
    from profdiag.parsers._sqlite import IntColumn

    null = np.array([False, True, False, True])
    # NULL is read as 0: id 0 is present only where a non-NULL row holds it
    got = nsys_sqlite._dense_ids(IntColumn(np.array([3, 0, 7, 0], dtype=np.int32), null))
    assert got is not None and got.tolist() == [3, 7]
    got = nsys_sqlite._dense_ids(IntColumn(np.array([0, 0, 7, 0], dtype=np.int32), null))
    assert got is not None and got.tolist() == [0, 7]
    # negative or far-apart ids are left to factorize
    assert nsys_sqlite._dense_ids(IntColumn(np.array([-1, 2]), np.zeros(2, bool))) is None
    assert nsys_sqlite._dense_ids(IntColumn(np.array([1, 1 << 40]), np.zeros(2, bool))) is None
