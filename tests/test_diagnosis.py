"""The five steps on real H100 traces, checked against the manifest's ground truth."""

import math

import numpy as np
import pytest

import profdiag
from profdiag.diagnosis.context import union_ns
from profdiag.errors import NoGpuEventsError, UsageError
from profdiag.schema import from_columns
from profdiag.trace import Trace, TraceMeta

from helpers import FIXTURES, SHARED, SHARED_TORCH, diagnosed, shared_manifest

CAPTURES = shared_manifest() or [pytest.param(
    None, marks=pytest.mark.skip(reason="needs ../shared/traces/torch/manifest.json and the "
                                         "real H100 captures it lists"))]
IDS = [c["file"].replace(".json.gz", "") for c in shared_manifest()] or ["no-shared"]


def _config_path(capture):
    return str(SHARED / "traces" / "configs" / f"llama_{capture['config']['name']}.json")


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_mode_and_exact_gemm_count_with_model_config(capture):
    d = diagnosed(str(SHARED_TORCH / capture["file"]), model_config=_config_path(capture),
                  use_manifest=False)
    assert d.mode.value == capture["phase"]
    kc = d.kernel_counts
    forwards = capture["steps"]
    assert kc["observed_gemm_calls"] == capture["gemms_per_forward"] * forwards
    assert kc["expected_gemm_calls"] == kc["observed_gemm_calls"]
    assert kc["layers_source"] == "config"
    assert d.check("kernel_count").status == "pass"


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_manifest_beside_the_trace_is_used(capture):
    d = diagnosed(str(SHARED_TORCH / capture["file"]))
    assert d.model["source"] == "manifest"
    assert d.kernel_counts["forwards_source"] == "manifest"
    assert d.kernel_counts["expected_gemm_calls"] == capture["gemms_per_forward"] * capture["steps"]


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_categories_are_shares_of_the_window_summing_to_one(capture):
    d = diagnosed(str(SHARED_TORCH / capture["file"]))
    shares = d.categories
    assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-4)
    assert all(0 <= v <= 1 for v in shares.values())
    bd = d.breakdown
    assert bd.busy_ns <= bd.window_ns
    assert bd.busy_ns <= bd.kernel_sum_ns
    assert sum(bd.category_ns.values()) == pytest.approx(bd.busy_ns, rel=1e-3)


def test_eager_decode_is_overhead_bound_and_graph_twin_is_not():
    pairs = [("own_tiny_decode_ctx512_B1_steps8", "own_tiny_decode_ctx512_B1_steps8_cudagraph"),
             ("own_1b_decode_ctx1024_B1_steps8", "own_1b_decode_ctx1024_B1_steps8_cudagraph")]
    for eager, graph in pairs:
        if not (SHARED_TORCH / f"{eager}.json.gz").exists():
            pytest.skip("shared traces absent")
        e = diagnosed(str(SHARED_TORCH / f"{eager}.json.gz"))
        g = diagnosed(str(SHARED_TORCH / f"{graph}.json.gz"))
        assert e.bottleneck.value == "overhead"
        assert g.bottleneck.value == "memory"
        assert e.check("overhead").status == "fail"
        assert g.check("overhead").status == "pass"
        assert g.overhead["graph_replayed_share"] > 0.9
        e_recs = {r.id for r in e.recommendations}
        g_recs = {r.id for r in g.recommendations}
        assert "overhead.cuda_graphs" in e_recs
        assert "overhead.cuda_graphs" not in g_recs  # already replayed from a graph
        assert "memory.quantize" in g_recs
        # the eager capture had record_shapes on: the diagnosis says profiling may inflate gaps
        assert "profiling may inflate" in e.check("overhead").summary
        assert "overhead.profiling" in e_recs


def test_cuda_graph_decode_keeps_mode_and_counts_without_cpu_ops(tiny_graph):
    d = diagnosed(str(tiny_graph), model_config=str(FIXTURES / "configs" / "llama_tiny.json"),
                  use_manifest=False)
    assert d.mode.value == "decode"
    assert d.kernel_counts["observed_gemm_calls"] == 29 * 8
    assert d.kernel_counts["forwards_source"] == "steps"
    assert any("CUDA-graph" in w for w in d.warnings)
    # shape evidence is gone: the mode rests on annotations and kernel names
    assert not any("GEMM M" in e for e in d.mode.evidence if not e.startswith("(disagrees"))


