"""The same diagnosis on Nsight Systems and rocprof traces."""

import pytest

import profdiag

from helpers import FIXTURES, diagnosed, shared_or_skip


def test_nsys_generate_trace_is_mixed_with_exact_gemm_counts():
    trace = shared_or_skip("traces", "nsys", "nsys_1b_T512_decode64.sqlite.gz")
    cfg = shared_or_skip("traces", "configs", "llama_1b.json")
    d = diagnosed(str(trace), model_config=str(cfg))
    assert d.mode.value == "mixed"
    phases = {p.name: p.steps for p in d.phases}
    assert phases == {"prefill": 1, "decode": 64}
    kc = d.kernel_counts
    assert kc["forwards"] == 65
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 113 * 65
    # NVTX ranges are the steps
    assert list(d.steps["name"][:2]) == ["prefill", "decode_step_0"]
    assert any("no framework ops" in w for w in d.warnings)


def test_seed_microbench_kernels_land_on_opposite_sides():
    d = diagnosed(str(FIXTURES / "nsys" / "seed_microbench.sqlite"))
    hot = d.hotspots.set_index("class")
    assert hot.loc["math", "category"] == "compute" and hot.loc["math", "calls"] == 32
    assert hot.loc["kv_cache", "category"] == "memory" and hot.loc["kv_cache", "calls"] == 32
    assert d.categories["compute"] > 0.2 and d.categories["memory"] > 0.2
    assert d.bottleneck.value in ("compute", "memory")


@pytest.mark.parametrize("rel", [
    "rocprof/v1_llamacpp_gfx1201/results.csv.gz",
    "rocprof/v1_batched_gemm_hiptrace/results.json",
])
def test_rocprof_outputs_are_diagnosed(rel):
    d = profdiag.diagnose(profdiag.load(FIXTURES / rel))
    assert d.mode.value in ("prefill", "decode", "unknown")
    assert d.breakdown.busy_ns > 0
    assert sum(d.categories.values()) == pytest.approx(1.0, abs=1e-4)
    assert (d.hotspots["class"] != "unclassified").any()
