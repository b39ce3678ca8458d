"""Engine step annotations (rules/engines.toml, profdiag/engines.py) on real names and traces."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from profdiag import engines, schema
from tests.helpers import FIXTURES, diagnosed, shared_or_skip

ENGINES = FIXTURES / "engines"
TRACELENS = ("samples", "kineto", "tracelens")


@pytest.mark.parametrize("form,example", list(engines.iter_examples()),
                         ids=lambda x: x.id if isinstance(x, engines.Form) else x["name"][:50])
def test_every_example_parses_to_its_form_and_values(form, example):
    got = engines.parse(example["name"])
    assert got is not None and got.form == form.id, (example["name"], got)
    assert got.engine == form.engine
    for key, want in example.items():
        if key != "name":
            assert getattr(got, key) == (None if want == "null" else want), key


def test_every_form_has_examples_and_a_source():
    for form in engines.forms():
        assert form.examples and form.source, form.id


# Real names, with the arithmetic written out (sq = query tokens, sk = KV tokens read).
def test_vllm_chunked_prefill_step_is_mixed():
    c = engines.parse("execute_8192_context_9(sq8155sk8430sqsq7475785sqsk7671310)"
                      "_generation_37(sq37sk34489sqsq37sqsk34489)")
    assert (c.engine, c.mode) == ("vllm", "mixed")
    assert (c.prefill_tokens, c.decode_tokens) == (8155, 37)
    assert c.prefill_tokens + c.decode_tokens == 8192  # the leading total
    assert c.kv_tokens == 8430 + 34489
    assert c.requests == 9 + 37


def test_vllm_upstream_form_with_squared_lengths():
    c = engines.parse("execute_context_1(888_788544)_generation_0(0)")
    assert 888 * 888 == 788544  # the second number is the sum of squared query lengths
    assert (c.mode, c.prefill_tokens, c.decode_tokens, c.requests) == ("prefill", 888, 0, 1)
    assert c.kv_tokens is None  # the upstream form does not say how much context was read


def test_sglang_forms():
    d = engines.parse("step[DECODE bs=32]")
    assert (d.engine, d.mode, d.decode_tokens, d.requests, d.prefill_tokens) == (
        "sglang", "decode", 32, 32, 0)
    e = engines.parse("step[EXTEND bs=15 toks=15360]")
    assert (e.mode, e.prefill_tokens, e.requests, e.decode_tokens) == ("prefill", 15360, 15, 0)
    assert engines.parse("step[MIXED bs=2]").mode == "mixed"


def test_trtllm_and_generic_forms():
    t = engines.parse("[Executor] _forward_step 12: 1 ctx reqs, 31 gen reqs")
    assert (t.engine, t.mode, t.requests, t.decode_tokens) == ("trtllm", "mixed", 32, 31)
    assert engines.parse("ProfilerStep#6").engine == "torch"
    assert engines.parse("decode_step_7").mode == "decode"
    assert engines.parse("prefill").mode == "prefill"
    for not_a_step in ("aten::mm", "layer_3", "nccl:_all_gather_base", "execute_model",
                       "step[DECODE bs=32", "prefill_chunked_attention"):
        assert engines.parse(not_a_step) is None, not_a_step


def _ann(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    return schema.from_columns({"name": [r[0] for r in rows], "start_ns": [r[1] for r in rows],
                                "dur_ns": [r[2] for r in rows],
                                "kind": [schema.KIND_ANNOTATION] * len(rows)})


def test_find_steps_merges_a_nested_engine_range_and_names_its_engine():
    # SGLang with the TraceLens patch: execute_... (shared with vLLM) around step[DECODE ...]
    ann = _ann([("execute_32_context_0(sq0sk0sqsq0sqsk0)_generation_32(sq32sk32785sqsq32sqsk32785)",
                 0, 1000), ("step[DECODE bs=32]", 10, 900), ("ProfilerStep#3", 0, 2000)])
    st = engines.find_steps(ann)
    assert len(st) == 1  # the engine tier wins over ProfilerStep; the nested range is no step
    row = st.iloc[0]
    assert (row["engine"], row["annotated_mode"]) == ("sglang", "decode")
    assert (row["decode_tokens"], row["kv_tokens"], row["requests"]) == (32, 32785, 32)


def test_find_steps_fills_unstated_fields_from_nested_ranges():
    ann = _ann([("step[EXTEND bs=2 toks=14721]", 0, 100),
                ("step[EXTEND bs=2 toks=14721 c_sq=14721 c_sk=20000]", 5, 50),
                ("step[DECODE bs=2]", 200, 10), ("step[DECODE bs=2]", 300, 10)])
    st = engines.find_steps(ann)
    assert list(st["annotated_mode"]) == ["prefill", "decode", "decode"]
    assert st["kv_tokens"].tolist()[0] == 20000  # from the nested detailed range
    assert st["kv_tokens"].isna().tolist() == [False, True, True]
    assert str(st["prefill_tokens"].dtype) == "Int64"


def test_torch_compile_regions_are_steps_only_in_their_own_tier():
    ann = _ann([("## Call CompiledFxGraph abc123 ##", 0, 10),
                ("## Call CompiledFxGraph def456 ##", 20, 10)])
    assert engines.find_steps(ann, tiers=(1, 2)).empty
    assert len(engines.find_steps(ann, tiers=(3, 4))) == 2
    assert engines.trace_mode(["prefill", "decode"]) == "mixed"
    assert engines.trace_mode(["mixed"]) == "mixed"
    assert engines.trace_mode(["decode", "decode"]) == "decode"


def _synthetic(tmp_path: Path, name: str, kernels: int = 3) -> Path:
    """A minimal Kineto trace: one step range, its launches and kernels (graph replay when
    ``kernels`` > 1 hang off one hipGraphLaunch, as in the engines' decode traces)."""
    ev = [{"ph": "X", "cat": "user_annotation", "name": name, "pid": 1, "tid": 1, "ts": 0.0,
           "dur": 50.0, "args": {}},
          {"ph": "X", "cat": "cuda_runtime", "name": "hipGraphLaunch", "pid": 1, "tid": 1,
           "ts": 5.0, "dur": 5.0, "args": {"correlation": 7}}]
    for i in range(kernels):
        ev.append({"ph": "X", "cat": "kernel", "name": f"Cijk_Alik_Bljk_BBS_BH_MT64x32x{i}",
                   "pid": 0, "tid": 1, "ts": 20.0 + 10 * i, "dur": 8.0,
                   "args": {"device": 0, "stream": 1, "correlation": 7}})
    doc = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "AMD Instinct MI300X"}],
           "traceEvents": ev}
    p = tmp_path / "t.json.gz"
    p.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return p


