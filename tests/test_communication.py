"""The communication step: collectives classified, exposed vs overlapped time, bytes, bus bandwidth."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

import profdiag
from profdiag import diagnosis
from profdiag.classify import load_rules
from profdiag.diagnosis import communication as comm

from helpers import shared_or_skip

ALL_REDUCE = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
GEMM = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_" \
       "segment_k_off_kernel__5x_cublas"


def _kernel(name: str, ts: float, dur: float, stream: int, corr: int, args: dict | None = None):
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream, "ts": ts,
            "dur": dur, "args": {"device": 0, "stream": stream, "correlation": corr,
                                 "External id": corr, **(args or {})}}


def _two_stream_trace(path):
    """GEMMs on stream 7, NCCL all-reduces on stream 13 (us):

    stream 7 : GEMM [1000, 1100)            GEMM [1170, 1200)
    stream 13:          AR [1060, 1160)                      AR [1200, 1230)
    """
    coll = {"Collective name": "allreduce", "In msg nelems": 1048576, "Out msg nelems": 1048576,
            "Group size": 4, "dtype": "BFloat16", "Process Group Name": "0"}
    events = [
        _kernel(GEMM, 1000.0, 100.0, 7, 1),
        _kernel(ALL_REDUCE, 1060.0, 100.0, 13, 2, coll),
        _kernel(GEMM, 1170.0, 30.0, 7, 3),
        _kernel(ALL_REDUCE, 1200.0, 30.0, 13, 4, coll),
    ]
    for e in list(events):  # the launches, so the kernels have a host side
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1,
                       "tid": 1, "ts": e["ts"] - 5.0, "dur": 2.0,
                       "args": {"correlation": e["args"]["correlation"],
                                "External id": e["args"]["correlation"]}})
    doc = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3",
                                                     "numSms": 132}],
           "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": 4},
           "traceEvents": events}
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return path


def test_rule_examples_classify_as_communication():
    rules = load_rules()
    for name, cls in [
        (ALL_REDUCE, "all_reduce"),
        ("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "all_gather"),
        ("void vllm::cross_device_reduce_1stage<__nv_bfloat16, 8>(vllm::RankData*, "
         "vllm::RankSignals, vllm::Signal*, __nv_bfloat16*, int, int)", "all_reduce"),
        ("void deep_ep::intranode::combine<__nv_bfloat16, 8, 768>(int4*)", "all_to_all"),
    ]:
        m = rules.match("kernel", name)
        assert (m.category, m.klass) == ("communication", cls), name
    m = rules.match("memcpy", "Memcpy PtoP (Device -> Device)")
    assert (m.category, m.klass) == ("communication", "p2p")
    # an ordinary device-to-device copy stays memory
    assert rules.match("memcpy", "Memcpy DtoD (Device -> Device)").category == "memory"


def test_interval_helpers_exact():
    s, e = comm.merge(np.array([10, 0, 50, 15]), np.array([20, 5, 60, 30]))
    assert s.tolist() == [0, 10, 50] and e.tolist() == [5, 30, 60]
    # covered length of [a, b) by {[0,5), [10,30), [50,60)}
    got = comm.covered_ns(s, e, np.array([0, 3, 25, 40, 0]), np.array([100, 12, 55, 45, 5]))
    assert got.tolist() == [5 + 20 + 10, 2 + 2, 5 + 5, 0, 5]


def test_busbw_factors_follow_nccl_tests():
    assert comm.busbw_factor("all_reduce", 8) == pytest.approx(2 * 7 / 8)
    assert comm.busbw_factor("all_gather", 8) == pytest.approx(7 / 8)
    assert comm.busbw_factor("p2p", None) == 1.0
    assert comm.busbw_factor("collective", 8) is None
    # all-gather's size is the gathered output; all-reduce's the (in-place) input
    assert comm.message_bytes("all_gather", 25136, 201088, 2) == 402176
    assert comm.message_bytes("all_reduce", 1024, 1024, 4) == 4096


def test_two_overlapping_streams_exact(tmp_path):
    trace = profdiag.load(_two_stream_trace(tmp_path / "two.json.gz"))
    d = diagnosis.run(trace).to_dict()
    c = d["communication"]
    # comm [1060,1160) u [1200,1230) = 130 us; other work [1000,1100) u [1170,1200):
    # overlap = [1060,1100) = 40 us; exposed = 60 + 30 = 90 us.
    assert c["calls"] == 2
    assert c["busy_ns"] == 130_000
    assert c["overlapped_ns"] == 40_000
    assert c["exposed_ns"] == 90_000
    window = d["breakdown"]["window_ns"]
    assert window == 230_000  # 1000 .. 1230 us
    assert c["exposed_share"] == pytest.approx(90_000 / 230_000, abs=1e-6)
    assert c["overlapped_share"] == pytest.approx(40 / 130, abs=1e-6)
    ar = c["by_type"]["all_reduce"]
    # 2 calls x 1048576 bf16 = 2 x 2 MiB over 130 us; busbw = algbw x 2(4-1)/4
    assert ar["bytes"] == 2 * 1048576 * 2
    assert ar["bytes_source"] == "collective args" and ar["group_size"] == 4
    algbw = 4194304 / 130e-6
    assert ar["algbw_bytes_per_s"] == pytest.approx(algbw, rel=1e-6)
    assert ar["busbw_bytes_per_s"] == pytest.approx(algbw * 1.5, rel=1e-6)
    # H100 SXM NVLink 4: 450 GB/s per direction
    assert c["interconnect"]["bytes_per_s"] == 450e9
    assert ar["busbw_share"] == pytest.approx(algbw * 1.5 / 450e9, abs=1e-4)
    # categories: the comm share is its apportioned part of busy time (busy = [1000,1160) u
    # [1170,1230) = 220 us of 260 us summed kernel time), so 130 x 220/260 = 110 us of 230 us
    assert d["categories"]["communication"] == pytest.approx(110 / 230, abs=1e-5)
    chk = next(x for x in d["checks"] if x["id"] == "communication")
    assert chk["status"] == "fail"  # 39% exposed > 35% pathological
    recs = {r["id"] for r in d["recommendations"]}
    assert "communication.overlap" in recs  # only 31% of the collective time overlaps (< 50%)
    assert "communication.tp_degree" in recs  # 4 ranks, exposed above the limit
    # 2 MiB messages (>= 256 KiB) at 48 GB/s busbw = 11% of 450 GB/s (< 30%)
    assert "communication.bandwidth" in recs
    assert "communication.fewer_larger" not in recs


def test_same_stream_is_all_exposed(tmp_path):
    """The same kernels serialised on one stream: all 130 us of all-reduce are exposed.

    GEMM [1000,1100) AR [1100,1200) GEMM [1200,1230) AR [1230,1260)
    """
    p = _two_stream_trace(tmp_path / "one.json.gz")
    doc = json.loads(gzip.decompress(p.read_bytes()))
    starts = iter([1000.0, 1100.0, 1200.0, 1230.0])
    for e in doc["traceEvents"]:
        if e["cat"] == "kernel":
            e["tid"] = e["args"]["stream"] = 7
            e["ts"] = next(starts)
    p.write_bytes(gzip.compress(json.dumps(doc).encode()))
    c = diagnosis.run(profdiag.load(p)).to_dict()["communication"]
    assert (c["busy_ns"], c["overlapped_ns"], c["exposed_ns"]) == (130_000, 0, 130_000)


def test_threshold_override_changes_the_check(tmp_path):
    p = _two_stream_trace(tmp_path / "t.json.gz")
    limits = tmp_path / "limits.toml"
    limits.write_text("[communication]\nunknown_max = 0.5\nprefill_max = 0.5\ndecode_max = 0.5\n"
                      "pathological = 0.9\n")
    d = diagnosis.run(profdiag.load(p), rules=[str(limits)]).to_dict()
    chk = next(x for x in d["checks"] if x["id"] == "communication")
    assert chk["status"] == "pass" and chk["evidence"]["limit"] == 0.5


def test_single_gpu_trace_has_empty_communication():
    from helpers import PREFILL

    d = diagnosis.run(profdiag.load(PREFILL)).to_dict()
    assert d["communication"]["calls"] == 0 and d["communication"]["exposed_ns"] == 0
    assert "communication" not in d["categories"]
    assert not any(c["id"] == "communication" for c in d["checks"])


def test_b200_sample_communication():
    path = shared_or_skip("samples", "kineto", "tracelens", "b200_eager_trace.json.gz")
    trace = profdiag.load(path)
    assert trace.meta.options["world_size"] == 8
    assert trace.meta.collectives == [{
        "correlation": 15270, "collective": "_allgather_base", "in_nelems": 25136,
        "out_nelems": 201088, "group_size": 8, "dtype": "BFloat16", "pg_name": "3"}]
    d = diagnosis.run(trace).to_dict()
    assert d["categories"]["communication"] > 0
    c = d["communication"]
    # everything runs on stream 7: nothing can overlap
    assert c["exposed_ns"] == c["busy_ns"] > 0 and c["overlapped_ns"] == 0
    ag = c["by_type"]["all_gather"]
    assert ag["calls"] == 1 and ag["bytes"] == 201088 * 2 and ag["group_size"] == 8
    ar = c["by_type"]["all_reduce"]
    # 73 torch symmetric-memory (multimem) all-reduces, bytes from the op's input tensor
    # (888 tokens x 2880 hidden x bf16 = 5,114,880 B for the prefill chunk)
    assert ar["calls"] == 73 and ar["implementations"] == {"comm.symm_mem_all_reduce": 73}
    assert ar["bytes_source"] == "op input" and ar["group_size_source"] == "world_size"
    assert ar["busbw_bytes_per_s"] == pytest.approx(
        ar["bytes"] / (ar["total_ns"] / 1e9) * 2 * 7 / 8, rel=1e-6)
    assert c["interconnect"]["gpu"] == "b200"


def test_text_and_markdown_show_the_collectives(tmp_path):
    from profdiag.renderers import render, text

    d = diagnosis.run(profdiag.load(_two_stream_trace(tmp_path / "r.json.gz"))).to_dict()
    share = d["communication"]["by_type"]["all_reduce"]["busbw_share"]
    # 2 MiB messages; busbw 4 MiB / 130 us x 1.5 = 48.4 GB/s
    assert text.communication_rows(d) == [
        ("all_reduce", "2", "0.130", "0.090", "0.040", "2.1 MB", "48.4 GB/s", f"{share * 100:.1f}%"),
        ("link: NVLink 4 (NVSwitch)", "", "", "", "", "", "450 GB/s", ""),
    ]
    assert "10.8%" == f"{share * 100:.1f}%"
    assert "48.4 GB/s" in render(d, "txt") and "48.4 GB/s" in render(d, "md")
    page = render(d, "html")
    assert 'id="communication-table"' in page and "<td>link: NVLink 4 (NVSwitch)</td>" in page
    assert "[fail] communication exposed 0.090 ms = 39.1% of the window" in render(d, "txt")


def test_history_metrics_track_communication(tmp_path):
    from profdiag import history

    d = diagnosis.run(profdiag.load(_two_stream_trace(tmp_path / "h.json.gz"))).to_dict()
    m = history.metrics_of(d)
    assert m["communication.exposed_ms"] == 0.09
    assert m["communication.exposed_share"] == pytest.approx(90 / 230, abs=1e-6)
    assert m["communication.all_reduce.busbw_gbps"] == pytest.approx(4194304 / 130e-6 * 1.5 / 1e9,
                                                                     abs=1e-3)
