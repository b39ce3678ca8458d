import gzip
import json

import pytest

import profdiag
from profdiag import schema
from profdiag.errors import TraceFormatError
from profdiag.parsers import detect

from helpers import shared_or_skip


def test_fixture_parses_into_the_canonical_table(tiny_decode):
    tr = profdiag.load(tiny_decode)
    assert tr.meta.format == "torch"
    assert schema.validate(tr.events) == []
    k = tr.kernels
    assert len(k) == 2368  # kernel events in the file
    assert str(k["start_ns"].dtype) == "int64"
    assert (k["dur_ns"] >= 0).all()
    # every eager kernel is linked to the aten op that launched it
    assert k["op_name"].notna().all()
    mm = k[k["op_name"] == "aten::mm"]
    assert len(mm) == 232
    assert mm["input_dims"].str.match(r"^\[\[1,\d+\]").all()  # M = 1 everywhere in decode
    assert tr.meta.device_name == "NVIDIA H100 80GB HBM3"
    assert tr.meta.devices[0].sm_count == 132
    assert tr.meta.options["record_shapes"] is True
    assert not tr.meta.warnings


def test_microseconds_become_integer_nanoseconds(tmp_path):
    doc = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 1.0015, "dur": 2.5,
         "args": {"device": 0, "stream": 7, "correlation": 1}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
         "ts": 0.5, "dur": 0.25, "args": {"correlation": 1, "External id": 9}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 0.1,
         "dur": 1, "args": {"External id": 9, "Input Dims": [[4, 8], [8, 16]]}}]}
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc))
    ev = profdiag.load(p).events
    k = ev[ev["kind"] == "kernel"].iloc[0]
    assert (k["start_ns"], k["dur_ns"]) == (1002, 2500)  # 1.0015 us rounds to 1002 ns (banker's)
    # kernel without External id inherits it through its launch call's correlation
    assert k["op_name"] == "aten::mm"
    assert k["input_dims"] == "[[4,8],[8,16]]"


def test_cuda_graph_replays_are_flagged(tiny_graph):
    k = profdiag.load(tiny_graph).kernels
    assert k["graph_launch"].sum() == 2360  # all but the 8 argmax kernels outside the graph
    assert k["op_name"].notna().sum() == 8


def test_gz_and_plain_json_give_the_same_table(tmp_path, tiny_prefill):
    plain = tmp_path / "p.json"
    plain.write_bytes(gzip.decompress(tiny_prefill.read_bytes()))
    a = profdiag.load(tiny_prefill).events
    b = profdiag.load(plain).events
    assert a.equals(b)


def test_sniffing_ignores_the_suffix(tmp_path, tiny_prefill):
    odd = tmp_path / "trace.bin"
    odd.write_bytes(tiny_prefill.read_bytes())
    assert detect(odd) == "torch"


def test_top_level_array_is_accepted(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"ph": "X", "cat": "kernel", "name": "k", "ts": 1, "dur": 1,
                              "pid": 0, "tid": 7, "args": {"device": 0, "stream": 7}}]))
    assert len(profdiag.load(p).kernels) == 1


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_trace_is_salvaged_with_a_warning(tmp_path, tiny_prefill, compress):
    raw = gzip.decompress(tiny_prefill.read_bytes())
    cut = raw[: int(len(raw) * 0.6)]
    p = tmp_path / ("cut.json.gz" if compress else "cut.json")
    p.write_bytes(gzip.compress(cut) if compress else cut)
    tr = profdiag.load(p)
    assert tr.meta.salvaged
    assert any("truncated" in w for w in tr.meta.warnings)
    assert 0 < len(tr.events) < len(profdiag.load(tiny_prefill).events)


def test_gzip_cut_mid_stream_is_salvaged(tmp_path, tiny_prefill):
    data = tiny_prefill.read_bytes()
    p = tmp_path / "cut.json.gz"
    p.write_bytes(data[: len(data) // 2])
    tr = profdiag.load(p)
    assert any("gzip stream is truncated" in w for w in tr.meta.warnings)
    assert len(tr.events) > 0  # kineto writes kernels last: the first half holds CPU ops


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b'{"hello": 1}', "not a recognised trace"),
    (b'{"traceEvents": 5}', "'traceEvents' is not a list"),
    (bytes(range(256)) * 4, "not a recognised trace (binary data)"),
])
def test_bad_input_raises_one_line_error(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    with pytest.raises(TraceFormatError) as err:
        profdiag.load(p)
    assert message in str(err.value)
    assert str(p) in str(err.value)


def test_cpu_only_trace_has_no_gpu_rows():
    p = shared_or_skip("samples", "kineto", "hta", "rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz")
    tr = profdiag.load(p)
    assert tr.gpu_events.empty
    assert tr.meta.devices == []


def test_2021_kineto_format_parses():
    p = shared_or_skip("samples", "kineto", "kineto_tb_plugin",
                       "worker0.1623143089861.pt.trace.json.gz")
    tr = profdiag.load(p)
    assert len(tr.kernels) == 8772  # MANIFEST.md count
    assert tr.kernels["stream"].notna().all()  # "stream 7" strings became ints


def test_rocm_kineto_trace_parses():
    p = shared_or_skip("samples", "kineto", "tracelens", "mi300_Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz")
    tr = profdiag.load(p)
    assert len(tr.kernels) == 1516
    assert tr.meta.devices and tr.meta.devices[0].vendor == "amd"
