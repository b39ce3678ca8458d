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
