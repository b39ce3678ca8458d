"""CPU inference traces (no GPU): diagnosed on their leaf CPU compute operators."""

import pytest

import profdiag

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _capture(path, tokens):
    import torch.nn.functional as F
    from torch.profiler import profile, record_function

    x = torch.randn(tokens, 128)
    w = torch.randn(256, 128)
    q = torch.randn(1, 4, tokens, 32)
    kv = torch.randn(1, 4, 64, 32)
    with profile(record_shapes=True) as prof:
        for step in range(3):
            with record_function(f"decode_step_{step}" if tokens == 1 else "prefill"):
                F.linear(x, w)  # aten::linear -> matmul -> mm -> resolve_conj
                torch.mm(x, w.t())
                F.scaled_dot_product_attention(q, kv, kv)
            if tokens > 1:
                break
    prof.export_chrome_trace(str(path))
    return path


@pytest.mark.parametrize("tokens,mode,calls", [(16, "prefill", 2), (1, "decode", 6)])
def test_cpu_trace_mode_and_gemm_calls(tmp_path, tokens, mode, calls):
    d = profdiag.diagnose(profdiag.load(_capture(tmp_path / "cpu.json", tokens)))
    assert d.mode.value == mode
    assert d.kernel_counts["observed_gemm_calls"] == calls
    assert any("CPU" in w for w in d.warnings)
    classes = set(d.events["class"])
    assert {"gemm", "attention"} <= classes
