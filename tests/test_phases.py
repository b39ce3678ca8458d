"""Mixed traces (one prefill then decode steps) are segmented and each phase diagnosed."""

import json

import pytest

import profdiag

from helpers import FIXTURES, splice_generate


@pytest.fixture(scope="module", params=[True, False], ids=["annotated", "no-annotations"])
def generate_diag(request, tmp_path_factory):
    path = splice_generate(tmp_path_factory.mktemp("gen") / "generate.json.gz", request.param)
    return request.param, profdiag.diagnose(profdiag.load(path), layers=4)


def test_generate_trace_is_mixed_with_one_prefill_and_eight_decode_steps(generate_diag):
    annotated, d = generate_diag
    assert d.mode.value == "mixed"
    phases = {p.name: p for p in d.phases}
    assert set(phases) == {"prefill", "decode"}
    assert phases["prefill"].steps == 1 and phases["decode"].steps == 8
    assert list(d.steps["phase"]) == ["prefill"] + ["decode"] * 8
    if not annotated:
        assert d.steps["name"].iloc[0] == "forward_0 (inferred)"
        assert any("inferred from the lm_head" in w for w in d.warnings)


def test_each_phase_has_its_own_breakdown_and_overhead_check(generate_diag):
    _, d = generate_diag
    for p in d.phases:
        assert sum(p.breakdown.shares.values()) == pytest.approx(1.0, abs=1e-4)
        assert p.bottleneck.value in ("compute", "memory", "overhead")
        assert d.check(f"overhead.{p.name}") is not None
    j = d.to_dict()
    assert [p["name"] for p in j["phases"]] == ["prefill", "decode"]
    json.dumps(j)


def test_gemm_count_spans_both_phases(generate_diag):
    _, d = generate_diag
    kc = d.kernel_counts
    assert kc["forwards"] == 9
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 29 * 9


def test_decode_trace_without_annotations_infers_forwards(tmp_path):
    import gzip

    src = FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"
    doc = json.loads(gzip.decompress(src.read_bytes()))
    doc["traceEvents"] = [e for e in doc["traceEvents"]
                          if e.get("cat") not in ("user_annotation", "gpu_user_annotation")]
    p = tmp_path / "plain.json.gz"
    p.write_bytes(gzip.compress(json.dumps(doc).encode()))
    d = profdiag.diagnose(profdiag.load(p), use_manifest=False)
    assert d.mode.value == "decode"
    assert len(d.steps) == 8
    kc = d.kernel_counts
    assert kc["forwards"] == 8 and kc["layers_source"] == "inferred"
    assert kc["expected_gemm_calls"] == kc["observed_gemm_calls"] == 232
