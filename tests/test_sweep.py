"""`profdiag sweep`: the grid, the fits, a real CPU sweep of the bundled model, resumption,
the memory refusal, and the curves in the report checked against hand computation."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from profdiag.cli import cli
from profdiag.errors import UsageError
from profdiag.sweep import analysis, grid, model_meta, parse_axis


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the real entry point (errors -> one line + exit code); return (code, stderr)."""
    from profdiag.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code or 0), capsys.readouterr().err

# ------------------------------------------------------------------ pure parts (no torch)


def test_parse_axis_and_grid() -> None:
    assert parse_axis("512, 32,128,32", "tokens") == [32, 128, 512]
    assert parse_axis(None, "context") == []
    for bad in ("32,x", "0", "-4", "1.5"):
        with pytest.raises(UsageError):
            parse_axis(bad, "tokens")
    pts = grid([32, 128], [8], [1, 4], [256])
    assert [p.id for p in pts] == ["T32_N8_B1", "T32_N8_B4", "T128_N8_B1", "T128_N8_B4",
                                   "ctx256_N8_B1", "ctx256_N8_B4"]
    with pytest.raises(UsageError, match="--tokens"):
        grid([], [8], [1])


def test_fit_prefill_recovers_hand_coefficients() -> None:
    # t(T) = 2 ms + 50 µs·T + 20 ns·T²: the T² part overtakes at T = b/c = 50000/20 = 2500.
    ts = [128, 512, 2048, 4096]
    ys = [2e6 + 5e4 * t + 20 * t * t for t in ts]
    fit = analysis.fit_prefill(ts, ys)
    assert fit["degree"] == 2
    assert fit["a_ns"] == pytest.approx(2e6, rel=1e-6)
    assert fit["b_ns_per_token"] == pytest.approx(5e4, rel=1e-6)
    assert fit["c_ns_per_token2"] == pytest.approx(20, rel=1e-6)
    assert fit["crossover_tokens"] == pytest.approx(2500, rel=1e-6)
    assert fit["r2"] == pytest.approx(1.0)
    # A straight line has no crossover; two lengths fit a line only.
    line = analysis.fit_prefill(ts, [1e6 + 3e4 * t for t in ts])
    assert line["crossover_tokens"] is None
    assert analysis.fit_prefill([1, 2], [3, 5])["degree"] == 1


def test_model_crossover_by_hand() -> None:
    # tiny: body params (no lm_head) = 4 x (4·512² + 3·512·1536) + 9·512 norms = 13,635,072;
    # causal attention 2·L·T²·d·h = projections 2·N·T at T = N / (L·d·h) = N / (4·64·8).
    m = model_meta({"layers": 4, "hidden": 512, "heads": 8, "kv_heads": 8, "ffn": 1536,
                    "vocab": 32000})
    body = 4 * (4 * 512 * 512 + 3 * 512 * 1536) + 9 * 512
    assert m["crossover_tokens"] == pytest.approx(body / (4 * 64 * 8))


def _fake(tokens: int, batch: int, pre_ns: float, dec_ns: float, pre_ideal: float,
          dec_ideal: float, regime: str = "memory") -> dict[str, Any]:
    p = grid([tokens], [2], [batch])[0]
    return {**p.to_dict(), "status": "ok",
            "prefill": {"median_step_ns": pre_ns, "ideal_ns": pre_ideal,
                        "ratio": pre_ns / pre_ideal, "limit": "compute", "regime": "compute"},
            "decode": {"median_step_ns": dec_ns, "ideal_ns": dec_ideal,
                       "ratio": dec_ns / dec_ideal, "limit": "memory", "regime": regime,
                       "per_step": [{"context": tokens, "measured_ns": dec_ns,
                                     "ideal_ns": dec_ideal}]}}


