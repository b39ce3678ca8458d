"""Event kinds of the canonical table (``schema`` re-exports them), in a module that imports
nothing: the Kineto streamer reads them in a process that has not imported pandas (see
``parsers._prefetch``)."""

from __future__ import annotations

# GPU-side kinds occupy a device; host-side kinds do not.
KIND_KERNEL = "kernel"
KIND_MEMCPY = "memcpy"
KIND_MEMSET = "memset"
KIND_RUNTIME = "runtime"  # CUDA/HIP runtime or driver API call on the host
KIND_SYNC = "sync"  # device-side synchronisation record (cuda_sync, nsys SYNCHRONIZATION)
KIND_CPU_OP = "cpu_op"  # framework operator (aten::mm)
KIND_ANNOTATION = "annotation"  # user range on the host (record_function, NVTX, roctx)
KIND_GPU_ANNOTATION = "gpu_annotation"  # projection of a user range onto a GPU stream
KIND_PYTHON = "python"  # Python frame on the host (Kineto python_function, with_stack)

GPU_KINDS = (KIND_KERNEL, KIND_MEMCPY, KIND_MEMSET)
ALL_KINDS = (
    KIND_KERNEL,
    KIND_MEMCPY,
    KIND_MEMSET,
    KIND_RUNTIME,
    KIND_SYNC,
    KIND_CPU_OP,
    KIND_ANNOTATION,
    KIND_GPU_ANNOTATION,
    KIND_PYTHON,
)
