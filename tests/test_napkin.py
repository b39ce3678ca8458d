"""`profdiag roofline`: the napkin calculator against the roofline lab's A100 figures."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from profdiag import hardware, napkin
from profdiag.cli import cli

A100 = "a100-sxm4-80gb"


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["roofline", *args])
    return res.exit_code, res.output


def test_lab_figures_at_the_lab_bandwidth() -> None:
    # The lab: 312e12 / 2.0e12 = 156 FLOP/byte; 2.0e12 / (8e9 x 2 B) = 125 steps/s.
    code, out = _run("--gpu", A100, "--params", "8e9", "--dtype", "fp16", "--bandwidth", "2.0e12")
    assert code == 0, out
    assert "ridge point            156.0 FLOP/byte" in out
    assert "decode speed limit     125.0 tokens/s" in out
    assert "critical batch         156 sequences" in out
    # batch 1: intensity 2*1/2 = 1, 1/156 = 0.64% of peak compute
    assert "arithmetic intensity 1 FLOP/byte" in out and "0.6% of peak compute" in out


def test_datasheet_bandwidth_and_the_lab_note() -> None:
    # The table holds the datasheet's 2.039 TB/s: 312/2.039 = 153.0, 2.039e12/16e9 = 127.4.
    code, out = _run("--gpu", A100, "--params", "8e9", "--dtype", "fp16")
    assert code == 0, out
    assert "ridge point            153.0 FLOP/byte" in out
    assert "decode speed limit     127.4 tokens/s" in out
    assert "ridge 156" in out  # the table's note names the lab's rounded figure


def test_json_batch_64_and_prefill() -> None:
    code, out = _run("--gpu", A100, "--params", "8e9", "--dtype", "fp16", "--bandwidth",
                     "2.0e12", "--batch", "64", "--tokens", "2048", "-f", "json")
    assert code == 0, out
    d = json.loads(out)
    assert d["ridge_flop_per_byte"] == pytest.approx(156.0)
    assert d["decode"]["tokens_per_s"] == pytest.approx(8000.0)  # 64 x 125, the free lunch
    assert d["decode"]["bound"] == "memory" and d["decode"]["arithmetic_intensity"] == 64
    # Prefill of 64 x 2048 tokens: intensity 131072 >> 156, compute-bound;
    # time = 2 * 8e9 * 131072 / 312e12 = 6.72 s.
    assert d["prefill"]["bound"] == "compute"
    assert d["prefill"]["ideal_step_s"] == pytest.approx(2 * 8e9 * 64 * 2048 / 312e12)
    assert d["kv_bytes_per_token"] is None


def test_critical_batch_is_the_ridge_at_fp16_and_twice_at_fp8() -> None:
    spec = hardware.get("h100-sxm")
    d16 = napkin.napkin(spec, "bf16", params=8e9)
    assert d16["critical_batch"] == pytest.approx(989.5e12 / 3.35e12)
    d8 = napkin.napkin(spec, "fp8", params=8e9)
    # fp8: ridge 2x (1979 TFLOP/s), one byte per weight: B* = ridge * 1 / 2 = the bf16 ridge.
    assert d8["critical_batch"] == pytest.approx(d8["ridge_flop_per_byte"] / 2)
    assert d8["decode_speed_limit_tokens_per_s"] == pytest.approx(3.35e12 / 8e9)
    # Batch 155 vs 156 on the lab's A100: memory- then compute-bound (intensity = batch).
    lab = hardware.get(A100)
    import dataclasses

    lab = dataclasses.replace(lab, bandwidth=2.0e12)
    assert napkin.napkin(lab, "fp16", params=8e9, batch=155)["decode"]["bound"] == "memory"
    assert napkin.napkin(lab, "fp16", params=8e9, batch=156)["decode"]["bound"] == "compute"


def test_model_config_kv_and_the_long_context_wall(tmp_path) -> None:
    cfg = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code, out = _run("--gpu", "h100-sxm", "--model-config", str(path), "--batch", "64",
                     "--context", "4096", "-f", "json")
    assert code == 0, out
    d = json.loads(out)
    # KV per position: 2 * 32 layers * 128 d * 8 heads * 2 B = 131072 B (128 KiB)
    assert d["kv_bytes_per_token"] == 2 * 32 * 128 * 8 * 2
    assert d["kv_bytes_read_per_seq"] == 4096 * 131072
    # Step bytes: streamed weights + 64 x 512 MiB of KV.
    w = d["model"]["weight_bytes_per_step"]
    assert d["decode"]["bytes"] == pytest.approx(w + 64 * 4096 * 131072)
    assert d["decode"]["ideal_step_s"] == pytest.approx(d["decode"]["bytes"] / 3.35e12)
    # 2N + attention = F per token; ridge * KV = 295 * 512 MiB >> F: never compute-bound.
    assert d["critical_batch_with_kv"] is None
    # At context 0 the KV-aware critical batch is the weights-only one.
    d0 = napkin.napkin(hardware.get("h100-sxm"), "bf16",
                       config={"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8,
                               "ffn": 14336, "vocab": 128256})
    assert d0["critical_batch_with_kv"] == pytest.approx(d0["critical_batch"])


@pytest.mark.parametrize("args,match", [
    (["--params", "8e9"], "--gpu"),
    (["--gpu", A100], "--params"),
    (["--gpu", A100, "--params", "8e9", "--preset", "tiny"], "one of"),
    (["--gpu", A100, "--params", "-1"], "--params"),
    (["--gpu", A100, "--params", "8e9", "--dtype", "fp8"], "no peak"),
    (["--gpu", A100, "--params", "8e9", "--batch", "0"], "--batch"),
    (["--gpu", "nope", "--params", "8e9"], "nope"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], match: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from profdiag.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["roofline", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err


def test_bad_input_message(capsys: pytest.CaptureFixture[str]) -> None:
    from profdiag.cli import main

    with pytest.raises(SystemExit):
        main(["roofline", "--gpu", A100, "--params", "8e9", "--dtype", "fp8"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no peak for dtype 'fp8'" in err


def test_library_call_model_arguments() -> None:
    from profdiag.errors import UsageError
    from profdiag.modelspec import ModelSpec

    spec = hardware.get(A100)
    with pytest.raises(UsageError, match="one of them"):
        napkin.napkin(spec, "fp16")
    with pytest.raises(UsageError, match="one of them"):
        napkin.napkin(spec, "fp16", params=8e9, config={"layers": 1})
    # A numpy scalar is a parameter count too: 8e9 weights x 2 bytes streamed per step.
    np = pytest.importorskip("numpy")
    d = napkin.napkin(spec, "fp16", params=np.int64(8_000_000_000))
    assert d["model"]["weight_bytes_per_step"] == 16e9 and d["model"]["shape"] is None
    with pytest.raises(UsageError, match="model config lacks 'heads'"):
        napkin.napkin(spec, "fp16", config=ModelSpec(layers=2, hidden=64, ffn=128, vocab=10))
    # A mapping of short keys: L=2, d=64/4=16, h_kv=4, s=2 -> 2*2*1*16*4*2 = 512 B/position.
    d = napkin.napkin(spec, "fp16", config={"layers": 2, "hidden": 64, "heads": 4,
                                            "ffn": 128, "vocab": 10})
    assert d["kv_bytes_per_token"] == 512 and d["model"]["shape"]["head_dim"] == 16