def test_layers_are_inferred_without_a_config(tiny_decode):
    d = diagnosed(str(tiny_decode), use_manifest=False)
    kc = d.kernel_counts
    assert kc["layers"] == 4 and kc["layers_source"] == "inferred"
    assert kc["layers_inferred_from"] == "layer_N annotations"
    assert kc["expected_gemm_calls"] == 232
    assert "inferred" in d.check("kernel_count").summary


def test_layers_inferred_from_attention_calls_in_graph_replays(tiny_graph):
    d = diagnosed(str(tiny_graph), use_manifest=False)
    assert d.kernel_counts["layers"] == 4
    assert d.kernel_counts["layers_inferred_from"] == "attention kernels per forward"


def test_extra_gemms_are_reported_with_the_ops_behind_them(tiny_decode):
    d = diagnosed(str(tiny_decode), layers=4, gemms_per_layer=6, use_manifest=False)
    kc = d.kernel_counts
    assert kc["expected_gemm_calls"] == (4 * 6 + 1) * 8
    assert kc["observed_gemm_calls"] - kc["expected_gemm_calls"] == 32
    assert d.check("kernel_count").status == "fail"
    assert kc["extra"] and all("aten::mm" in e["signature"] for e in kc["extra"])
    assert "counts.extra_gemms" in {r.id for r in d.recommendations}


def test_per_layer_times_and_balance(tiny_decode):
    d = diagnosed(str(tiny_decode))
    per = d.kernel_counts["per_layer"]
    assert [r["layer"] for r in per] == [0, 1, 2, 3]
    assert all(r["gemm_calls"] == 7 * 8 for r in per)
    assert d.check("layer_balance") is not None


def test_prefill_is_diagnosed_from_shapes(tiny_prefill):
    d = diagnosed(str(tiny_prefill))
    assert d.mode.value == "prefill"
    assert any("median GEMM M = 128" in e for e in d.mode.evidence)
    assert d.mode.confidence >= 0.9


def test_hotspots_are_sorted_and_shares_are_of_busy_time(tiny_decode):
    d = diagnosed(str(tiny_decode))
    hot = d.hotspots
    assert list(hot["total_ns"]) == sorted(hot["total_ns"], reverse=True)
    assert (hot["calls"] > 0).all()
    assert hot["share"].sum() <= 1.0 + 1e-9
    assert hot["note"].str.len().gt(0).all()


def test_steps_table(tiny_decode):
    d = diagnosed(str(tiny_decode))
    st = d.steps
    assert len(st) == 8
    assert list(st["name"]) == [f"decode_step_{i}" for i in range(8)]
    assert (st["gpu_busy_ns"] <= st["wall_ns"]).all()
    assert set(st["phase"]) == {"decode"}


def test_to_dict_follows_the_json_contract(tiny_decode):
    j = diagnosed(str(tiny_decode)).to_dict()
    for key in ("schema_version", "source", "mode", "bottleneck", "categories", "checks",
                "kernel_counts", "hotspots", "recommendations", "phases"):
        assert key in j
    assert set(j["source"]) >= {"format", "path", "device"}
    assert j["mode"]["value"] in ("prefill", "decode", "mixed", "unknown")
    assert j["bottleneck"]["value"] in ("compute", "memory", "overhead", "unknown")
    assert {c["status"] for c in j["checks"]} <= {"pass", "warn", "fail", "skip"}
    assert set(j["kernel_counts"]) >= {"observed_gemm_calls", "expected_gemm_calls", "layers",
                                       "layers_source", "extra"}
    assert set(j["hotspots"][0]) >= {"name", "class", "calls", "total_ns", "share"}
    assert set(j["recommendations"][0]) >= {"id", "title", "evidence"}


def _synthetic(rows):
    cols = {k: [r.get(k) for r in rows] for k in ("name", "kind", "start_ns", "dur_ns", "device",
                                                   "stream", "correlation", "external_id")}
    return Trace(from_columns(cols), TraceMeta(format="torch", path="synthetic"))


