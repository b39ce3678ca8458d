"""The Perfetto (Chrome JSON) trace: loads, every event well formed, original events kept,
profdiag's tracks present and consistent with the diagnosis."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from profdiag import perfetto as pf

from helpers import FIXTURES, diagnosed, run_cli_isolated

PHASES = {"X", "M", "i", "I", "s", "f", "t", "B", "E", "C", "b", "e", "n"}


def _load(path: Path) -> dict:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def _well_formed(doc: dict) -> None:
    assert isinstance(doc["traceEvents"], list)
    for e in doc["traceEvents"]:
        assert isinstance(e, dict) and e.get("ph") in PHASES, e
        if e["ph"] == "X":
            assert isinstance(e["name"], str)
            assert isinstance(e["ts"], (int, float)) and isinstance(e["dur"], (int, float))
            assert e["dur"] >= 0
            assert isinstance(e["pid"], (int, str)) and isinstance(e["tid"], (int, str))
            assert isinstance(e.get("args", {}), dict)
        elif e["ph"] == "M":
            assert isinstance(e["args"], dict) and e["name"]
            assert isinstance(e["ts"], (int, float))  # never read as 0 by an importer


def _tracks(doc: dict) -> dict[str, list[dict]]:
    """profdiag track name -> its slices, sorted by time."""
    pid = doc["profdiag"]["pid"]
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e.get("pid") == pid and e["ph"] == "M" and e["name"] == "thread_name"}
    out: dict[str, list[dict]] = {n: [] for n in names.values()}
    for e in doc["traceEvents"]:
        if e.get("pid") == pid and e["ph"] == "X":
            out[names[e["tid"]]].append(e)
    for slices in out.values():
        slices.sort(key=lambda e: e["ts"])
    return out


def _no_overlap(slices: list[dict]) -> bool:
    """Slices of one track follow each other (a track must nest; ours never overlap)."""
    return all(a["ts"] + a["dur"] <= b["ts"] + 1e-3 for a, b in zip(slices, slices[1:]))


@pytest.fixture(scope="module")
def torch_export(tmp_path_factory, tiny_decode):
    out = tmp_path_factory.mktemp("pf")
    report, trace = out / "r.html", out / "tiny.perfetto.json.gz"
    code, stdout, _ = run_cli_isolated(["report", tiny_decode, "-o", report, "--perfetto", trace])
    assert code == 0
    assert f"perfetto: {trace}" in stdout
    return _load(trace), report.read_text(), diagnosed(str(tiny_decode))


def test_torch_perfetto_keeps_the_original_events_and_annotates_kernels(torch_export,
                                                                       tiny_decode):
    doc, _, diag = torch_export
    _well_formed(doc)
    original = json.loads(gzip.decompress(Path(tiny_decode).read_bytes()))
    pid = doc["profdiag"]["pid"]
    kept = [e for e in doc["traceEvents"] if e.get("pid") != pid]
    assert len(kept) == len(original["traceEvents"])

    def key(e):
        return (e.get("ph"), e.get("name"), e.get("ts"), e.get("dur"), e.get("cat"))

    assert Counter(map(key, kept)) == Counter(map(key, original["traceEvents"]))
    assert original["deviceProperties"] == doc["deviceProperties"]
    gpu = [e for e in kept if e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy")]
    annotated = [e for e in gpu if "profdiag.class" in e["args"]]
    assert len(annotated) == len(diag.events) == len(gpu)
    by_class = Counter(e["args"]["profdiag.class"] for e in annotated)
    assert by_class == Counter(diag.events["class"].astype(str))
    steps = Counter(e["args"]["profdiag.step"] for e in annotated)
    assert [steps[i] for i in range(len(diag.steps))] == diag.steps["kernels"].tolist()


def test_torch_perfetto_profdiag_tracks(torch_export):
    doc, _, diag = torch_export
    tracks = _tracks(doc)
    names = [e for e in doc["traceEvents"] if e.get("pid") == doc["profdiag"]["pid"]
             and e["name"] == "process_name"]
    assert [n["args"]["name"] for n in names] == ["profdiag"]
    assert {pf.TRACK_PHASES, pf.TRACK_STEPS, pf.TRACK_GAPS, pf.TRACK_HOTSPOTS} <= set(tracks)
    assert f"{pf.TRACK_CLASSES} (stream 7)" in tracks
    for name, slices in tracks.items():
        assert _no_overlap(slices), name
    steps = tracks[pf.TRACK_STEPS]
    assert [s["name"] for s in steps] == [f"decode_step_{i}" for i in range(8)]
    assert [round(s["ts"] * 1000) for s in steps] == diag.steps["start_ns"].tolist()
    assert [s["args"]["phase"] for s in steps] == ["decode"] * 8
    (phase,) = tracks[pf.TRACK_PHASES]
    assert phase["name"] == "decode" and phase["args"]["bottleneck"] == diag.bottleneck.value
    assert phase["args"]["steps_in_span"] == 8
    assert phase["args"]["share_overhead"] == diag.categories["overhead"]
    gaps = tracks[pf.TRACK_GAPS]
    total_ns = sum(round(g["dur"] * 1000) for g in gaps)
    assert total_ns == pytest.approx(diag.breakdown.idle_ns, abs=len(gaps))
    # each gap is named by the cause the idle attribution gave it (tiny eager decode: the
    # cuDNN plan builds, framework ops, launch gaps)
    assert {g["name"] for g in gaps} == {f"idle: {c}" for c in diag.idle_gaps["cause"].unique()}
    assert "idle: cudnn_plan" in {g["name"] for g in gaps}
    hot = tracks[pf.TRACK_HOTSPOTS]
    assert len(hot) == int(diag.hotspots["calls"].sum())
    assert Counter(int(h["name"].split("#")[1].split(":")[0]) for h in hot) == {
        i + 1: int(c) for i, c in enumerate(diag.hotspots["calls"])}
    assert len(tracks[f"{pf.TRACK_CLASSES} (stream 7)"]) == len(diag.events)


def test_report_html_links_hotspots_and_gaps_to_their_timestamps(torch_export):
    doc, html, diag = torch_export
    assert 'id="perfetto"' in html and "ui.perfetto.dev" in html
    assert not re.search(r'(href|src)="(https?:)?//', html)  # the report stays offline
    origin_ns = round(min(e["ts"] for e in doc["traceEvents"]
                          if e["ph"] != "M" and "ts" in e) * 1000)
    first = diag.tables()["hotspots"].iloc[0]
    row = re.search(r'<tr id="perfetto-hotspot-1">(.*?)</tr>', html, re.S).group(1)
    expected_ms = (int(first["first_start_ns"]) - origin_ns) / 1e6
    assert f'data-ns="{int(first["first_start_ns"])}">{expected_ms:.3f}<' in row
    assert "hotspot #1:" in row
    assert html.count('id="perfetto-hotspot-') == len(diag.hotspots)
    gaps = diag.tables()["idle_gaps"].nlargest(1, "dur_ns").iloc[0]
    assert f'data-ns="{int(gaps["start_ns"])}">{(int(gaps["start_ns"]) - origin_ns) / 1e6:.3f}<' in html


def test_gap_causes_name_the_gap_slices(tiny_decode):
    from dataclasses import replace

    import pandas as pd

    diag = diagnosed(str(tiny_decode))
    own = diag.tables()["idle_gaps"]
    # a Diagnosis is frozen: a copy with other idle gaps, the cached one untouched
    doc = pf.build(replace(diag, idle_gaps=pd.DataFrame(
        {"start_ns": own["start_ns"], "dur_ns": own["dur_ns"], "step": own["step"],
         "cause": "host_launch", "op": own["op"]})))
    gaps = _tracks(doc)[pf.TRACK_GAPS]
    assert len(gaps) == len(own) and {g["name"] for g in gaps} == {"idle: host_launch"}


@pytest.mark.parametrize("path", [
    FIXTURES / "nsys" / "saxpy-mpi-cuda_nsys_perlmutter0.sqlite.gz",
    FIXTURES / "rocprof" / "v1_llamacpp_gfx1201" / "results.csv.gz",
], ids=["nsys", "rocprof"])
def test_perfetto_from_the_event_table(tmp_path, path):
    code, stdout, _ = run_cli_isolated(["export", path, "--to", tmp_path, "--perfetto", "--tables", "steps"])
    assert code == 0, stdout
    (out,) = tmp_path.glob("*.perfetto.json.gz")
    doc = _load(out)
    _well_formed(doc)
    diag = diagnosed(str(path))
    trace = diag.trace
    pid = doc["profdiag"]["pid"]
    rebuilt = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] != pid]
    assert len(rebuilt) == len(trace.events)
    gpu = trace.gpu_events
    gpu_slices = [e for e in rebuilt if e["cat"] in ("kernel", "gpu_memcpy", "gpu_memset")]
    assert len(gpu_slices) == len(gpu)
    assert sorted(round(e["ts"] * 1000) for e in gpu_slices) == sorted(gpu["start_ns"].tolist())
    procs = {e["args"]["name"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert "profdiag" in procs
    assert any(p.startswith("GPU ") for p in procs)
    tracks = _tracks(doc)
    assert pf.TRACK_GAPS in tracks and pf.TRACK_STEPS in tracks
    for name, slices in tracks.items():
        assert _no_overlap(slices), name


def test_trace_processor_reads_the_tracks(torch_export, tmp_path):
    """Query the file with Perfetto's trace processor where it can run (it needs its binary:
    set PROFDIAG_TRACE_PROCESSOR to a trace_processor_shell; it cannot be downloaded offline)."""
    tp_mod = pytest.importorskip("perfetto.trace_processor")
    binary = os.environ.get("PROFDIAG_TRACE_PROCESSOR")
    if not binary:
        pytest.skip("PROFDIAG_TRACE_PROCESSOR not set (no trace_processor_shell offline)")
    doc, _, diag = torch_export
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    tp = tp_mod.TraceProcessor(trace=str(path), config=tp_mod.TraceProcessorConfig(bin_path=binary))
    try:
        rows = tp.query(
            "select thread.name as track, count(*) as n from slice "
            "join thread_track on slice.track_id = thread_track.id "
            "join thread using (utid) group by thread.name").as_pandas_dataframe()
    finally:
        tp.close()
    counts = dict(zip(rows["track"], rows["n"]))
    assert counts[pf.TRACK_STEPS] == len(diag.steps)
    assert counts[pf.TRACK_HOTSPOTS] == int(diag.hotspots["calls"].sum())


def test_json_report_records_the_perfetto_file(tmp_path, tiny_prefill):
    report, trace = tmp_path / "r.json", tmp_path / "p.perfetto.json"
    code, _, _ = run_cli_isolated(["report", tiny_prefill, "-o", report, "--perfetto", trace, "-q"])
    assert code == 0
    data = json.loads(report.read_text())
    assert data["perfetto"]["file"] == "p.perfetto.json"
    assert data["perfetto"]["tracks"][:3] == [pf.TRACK_PHASES, pf.TRACK_STEPS, pf.TRACK_GAPS]
    doc = json.loads(trace.read_text())  # plain JSON without .gz
    assert data["perfetto"]["origin_ns"] == round(min(
        e["ts"] for e in doc["traceEvents"] if e["ph"] != "M") * 1000)
    gaps = data["perfetto"]["gaps"]
    assert len(gaps) <= pf.TOP_GAPS and gaps == sorted(gaps, key=lambda g: -g["dur_ns"])


def test_perfetto_on_a_directory_is_a_usage_error(tmp_path, tiny_decode):
    code, _, err = run_cli_isolated(["report", Path(tiny_decode).parent, "--perfetto", tmp_path / "x.json"])
    assert code == 2 and "--perfetto takes one trace" in err
