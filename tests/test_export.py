"""`profdiag export` tables (CSV/Parquet), Diagnosis.tables(), idle gaps and the notebook views."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import profdiag
from profdiag import schema
from profdiag.tables import HOTSPOT_RENAME, ROOFLINE_RENAME, TABLES
from profdiag.trace import Trace, TraceMeta

from helpers import REPO, SHARED, diagnosed, run_cli_isolated, shared_or_skip


def _synthetic() -> Trace:
    """Four kernels on one GPU, two streams overlapping: busy [10,30) [50,60) [100,130)."""
    ev = schema.from_columns({
        "name": ["gemv_a", "gemv_b", "rmsnorm_kernel", "softmax_x"], "kind": ["kernel"] * 4,
        "start_ns": [10, 15, 50, 100], "dur_ns": [10, 15, 10, 30], "device": [0] * 4,
        "stream": [7, 8, 7, 7]})
    return Trace(ev, TraceMeta(format="torch", path="synthetic.json"))


def test_idle_gaps_are_the_complement_of_the_busy_union():
    diag = profdiag.diagnose(_synthetic())
    # No steps: the window is the work's span [10, 130). Busy: [10,30) (two streams overlap,
    # counted once) + [50,60) + [100,130) = 20 + 10 + 30 = 60 ns; idle 120 - 60 = 60 ns.
    assert diag.window == (10, 130)
    gaps = diag.tables()["idle_gaps"]
    assert gaps[["start_ns", "end_ns", "dur_ns"]].values.tolist() == [[30, 50, 20], [60, 100, 40]]
    assert int(gaps["dur_ns"].sum()) == diag.breakdown.idle_ns == 60
    # the gap after the overlap is closed by gemv_b (ends at 30), not gemv_a (ends at 20)
    assert gaps["prev_kernel"].tolist() == ["gemv_b", "rmsnorm_kernel"]
    assert gaps["next_kernel"].tolist() == ["rmsnorm_kernel", "softmax_x"]
    assert gaps["step"].tolist() == [-1, -1]
    # the diagnosis' idle attribution names them: no host events recorded and far shorter
    # than rules/idle.toml's unexplained_min_ns (1 ms), so launch gaps
    assert gaps["cause"].tolist() == ["launch_gaps", "launch_gaps"]


def test_idle_gaps_from_the_diagnosis_win_when_present():
    diag = replace(profdiag.diagnose(_synthetic()), idle_gaps=pd.DataFrame(
        {"start_ns": [60, 30], "dur_ns": [40, 20], "step": [-1, -1],
         "cause": ["host_launch", "sync"], "op": [None, "aten::mm"]}))
    gaps = diag.tables()["idle_gaps"]
    assert gaps["cause"].tolist() == ["sync", "host_launch"]  # sorted by start
    assert gaps["end_ns"].tolist() == [50, 100]
    assert gaps["next_kernel"].tolist() == ["rmsnorm_kernel", "softmax_x"]
    assert list(gaps.columns[:len(TABLES["idle_gaps"])]) == list(TABLES["idle_gaps"])


def test_tables_have_the_declared_columns_and_docs_list_them(tiny_decode):
    tables = diagnosed(str(tiny_decode)).tables()
    assert list(tables) == list(TABLES)
    doc = (REPO / "docs" / "export.md").read_text()
    for name, cols in TABLES.items():
        assert list(tables[name].columns[:len(cols)]) == list(cols), name
        assert f"### `{name}`" in doc, name
        for col in cols:
            assert f"`{col}`" in doc, f"{name}.{col} not documented"


def test_tables_on_the_tiny_decode_by_hand(tiny_decode):
    diag = diagnosed(str(tiny_decode))
    t = diag.tables()
    k, steps = t["kernels"], t["steps"]
    assert len(k) == len(diag.events)
    # every kernel of a step is counted in that step's `kernels`
    assert k[k["step"] >= 0].groupby("step").size().tolist() == steps["kernels"].tolist()
    assert (k["end_ns"] == k["start_ns"] + k["dur_ns"]).all()
    assert (steps["idle_ns"] == steps["wall_ns"] - steps["gpu_busy_ns"]).all()
    # batch 1 decode: one row per GEMM (M = 1) and one query token (Tq = 1) per step
    assert steps["gemm_m"].tolist() == [1] * len(steps)
    assert steps["batch"].tolist() == [1] * len(steps)
    # hotspot calls equal the kernel rows of that name
    for r in t["hotspots"].to_dict("records"):
        sub = k[k["name"] == r["name"]]
        assert len(sub) == r["calls"] and int(sub["dur_ns"].sum()) == r["total_ns"]
        assert int(sub["start_ns"].min()) == r["first_start_ns"]
        assert (sub["hotspot_rank"] == r["rank"]).all()
    assert int(t["idle_gaps"]["dur_ns"].sum()) == diag.breakdown.idle_ns
    assert int(t["classes"]["busy_ns"].sum()) == diag.breakdown.busy_ns
    # layers: the same layer_N ranges as the report's GPU time per layer (4 layers)
    per_layer = k.dropna(subset=["layer"]).groupby("layer")["dur_ns"].sum()
    assert {int(i): int(v) for i, v in per_layer.items()} == {
        r["layer"]: r["gpu_ns"] for r in diag.kernel_counts["per_layer"]}
    assert sorted(per_layer.index) == [0, 1, 2, 3]


def _assert_tables_equal_report(out: Path, report: dict, ext: str) -> None:
    read = pd.read_csv if ext == "csv" else pd.read_parquet
    hot = read(out / f"hotspots.{ext}")
    assert len(hot) == len(report["hotspots"])
    for row, h in zip(hot.to_dict("records"), report["hotspots"]):
        for key in ("name", "class", "category", "calls", "total_ns", "mean_ns", "note"):
            assert row[key] == h[key], key
        assert row[HOTSPOT_RENAME["share"]] == pytest.approx(h["share"], abs=1e-6)
    steps = read(out / f"steps.{ext}")
    assert len(steps) == len(report["steps"]) == 8
    for row, s in zip(steps.to_dict("records"), report["steps"]):
        for key, val in s.items():
            # a null in JSON is an empty cell in CSV / a null in Parquet
            assert row[key] == val or (val is None and pd.isna(row[key])), key
    sol = {r["step"]: r for r in report["roofline"]["speed_of_light"]["steps"]}
    assert steps["ideal_ns"].tolist() == [sol[i]["ideal_ns"] for i in steps["step"]]
    checks = read(out / f"checks.{ext}")
    assert checks[["id", "status", "summary"]].values.tolist() == [
        [c["id"], c["status"], c["summary"]] for c in report["checks"]]
    assert [json.loads(e) for e in checks["evidence"]] == [c["evidence"] for c in report["checks"]]
    phases = read(out / f"phases.{ext}")
    assert len(phases) == 1 and phases.loc[0, "phase"] == report["mode"]["value"]
    for cat, share in report["categories"].items():
        assert phases.loc[0, f"share_{cat}"] == pytest.approx(share, abs=1e-9)
    assert phases.loc[0, "idle_ns"] == report["breakdown"]["idle_ns"]
    assert phases.loc[0, "bottleneck"] == report["bottleneck"]["value"]
    classes = read(out / f"classes.{ext}")
    assert dict(zip(classes["class"], classes["busy_ns"])) == report["breakdown"]["class_ns"]
    roof = read(out / f"roofline.{ext}")
    assert len(roof) == len(report["roofline"]["points"])
    for row, p in zip(roof.to_dict("records"), report["roofline"]["points"]):
        for key, val in p.items():
            got = row[ROOFLINE_RENAME.get(key, key)]
            assert got == (pytest.approx(val) if isinstance(val, float) else val), key
    gaps = read(out / f"idle_gaps.{ext}")
    assert int(gaps["dur_ns"].sum()) == report["breakdown"]["idle_ns"]
    kernels = read(out / f"kernels.{ext}")
    assert len(kernels) == report["overhead"]["kernels"]
    assert kernels.groupby("class").size().sum() == len(kernels)


def test_export_done_when_csv_and_parquet_equal_the_json_report(tmp_path):
    trace = shared_or_skip("traces", "torch", "own_1b_decode_ctx1024_B1_steps8.json.gz")
    pytest.importorskip("pyarrow")
    report_path = tmp_path / "r.json"
    code, _, _ = run_cli_isolated(["report", trace, "-o", report_path, "-q"])
    assert code == 0
    report = json.loads(report_path.read_text())
    csv_dir, pq_dir = tmp_path / "out", tmp_path / "outpq"
    code, stdout, _ = run_cli_isolated(["export", trace, "--to", csv_dir])
    assert code == 0, stdout
    assert f"{csv_dir / 'steps.csv'}  (8 rows)" in stdout
    assert sorted(p.name for p in csv_dir.iterdir()) == sorted(f"{n}.csv" for n in TABLES)
    _assert_tables_equal_report(csv_dir, report, "csv")
    code, _, _ = run_cli_isolated(["export", trace, "--to", pq_dir, "--table-format", "parquet", "-q"])
    assert code == 0
    assert sorted(p.name for p in pq_dir.iterdir()) == sorted(f"{n}.parquet" for n in TABLES)
    _assert_tables_equal_report(pq_dir, report, "parquet")
    # the same rows either way; integer columns stay integers in Parquet
    a, b = pd.read_csv(csv_dir / "kernels.csv"), pd.read_parquet(pq_dir / "kernels.parquet")
    assert a["start_ns"].tolist() == b["start_ns"].tolist()
    assert str(b["start_ns"].dtype) == "int64" and b["layer"].dropna().between(0, 15).all()


def test_export_errors_are_one_line_with_exit_codes(tmp_path, tiny_decode, monkeypatch):
    code, _, err = run_cli_isolated(["export", tiny_decode, "--to", tmp_path, "--tables", "kernels,nope"])
    assert code == 2 and "unknown table(s) nope" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli_isolated(["export", bad, "--to", tmp_path / "o"])
    assert code == 3 and err.count("\n") == 1 and "bad.json" in err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    code, _, err = run_cli_isolated(["export", tiny_decode, "--to", tmp_path / "p", "--table-format",
                        "parquet"])
    assert code == 6 and "profdiag[parquet]" in err
    assert not (tmp_path / "p").exists()


def test_export_selected_tables(tmp_path, tiny_decode):
    code, _, _ = run_cli_isolated(["export", tiny_decode, "--to", tmp_path, "--tables", "steps,checks", "-q"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checks.csv", "steps.csv"]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _shared_traces() -> list[Path]:
    root = SHARED / "traces"
    if not root.exists():
        return []
    found = sorted(root.glob("torch/*.json.gz")) + sorted(root.glob("nsys/*.sqlite*"))
    return [p for p in found if not p.name.endswith(".csv")]


@pytest.mark.parametrize("path", _shared_traces() or [None], ids=lambda p: p.name if p else "none")
def test_repr_html_on_every_shared_trace(path):
    if path is None:
        pytest.skip("../shared/traces not available")
    diag = diagnosed(str(path))
    html = diag._repr_html_()
    parser = _Collect()
    parser.feed(html)
    text = "".join(parser.text)
    assert "script" not in parser.tags
    assert diag.mode.value in text and f"{diag.bottleneck.value}-bound" in text
    for c in diag.checks:
        assert c.id in text and c.summary in text
    top = diag.hotspots.head(5)
    assert text.count("\n") == 0 and len(top) == html.count("<td style=\"text-align:left\" title=")
    for name in top["short_name"].fillna(top["name"]):
        assert str(name)[:80] in text  # unescaped back to the kernel name
    assert "<" not in re.sub(r"<[^>]*>", "", html)  # every raw '<' of a kernel name escaped
    line = repr(diag)
    assert "\n" not in line and len(line) < 400 and diag.mode.value in line
    assert f"{len(diag.steps)} steps" in line


def test_trace_repr_is_short(tiny_decode):
    trace = profdiag.load(tiny_decode)
    assert len(repr(trace)) < 300 and "torch" in repr(trace)


def test_mixed_trace_phases_table_and_perfetto_phase_track(tmp_path):
    from profdiag import perfetto as pf

    from helpers import splice_generate

    path = splice_generate(tmp_path / "generate.json.gz")
    diag = profdiag.diagnose(profdiag.load(path))
    report = diag.to_dict()
    assert report["mode"]["value"] == "mixed"
    phases = diag.tables()["phases"]
    assert phases["phase"].tolist() == [p["name"] for p in report["phases"]] == [
        "prefill", "decode"]
    for row, p in zip(phases.to_dict("records"), report["phases"]):
        assert row["steps"] == p["steps"] and row["median_step_ns"] == p["median_step_ns"]
        assert row["bottleneck"] == p["bottleneck"]["value"]
        assert row["idle_ns"] == p["breakdown"]["idle_ns"]
        assert row["overhead_share"] == pytest.approx(p["overhead_share"])
        for cat, share in p["categories"].items():
            assert row[f"share_{cat}"] == pytest.approx(share)
    steps = diag.tables()["steps"]
    # the prefill forward runs 128 prompt tokens of one sequence; each decode step one token
    assert steps["gemm_m"].tolist()[0] == 128 and set(steps["gemm_m"].tolist()[1:]) == {1}
    doc = pf.build(diag)
    assert any(e["ph"] == "M" and e.get("pid") == doc["profdiag"]["pid"] and e["tid"] == 1
               and e["name"] == "thread_name" and e["args"] == {"name": pf.TRACK_PHASES}
               for e in doc["traceEvents"])
    spans = [e for e in doc["traceEvents"] if e.get("pid") == doc["profdiag"]["pid"]
             and e["ph"] == "X" and e["tid"] == 1]
    assert [s["name"] for s in spans] == ["prefill", "decode"]
    assert [s["args"]["steps_in_span"] for s in spans] == [1, 8]
    assert [s["args"]["bottleneck"] for s in spans] == [p["bottleneck"]["value"]
                                                       for p in report["phases"]]
