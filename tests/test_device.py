"""The GPU the kernels ran on, not the first device the trace lists (issue 12, item 5)."""

from __future__ import annotations

import gzip
import json

from profdiag.trace import DeviceInfo, TraceMeta, device_label
from tests.helpers import FIXTURES, diagnosed


def test_device_info_exact_same_model_and_unknown():
    two = TraceMeta("torch", "x", devices=[DeviceInfo(0, "NVIDIA A100-SXM4-80GB"),
                                           DeviceInfo(1, "NVIDIA H100 80GB HBM3")])
    assert two.device_info(1) == (two.devices[1], "exact")
    assert two.device_info(5) == (None, "none")  # two models: no guess
    one = TraceMeta("torch", "x", devices=[DeviceInfo(0, "AMD Instinct MI300X")])
    assert one.device_info(9) == (one.devices[0], "same-model")
    assert TraceMeta("torch", "x").device_info(0) == (None, "none")


def test_device_label_describes_an_unnamed_gpu():
    d = DeviceInfo(2, "", sm_count=304, memory_bytes=206141652992, compute_capability="9.4",
                   vendor="amd")
    assert round(206141652992 / 2**30) == 192  # 191.98 GiB
    assert device_label(d) == "unnamed AMD GPU (compute 9.4, 304 CUs, 192 GiB)"
    assert device_label(DeviceInfo(0, "NVIDIA B200")) == "NVIDIA B200"


def test_report_names_the_device_that_ran_the_kernels(tmp_path):
    import profdiag

    ev = [{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
           "ts": 0.0, "dur": 2.0, "args": {"correlation": 1}},
          {"ph": "X", "cat": "kernel", "name": "ampere_sgemm_128x64_nn", "pid": 1, "tid": 7,
           "ts": 5.0, "dur": 10.0, "args": {"device": 1, "stream": 7, "correlation": 1}}]
    doc = {"schemaVersion": 1, "traceEvents": ev, "deviceProperties": [
        {"id": 0, "name": "NVIDIA A100-SXM4-80GB"}, {"id": 1, "name": "NVIDIA H100 80GB HBM3"}]}
    p = tmp_path / "two_gpus.json.gz"
    p.write_bytes(gzip.compress(json.dumps(doc).encode()))
    d = profdiag.diagnose(profdiag.load(p))
    assert (d.source["device"], d.source["device_index"]) == ("NVIDIA H100 80GB HBM3", 1)


def test_rocm_kineto_device_missing_from_the_device_list():
    # SGLang on MI300X: kernels on device 9, deviceProperties lists only id 0
    d = diagnosed(str(FIXTURES / "engines" / "sglang_Qwen3-8B_decode.json.gz"))
    assert (d.source["device"], d.source["device_index"]) == ("AMD Instinct MI300X", 9)
    assert any("device 9" in w and "(0)" in w for w in d.warnings)


def test_unnamed_devices_are_described():
    d = diagnosed(str(FIXTURES / "engines" / "vllm_decode_full_graph_execution.json.gz"))
    assert d.source["device_index"] == 2
    assert d.source["device"] == "unnamed AMD GPU (compute 9.4, 304 CUs, 192 GiB)"
