"""rocprof parsers (v1 CSV/JSON/DB, rocprofv3 CSV/JSON, rocpd) on real samples and bad inputs.

Kernel counts are those of shared/samples/MANIFEST.md.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from pathlib import Path

import pytest

from profdiag import schema
from profdiag.errors import TraceFormatError
from profdiag.parsers import detect, parse as parse_any, rocprof

from helpers import FIXTURES, shared_or_skip

R = FIXTURES / "rocprof"
LLAMA = R / "v1_llamacpp_gfx1201"
HIPTRACE = R / "v1_batched_gemm_hiptrace"


@lru_cache(maxsize=32)
def parsed(path: str):
    return rocprof.parse(Path(path))


# (path, meta.format, kernels, other kinds expected {kind: count})
CASES = [
    (LLAMA / "results.csv.gz", "rocprof-v1", 1963, {}),
    (LLAMA / "results.db.gz", "rocprof-v1", 1963, {}),
    (LLAMA / "results.json.gz", "rocprof-v1", 1963, {}),
    (HIPTRACE / "results.db", "rocprof-v1", 1, {"runtime": 12, "memcpy": 3}),
    (HIPTRACE / "results.json", "rocprof-v1", 1, {"runtime": 12, "memcpy": 3}),
    (R / "rocpd" / "batched_gemm_ck_bmm_28_results.db.gz", "rocpd", 151, {"runtime": 629}),
    (R / "rocpd" / "batched_gemm_trace_20251211_0851_14_results.db.gz", "rocpd", 301,
     {"runtime": 623}),
    (R / "v3_json" / "908_results_first400.json.gz", "rocprofv3", 400, {}),
    (R / "v3_csv_docs_2025-08" / "kernel_trace.csv", "rocprofv3", 9, {}),
    (R / "v3_csv_docs_2025-08" / "kernel_trace_truncated.csv", "rocprofv3", 4, {}),
    (R / "v3_csv_docs_2024-10" / "kernel_trace.csv", "rocprofv3", 7, {}),
    (R / "v3_csv_docs_2025-08" / "memory_copy_trace.csv", "rocprofv3", 0, {"memcpy": 4}),
    (R / "v3_csv_docs_2025-08" / "hip_runtime_trace.csv", "rocprofv3", 0, {"runtime": 8}),
    (R / "v3_csv_docs_2025-08" / "rocpd-to-csv.csv", "rocprofv3", 0, {"runtime": 13}),
    (R / "v3_csv_mi300a_jacobi", "rocprofv3", 9, {}),
    (R / "v3_csv_assembled", "rocprofv3", 9, {"runtime": 8, "memcpy": 4, "annotation": 3}),
]


@pytest.mark.parametrize("path,fmt,kernels,others", CASES, ids=lambda v: str(v)[-40:])
def test_each_format_parses_with_manifest_counts(path, fmt, kernels, others):
    trace = parsed(str(path))
    assert schema.validate(trace.events) == []
    assert trace.meta.format == fmt
    assert len(trace.kernels) == kernels
    counts = trace.events["kind"].value_counts()
    for kind, n in others.items():
        assert counts[kind] == n, kind
    k = trace.kernels
    if len(k):
        assert k["name"].notna().all() and (k["name"].str.len() > 0).all()
        assert not k["name"].str.contains(r"\.kd$|\[clone \.kd\]|\(\.kd\)").any()
        assert k["device"].notna().all()
        assert (k["dur_ns"] >= 0).all()


@pytest.mark.parametrize("path,fmt,kernels,others", CASES, ids=lambda v: str(v)[-40:])
def test_detect_picks_rocprof(path, fmt, kernels, others):
    assert detect(path) == "rocprof"


@pytest.mark.parametrize("path", [LLAMA / "results.json.gz", HIPTRACE / "results.json"])
def test_detect_rocprof_v1_json(path):
    """The torch sniffer runs first and must leave rocprof v1's chrome JSON alone."""
    assert rocprof.sniff(path, __import__("profdiag.parsers").parsers.read_head(path))
    assert detect(path) == "rocprof"


def test_v1_csv_db_json_agree_on_names_and_times():
    csv_t = parsed(str(LLAMA / "results.csv.gz")).kernels
    db_t = parsed(str(LLAMA / "results.db.gz")).kernels
    js_t = parsed(str(LLAMA / "results.json.gz")).kernels
    for other in (db_t, js_t):
        assert list(other["name"]) == list(csv_t["name"])
        assert list(other["dur_ns"]) == list(csv_t["dur_ns"])
        assert list(other["grid"]) == list(csv_t["grid"])
    names = set(csv_t["name"])
    assert "__amd_rocclr_fillBufferAligned" in names
    assert any(n.startswith("void mul_mat_q<(ggml_type)2, 128, false>(") and n.endswith(")")
               for n in names)
    stats = {}
    import csv
    with open(LLAMA / "results.stats.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            stats[rocprof.clean_kernel_names(__import__("pandas").Series([row["Name"]]))[0]] = (
                int(row["Calls"]), int(row["TotalDurationNs"]))
    ours = csv_t.groupby(csv_t["name"].astype(str))["dur_ns"].agg(["count", "sum"])
    for name, (calls, total) in stats.items():
        assert ours.loc[name, "count"] == calls
        assert ours.loc[name, "sum"] == total


