"""Cross-check our busy/idle accounting against Holistic Trace Analysis (optional extra)."""

import pytest

import profdiag

hta = pytest.importorskip("hta")
from profdiag.diagnosis.hta_bridge import hta_figures  # noqa: E402

pytestmark = pytest.mark.hta


@pytest.mark.parametrize("name", ["own_tiny_decode_ctx512_B1_steps8.json.gz",
                                  "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz"])
def test_busy_and_idle_agree_with_hta_temporal_breakdown(name):
    from helpers import FIXTURES

    trace = profdiag.load(FIXTURES / "torch" / name)
    d = profdiag.diagnose(trace)
    h = hta_figures(trace)
    assert h["available"], h
    # HTA's kernel_time is the span from the first kernel start to the last kernel end; our
    # window for a trace whose steps are all on the GPU is the same span (HTA works in whole us).
    assert abs(h["kernel_time_ns"] - d.breakdown.window_ns) <= 2_000
    hta_busy = h["compute_time_ns"] + h["non_compute_time_ns"]
    # HTA floors each event to whole microseconds, so it can only under-count busy time.
    assert 0 < hta_busy <= d.breakdown.busy_ns
    assert h["idle_time_ns"] >= d.breakdown.idle_ns - 2_000
    # HTA's flooring loses < 1 us per event at each end: the gap is bounded by the event count
    events = len(trace.gpu_events)
    assert d.breakdown.busy_ns - hta_busy <= 2_000 * events
    assert h["idle_split_ns"]
    assert h["launch"]["kernels"] > 0


def test_diagnose_with_hta_adds_its_figures():
    from helpers import FIXTURES

    d = profdiag.diagnose(profdiag.load(FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"),
                          hta=True)
    assert d.to_dict()["extras"]["hta"]["available"] is True


def test_our_idle_split_agrees_with_htas_on_the_eager_decode():
    """HTA (run with HTA_DISABLE_NS_ROUNDING=1) calls a gap host wait when the next kernel's
    runtime call started after the previous kernel ended: our rule. With one busy stream the
    two splits must agree to within HTA's per-stream bookkeeping (<1% of idle)."""
    import os

    from helpers import FIXTURES

    path = FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"
    before = os.environ.get("HTA_DISABLE_NS_ROUNDING")
    d = profdiag.diagnose(profdiag.load(path), hta=True)
    assert os.environ.get("HTA_DISABLE_NS_ROUNDING") == before  # restored after the run
    h = d.extras["hta"]
    assert h["available"] and h["ns_rounding_disabled"]
    cmp = h["compare"]
    idle = d.idle["idle_ns"]
    assert abs(cmp["ours"]["host_wait_ns"] - cmp["hta"]["host_wait_ns"]) < 0.01 * idle
    assert cmp["ours"]["host_wait_ns"] == d.idle["host_wait_ns"]


def test_hta_failure_is_a_visible_warning(monkeypatch):
    import hta.trace_analysis as ta

    from helpers import FIXTURES

    class Broken:
        def __init__(self, *a, **k):
            raise AssertionError("negative duration")

    monkeypatch.setattr(ta, "TraceAnalysis", Broken)
    d = profdiag.diagnose(profdiag.load(FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"),
                          hta=True)
    assert d.extras["hta"]["available"] is False
    msg = [w for w in d.warnings if w.startswith("--hta:")]
    assert msg and "AssertionError: negative duration" in msg[0]
    assert "HTA_DISABLE_NS_ROUNDING=1" in msg[0]
    assert msg[0] in d.to_dict()["warnings"]
