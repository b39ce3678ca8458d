import pytest

from profdiag.classify import (
    UNMATCHED_CLASS,
    classify,
    explain,
    iter_examples,
    load_rule_file,
    load_rules,
    unmatched,
)
from profdiag.errors import RulesError
from profdiag.schema import from_columns

RULES = load_rules()


@pytest.mark.parametrize("rule,example", list(iter_examples(RULES)),
                         ids=lambda v: getattr(v, "id", None) or str(v.get("name", ""))[:40])
def test_every_rule_example_classifies_to_its_class(rule, example):
    got = RULES.match(example.get("kind", "kernel"), example["name"], example.get("op"))
    assert got.klass == rule.klass, f"{example['name'][:80]} -> {got.rule.id if got.rule else None}"


def test_every_rule_has_an_example_and_a_reason():
    for rule in RULES.rules:
        assert rule.examples, rule.id
        assert rule.why, rule.id


@pytest.mark.parametrize("name,op,expected", [
    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT", "aten::mm", "gemm"),
    ("nvjet_sm90_tst_64x8_64x16_2x1_v_bz_splitK_TNT", None, "gemv"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float>(float*)", "aten::mm", "gemm_reduce"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float,"
     " float, float, float>, unsigned int, float, 4> >(float*)", "aten::mean", "rmsnorm"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>,"
     " std::array<char*, 3ul> >(int)", "aten::add", "residual"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64_4x1x1_cga1x1x",
     None, "attention"),
])
def test_real_kernel_names(name, op, expected):
    assert RULES.match("kernel", name, op).klass == expected


def test_classify_is_vectorised_over_unique_names_and_marks_host_rows():
    ev = from_columns({
        "name": ["nvjet_sm90_tst_64x8_x", "nvjet_sm90_tst_64x8_x", "mystery", "cudaLaunchKernel",
                 "Memcpy HtoD (Pageable -> Device)"],
        "kind": ["kernel", "kernel", "kernel", "runtime", "memcpy"],
        "start_ns": [0, 10, 20, 0, 30], "dur_ns": [5, 5, 5, 1, 3]})
    out = classify(ev, RULES)
    assert list(out["class"]) == ["gemv", "gemv", UNMATCHED_CLASS, "runtime", "memcpy"]
    assert list(out["category"]) == ["compute", "compute", "other", "overhead", "memory"]
    table = unmatched(out)
    assert list(table["name"]) == ["mystery"]
    assert int(table["calls"].iloc[0]) == 1


def test_explain_lists_winner_first():
    rules = explain("nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT", RULES)
    assert [r.id for r in rules][:2] == ["gemv.nvjet_skinny", "gemm.nvjet"]
    assert explain("totally_unknown_kernel", RULES) == []


def test_user_rules_extend_and_override(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[[rule]]\nid = "mine.custom"\npattern = "^my_fused_mlp"\ncategory = "compute"\n'
                 'class = "gemm"\npriority = 500\nexamples = ["my_fused_mlp_kernel"]\nwhy = "ours"\n')
    rules = load_rules([f])
    assert rules.match("kernel", "my_fused_mlp_kernel").rule.id == "mine.custom"


@pytest.mark.parametrize("body,message", [
    ('[[rule]]\nid = "x"\npattern = "("\ncategory = "compute"\nclass = "gemm"\n', "bad regex"),
    ('[[rule]]\nid = "x"\npattern = "a"\ncategory = "speed"\nclass = "gemm"\n', "category"),
    ('[[rule]]\nid = "x"\ncategory = "compute"\nclass = "gemm"\n', "needs a 'pattern' or an 'op'"),
    ('[[rule]]\npattern = "a"\ncategory = "compute"\nclass = "gemm"\n', "no id"),
    ("[[rule]\n", "cannot read rules"),
])
def test_bad_rule_files_raise_one_line_errors(tmp_path, body, message):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(RulesError) as err:
        load_rule_file(f)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_duplicate_rule_ids_are_refused(tmp_path):
    f = tmp_path / "dup.toml"
    f.write_text('[[rule]]\nid = "gemm.nvjet"\npattern = "a"\ncategory = "compute"\nclass = "gemm"\n')
    with pytest.raises(RulesError, match="duplicate rule id"):
        load_rules([f])