def test_sentences_name_where_the_curve_leaves_the_roof() -> None:
    res = [_fake(128, 1, 10e6, 1e6, 5e6, 0.5e6), _fake(128, 8, 80e6, 1.02e6, 40e6, 0.51e6),
           _fake(128, 32, 320e6, 4e6, 160e6, 0.53e6, regime="overhead"),
           {**grid([512], [2], [1])[0].to_dict(), "status": "failed", "error": "HTTP 500"}]
    spec = {"name": "A100", "critical_batch": 156.0}
    rep = analysis.analyse(res, {"target": "local", "settings": {}, "spec": spec})
    s = " ".join(rep["sentences"])
    # ideal grows 0.53/0.5 = 1.06x, measured 4x; batch 8 is still flat (1.02 vs 1.02)
    assert "stays memory-bound up to batch ~156 on A100" in s
    assert "grows 1.06x, the measured 4x" in s
    assert "leaves the roof at batch 32: overhead, not bandwidth" in s
    assert "1 point(s) failed: T512_N2_B1" in s
    assert rep["counts"] == {"points": 4, "ok": 3, "failed": 1}
    cell = rep["regime_map"]["decode"]["cells"][2][0]
    assert cell["regime"] == "overhead" and cell["ratio"] == pytest.approx(4e6 / 0.53e6)


def test_ratio_sentence_skips_unknown_ratios_like_the_median() -> None:
    # Three decode ratios: NaN (an ideal time of 0), 1.02e6/0.51e6 = 2 and 4e6/0.5e6 = 8; and
    # one point without a roofline (no ratio at all). Range and median are over 2 and 8 only.
    res = [_fake(128, 1, 10e6, 1e6, 5e6, 0.5e6), _fake(128, 8, 80e6, 1.02e6, 40e6, 0.51e6),
           _fake(128, 32, 320e6, 4e6, 160e6, 0.5e6), _fake(128, 64, 640e6, 8e6, 320e6, 1e6)]
    res[0]["decode"]["ratio"] = float("nan")
    del res[3]["decode"]["ratio"]
    rep = analysis.analyse(res, {"target": "local", "settings": {}, "spec": None})
    assert rep["median_ratio"]["decode"] == pytest.approx((2 + 8) / 2)
    assert "Decode runs at 2x to 8x the speed-of-light time (median 5x)." in rep["sentences"]


def test_chart_maps_points_to_pixels() -> None:
    from profdiag.renderers import sweep_html as sh

    c = sh.chart([{"name": "m", "color": "#000", "points": [(0, 0.0), (10, 5.0)]},
                  {"name": "sol", "color": "#111", "dash": True, "scatter": True,
                   "points": [(5, None), (10, 2.5)]}], "x", "y")
    # x: 0 -> left pad (64), 10 -> width - right pad (544); y: 0 -> bottom (260); the top of
    # the axis is the last tick >= 5.4 (5 * 1.08), here 6, so 5 -> 260 - 5/6 * 246 = 55.
    (x0, y0), (x1, y1) = c["series"][0]["points"]
    assert (x0, y0) == (64, 260) and x1 == 544 and y1 == pytest.approx(260 - 5 / 6 * 246)
    assert c["series"][1]["points"] == [(544, pytest.approx(260 - 2.5 / 6 * 246))]
    assert c["series"][1]["dash"] == "5,4" and c["series"][1]["line"] is False
    assert sh.chart([{"name": "e", "color": "#000", "points": [(1, None)]}], "x", "y") == {
        "empty": True}


