"""Speed of light per step and per phase, from what each step ran.

What ran comes, per step, from the first source that knows it:

1. engine annotations parsed into the steps table (columns ``prefill_tokens``,
   ``decode_tokens``, ``kv_tokens``, ``requests``; non-null values win);
2. the trace's own shapes: attention op inputs (q ``[B, H, Tq, d]``, k ``[B, H_kv, Tk, d]``)
   give sequences, query tokens and KV context; GEMM rows give the tokens (the most common M)
   and the lm_head's rows (the GEMM whose N is the vocabulary); GEMM input types the dtype;
3. the capture manifest (batch, tokens, context; decode step j sees context + j + 1);
4. nothing: the phase is reported unavailable with the reason (never a silent 1).

The architecture (layers, widths, heads, head_dim, vocab, experts) comes from the model spec
(config or manifest). ``roofline.step_speed_of_light`` does the arithmetic.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import hardware, roofline, strcols
from ..errors import RulesError, UsageError
from ..modelspec import ModelSpec

# Kernel names that say the attention is causal (flash-attn Is_causal template flag,
# FlashInfer MaskMode::kCausal, vLLM/triton "causal" variants, CK "mask_causal").
CAUSAL_KERNEL = re.compile(r"causal|Is_causal=true|kCausal|MaskMode::1\b", re.IGNORECASE)
ANNOTATION_COLUMNS = ("prefill_tokens", "decode_tokens", "kv_tokens", "requests")

# The causal flag of each attention op's Concrete Inputs lives with the roofline arithmetic.
causal_arg = roofline.causal_arg


@dataclass
class StepInputs:
    """What one step ran, with where each figure came from."""

    batch: float | None = None  # sequences
    query_tokens: float | None = None  # new tokens per sequence
    context: float | None = None  # KV positions per sequence after the step
    lm_head_tokens: float | None = None
    causal: bool | None = None
    dtype: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def tokens(self) -> float | None:
        if self.batch is None or self.query_tokens is None:
            return None
        return self.batch * self.query_tokens


def _mode(values: list[Any]) -> Any:
    return Counter(values).most_common(1)[0][0] if values else None


def _dims(text: Any) -> list[Any] | None:
    if text is None or text is pd.NA:
        return None
    try:
        d = json.loads(text) if isinstance(text, str) else text
    except (TypeError, ValueError):
        return None
    return d if isinstance(d, list) else None


def shape_facts(work: pd.DataFrame, step_of_row: np.ndarray | None,
                vocab: int | None) -> dict[int, dict[str, Any]]:
    """Per step index: GEMM token count, lm_head tokens, attention B/Tq/Tk, causal, dtype.

    ``step_of_row``: the step index of each row of ``work`` (None: no steps, no facts)."""
    need = {"op_name", "input_dims"}
    if (work is None or work.empty or step_of_row is None
            or not need.issubset(work.columns)):
        return {}
    gemm_ops = roofline.GEMM_OPS
    att_ops = roofline.ATTENTION_OPS
    mask = (strcols.isin(work["op_name"], gemm_ops | set(att_ops))
            & work["input_dims"].notna().to_numpy(dtype=bool))
    rows = work[mask].assign(step=np.asarray(step_of_row)[mask])
    if rows.empty:
        return {}
    key = rows["external_id"] if "external_id" in rows.columns else pd.Series(range(len(rows)))
    out: dict[int, dict[str, Any]] = {}
    parsed: dict[tuple[str, str], Any] = {}
    for step, g in rows.groupby("step", sort=True):
        facts: dict[str, Any] = {"m": [], "lm_head": 0, "lm_head_calls": 0, "att": [],
                                 "causal_kernel": False, "causal_arg": None, "dtypes": []}
        g = g.assign(ext_key=key.loc[g.index].fillna(-1).to_numpy())
        seen: set[Any] = set()
        for r in g.itertuples(index=False):
            op, dims_text = str(r.op_name), str(r.input_dims)
            if op in att_ops and CAUSAL_KERNEL.search(str(getattr(r, "name", ""))):
                facts["causal_kernel"] = True
            if op in att_ops and facts["causal_arg"] is None:
                facts["causal_arg"] = causal_arg(op, getattr(r, "input_concrete", None))
            ext = r.ext_key
            if ext != -1 and ext in seen:
                continue
            if ext != -1:
                seen.add(ext)
            pk = (op, dims_text)
            if pk not in parsed:
                parsed[pk] = _parse(op, dims_text)
            p = parsed[pk]
            if p is None:
                continue
            if p[0] == "gemm":
                _, m, n = p
                if vocab and n == vocab:
                    facts["lm_head"] += m
                    facts["lm_head_calls"] += 1
                else:
                    facts["m"].append(m)
                dt = hardware.normalize_dtype(_first_type(getattr(r, "input_types", None)))
                if dt:
                    facts["dtypes"].append(dt)
            else:
                facts["att"].append(p[1:])
        out[int(step)] = facts
    return out


def _first_type(text: Any) -> str | None:
    d = _dims(text)
    if not d:
        return None
    for t in d:
        if isinstance(t, str) and t:
            return t
    return None


def _parse(op: str, dims_text: str) -> tuple[Any, ...] | None:
    dims = _dims(dims_text)
    if not dims:
        return None
    mats = [d for d in dims if isinstance(d, list)]
    if op in roofline.ATTENTION_OPS:
        if len(mats) < 3 or any(len(x) != 4 for x in mats[:3]):
            return None
        q, k = mats[0], mats[1]
        if roofline.ATTENTION_OPS[op] == "bhtd":
            return ("att", int(q[0]), int(q[2]), int(k[2]))
        return ("att", int(q[0]), int(q[1]), int(k[1]))
    try:
        shp = roofline._shape_of(op, dims)
    except (TypeError, ValueError, IndexError):
        return None
    if shp is None or shp.op_class != "gemm":
        return None
    return ("gemm", int(shp.m) * int(shp.batch), int(shp.n))


def _annotation(row: pd.Series) -> StepInputs | None:
    """Inputs from engine annotation columns (issue 12a) when the step has them."""
    vals = {c: row.get(c) for c in ANNOTATION_COLUMNS}
    if not all(c in row.index for c in ANNOTATION_COLUMNS[:1]):
        return None

    def num(v: Any) -> float | None:
        """The value as a float, None when absent (None, NA, NaN)."""
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return None
        return float(v)

    pre = num(vals["prefill_tokens"])
    dec = num(vals["decode_tokens"])
    if pre is None and dec is None:
        return None
    tokens = (pre or 0.0) + (dec or 0.0)
    if tokens <= 0:
        return None
    stated = num(vals["requests"])
    req = stated if stated is not None and stated > 0 else None
    if req is None:
        # Every decode token is one sequence; a prefill chunk is counted as one more.
        req = (dec or 0.0) + (1.0 if pre else 0.0)
    inp = StepInputs(batch=req, query_tokens=tokens / req)
    src = "engine annotation"
    inp.sources = {"tokens": src, "batch": src}
    kv = num(vals["kv_tokens"])
    if kv is not None:
        inp.context = max(kv / req, inp.query_tokens or 0.0)
        inp.sources["context_tokens"] = src
    return inp


def step_inputs(steps: pd.DataFrame, phases: list[str], facts: dict[int, dict[str, Any]],
                spec: ModelSpec) -> list[StepInputs]:
    """One StepInputs per row of ``steps`` (same order), by the precedence in the module doc."""
    out: list[StepInputs] = []
    decode_seen = 0
    for (_, row), phase in zip(steps.iterrows(), phases):
        f = facts.get(int(row["step"]), {})
        inp = _annotation(row) or StepInputs()
        att = f.get("att") or []
        if att:
            b, tq, tk = _mode([tuple(a) for a in att])
            if inp.batch is None:
                inp.batch, inp.query_tokens = float(b), float(tq)
                inp.sources.update(tokens="attention shapes", batch="attention shapes")
            if inp.context is None:
                inp.context = float(tk)
                inp.sources["context_tokens"] = "attention shapes (K length)"
        gemm_m = _mode(f.get("m") or [])
        if inp.batch is None and gemm_m:
            if phase == "decode":
                inp.batch, inp.query_tokens = float(gemm_m), 1.0
                inp.sources.update(tokens="GEMM shapes (M)", batch="GEMM shapes (M, 1 token "
                                   "per sequence)")
            elif spec.batch:
                inp.batch, inp.query_tokens = float(spec.batch), gemm_m / float(spec.batch)
                inp.sources.update(tokens="GEMM shapes (M)", batch=spec.run_source)
            else:
                inp.batch, inp.query_tokens = 1.0, float(gemm_m)
                inp.sources.update(tokens="GEMM shapes (M)",
                                   batch="assumed: one sequence (no attention shapes)")
        # Manifest: what the capture ran.
        if inp.batch is None and spec.batch and (spec.tokens or phase == "decode"):
            inp.batch = float(spec.batch)
            inp.query_tokens = 1.0 if phase == "decode" else float(spec.tokens or 0)
            inp.sources.update(tokens=spec.run_source, batch=spec.run_source)
        if inp.context is None and inp.query_tokens is not None:
            if phase == "decode" and (spec.context is not None or spec.phase == "generate"):
                base = (spec.context or 0) + (spec.tokens if spec.phase == "generate"
                                              and spec.tokens else 0)
                inp.context = float(base + decode_seen + 1)
                inp.sources["context_tokens"] = f"{spec.run_source} (context + step)"
            elif phase != "decode":
                inp.context = float(inp.query_tokens + (spec.context or 0))
                inp.sources["context_tokens"] = ("query tokens (prefill from an empty cache)"
                                                 if not spec.context else spec.run_source)
        if phase == "decode":
            decode_seen += 1
        # lm_head rows: the GEMM whose N is the vocabulary.
        if f.get("lm_head_calls"):
            inp.lm_head_tokens = float(f["lm_head"])
            inp.sources["lm_head_tokens"] = "GEMM shapes (N = vocab)"
        elif inp.batch is not None:
            inp.lm_head_tokens = inp.batch
            inp.sources["lm_head_tokens"] = "assumed: the last position of each sequence"
        # Causal: the kernel says so, else the shapes (Tq == Tk > 1: self-attention of a
        # prompt over itself, which a decoder masks).
        if inp.query_tokens is not None and inp.query_tokens <= 1:
            inp.causal = False
            inp.sources["attention"] = "one query per sequence: every query sees the cache"
        elif f.get("causal_arg") is not None:
            inp.causal = bool(f["causal_arg"])
            inp.sources["attention"] = (f"the attention op's is_causal={f['causal_arg']}")
        elif f.get("causal_kernel"):
            inp.causal = True
            inp.sources["attention"] = "causal kernel variant"
        else:
            inp.causal = True
            inp.sources["attention"] = ("assumed causal: decoder self-attention (Tq == Tk)"
                                        if att and att[0][1] == att[0][2] else
                                        "assumed causal: decoder prefill")
        dts = f.get("dtypes") or []
        if dts:
            inp.dtype = _mode(dts)
            inp.sources["dtype"] = "GEMM input types"
        elif spec.dtype:
            inp.dtype = hardware.normalize_dtype(spec.dtype)
            inp.sources["dtype"] = spec.source if spec.source != "none" else "model"
        if not inp.dtype:
            inp.dtype = "bf16"
            inp.sources["dtype"] = "assumed bf16"
        out.append(inp)
    return out


def speed_of_light(steps: pd.DataFrame, work: pd.DataFrame, spec: ModelSpec,
                   gpu: hardware.GpuSpec, step_of_row: np.ndarray | None = None
                   ) -> dict[str, Any]:
    """The ``roofline.speed_of_light`` section of the JSON contract; ``step_of_row``: the
    step index of each row of ``work`` (None: no per-step shapes)."""
    if not spec.has_shape:
        return {"available": False, "reason": "needs the model shape (--model-config or a "
                "capture manifest); lacks " + ", ".join(spec.missing_shape())}
    if steps is None or steps.empty:
        return {"available": False, "reason": "no step annotations to time"}
    facts = shape_facts(work, step_of_row, spec.vocab)
    phases = [str(p) for p in steps["phase"]]
    inputs = step_inputs(steps, phases, facts, spec)
    result: dict[str, Any] = {"available": True, "batch": None, "phases": {}}
    rows: list[dict[str, Any]] = []
    per_phase: dict[str, list[tuple[pd.Series, StepInputs, roofline.StepLight]]] = {}
    reasons: dict[str, str] = {}
    for (_, row), phase, inp in zip(steps.iterrows(), phases, inputs):
        if phase not in ("prefill", "decode"):
            continue
        if inp.batch is None or inp.query_tokens is None or inp.context is None:
            reasons[phase] = ("the trace has no attention/GEMM shapes for this step and no "
                              "manifest or engine annotation gives its tokens, batch and "
                              "context (CUDA-graph replays carry no shapes)")
            continue
        dt = inp.dtype or "bf16"
        peak_dt = dt if gpu.has_peak(dt) else "bf16"
        try:
            sl = roofline.step_speed_of_light(
                spec, gpu, batch=inp.batch, query_tokens=inp.query_tokens, context=inp.context,
                lm_head_tokens=inp.lm_head_tokens, causal=bool(inp.causal), dtype=peak_dt,
                dtype_bytes=hardware.DTYPE_BYTES.get(dt, 2))
        except (UsageError, RulesError) as exc:
            reasons[phase] = exc.message if hasattr(exc, "message") else str(exc)
            continue
        per_phase.setdefault(phase, []).append((row, inp, sl))
    for phase in ("prefill", "decode"):
        items = per_phase.get(phase)
        if not items:
            if phase in reasons:
                result["phases"][phase] = {"available": False, "reason": reasons[phase]}
            continue
        meas = np.array([int(r["wall_ns"]) for r, _, _ in items], dtype=float)
        ideal = np.array([sl.ideal_s * 1e9 for _, _, sl in items])
        toks = np.array([sl.tokens for _, _, sl in items])
        inp0 = items[len(items) // 2][1]
        limits = Counter(sl.limit for _, _, sl in items)
        with np.errstate(divide="ignore", invalid="ignore"):
            tps = np.where(meas > 0, toks / (meas * 1e-9), np.nan)
            ratio = np.where(ideal > 0, meas / ideal, np.nan)
        mid = items[len(items) // 2][2]
        result["phases"][phase] = {
            "steps": len(items),
            "ideal_ns": int(round(float(np.median(ideal)))),
            "limit": limits.most_common(1)[0][0],
            "median_measured_ns": int(np.median(meas)),
            "median_ratio": round(float(np.nanmedian(ratio)), 3),
            "tokens_per_s": round(float(np.nanmedian(tps)), 1),
            "tokens_per_s_ideal": round(float(np.median(toks / (ideal * 1e-9))), 1),
            "tokens": _num(np.median(toks)),
            "batch": _num(inp0.batch),
            "query_tokens": _num(inp0.query_tokens),
            "context_tokens": _num(float(np.median([i.context for _, i, _ in items]))),
            "lm_head_tokens": _num(inp0.lm_head_tokens),
            "dtype": inp0.dtype,
            "attention": "causal" if inp0.causal else "dense",
            "flops": mid.flops, "attention_flops": mid.attention_flops,
            "bytes": mid.bytes, "weight_bytes": mid.weight_bytes,
            "kv_read_bytes": mid.kv_read_bytes, "kv_write_bytes": mid.kv_write_bytes,
            "sources": dict(_sources([i for _, i, _ in items]), architecture=spec.source),
        }
        for r, i, sl in items:
            m = int(r["wall_ns"])
            rows.append({"phase": phase, "step": int(r["step"]), "name": r["name"],
                         "measured_ns": m, "ideal_ns": int(round(sl.ideal_s * 1e9)),
                         "ratio": round(m / (sl.ideal_s * 1e9), 3) if sl.ideal_s else None,
                         "tokens": _num(sl.tokens), "context_tokens": _num(i.context),
                         "limit": sl.limit})
    ph = result["phases"]
    for p in ("decode", "prefill"):
        if p in ph and ph[p].get("batch") is not None:
            result["batch"] = ph[p]["batch"]
            break
    if not any(v.get("steps") for v in ph.values()):
        why = "; ".join(f"{p}: {v['reason']}" for p, v in ph.items() if v.get("reason"))
        return {"available": False, "reason": why or "no prefill or decode step to time",
                "phases": ph}
    result["steps"] = rows
    return result


def _sources(inputs: list[StepInputs]) -> dict[str, str]:
    """Where each input came from; when steps differ, each source with its step count."""
    keys = list(dict.fromkeys(k for i in inputs for k in i.sources))
    out: dict[str, str] = {}
    for k in keys:
        c = Counter(i.sources.get(k, "unknown") for i in inputs)
        out[k] = (next(iter(c)) if len(c) == 1 else
                  "; ".join(f"{v} ({n} step{'s' if n > 1 else ''})" for v, n in c.most_common()))
    return out


def _num(v: Any) -> int | float | None:
    if v is None:
        return None
    f = float(v)
    return int(f) if f.is_integer() else round(f, 3)
