"""Every figure in the rendered report says what it covers, and no wording contradicts the data.

These tests read the rendered HTML / text / Markdown (not the templates): the wording items of
issue 11 (CUDA-graph card on prefill, unbalanced kernel-count summary, "layers from inferred",
layers source vs model source, legend swatches, per-layer totals, CPU traces saying GPU) and the
per-shape roofline table and "causal" in the speed of light.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import profdiag
from profdiag.renderers import html as html_r, markdown as md_r, text as text_r
from profdiag.roofline import GEMM_OPS, _shape_of

from helpers import FIXTURES, diagnosed, shared_or_skip


def _rendered(path: Path, **kw: object) -> tuple[dict, str, str, str]:
    data = diagnosed(str(path), **kw).to_dict()
    return data, text_r.render(data), md_r.render(data), html_r.render(data)


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def test_prefill_report_wording_and_roofline_table() -> None:
    path = shared_or_skip("traces", "torch", "own_1b_prefill_T2048_B1.json.gz")
    data, txt, md, page = _rendered(path)
    for out in (txt, md, page):
        assert "Capture the decode step once" not in out  # a prefill has no decode step
        assert "layers from inferred" not in out
        assert "attention causal" in out  # the speed of light says what it assumed
        assert "Per shape" in out  # the per-shape roofline table is in the report itself
        # the k/v projection (M=2048, N=512) is visible with its share of the roof
        assert "2048 x 2048 x 512" in out
    kc = next(c for c in data["checks"] if c["id"] == "kernel_count")
    assert _balanced(kc["summary"]), kc["summary"]
    assert "x 1 forward;" in kc["summary"] and "layers from manifest" in kc["summary"]
    # the counts' layer source agrees with the model line's source
    assert data["kernel_counts"]["layers_source"] == data["model"]["source"] == "manifest"
    assert "layers: 16 (from manifest)" in txt
    # per-layer figures say they are totals over all forwards
    assert "totals over all 1 forwards" in txt
    assert "time per layer, totals over all 1 forwards" in page
    # the advice card speaks of a prefill
    rec = next(r for r in data["recommendations"] if r["id"] == "overhead.cuda_graphs")
    assert "prompt-length bucket" in rec["advice"]


def test_step_chart_legend_swatches_use_the_bar_colour() -> None:
    path = FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"
    _, _, _, page = _rendered(path)
    # The bars are phase-coloured; the wall/busy legend swatches were a fixed grey.
    assert 'color: "#888", opacity: 0.35, label: "wall time"' not in page
    assert 'color: barColor, opacity: 0.35, label: "wall time"' in page


def test_decode_cudagraph_card_still_speaks_of_decode() -> None:
    data = diagnosed(str(FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz")).to_dict()
    recs = [r for r in data["recommendations"] if r["id"] == "overhead.cuda_graphs"]
    assert recs and "Capture the decode step once" in recs[0]["advice"]


def test_no_kernel_class_contradicts_the_launching_ops_shapes() -> None:
    torch_dir = shared_or_skip("traces", "torch")
    checked = 0
    for path in sorted(torch_dir.glob("*.json.gz")):
        ev = diagnosed(str(path)).events
        rows = ev[(ev["class"] == "gemv") & ev["op_name"].isin(GEMM_OPS) & ev["input_dims"].notna()]
        for op, dims in set(zip(rows["op_name"], rows["input_dims"])):
            shp = _shape_of(op, dims)
            assert shp is None or min(shp.m, shp.n) <= 8, (path.name, op, dims)
            checked += 1
    assert checked  # the decode traces do run true GEMVs (M = 1)
    # The T=2048 prefill's k/v projection kernel, an nvjet tile with an 8-wide side, is a GEMM.
    ev = diagnosed(str(torch_dir / "own_1b_prefill_T2048_B1.json.gz")).events
    kv = ev[ev["input_dims"] == "[[2048,2048],[2048,512]]"]
    assert len(kv) and set(kv["class"]) == {"gemm"}
    assert set(kv["rule_id"]) == {"gemv.nvjet_skinny+shape"}


@pytest.fixture(scope="module")
def cpu_generate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from profdiag.capture import capture
    from profdiag.capture.config import CaptureOptions, resolve_config

    cfg = resolve_config("tiny", layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=256)
    out = tmp_path_factory.mktemp("gen")
    return capture(CaptureOptions(out=out, config=cfg, phase="generate", tokens=128, steps=3,
                                  device="cpu")).trace


def test_cpu_generate_overhead_share_is_the_windows(cpu_generate: Path) -> None:
    d = profdiag.diagnose(profdiag.load(cpu_generate)).to_dict()
    assert d["mode"]["value"] == "mixed" and len(d["phases"]) == 2
    # overhead.overhead_share is the window's share, equal to categories.overhead ...
    assert d["overhead"]["overhead_share"] == pytest.approx(d["categories"]["overhead"], abs=1e-6)
    # ... and each phase keeps its own.
    assert all(p["overhead_share"] is not None for p in d["phases"])
    txt = text_r.render(d)
    line = next(ln for ln in text_r.summary(d).splitlines() if ln.startswith("Overhead:"))
    assert text_r.fmt_pct(d["categories"]["overhead"]) in line and "per phase" in line
    # A CPU trace says CPU, never GPU busy/idle, and is not judged against a GPU roof.
    page = html_r.render(d)
    for out in (txt, md_r.render(d), text_r.summary(d)):
        assert "GPU busy" not in out and "GPU idle" not in out, out
    assert "GPU busy" not in page.split("<script")[0] and "GPU idle" not in page.split("<script")[0]
    assert "CPU busy" in txt
    prefill = next(p for p in d["phases"] if p["name"] == "prefill")
    assert not any("M = 128 (< " in e for e in prefill["bottleneck"]["evidence"])
    # where the verdict quotes the GEMM M (compute or memory; an overhead verdict on a loaded
    # machine does not), it says no GPU threshold applies
    m_lines = [e for e in prefill["bottleneck"]["evidence"] if "median GEMM M" in e]
    assert all("no GPU tensor-core threshold" in e for e in m_lines), prefill["bottleneck"]
    assert m_lines or prefill["bottleneck"]["value"] == "overhead", prefill["bottleneck"]
    assert d["roofline"]["available"] is False and "CPU" in d["roofline"]["reason"]


def test_manifest_json_has_head_dim(cpu_generate: Path) -> None:
    m = json.loads(cpu_generate.with_name(cpu_generate.name.replace(".json.gz", ".manifest.json"))
                   .read_text())
    assert m["config"]["head_dim"] == 16
    assert re.match(r"tiny|custom", m["config"]["name"])