def test_decode_roof_flat_then_rising_past_the_critical_batch() -> None:
    """The roof the decode curves are drawn against, on the lab's A100 (312 TFLOP/s, 2 TB/s,
    critical batch 156 in bf16) for the 8b preset at context 0: flat while the weights
    dominate, then linear in the batch once the FLOPs do."""
    import dataclasses

    from profdiag import hardware
    from profdiag.capture.config import PRESETS
    from profdiag.sweep.local import _phase_result

    spec = dataclasses.replace(hardware.get("a100-sxm4-80gb"), bandwidth=2.0e12)
    cfg = {k: v for k, v in PRESETS["8b"].to_dict().items() if k != "name"}
    n = 4096 * (4096 + 2 * 1024 + 4096) * 32 + 3 * 4096 * 14336 * 32 + 65 * 4096 \
        + 128256 * 4096  # compute params: q,k,v,o + mlp per layer, norms, lm_head
    ideal = {}
    for b in (1, 64, 156, 312, 624):
        r = _phase_result([1_000_000], [1], "decode", b, cfg, spec, 2, "bf16", None)
        ideal[b] = r["ideal_ns"]
        # KV bytes of one token: K and V x 32 layers x 128 head_dim x 8 KV heads x 2 bytes;
        # each sequence reads the 1 position it attends to and writes its new token's K/V
        kv = 2 * 32 * 1 * 128 * 8 * 2
        t_mem = (2 * n + b * kv + b * kv) / 2.0e12
        # attention, causal: C - Tq/2 keys per query on average (roofline.attention_flops),
        # C = 2 (the cached token and its own), Tq = 1: 1.5 keys
        t_cmp = b * (2 * n + 4 * 32 * 1.5 * 128 * 32) / 312e12
        assert r["ideal_ns"] == pytest.approx(max(t_mem, t_cmp) * 1e9)
        assert r["limit"] == ("compute" if t_cmp > t_mem else "memory")
    # flat below B*: only 64 sequences' KV (2 x 128 KiB each) on top of 16 GB of weights
    assert ideal[64] / ideal[1] == pytest.approx((2 * n + 64 * 2 * kv) / (2 * n + 2 * kv))
    assert ideal[64] / ideal[1] < 1.002
    assert ideal[624] / ideal[312] == pytest.approx(2.0, rel=1e-3)  # linear past it


# ------------------------------------------------------------------ a real CPU sweep

torch = pytest.importorskip("torch")

