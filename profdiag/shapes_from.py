"""GEMM shapes for CUDA-graph replays from another trace of the same model (--shapes-from).

A graph replay records its kernels but no CPU ops, so no ``Input Dims``: the roofline and the
shape evidence of the mode have nothing to work with. An eager trace of the same model and
batch, or a trace of the graph capture itself, has them: each GEMM/attention kernel it launched
is linked to the op (and its shapes) that launched it. ``reference(path)`` reads that sequence;
``apply(work, ref)`` gives each shapeless GEMM/attention kernel of ``work`` the shapes of the
same kernel name in the reference, by order when one name ran several shapes (the i-th call of
a name in the replay takes the i-th of the reference, cyclically: one reference forward serves
every replayed step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from . import schema, strcols
from .errors import TraceFormatError, UsageError
from .roofline import ATTENTION_OPS, GEMM_OPS

# Kernels that get shapes: the GEMM and attention classes (not split-K reduces, which share
# their GEMM's op call and would count its FLOPs twice).
SHAPE_CLASSES = ("gemm", "gemv", "attention")
SHAPE_OPS = frozenset(GEMM_OPS) | frozenset(ATTENTION_OPS)
_CAPTURE = re.compile(r"^capture_(\d+)_")
_RUNTIME_CATS = ("cuda_runtime", "cuda_driver", "hip_runtime", "Runtime")


@dataclass
class Reference:
    """Launch-ordered (kernel, op_name, input_dims, input_types) of a reference trace."""

    path: str
    launches: pd.DataFrame  # kernel, op_name, input_dims, input_types, ts
    capture: str | None = None  # the capture range used, when the reference is a capture
    notes: list[str] = field(default_factory=list)
    # kernel name -> op, for kernels launched by ops without a GEMM/attention shape model
    other_ops: dict[str, str] = field(default_factory=dict)


def _dims_text(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v).decode()


def reference(path: str | Path, batch: int | None = None) -> Reference:
    """Read the GEMM/attention launches with shapes of a PyTorch profiler trace.

    Executed kernels linked to a shaped op count, and so do launches recorded during a CUDA-graph
    capture (ROCm Kineto names the kernel on the launch call). When the trace holds several
    ``capture_<N>_...`` ranges, the one whose N equals ``batch`` (the replayed step's tokens)
    is used.
    """
    from .parsers._io import Input

    p = Path(path)

    def truncated() -> None:
        raise TraceFormatError("truncated gzip stream", str(p))

    try:
        with Input(p) as src:  # inflated against the --max-inflated-size bound
            raw = src.read_bytes(on_truncated=truncated)
        doc = orjson.loads(raw)
    except OSError as exc:
        raise UsageError(f"cannot read --shapes-from trace: {exc.strerror}", str(p)) from None
    except (orjson.JSONDecodeError, TraceFormatError) as exc:
        why = exc.message if isinstance(exc, TraceFormatError) else exc
        raise TraceFormatError("--shapes-from needs a PyTorch profiler JSON trace "
                               f"(record_shapes=True): {why}", str(p)) from None
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise TraceFormatError("--shapes-from needs a PyTorch profiler JSON trace "
                               "(no traceEvents)", str(p))
    ops: dict[int, tuple[str, str | None, str | None]] = {}
    kernels: list[tuple[float, str, int | None, int | None]] = []
    launches: list[tuple[float, str, int | None, int | None]] = []
    captures: list[tuple[int, float, float, str]] = []
    for e in events:
        if not isinstance(e, dict) or e.get("ph") != "X":
            continue
        cat = e.get("cat")
        raw_args = e.get("args")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        ext = args.get("External id", args.get("external id"))
        if cat == "cpu_op":
            dims = args.get("Input Dims", args.get("Input dims"))
            if isinstance(ext, int) and dims is not None:
                ops[ext] = (str(e.get("name")), _dims_text(dims), _dims_text(args.get("Input type")))
        elif cat in ("kernel", "Kernel"):
            kernels.append((float(e.get("ts", 0)), str(e.get("name")),
                            ext if isinstance(ext, int) else None, args.get("correlation")))
        elif cat in _RUNTIME_CATS and isinstance(args.get("kernel"), str):
            launches.append((float(e.get("ts", 0)), args["kernel"],
                             ext if isinstance(ext, int) else None, args.get("correlation")))
        elif cat == "user_annotation":
            m = _CAPTURE.match(str(e.get("name", "")))
            if m:
                ts = float(e.get("ts", 0))
                captures.append((int(m.group(1)), ts, ts + float(e.get("dur", 0)),
                                 str(e["name"])))
    # A launch whose kernel also ran is counted once, as the kernel.
    ran = {c for *_, c in kernels if c is not None}
    seq = kernels + [x for x in launches if x[3] is None or x[3] not in ran]
    capture = None
    notes: list[str] = []
    if captures:
        chosen = [c for c in captures if batch is not None and c[0] == batch]
        if chosen or len(captures) == 1:
            n, t0, t1, capture = (chosen or captures)[0]
            seq = [x for x in seq if t0 <= x[0] <= t1]
        else:
            notes.append(f"{len(captures)} graph captures in the reference and none for batch "
                         f"{batch}: all of their launches used")
    rows = []
    other: dict[str, str] = {}
    for ts, name, ext, _ in sorted(seq, key=lambda x: x[0]):
        op = ops.get(ext) if ext is not None else None
        if op and op[0] in SHAPE_OPS:
            rows.append((name, op[0], op[1], op[2], ts))
        elif op:
            other.setdefault(name, op[0])
    launches_df = pd.DataFrame(rows, columns=["kernel", "op_name", "input_dims", "input_types",
                                              "ts"])
    if launches_df.empty:
        raise UsageError("--shapes-from trace has no GEMM or attention call with shapes "
                         "(capture it eagerly with record_shapes=True)", str(p))
    return Reference(path=str(p), launches=launches_df, capture=capture, notes=notes,
                     other_ops={k: v for k, v in other.items()
                                if k not in set(launches_df["kernel"])})


@dataclass
class Applied:
    """What apply() did, for the report."""

    kernels: int  # shapeless GEMM/attention kernels of the trace
    matched: int  # of those, given shapes
    names: int  # distinct kernel names given shapes
    by_order: int  # of those names, ones the reference ran with several shapes
    unmatched_names: list[str]

    def note(self, ref: Reference) -> str:
        where = f"{Path(ref.path).name}" + (f" ({ref.capture})" if ref.capture else "")
        text = (f"GEMM/attention shapes of {self.matched} of {self.kernels} shapeless kernels "
                f"taken from {where} by kernel name ({self.names} names")
        text += f", {self.by_order} of them matched by call order)" if self.by_order else ")"
        modelless = [n for n in self.unmatched_names if n in ref.other_ops]
        missing = [n for n in self.unmatched_names if n not in ref.other_ops]
        if modelless:
            ops = sorted({ref.other_ops[n] for n in modelless})
            text += (f"; {len(modelless)} names run under ops with no GEMM shape model "
                     f"({', '.join(ops[:3])}{', ...' if len(ops) > 3 else ''})")
        if missing:
            text += (f"; {len(missing)} names are not in it, e.g. {missing[0][:60]}")
        return text


def apply(work: pd.DataFrame, ref: Reference) -> tuple[pd.DataFrame, Applied]:
    """``work`` with op_name/input_dims/input_types filled in for its shapeless GEMM/attention
    kernels whose names the reference ran (work must be classified and sorted by start)."""
    need = work["input_dims"].isna().to_numpy(dtype=bool) & strcols.isin(work["class"],
                                                                          SHAPE_CLASSES)
    idx = np.flatnonzero(need)
    if not len(idx):
        return work, Applied(0, 0, 0, 0, [])
    by_name = {k: g[["op_name", "input_dims", "input_types"]].to_numpy(dtype=object)
               for k, g in ref.launches.groupby("kernel", sort=False)}
    names = strcols.as_str_objects(work["name"])[idx]
    op = strcols.objects(work["op_name"])
    dims = strcols.objects(work["input_dims"])
    types = strcols.objects(work["input_types"])
    matched = 0
    used: set[str] = set()
    by_order = 0
    unmatched: list[str] = []
    for name in dict.fromkeys(names):
        rows = idx[names == name]
        shapes = by_name.get(name)
        if shapes is None:
            unmatched.append(name)
            continue
        pick = shapes[np.arange(len(rows)) % len(shapes)]
        op[rows], dims[rows], types[rows] = pick[:, 0], pick[:, 1], pick[:, 2]
        matched += len(rows)
        used.add(name)
        if len({(a, b) for a, b in zip(shapes[:, 0], shapes[:, 1])}) > 1:
            by_order += 1
    out = work.copy()
    for col, values in (("op_name", op), ("input_dims", dims), ("input_types", types)):
        text = pd.array(values, dtype="string")
        # a compact table's columns stay compact (sorted Categoricals)
        out[col] = (schema.compact_strings(text)
                    if isinstance(work[col].dtype, pd.CategoricalDtype) else text)
    return out, Applied(len(idx), matched, len(used), by_order, unmatched)