TIER1 = [(f, ex) for f, ex in engines.iter_examples() if f.tier == 1]


@pytest.mark.parametrize("form,example", TIER1, ids=lambda x: x.id if isinstance(
    x, engines.Form) else x["name"][:40])
def test_each_engine_form_is_a_step_of_a_diagnosed_trace(tmp_path, form, example):
    import profdiag

    d = profdiag.diagnose(profdiag.load(_synthetic(tmp_path, example["name"])))
    assert len(d.steps) == 1
    row = d.steps.iloc[0]
    assert row["engine"] == form.engine
    want = engines.parse(example["name"])
    for col in engines.STEP_COLUMNS:
        got = row[col]
        assert (None if pd.isna(got) else int(got)) == getattr(want, col), col
    if want.mode:
        assert row["phase"] == want.mode and d.mode.value == want.mode
    steps_json = d.to_dict()["steps"][0]
    assert steps_json["prefill_tokens"] == want.prefill_tokens  # None -> JSON null


# The real engine traces (two are bundled; the rest are read from ../shared).
def test_sglang_decode_sample(tmp_path):
    d = diagnosed(str(ENGINES / "sglang_Qwen3-8B_decode.json.gz"))
    assert len(d.steps) == 1
    s = d.steps.iloc[0]
    assert (s["engine"], s["phase"], s["decode_tokens"], s["kv_tokens"], s["requests"]) == (
        "sglang", "decode", 32, 32785, 32)
    assert s["kernels"] == len(d.events)  # the graph replay's kernels belong to the step
    assert d.mode.value == "decode"


def test_vllm_full_graph_decode_sample():
    d = diagnosed(str(ENGINES / "vllm_decode_full_graph_execution.json.gz"))
    s = d.steps.iloc[0]
    assert (len(d.steps), s["engine"], s["phase"], s["decode_tokens"], s["prefill_tokens"]) == (
        1, "vllm", "decode", 32, 0)
    assert s["kv_tokens"] == 55086