# tiny cut to one layer: the CI grid (4 generate points and 2 decode points over a 64-long
# cache; the 12-point tiny grid takes longer, docs/sweep.md has its numbers).
ARGS = ["--preset", "tiny", "--layers", "1", "--device", "cpu", "--threads", "1",
        "--tokens", "16,256", "--new-tokens", "3", "--batch", "1,2", "--context", "64",
        "--warmup", "1"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sweep") / "S"
    res = CliRunner().invoke(cli, ["sweep", *ARGS, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return {"out": out, "output": res.output,
            "rep": json.loads((out / "sweep.report.json").read_text())}


@pytest.mark.torch
def test_folder_layout(swept: dict[str, Any]) -> None:
    out = swept["out"]
    ids = ["T16_N3_B1", "T16_N3_B2", "T256_N3_B1", "T256_N3_B2", "ctx64_N3_B1", "ctx64_N3_B2"]
    man = json.loads((out / "sweep.json").read_text())
    assert man["sweep_version"] == 1 and man["target"] == "local"
    assert [p["id"] for p in man["points"]] == ids
    assert all(p["status"] == "ok" for p in man["points"])
    for i in ids:
        assert (out / "traces" / f"{i}.json.gz").is_file()
        assert (out / "traces" / f"{i}.manifest.json").is_file()
        rep = json.loads((out / "reports" / f"{i}.report.json").read_text())
        # a generate trace holds a prefill and decode steps; a decode point only steps
        assert rep["mode"]["value"] == ("decode" if i.startswith("ctx") else "mixed")
    rows = list(csv.DictReader((out / "points.csv").open()))
    assert [r["id"] for r in rows] == ids
    assert {"prefill_ns", "prefill_ideal_ns", "prefill_ratio", "decode_regime"} <= set(rows[0])
    steps = list(csv.DictReader((out / "decode_steps.csv").open()))
    assert len(steps) == 6 * 3  # 3 decode steps per point
    assert [s["context"] for s in steps if s["point"] == "ctx64_N3_B1"] == ["64", "65", "66"]
    assert "report:" in swept["output"] and "6 of 6 point(s) ok" in swept["output"]


@pytest.mark.torch
def test_prefill_curve_and_speed_of_light_by_hand(swept: dict[str, Any]) -> None:
    rep = swept["rep"]
    spec = rep["spec"]
    assert spec["name"].endswith("(measured)") and spec["dtype"] == "fp32"
    for curve in rep["prefill_curves"]:
        pts = curve["points"]
        assert [p["tokens"] for p in pts] == [16, 256]
        # 16x the tokens: measured prefill time grows (monotone), and so does the ideal.
        assert pts[0]["measured_ns"] < pts[1]["measured_ns"]
        assert pts[0]["ideal_ns"] < pts[1]["ideal_ns"]
        b = curve["batch"]
        # Hand computation of the prefill FLOPs of one layer of tiny, fp32:
        # body = 4·512² + 3·512·1536 + 3·512 (norms) = 3,409,408 params; lm_head on the last
        # token only: 512·32000; causal attention 2·L·T²·d·h = 2·1·T²·64·8.
        for p in pts:
            t = p["tokens"]
            flops = b * (2 * 3_409_408 * t + 2 * 512 * 32000 + 2 * t * t * 64 * 8)
            w = (3_409_408 + 512 * 32000) * 4
            kv = 2 * 1 * t * 64 * 8 * 4
            ideal = max(flops / spec["peak_flops_s"], (w + b * kv) / spec["bandwidth_bytes_s"])
            assert p["ideal_ns"] == pytest.approx(ideal * 1e9, rel=1e-9)


@pytest.mark.torch
def test_decode_flat_in_batch_below_the_critical_batch(swept: dict[str, Any]) -> None:
    rep = swept["rep"]
    spec = rep["spec"]
    assert spec["critical_batch"] > 2  # ridge x 4 bytes / 2 on this CPU
    w = (3_409_408 + 512 * 32000) * 4  # streamed weights, fp32
    for row in rep["decode_vs_batch"]:
        b1, b2 = row["points"]
        assert (b1["batch"], b2["batch"]) == (1, 2)
        assert b1["limit"] == b2["limit"] == "memory"
        # The median decode step starts with T + 1 cached tokens (steps at T, T+1, T+2): it
        # reads those T + 1 positions and writes its own: T + 2 tokens of K/V per sequence.
        kv = 2 * 1 * (row["length"] + 2) * 64 * 8 * 4
        assert b2["ideal_ns"] / b1["ideal_ns"] == pytest.approx((w + 2 * kv) / (w + kv))
        assert b2["ideal_ns"] / b1["ideal_ns"] < 1.02  # flat: the weights dominate
    assert any("stays memory-bound up to batch" in s for s in rep["sentences"])


@pytest.mark.torch
def test_html_report_shows_the_curves(swept: dict[str, Any]) -> None:
    html = (swept["out"] / "sweep.html").read_text()
    for title in ("Prefill time vs prompt length", "decode step vs context",
                  "decode step vs batch", "Regime per point", "speed of light", "Crossovers"):
        assert title in html
    assert html.count("<polyline") >= 6  # measured + SOL + fit, decode vs ctx and batch
    assert "T16_N3_B2" in html
    data = html.split('id="profdiag-sweep-data">')[1].split("</script>")[0]
    assert json.loads(data)["counts"]["ok"] == 6
    assert "ctx 64" in html  # the decode points' column of the regime map


@pytest.mark.torch
def test_resume_redoes_nothing_and_refuses_other_settings(
        swept: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = swept["out"]
    before = {p.name: p.read_bytes() for p in (out / "points").iterdir()}
    spec = json.loads((out / "sweep.report.json").read_text())["spec"]
    res = CliRunner().invoke(cli, ["sweep", *ARGS, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in (out / "points").iterdir()} == before
    # the CPU roof measured on the first run is kept: old and new points share it
    assert json.loads((out / "sweep.report.json").read_text())["spec"] == spec
    assert (out / "cpu_spec.json").is_file()
    code, err = _main(capsys, "sweep", *ARGS, "--dtype", "bfloat16", "--out", str(out))
    assert code == 2 and err.count("\n") == 1
    assert "holds a sweep with other settings (dtype)" in err


@pytest.mark.torch
def test_memory_refusal_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "S"
    code, err = _main(capsys, "sweep", "--preset", "8b", "--device", "cpu", "--tokens",
                      "16,100000", "--batch", "1,4096", "--out", str(out))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("profdiag: error: point T100000_N8_B4096: capture needs ~")
    assert "GiB" in err
    assert not (out / "points").exists()  # nothing ran


@pytest.mark.torch
def test_compare_two_sweeps_point_by_point(swept: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    base = swept["out"]
    new = tmp_path / "S-new"
    shutil.copytree(base, new)
    rep = json.loads((new / "sweep.report.json").read_text())
    # The "after" sweep: every prefill 1.5x slower, decode unchanged, one point dropped.
    rep["points"] = [dict(p, prefill_ns=p["prefill_ns"] and p["prefill_ns"] * 1.5)
                     for p in rep["points"][:-1]]
    (new / "sweep.report.json").write_text(json.dumps(rep))
    res = CliRunner().invoke(cli, ["compare", str(base), str(new), "-f", "json"])
    assert res.exit_code == 0, res.output
    cmp = json.loads(res.output)
    assert [r["id"] for r in cmp["points"]] == ["T16_N3_B1", "T16_N3_B2", "T256_N3_B1",
                                                "T256_N3_B2", "ctx64_N3_B1"]
    for r in cmp["points"]:
        if r["id"].startswith("ctx"):  # no prefill in a decode point
            assert r["prefill_change_pct"] is None and r["prefill_status"] == "-"
            continue
        assert r["prefill_change_pct"] == pytest.approx(50.0)
        assert r["prefill_status"] == "slower" and r["decode_status"] == "same"
    assert cmp["only_in_base"] == ["ctx64_N3_B2"]
    assert cmp["headline"][0].startswith("prefill: median change +50.0% over 4 point(s); "
                                         "4 slower, 0 faster")
    txt = CliRunner().invoke(cli, ["compare", str(base), str(new)]).output
    assert "+50.0% slower" in txt and "T256_N3_B1" in txt


@pytest.mark.torch
def test_record_sweep_points_in_history(swept: dict[str, Any], tmp_path: Path) -> None:
    from profdiag import history

    db = tmp_path / "h.db"
    res = CliRunner().invoke(cli, ["sweep", *ARGS, "--out", str(swept["out"]), "--record",
                                   "--db", str(db), "--label", "commit=abc"])
    assert res.exit_code == 0, res.output
    assert "recorded as runs" in res.output
    labels = list(history.list_runs(db, labels={"commit": "abc"})["labels"])
    assert sorted(lab["point"] for lab in labels) == ["T16_N3_B1", "T16_N3_B2", "T256_N3_B1",
                                                      "T256_N3_B2", "ctx64_N3_B1",
                                                      "ctx64_N3_B2"]
    assert all(lab["sweep"] == "S" and lab["commit"] == "abc" for lab in labels)
    assert {lab["batch"] for lab in labels} == {"1", "2"}


@pytest.mark.torch
def test_cuda_graphs_need_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _main(capsys, "sweep", "--device", "cpu", "--cuda-graphs", "--tokens", "16",
                      "--out", str(tmp_path / "S"))
    assert code == 2 and "--cuda-graphs needs CUDA" in err


@pytest.mark.torch
def test_repeat_keeps_the_fastest_try(tmp_path: Path) -> None:
    out = tmp_path / "S"
    res = CliRunner().invoke(cli, ["sweep", "--preset", "tiny", "--layers", "1", "--device",
                                   "cpu", "--threads", "1", "--tokens", "16", "--new-tokens",
                                   "2", "--repeat", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    p = json.loads((out / "points" / "T16_N2_B1.json").read_text())
    assert len(p["tries_wall_ns"]) == 2
    rep = json.loads((out / p["report"]).read_text())
    # the kept report is the try with the least step time in all, and the point's numbers
    # are that report's steps
    assert sum(st["wall_ns"] for st in rep["steps"]) == min(p["tries_wall_ns"])
    assert p["prefill"]["median_step_ns"] == rep["steps"][0]["wall_ns"]
    assert sorted(f.name for f in (out / "traces").iterdir()) == [
        "T16_N2_B1.json.gz", "T16_N2_B1.manifest.json"]