def test_overlapping_streams_are_not_double_counted():
    rows = [
        {"name": "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_TNT", "kind": "kernel", "start_ns": 0,
         "dur_ns": 1000, "device": 0, "stream": 7},
        {"name": "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_TNT", "kind": "kernel", "start_ns": 500,
         "dur_ns": 1000, "device": 0, "stream": 8},
        {"name": "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_TNT", "kind": "kernel", "start_ns": 2000,
         "dur_ns": 1000, "device": 0, "stream": 7},
    ]
    d = profdiag.diagnose(_synthetic(rows), use_manifest=False)
    assert d.breakdown.kernel_sum_ns == 3000
    assert d.breakdown.busy_ns == 2500
    assert d.breakdown.window_ns == 3000
    assert d.categories["overhead"] == pytest.approx(500 / 3000, abs=1e-6)


def test_union_of_intervals():
    s = np.array([0, 5, 20, 21, 40])
    e = np.array([10, 8, 30, 25, 41])
    assert union_ns(s, e) == 10 + 10 + 1
    assert union_ns(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0


def test_trace_without_gpu_work_is_an_error():
    rows = [{"name": "aten::add", "kind": "cpu_op", "start_ns": 0, "dur_ns": 10}]
    with pytest.raises(NoGpuEventsError, match="no GPU kernels"):
        profdiag.diagnose(_synthetic(rows))


def test_bad_cli_numbers_are_usage_errors(tiny_decode):
    tr = profdiag.load(tiny_decode)
    with pytest.raises(UsageError):
        profdiag.diagnose(tr, layers=0)
    with pytest.raises(UsageError, match="cannot read model config"):
        profdiag.diagnose(tr, model_config=str(tiny_decode))


def test_multi_stream_sample_from_hta():
    p = SHARED / "samples" / "kineto" / "hta" / "event_sync_multi_stream_trace.json.gz"
    if not p.exists():
        pytest.skip("shared samples absent")
    d = profdiag.diagnose(profdiag.load(p))
    assert d.breakdown.busy_ns <= d.breakdown.kernel_sum_ns


def test_user_rules_and_threshold_overrides_reach_the_diagnosis(tmp_path, tiny_decode):
    limits = tmp_path / "limits.toml"
    limits.write_text("[overhead]\ndecode_max = 0.99\npathological = 0.995\n")
    kernels = tmp_path / "kernels.toml"
    kernels.write_text('[[rule]]\nid = "mine.index"\npattern = "elementwise_kernel_with_index"\n'
                       'category = "memory"\nclass = "kv_cache"\npriority = 900\n'
                       'examples = ["elementwise_kernel_with_index"]\nwhy = "test"\n')
    d = profdiag.diagnose(profdiag.load(tiny_decode), rules=[str(limits), str(kernels)])
    assert d.check("overhead").status == "pass"  # 98.6% idle is under the raised limit
    assert d.overhead["limit"] == 0.99
    assert d.bottleneck.value != "overhead"
    assert "kv_cache" in d.breakdown.class_ns
    base = diagnosed(str(tiny_decode))
    assert base.check("overhead").status == "fail" and "kv_cache" not in base.breakdown.class_ns


def test_rules_files_split_by_what_they_declare_and_an_unreadable_one_is_named(tmp_path):
    """One read of each --rules file decides its roles: kernel rules ([[rule]]), thresholds
    (no [[rule]]), idle causes ([[cause]], [attribution] or [step_outliers]); a file may be
    both. A file that cannot be read is a usage error naming it."""
    from profdiag import diagnosis

    both = tmp_path / "both.toml"
    both.write_text('[[rule]]\nid = "a"\n\n[[cause]]\nid = "b"\n')
    limits = tmp_path / "limits.toml"
    limits.write_text("[overhead]\ndecode_max = 0.9\n")
    outliers = tmp_path / "outliers.toml"
    outliers.write_text("[step_outliers]\nmin_steps = 4\n")
    kernel, thresholds, idle = diagnosis._rule_files([both, str(limits), outliers])
    assert kernel == [both]
    assert thresholds == (str(limits), str(outliers))
    assert idle == (str(both), str(outliers))
    missing = tmp_path / "missing.toml"
    with pytest.raises(UsageError, match="cannot read rules file") as err:
        diagnosis._rule_files([str(limits), str(missing)])
    assert str(missing) in str(err.value)


def test_warm_prepares_the_rules_run_reads_and_raises_what_run_raises(tmp_path, tiny_decode):
    """diagnosis.warm (what `report` does while a prefetch child streams): the user's rule
    file compiled into load_rules' cache; the same diagnosis after it; a bad file's error."""
    from profdiag import classify, diagnosis
    from profdiag.errors import RulesError

    kernels = tmp_path / "kernels.toml"
    kernels.write_text('[[rule]]\nid = "mine.index"\npattern = "elementwise_kernel_with_index"\n'
                       'category = "memory"\nclass = "kv_cache"\npriority = 900\n')
    limits = tmp_path / "limits.toml"
    limits.write_text("[overhead]\ndecode_max = 0.99\npathological = 0.995\n")
    rules = (str(kernels), str(limits))
    cold = profdiag.diagnose(profdiag.load(tiny_decode), rules=rules).to_dict()
    from profdiag import engines, hardware
    from profdiag.diagnosis import verdict

    shipped = (engines.forms, engines.kv_write_rule, hardware._load_table, verdict.advice)
    for cache in (classify._load_cached, *shipped):
        cache.cache_clear()
    diagnosis.warm(rules)
    key = (*map(str, classify.default_rule_files()), str(kernels))
    before = classify._load_cached.cache_info()
    classify._load_cached(key)
    assert classify._load_cached.cache_info().hits == before.hits + 1  # compiled by warm
    # the shipped tables a run reads: each read by warm, so the run finds it cached
    assert [c.cache_info().currsize for c in shipped] == [1, 1, 1, 1]
    run_misses = [c.cache_info().misses for c in shipped]
    warm = profdiag.diagnose(profdiag.load(tiny_decode), rules=rules).to_dict()
    assert warm == cold and "kv_cache" in warm["breakdown"]["class_ns"]
    assert [c.cache_info().misses for c in shipped] == run_misses  # the run read none again
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nid = "x"\npattern = "("\ncategory = "compute"\nclass = "gemm"\n')
    for call in (lambda: diagnosis.warm([str(bad)]),
                 lambda: profdiag.diagnose(profdiag.load(tiny_decode), rules=[str(bad)])):
        with pytest.raises(RulesError, match="bad regex"):
            call()


@pytest.mark.parametrize("compact", [True, False])
def test_hotspot_rows_per_kernel_name_hand_computed(compact):
    """Per kernel name (a missing name in none): calls, total time, and the first short
    name / class / category that is not missing; largest total first."""
    import pandas as pd

    from profdiag import schema
    from profdiag.diagnosis.hotspots import hotspots

    work = pd.DataFrame({
        "name": pd.array(["b", "a", "b", None, "a", "b"], dtype="string"),
        "short_name": pd.array([None, "A", "B", "N", None, "B2"], dtype="string"),
        "class": pd.array(["gemm", None, "gemm", "x", "attention", "gemm"], dtype="string"),
        "category": pd.array(["compute", "compute", None, "x", "compute", "memory"],
                             dtype="string"),
        "dur_ns": np.array([10, 50, 20, 99, 5, 30], dtype=np.int64),
    })
    if compact:
        for c in ("name", "short_name", "class", "category"):
            work[c] = schema.compact(work[[c]])[c]
    hot = hotspots(work, busy_ns=115, forwards=None, layers=None, top=10)
    assert hot["name"].tolist() == ["b", "a"]  # 60 ns, then 55 ns
    assert hot["calls"].tolist() == [3, 2]
    assert hot["total_ns"].tolist() == [60, 55]
    assert hot["short_name"].tolist() == ["B", "A"]  # b's first short name is missing
    assert hot["class"].tolist() == ["gemm", "attention"]  # a's first class is missing
    assert hot["category"].tolist() == ["compute", "compute"]
    assert str(hot["name"].dtype) == "string"