def test_v1_grid_in_blocks_and_devices():
    t = parsed(str(LLAMA / "results.csv.gz"))
    first = t.kernels.iloc[0]
    # grd=256 work-items, wgr=256 -> 1 block of 256
    assert (first["grid"], first["block"]) == ("1,1,1", "256,1,1")
    assert t.meta.devices[0].name == "AMD Radeon AI PRO R9700"
    assert t.meta.devices[0].sm_count == 64 and t.meta.devices[0].vendor == "amd"


def test_v1_hiptrace_links_launch_to_kernel():
    t = parsed(str(HIPTRACE / "results.db"))
    k = t.kernels.iloc[0]
    rt = t.of_kind("runtime")
    launch = rt[rt["correlation"] == k["correlation"]]
    assert list(launch["name"]) == ["hipLaunchKernel"]
    assert set(t.of_kind("memcpy")["name"]) == {"Memcpy HtoD", "Memcpy DtoH"}
    assert t.meta.devices[0].name == "AMD Instinct MI300X"


def test_rocpd_links_api_to_kernels_and_agents():
    t = parsed(str(R / "rocpd" / "batched_gemm_trace_20251211_0851_14_results.db.gz"))
    k = t.kernels
    rt = t.of_kind("runtime")
    by_corr = rt.set_index("correlation")["name"]
    launches = k["correlation"].map(by_corr)
    assert launches.notna().all()
    assert set(launches) == {"hipLaunchKernel", "hipMemset"}
    gemm = k[k["name"].str.contains("batched_matrix_multiplication_matrix_core")]
    assert len(gemm) == 150
    assert [(d.index, d.name, d.sm_count) for d in t.meta.devices][:1] == [
        (0, "AMD Instinct MI300X", 304)]
    assert len(t.meta.devices) == 8
    assert k["grid"].notna().all()
    assert (k["device"] == 0).all()


def test_v3_json_full_sample_from_shared():
    path = shared_or_skip("samples", "rocprof", "v3", "json", "tracelens_908_results.json.gz")
    t = rocprof.parse(path)
    assert len(t.kernels) == 43915
    assert schema.validate(t.events) == []
    assert t.meta.devices[0].name == "AMD Instinct MI350X"
    assert t.kernels["name"].str.startswith("Cijk_").any()


def test_v3_csv_agent_ids_map_to_gpu_ordinals():
    t = parsed(str(R / "v3_csv_mi300a_jacobi"))
    # Agent_Id 4 is the first GPU agent (agents 0-3 are CPUs)
    assert set(t.kernels["device"]) == {0}
    assert t.meta.devices[0].name == "AMD Instinct MI300A" and t.meta.devices[0].sm_count == 228
    assert len(t.meta.devices) == 4
    assert set(t.kernels["grid"]) == {"912,1,1", "16,1,1"}


def test_v3_csv_folder_groups_files_of_one_run():
    t = parsed(str(R / "v3_csv_assembled"))
    ann = t.of_kind("annotation")
    # roctx ranges are kept, the two roctxMark instants (start == end) are dropped
    assert sorted(ann["name"]) == ["hipLaunchKernel", "hipLaunchKernel range", "hipMemcpy"]
    mem = t.of_kind("memcpy")
    assert set(mem["name"]) == {"Memcpy HtoD", "Memcpy DtoH"}
    assert mem["bytes"].isna().all()


def test_csv_missing_columns(tmp_path):
    bad = tmp_path / "1234_kernel_trace.csv"
    bad.write_text('"Kind","Agent_Id","Kernel_Name","Start_Timestamp"\n'
                   '"KERNEL_DISPATCH","Agent 4","k()",1\n')
    assert detect(bad) == "rocprof"
    with pytest.raises(TraceFormatError) as info:
        rocprof.parse(bad)
    msg = str(info.value)
    assert "End_Timestamp" in msg and "\n" not in msg
    v1 = tmp_path / "results.csv"
    v1.write_text('"Index","KernelName","gpu-id","BeginNs"\n0,"k.kd",0,5\n')
    with pytest.raises(TraceFormatError) as info:
        rocprof.parse(v1)
    assert "EndNs" in str(info.value)


def test_foreign_and_truncated_sqlite(tmp_path):
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(TraceFormatError) as info:
        rocprof.parse(db)
    assert "not a rocprof output" in str(info.value)
    data = (HIPTRACE / "results.db").read_bytes()
    cut = tmp_path / "results.db"
    cut.write_bytes(data[:6000])
    with pytest.raises(TraceFormatError) as info:
        parse_any(cut)
    assert "\n" not in str(info.value)


def test_empty_folder_is_not_rocprof(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert not rocprof.sniff(tmp_path, b"")
    with pytest.raises(TraceFormatError):
        detect(tmp_path)