@pytest.mark.parametrize("sample,want", [
    ("sglang_Qwen3-8B_prefilldecode", {"phase": "prefill", "prefill_tokens": 15360,
                                       "decode_tokens": 0, "requests": 15, "engine": "sglang"}),
    ("vllm_prefilldecode_piecewise_graph_execution",
     {"phase": "mixed", "prefill_tokens": 8155, "decode_tokens": 37, "requests": 46,
      "kv_tokens": 8430 + 34489, "engine": "vllm"}),
    ("b200_eager_trace", {"phase": "prefill", "prefill_tokens": 888, "decode_tokens": 0,
                          "requests": 1, "engine": "vllm"}),
])
def test_shared_engine_samples(sample, want):
    d = diagnosed(str(shared_or_skip(*TRACELENS, f"{sample}.json.gz")))
    assert len(d.steps) == 1
    s = d.steps.iloc[0]
    for k, v in want.items():
        assert s[k] == v, k
    assert d.mode.value == want["phase"]  # one step: the trace's mode is the step's
    assert d.mode.evidence[0].startswith(f"{want['engine']} annotation")


def test_kv_write_rule_examples():
    pattern, examples, not_examples = engines.kv_write_rule()
    assert examples and not_examples
    assert all(pattern.search(n) for n in examples)
    assert not any(pattern.search(n) for n in not_examples)


def test_kv_written_tokens_from_the_kv_write_grids():
    names = pd.Series(["void vllm::reshape_and_cache_flash_kernel<__nv_bfloat16, float>(x)"] * 3
                      + ["Cijk_Alik_Bljk_BBS_BH_MT64x32x64"])
    grids = pd.Series(["888,1,1", "888,1,1", "890,1,1", "4096,1,1"])
    mask = engines.kv_write_mask(names)
    assert mask.tolist() == [True, True, True, False]
    assert engines.kv_write_tokens(mask, grids) == 888  # median over the layers
    assert engines.kv_write_tokens(mask, pd.Series([None] * 4)) is None  # graph replay: no grid


def test_vllm_v1_without_annotations_steps_by_execute_model(tmp_path):
    import profdiag

    p = _synthetic(tmp_path, "vllm/v1/worker/gpu_model_runner.py(3380): execute_model")
    doc = json.loads(gzip.decompress(p.read_bytes()))
    doc["traceEvents"][0]["cat"] = "python_function"  # as vLLM records it (with_stack=True)
    p.write_bytes(gzip.compress(json.dumps(doc).encode()))
    d = profdiag.diagnose(profdiag.load(p))
    assert list(d.steps["engine"]) == ["vllm"] and d.steps["kernels"].tolist() == [3]


def test_b200_kv_writes_match_the_annotation():
    d = diagnosed(str(shared_or_skip(*TRACELENS, "b200_eager_trace.json.gz")))
    s = d.steps.iloc[0]
    # 36 reshape_and_cache_flash_kernel launches (one per layer), grid x = 888 tokens each
    assert s["kv_written_tokens"] == s["prefill_tokens"] + s["decode_tokens"] == 888


def test_own_capture_steps_name_profdiag_and_state_no_batch():
    from tests.helpers import EAGER

    d = diagnosed(str(EAGER))
    assert set(d.steps["engine"]) == {"profdiag"}
    assert d.steps["prefill_tokens"].isna().all() and d.steps["requests"].isna().all()
    assert list(d.steps["phase"]) == ["decode"] * 8  # from decode_step_N, as before
    rows = d.to_dict()["steps"]
    assert rows[0]["engine"] == "profdiag" and rows[0]["kv_tokens"] is None


def test_summary_states_the_batch():
    from profdiag.renderers.text import batch_line, summary

    data = diagnosed(str(ENGINES / "sglang_Qwen3-8B_decode.json.gz")).to_dict()
    assert ("Batch:       1 sglang step: 0 prefill + 32 decode tokens, 32 requests, "
            "32785 KV tokens read") in summary(data).splitlines()
    two = [{"engine": "vllm", "prefill_tokens": 0, "decode_tokens": d, "requests": d,
            "kv_tokens": None} for d in (30, 32, 64)]
    assert batch_line(two) == "3 vllm steps, median per step: 0 prefill + 32 decode tokens, 32 requests"
    assert batch_line([{"engine": "profdiag", "prefill_tokens": None}]) == ""


def test_graph_captures_are_steps_only_without_served_steps():
    both = _ann([("capture_32_DECODE", 0, 100), ("step[DECODE bs=32]", 200, 50)])
    assert list(engines.find_steps(both)["name"]) == ["step[DECODE bs=32]"]
    only = _ann([("capture_32_DECODE", 0, 100), ("capture_16_DECODE", 200, 50)])
    assert list(engines.find_steps(only)["engine"]) == ["cudagraph-capture"] * 2
