"""Nsight Systems SQLite parser on real exports (2022.2, 2024.5, 2025.3 schemas) and bad inputs."""

from __future__ import annotations

import gzip
import re
import shutil
import sqlite3
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

from profdiag import schema
from profdiag.errors import MissingDependencyError, TraceFormatError
from profdiag.parsers import detect, nsys_sqlite, parse as parse_any

from helpers import FIXTURES, shared_or_skip

NSYS = FIXTURES / "nsys"
SEED = NSYS / "seed_microbench.sqlite"
CLOVERLEAF = NSYS / "perlmutter-cloverleaf-cuda.sqlite.gz"
SAXPY = NSYS / "saxpy-mpi-cuda_nsys_perlmutter0.sqlite.gz"


@lru_cache(maxsize=8)
def parsed(path: str):
    return nsys_sqlite.parse(Path(path))


def big_trace_path() -> Path:
    return shared_or_skip("traces", "nsys", "nsys_1b_T512_decode64.sqlite.gz")


# ---------------------------------------------------------------- the 1b H100 trace vs nsys stats
def test_per_kernel_counts_and_totals_equal_nsys_stats():
    trace = parsed(str(big_trace_path()))
    stats_csv = shared_or_skip("traces", "nsys", "nsys_1b_T512_decode64_cuda_gpu_kern_sum.csv")
    stats = pd.read_csv(stats_csv)
    kernels = trace.kernels
    ours = kernels.groupby(kernels["name"].astype(str))["dur_ns"].agg(["count", "sum"])
    assert len(ours) == len(stats)
    for _, row in stats.iterrows():
        name = row["Name"]
        assert name in ours.index, f"kernel missing from the parse: {name[:80]}"
        assert ours.loc[name, "count"] == row["Instances"], name[:80]
        # Total Time is an integer ns sum in the report: equal up to rounding.
        assert abs(ours.loc[name, "sum"] - row["Total Time (ns)"]) <= 1, name[:80]
        assert abs(ours.loc[name, "sum"] / ours.loc[name, "count"] - row["Avg (ns)"]) <= 0.1
    assert kernels["dur_ns"].sum() == stats["Total Time (ns)"].sum()


def test_big_trace_annotations_runtime_devices_and_schema():
    trace = parsed(str(big_trace_path()))
    assert schema.validate(trace.events) == []
    ann = trace.of_kind("annotation")["name"].astype(str)
    assert (ann == "prefill").sum() == 1
    steps = ann[ann.str.fullmatch(r"decode_step_\d+")]
    assert sorted(int(s.rsplit("_", 1)[1]) for s in steps) == list(range(64))
    runtime = trace.of_kind("runtime")["name"].astype(str)
    assert "cudaLaunchKernel" in set(runtime)
    assert not runtime.str.contains(r"_v\d+$").any()
    dev = trace.meta.devices[0]
    assert (dev.name, dev.sm_count, dev.compute_capability, dev.vendor) == (
        "NVIDIA H100 80GB HBM3", 132, "9.0", "nvidia")
    assert trace.meta.base_time_ns == 1795424971667178787
    assert trace.meta.warnings == []
    k = trace.kernels
    assert k["grid"].str.fullmatch(r"\d+,\d+,\d+").all()
    assert k["short_name"].notna().all()
    assert not k["graph_launch"].any()
    # every kernel has its launch call (same correlation id in the same process)
    rt = trace.of_kind("runtime")
    launched = set(zip(rt["pid"], rt["correlation"]))
    assert all(key in launched for key in zip(k["pid"], k["correlation"]))


# ---------------------------------------------------------------- small real exports
def test_seed_microbench_two_kernels_32_launches_each():
    trace = parsed(str(SEED))
    assert schema.validate(trace.events) == []
    counts = trace.kernels["short_name"].value_counts().to_dict()
    assert len(counts) == 2 and set(counts.values()) == {32}
    assert "prefill_fma_kernel" in counts
    mem = trace.of_kind("memcpy")
    assert len(mem) == 6 and mem["bytes"].notna().all()
    assert mem["name"].str.startswith("Memcpy ").all()
    assert "Memcpy HtoD (Pageable -> Device)" in set(mem["name"])
    assert set(trace.of_kind("sync")["name"]) == {"Stream wait sync"}
    assert trace.meta.options["nsys_version"].startswith("2025.3")


def test_cloverleaf_2024_5_export():
    trace = parsed(str(CLOVERLEAF))
    assert schema.validate(trace.events) == []
    assert len(trace.kernels) == 1312
    assert len(trace.of_kind("memcpy")) == 279
    assert len(trace.of_kind("sync")) == 1312
    assert sorted(d.index for d in trace.meta.devices) == [0, 1, 2, 3]
    assert {d.name for d in trace.meta.devices} == {"NVIDIA A100-SXM4-80GB"}
    assert trace.meta.options["export_schema_version"] == "3.13.2"
    assert trace.kernels["short_name"].eq("par_ranged2d_kernel").any()


def test_saxpy_2022_2_export_without_enum_tables():
    trace = parsed(str(SAXPY))
    assert schema.validate(trace.events) == []
    assert len(trace.kernels) == 5
    assert set(trace.kernels["short_name"]) == {"saxpy"}
    mem = trace.of_kind("memcpy")
    assert len(mem) == 15
    assert set(mem["name"]) <= {"Memcpy HtoD (Pageable -> Device)", "Memcpy DtoH (Device -> Pageable)"}
    ann = trace.of_kind("annotation")
    assert len(ann) == 22 and (ann["dur_ns"] >= 0).all()  # domain-create marks dropped
    assert trace.meta.options["nsys_version"].startswith("2022.2")
    # pipit's ALTER-added RUNTIME.name column (all NULL) does not replace the StringIds names
    assert trace.of_kind("runtime")["name"].notna().all()


