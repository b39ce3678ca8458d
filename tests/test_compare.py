"""`profdiag compare BASE NEW`: what changed, in every output form, through the CLI."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from profdiag import compare, gate
from profdiag.renderers import compare_text

from helpers import EAGER, GRAPH, PREFILL, run_cli

run = run_cli


@pytest.fixture(scope="module")
def profiles() -> dict[str, gate.Profile]:
    return {"eager": gate.load_profile(EAGER), "graph": gate.load_profile(GRAPH)}


@pytest.fixture(scope="module")
def eager_vs_graph(profiles) -> dict[str, Any]:
    return compare.compare(profiles["eager"], profiles["graph"])


@pytest.fixture(scope="module")
def reports(tmp_path_factory, profiles) -> dict[str, Path]:
    from profdiag.renderers.json_ import dumps

    out = tmp_path_factory.mktemp("cmp")
    paths = {}
    for key, p in profiles.items():
        paths[key] = out / f"{key}.json"
        paths[key].write_text(dumps(p.data))
    return paths


def test_eager_vs_graph_reports_the_overhead_drop(eager_vs_graph):
    c = eager_vs_graph
    assert c["mode"] == {"base": "decode", "new": "decode", "changed": False}
    assert c["bottleneck"]["base"] == "overhead" and c["bottleneck"]["changed"]
    assert c["overhead_share"]["base"] > 0.9
    assert c["overhead_share"]["new"] < 0.3
    assert c["overhead_share"]["delta_points"] < -50
    cats = {r["category"]: r for r in c["categories"]}
    assert cats["overhead"]["delta_points"] < -50
    assert cats["compute"]["delta_points"] > 0
    (decode,) = [s for s in c["steps"] if s["phase"] == "decode"]
    assert decode["unit"] == "per decode step" and decode["base_steps"] == 8
    assert decode["wall_change_pct"] < -90  # the host gaps are gone
    assert abs(decode["gpu_busy_change_pct"]) < 10  # the GPU work per step is the same
    assert c["kernel_counts"]["gemm_calls_per_forward"]["delta"] == 0
    assert c["kernel_counts"]["launch_calls_per_step"]["delta"] < -250
    assert any(h.startswith("overhead share dropped") for h in c["headline"])


def test_kernels_from_events_cover_every_kernel(eager_vs_graph, profiles):
    k = eager_vs_graph["kernels"]
    assert k["source"] == "events"
    names = {r["name"] for r in k["rows"]}
    assert names == set(profiles["eager"].events["name"]) | set(profiles["graph"].events["name"])
    assert len(names) > len(profiles["eager"].data["hotspots"])
    assert sum(k["counts"].values()) == len(k["rows"])
    for r in k["rows"]:
        assert r["status"] in ("added", "removed", "faster", "slower", "same")
    # rows are sorted by the size of the change
    deltas = [abs(r["delta_ns"]) for r in k["rows"]]
    assert deltas == sorted(deltas, reverse=True)


def test_trace_against_itself_changes_nothing(profiles):
    c = compare.compare(profiles["graph"], profiles["graph"])
    assert {r["status"] for r in c["kernels"]["rows"]} == {"same"}
    assert {r["status"] for r in c["classes"]} == {"same"}
    assert all(r["delta_points"] == 0 for r in c["categories"])
    assert all(s["wall_change_pct"] == 0 for s in c["steps"])


def test_added_removed_faster_slower(profiles):
    # a report written before step_detail existed: per-kernel rows from its hotspots only
    base = json.loads(json.dumps(profiles["graph"].data))
    base.pop("step_detail")
    new = json.loads(json.dumps(base))
    hs = new["hotspots"]
    hs[0]["total_ns"] = int(hs[0]["total_ns"] * 1.5)
    hs[1]["total_ns"] = int(hs[1]["total_ns"] * 0.5)
    gone = hs.pop(2)["name"]
    hs.append({**hs[3], "name": "my_new_kernel<float>", "total_ns": 1000})
    c = compare.compare(base, new)
    rows = {r["name"]: r for r in c["kernels"]["rows"]}
    assert c["kernels"]["source"] == "hotspots"
    assert rows[hs[0]["name"]]["status"] == "slower"
    assert rows[hs[0]["name"]]["change_pct"] == pytest.approx(50.0, abs=0.1)
    assert rows[hs[1]["name"]]["status"] == "faster"
    # from top-N lists, a missing kernel may just have dropped below the list
    assert rows[gone]["status"] == "only in base top"
    assert rows["my_new_kernel<float>"]["status"] == "only in new top"
    assert any("hotspots" in n for n in c["notes"])


def test_report_against_trace_aligns_the_median_steps(capsys, tmp_path, reports):
    out = tmp_path / "d.json"
    code, stdout, _ = run(["compare", reports["eager"], GRAPH, "-o", out], capsys)
    assert code == 0
    c = json.loads(out.read_text())
    assert c["base"]["kind"] == "report" and c["new"]["kind"] == "trace"
    # the report keeps its median steps' kernels: every kernel is aligned, no top-N gaps
    assert c["kernels"]["source"] == "step_detail"
    assert not any(r["status"].startswith("only in") for r in c["kernels"]["rows"])
    assert all(r["base_ns"] is not None and r["new_ns"] is not None for r in c["kernels"]["rows"])
    assert c["overhead_share"]["delta_points"] < -50  # the rest is the same as for traces
    # and the attribution is the one two traces give
    both = compare.compare(gate.load_profile(EAGER), gate.load_profile(GRAPH))
    assert c["attribution"]["phases"] == both["attribution"]["phases"]
    assert "comparison: " in stdout


def test_prefill_per_token(capsys, tmp_path):
    big = Path(__file__).resolve().parents[2] / "shared" / "traces" / "torch" / \
        "own_tiny_prefill_T512_B1.json.gz"
    if not big.exists():
        pytest.skip("shared T512 prefill not available")
    c = compare.compare(gate.load_profile(PREFILL), gate.load_profile(big))
    assert c["unit"] == "per prefill token"
    (pre,) = c["steps"]
    assert pre["unit"] == "per prefill token"
    base_data = gate.load_profile(PREFILL).data
    # normalised by the 128 prompt tokens
    assert pre["base_wall_ns"] == pytest.approx(base_data["steps"][0]["wall_ns"] / 128, rel=1e-3)


@pytest.mark.parametrize("suffix", ["txt", "md", "html", "json"])
def test_every_format_through_the_cli(suffix, capsys, tmp_path, reports):
    out = tmp_path / f"diff.{suffix}"
    code, _, _ = run(["compare", reports["eager"], reports["graph"], "-o", out], capsys)
    assert code == 0
    text = out.read_text()
    assert "overhead" in text
    if suffix == "json":
        assert json.loads(text)["schema_version"] == 1
    if suffix == "md":
        assert "| category | base | new | change |" in text
    if suffix == "txt":
        assert text.startswith("profdiag compare: ")
    # deterministic: the same inputs give the same bytes
    run(["compare", reports["eager"], reports["graph"], "-o", tmp_path / f"again.{suffix}"],
        capsys)
    assert (tmp_path / f"again.{suffix}").read_text() == text


def test_text_to_stdout_by_default(capsys, reports):
    code, out, _ = run(["compare", reports["eager"], reports["graph"]], capsys)
    assert code == 0
    assert "overhead share dropped: 98.6% -> 21.4%" in out
    assert "bottleneck overhead -> memory" in out


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_escapes_names(tmp_path, profiles):
    hostile = '<script>alert("x")</script>&<img src=x onerror=1>'
    base = json.loads(json.dumps(profiles["graph"].data))
    new = json.loads(json.dumps(base))
    new["hotspots"][0]["name"] = hostile
    for detail in new["step_detail"].values():
        detail["kernels"][0]["kernel"] = hostile
    new["source"]["path"] = "</title><script>bad()</script>"
    html = compare_text.render(compare.compare(base, new), "html")
    p = _Collector()
    p.feed(html)
    assert "script" not in p.tags and "img" not in p.tags and "link" not in p.tags
    assert not any(v and ("http://" in v or "https://" in v) for _, v in p.attrs)
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "svg" in p.tags and "table" in p.tags
    assert any(hostile in t for t in p.text) or any(
        v == hostile for _, v in p.attrs)  # shown (escaped), not executed


def test_bad_output_suffix_is_a_usage_error(capsys, tmp_path, reports):
    code, _, err = run(["compare", reports["eager"], reports["graph"], "-o",
                        tmp_path / "diff.pdf"], capsys)
    assert code == 2 and "pdf" in err
    code, _, err = run(["compare", reports["eager"], tmp_path / "missing.json"], capsys)
    assert code == 2 and "no such file" in err


def test_mode_change_is_reported_not_refused(capsys, tmp_path, reports):
    out = tmp_path / "d.json"
    code, _, _ = run(["compare", PREFILL, reports["graph"], "-o", out, "-q"], capsys)
    assert code == 0
    c = json.loads(out.read_text())
    assert c["mode"] == {"base": "prefill", "new": "decode", "changed": True}
    assert any("mode changed" in n for n in c["notes"])
