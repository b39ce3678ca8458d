"""A synthetic Kineto trace with many ``ProfilerStep#N`` annotations and few events per step.

    python benchmarks/make_many_steps.py [OUT_DIR] [--steps 8000]

Issue 18: 8,000 ProfilerStep annotations in a 2.3 MB file took 53 s (per-step loops in the
diagnosis). Each step here is one decode-like forward: a ProfilerStep user annotation, an
aten::mm (M=1) and an aten::add cpu_op, each launching one kernel (cudaLaunchKernel ->
kernel, linked by correlation and External id). Writes OUT_DIR/many_steps_{N}.json
(default /tmp/profdiag-bench) and prints its path.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GEMM = "ampere_bf16_s16816gemm_bf16_64x64_ldg8_f2f_stages_64x5_tn"
ADD = ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>, "
       "at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<c10::BFloat16>, "
       "at::detail::Array<char*, 3>)")


def events(steps: int) -> list[dict]:
    out: list[dict] = []
    ext = corr = 1
    ts = 1_000_000.0
    for i in range(steps):
        step_ts = ts
        out.append({"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{i}", "pid": 1,
                    "tid": 1, "ts": step_ts, "dur": 100.0, "args": {"External id": ext}})
        ext += 1
        t = step_ts + 5
        for op, kernel, dims, kdur in (("aten::mm", GEMM, [[1, 2048], [2048, 2048]], 30.0),
                                       ("aten::add", ADD, [[1, 2048], [1, 2048]], 3.0)):
            out.append({"ph": "X", "cat": "cpu_op", "name": op, "pid": 1, "tid": 1, "ts": t,
                        "dur": 20.0, "args": {"External id": ext, "Input Dims": dims,
                                              "Input type": ["c10::BFloat16", "c10::BFloat16"]}})
            out.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1,
                        "tid": 1, "ts": t + 10, "dur": 5.0,
                        "args": {"External id": ext, "correlation": corr}})
            out.append({"ph": "X", "cat": "kernel", "name": kernel, "pid": 0, "tid": 7,
                        "ts": t + 20, "dur": kdur,
                        "args": {"External id": ext, "correlation": corr, "device": 0,
                                 "stream": 7, "grid": [32, 1, 1], "block": [128, 1, 1]}})
            ext += 1
            corr += 1
            t += 40
        ts += 110.0
    return out


def document(steps: int) -> bytes:
    """The trace's JSON text."""
    doc = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3"}],
           "traceEvents": events(steps)}
    return json.dumps(doc).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", type=Path, default=Path("/tmp/profdiag-bench"))
    ap.add_argument("--steps", type=int, default=8000)
    a = ap.parse_args()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / f"many_steps_{a.steps}.json"
    path.write_bytes(document(a.steps))
    print(path)


if __name__ == "__main__":
    main()