def test_saxpy_kernels_classify_as_elementwise():
    """The worked example of docs/architecture.md: rule elementwise.axpy (rules/kernels.toml)
    turns the five unclassified saxpy kernels of this real trace into elementwise work."""
    from profdiag.classify import classify, load_rules

    out = classify(parsed(str(SAXPY)).kernels, load_rules())
    assert len(out) == 5
    assert set(out["rule_id"]) == {"elementwise.axpy"}
    assert set(out["category"]) == {"elementwise"} and set(out["class"]) == {"elementwise"}


@pytest.mark.parametrize("path", [SEED, CLOVERLEAF, SAXPY])
def test_detect_nsys(path):
    assert detect(path) == "nsys"
    assert parse_any(path).meta.format == "nsys"


def test_detect_big_gzipped_trace():
    assert detect(big_trace_path()) == "nsys"


def test_gzip_temp_file_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    nsys_sqlite.parse(SAXPY)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- synthetic variants
def _copy_plain(src: Path, dst: Path) -> Path:
    if src.suffix == ".gz":
        with gzip.open(src) as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    else:
        shutil.copy(src, dst)
    dst.chmod(0o644)
    return dst


def test_missing_optional_tables_and_columns_warn(tmp_path):
    db = _copy_plain(SEED, tmp_path / "stripped.sqlite")
    con = sqlite3.connect(db)
    con.execute("DROP TABLE CUPTI_ACTIVITY_KIND_RUNTIME")
    con.execute("DROP TABLE TARGET_INFO_GPU")
    con.execute("ALTER TABLE CUPTI_ACTIVITY_KIND_KERNEL DROP COLUMN graphNodeId")
    con.execute("ALTER TABLE CUPTI_ACTIVITY_KIND_KERNEL DROP COLUMN gridZ")
    con.commit()
    con.close()
    trace = nsys_sqlite.parse(db)
    assert schema.validate(trace.events) == []
    assert len(trace.kernels) == 64
    assert trace.kernels["grid"].isna().all()
    text = " | ".join(trace.meta.warnings)
    assert "CUPTI_ACTIVITY_KIND_RUNTIME" in text and "TARGET_INFO_GPU" in text
    assert "graphNodeId" in text
    assert trace.meta.devices == []


def test_graph_trace_mode_emits_one_row_per_graph_launch(tmp_path):
    db = _copy_plain(SEED, tmp_path / "graphs.sqlite")
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE CUPTI_ACTIVITY_KIND_GRAPH_TRACE (start INTEGER NOT NULL, "
                "end INTEGER NOT NULL, deviceId INTEGER, contextId INTEGER, greenContextId "
                "INTEGER, streamId INTEGER, correlationId INTEGER, globalPid INTEGER, graphId "
                "INTEGER, graphExecId INTEGER)")
    con.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_GRAPH_TRACE VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(1000 + i * 500, 1400 + i * 500, 0, 1, None, 7, 9000 + i,
                      281493968519168, 5, 1) for i in range(3)])
    con.commit()
    con.close()
    trace = nsys_sqlite.parse(db)
    graphs = trace.kernels[trace.kernels["name"] == "CUDA graph 5"]
    assert len(graphs) == 3
    assert graphs["graph_launch"].all() and (graphs["dur_ns"] == 400).all()
    assert any("--cuda-graph-trace=node" in w for w in trace.meta.warnings)
    assert schema.validate(trace.events) == []


def _one_line_error(path: Path, parser=nsys_sqlite.parse) -> str:
    with pytest.raises(TraceFormatError) as info:
        parser(path)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_sqlite_from_another_program(tmp_path):
    db = tmp_path / "app.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users VALUES (1, 'ada')")
    con.commit()
    con.close()
    assert not nsys_sqlite.sniff(db, db.read_bytes()[:4096])
    assert "not an Nsight Systems export" in _one_line_error(db)
    with pytest.raises(TraceFormatError):
        detect(db)


def test_export_without_kernel_or_memcpy_tables(tmp_path):
    db = _copy_plain(SEED, tmp_path / "nogpu.sqlite")
    con = sqlite3.connect(db)
    for t in ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY"):
        con.execute(f"DROP TABLE {t}")
    con.commit()
    con.close()
    assert detect(db) == "nsys"
    msg = _one_line_error(db)
    assert "CUPTI_ACTIVITY_KIND_KERNEL" in msg


def test_truncated_sqlite(tmp_path):
    data = SEED.read_bytes()
    bad = tmp_path / "truncated.sqlite"
    bad.write_bytes(data[: len(data) // 3])
    msg = _one_line_error(bad)
    assert re.search(r"truncated|corrupt|malformed|not an Nsight", msg)
    with pytest.raises(TraceFormatError):
        parse_any(bad)


def test_truncated_gzip(tmp_path):
    bad = tmp_path / "cut.sqlite.gz"
    bad.write_bytes(SAXPY.read_bytes()[:50000])
    with pytest.raises(TraceFormatError):
        nsys_sqlite.parse(bad)


def test_nsys_rep_without_nsys_names_the_command(tmp_path, monkeypatch):
    rep = tmp_path / "report1.nsys-rep"
    rep.write_bytes(b"\x00NSYS-REP-NOT-SQLITE" * 10)
    assert detect(rep) == "nsys"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MissingDependencyError) as info:
        nsys_sqlite.parse(rep)
    msg = str(info.value)
    assert "nsys export --type sqlite --output" in msg and "report1.nsys-rep" in msg
    assert "\n" not in msg
