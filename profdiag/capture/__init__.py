"""`profdiag capture`: real torch.profiler traces of prefill and decode with ground truth.

A Llama-style decoder in plain PyTorch (random weights, no download) runs a prefill, decode
steps, or both (``generate``) under torch.profiler; the trace is written as
``<name>.json.gz`` beside ``<name>.manifest.json``, which says what the trace must show
(phase, shapes, GEMMs per forward, forwards). See docs/capture.md.

Importing this package does not import torch; a capture does, lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import (
    PRESETS,
    CaptureOptions,
    MemoryEstimate,
    ModelConfig,
    estimate_memory,
    load_hf_config,
    resolve_config,
)

if TYPE_CHECKING:  # pragma: no cover
    from .run import CaptureResult

__all__ = ["PRESETS", "CaptureOptions", "MemoryEstimate", "ModelConfig", "capture",
           "estimate_memory", "load_hf_config", "resolve_config"]


def capture(opts: CaptureOptions, progress: Any = None) -> CaptureResult:
    """Run a capture (see profdiag.capture.run.capture); return a CaptureResult."""
    from .run import capture as _capture

    return _capture(opts, progress)
