"""Step 4: observed GEMM calls against layers x GEMMs per layer (+ lm_head) x forwards."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from .. import strcols
from ..modelspec import ModelSpec
from . import structure as structure_mod
from .context import LAYER_RE, assign
from .model import FAIL, PASS, SKIP, WARN, Check


def gemm_calls(work: pd.DataFrame) -> pd.DataFrame:
    """One row per GEMM call (see structure.gemm_calls: MoE expert GEMMs count one each)."""
    return structure_mod.gemm_calls(work)


def layer_ranges(annotations: pd.DataFrame) -> pd.DataFrame:
    """Host ranges named layer_N: layer, start_ns, end_ns (sorted)."""
    if annotations.empty:
        return pd.DataFrame(columns=["layer", "start_ns", "end_ns"])
    # the layer number of each distinct name, once (the compact column's categories)
    m = strcols.per_value(annotations["name"], _layer_number, -1, np.int64)
    lay = annotations[m >= 0].assign(layer=m[m >= 0])
    lay = lay.assign(end_ns=lay["start_ns"] + lay["dur_ns"]).sort_values("start_ns")
    return lay[["layer", "start_ns", "end_ns"]].reset_index(drop=True)


def _layer_number(name: str) -> int:
    """N of a layer_N range name (LAYER_RE), -1 for any other name."""
    found = LAYER_RE.search(name)
    return int(found.group(1)) if found else -1


_ATTENTION_AUX_NAME = re.compile("reduc|combine|lean_", re.IGNORECASE)


def infer_layers(work: pd.DataFrame, layers_df: pd.DataFrame, forwards: int) -> tuple[int | None, str]:
    """Layer count from layer_N annotations, else from attention calls per forward."""
    if len(layers_df):
        return int(layers_df["layer"].max()) + 1, "layer_N annotations"
    att = work[strcols.isin(work["class"], ("attention",))]
    if att.empty or forwards <= 0:
        return None, ""
    if att["external_id"].notna().any():
        n = att["external_id"].nunique()
        how = "attention op calls per forward"
    else:
        # Graph replays: count the main attention kernels (not their reduction/combine passes).
        main = att[~strcols.search(att["name"], _ATTENTION_AUX_NAME)]
        n = len(main)
        how = "attention kernels per forward"
    if n % forwards:
        return None, ""
    return n // forwards, how


def count(work: pd.DataFrame, annotations: pd.DataFrame, spec: ModelSpec, steps: pd.DataFrame,
          tolerance: int, slow_factor: float, step_phases: list[str] | None = None,
          salvaged: bool = False, gemms_per_layer: int | None = None
          ) -> tuple[dict[str, Any], list[Check]]:
    """The kernel_counts section of the JSON contract, and its checks.

    ``step_phases``: each step's mode (prefill/decode/...), so counts are per phase;
    ``gemms_per_layer``: a number given on the command line, which wins over the structure.
    """
    orphan = work["orphan"].to_numpy(dtype=bool) if "orphan" in work else None
    before_window = 0
    if orphan is not None and orphan.any() and not orphan.all():
        # Kernels launched before the CPU window are the tail of an earlier forward: counting
        # them would break the block structure of the forwards the trace holds whole.
        before_window = len(gemm_calls(work[orphan]))
        work = work[~orphan]
    calls = gemm_calls(work)
    observed = len(calls)
    layers_df = layer_ranges(annotations)
    anc = structure_mod.anchors(work)
    has_steps = bool(len(steps)) and "step" in work and bool((work["step"] >= 0).any())
    phases_of = list(step_phases or [])
    if has_steps:
        used = set(calls["step"].dropna().astype(int)) | set(anc["step"].dropna().astype(int))
        fwd_list = [(int(i), phases_of[i] if i < len(phases_of) else "all")
                    for i in range(len(steps)) if i in used]
    else:
        fwd_list = [(-1, phases_of[0] if len(phases_of) == 1 else "all")]
    st = structure_mod.analyse(calls, anc, spec, fwd_list) if len(anc) else {}
    checks: list[Check] = []
    if st and len(layers_df):
        st["layer_ranges"] = int(layers_df["layer"].max()) + 1
    if st:
        st["phase_of_step"] = dict(fwd_list)
    result = (_count_from_structure(calls, st, spec, steps, has_steps, gemms_per_layer)
              if st else _count_from_spec(calls, work, layers_df, spec, steps, gemms_per_layer))
    result["observed_gemm_calls"] = observed
    result["gemm_calls_before_window"] = before_window
    result["gemm_precision"] = gemm_precision(work)
    result["moe_time"] = moe_time(work)
    expected = result["expected_gemm_calls"]
    extra = result["extra"]
    if expected is None:
        why = result.pop("_why", "no model config (use --model-config or --layers)")
        checks.append(Check("kernel_count", SKIP, f"expected GEMM calls unknown: {why}; "
                            f"observed {observed} GEMM calls", {"observed": observed}))
    else:
        result.pop("_why", None)
        diff = observed - expected
        result["missing"] = max(0, -diff)
        status = PASS if abs(diff) <= tolerance else FAIL
        what = ("= the" if diff == 0 else f"is {abs(diff)} {'more' if diff > 0 else 'fewer'} than the")
        msg = f"{observed} GEMM calls {what} {expected} expected ({result['_how']})"
        if before_window:
            msg += (f"; {before_window} GEMM calls launched before the profiled CPU window "
                    "not counted")
        outside = all(str(e.get("role", "")).startswith(("extra (before", "extra (after"))
                      or e.get("signature") == "(outside any step)" for e in extra)
        if status == FAIL and diff > 0 and extra and outside and spec.source == "none" \
                and gemms_per_layer is None:
            # No config: what runs before the first or after the last layer (a RoPE table,
            # a pooler and a classifier head) is listed, but not a failure.
            status = WARN
            msg += ("; the extra calls run outside the decoder layers (no model config to "
                    "say they should not)")
        if salvaged and status == FAIL:
            status = WARN
            msg += ("; the trace was truncated (salvaged), so its last forward may be "
                    "incomplete: not a failure")
        checks.append(Check(
            "kernel_count", status, msg,
            {"observed": observed, "expected": expected, "difference": diff,
             "suspects": [e["signature"] for e in extra], "salvaged": salvaged}))
    result.pop("_how", None)
    per_layer = _per_layer(work, calls, layers_df, slow_factor)
    result["per_layer"] = per_layer["layers"]
    result["per_layer_covers"] = "total over all forwards" if per_layer["layers"] else None
    result["slow_layers"] = per_layer["slow"]
    if per_layer["layers"]:
        slow = per_layer["slow"]
        counts_per_layer = {r["gemm_calls"] for r in per_layer["layers"]}
        status = WARN if slow or len(counts_per_layer) > 1 else PASS
        msg = (f"{len(slow)} of {len(per_layer['layers'])} layers slower than "
               f"{slow_factor}x the median layer time" if slow else
               f"{len(per_layer['layers'])} layers within {slow_factor}x of the median layer time")
        if len(counts_per_layer) > 1:
            msg += f"; GEMM calls per layer differ ({sorted(counts_per_layer)})"
        checks.append(Check("layer_balance", status, msg,
                            {"slow_layers": slow, "median_layer_ns": per_layer["median_ns"]}))
    return result, checks


def _count_from_structure(calls: pd.DataFrame, st: dict[str, Any], spec: ModelSpec,
                          steps: pd.DataFrame, has_steps: bool,
                          cli_gpl: int | None) -> dict[str, Any]:
    """Expected GEMM calls from the block structure observed, per phase and signature."""
    segs: list[structure_mod.Forward] = st["forwards"]
    summ = structure_mod.summary(st, spec)
    layouts = summ["layouts"]
    fixed_gpl = cli_gpl or (spec.gemms_per_layer if spec.source == "manifest" else None)
    lm_head = spec.lm_head
    # Expected signatures per layer kind: the modal layout's GEMMs that are not extras.
    def kind_of(ly: structure_mod.Layer) -> str:
        moe = any(g.role == "moe_expert" for g in ly.gemms)
        return ("moe" if moe else "dense") + ("" if ly.anchor == "attention" else "_mixer")

    # per phase: a prefill and a decode forward run other kernels (and M) for the same layer
    want: dict[tuple[str, str], Counter[str]] = {}
    for phase in {f.phase for f in segs}:
        by_kind: dict[str, list[structure_mod.Layer]] = {}
        for f in segs:
            if f.phase == phase:
                for ly in f.layers:
                    by_kind.setdefault(kind_of(ly), []).append(ly)
        for k, group in by_kind.items():
            key = Counter(structure_mod.layout_key(ly) + tuple(g.sig for g in ly.gemms)
                          for ly in group).most_common(1)[0][0]
            rep = next(ly for ly in group if structure_mod.layout_key(ly) + tuple(
                g.sig for g in ly.gemms) == key)
            want[(phase, k)] = Counter(g.sig for g in rep.gemms if not structure_mod.is_extra(g))
    phases: dict[str, dict[str, Any]] = {}
    sig_obs: dict[tuple[str, str], int] = {}
    sig_exp: dict[tuple[str, str], int] = {}
    sig_info: dict[tuple[str, str], dict[str, Any]] = {}
    no_head = 0
    for f in segs:
        ph = phases.setdefault(f.phase, {"forwards": 0, "observed": 0, "expected": 0,
                                         "layers": Counter()})
        ph["forwards"] += 1
        ph["observed"] += f.gemm_count
        ph["layers"][len(f.layers)] += 1
        exp = Counter[str]()
        # each kind's expectation times its layers (not one Counter update per layer)
        for kind, n_layers in Counter(kind_of(ly) for ly in f.layers).items():
            for sig, c in want.get((f.phase, kind), Counter()).items():
                exp[sig] += c * n_layers
        heads = [g for g in f.tail if g.label == "lm_head"][:lm_head]
        no_head += max(lm_head - len(heads), 0)
        exp.update(g.sig for g in heads)
        n_exp = (len(f.layers) * fixed_gpl + lm_head) if fixed_gpl else sum(exp.values()) + (
            lm_head - len(heads))
        ph["expected"] += n_exp
        obs = Counter(g.sig for g in [*f.before, *[g for ly in f.layers for g in ly.gemms],
                                       *f.tail])
        for g in [*f.before, *[g for ly in f.layers for g in ly.gemms], *f.tail]:
            info = sig_info.setdefault((f.phase, g.sig), {"kernel": g.name, "role": g.label})
            if structure_mod.is_extra(g):
                info["role"] = g.label
            elif g.label and not structure_mod.is_extra_label(info["role"]) and \
                    g.label not in info["role"].split("/"):
                info["role"] += "/" + g.label  # k and v (gate and up) share q's (up's) shape
        for sig in set(obs) | set(exp):
            sig_obs[(f.phase, sig)] = sig_obs.get((f.phase, sig), 0) + obs.get(sig, 0)
            sig_exp[(f.phase, sig)] = sig_exp.get((f.phase, sig), 0) + exp.get(sig, 0)
    in_segs = sum(p["observed"] for p in phases.values())
    outside = len(calls) - in_segs
    forwards = sum(p["forwards"] for p in phases.values())
    layers_per_fwd = Counter(n for p in phases.values() for n, c in p["layers"].items()
                             for _ in range(c)).most_common(1)[0][0]
    main = max(layouts.values(), key=lambda v: v["layers_per_forward"])
    gpl = fixed_gpl or main["gemms_per_layer"]
    expected = sum(p["expected"] for p in phases.values())
    # Extra calls: signatures observed more often than the structure implies, per phase
    # (each call's signature as structure.analyse computed it, once per distinct call).
    dur = calls.assign(sig=st["signatures"])
    pos = st.get("phase_of_step") or {}
    dur["phase"] = (dur["step"].map(pos) if has_steps else
                    pd.Series(next(iter(pos.values()), "all"), index=dur.index))
    total_of = dur.groupby(["phase", "sig"])["dur_ns"].sum().to_dict()
    phase_of_step: dict[Any, Any] = {}
    extra: list[dict[str, Any]] = []
    by_shape: list[dict[str, Any]] = []
    # ties broken by (phase, signature): the order must not depend on the string hash seed
    for (phase, sig), n in sorted(sig_obs.items(), key=lambda kv: (-kv[1], kv[0])):
        fw = phases[phase]["forwards"]
        e = sig_exp.get((phase, sig), 0)
        info = sig_info.get((phase, sig), {})
        row = {"signature": sig, "kernel": info.get("kernel", ""), "role": info.get("role", ""),
               "phase": phase, "calls": n, "calls_per_forward": _per_fwd(n, fw),
               "expected_per_forward": _per_fwd(e, fw),
               "total_ns": int(total_of.get((phase, sig), 0))}
        by_shape.append(row)
        if n > e:
            extra.append({**row, "calls": n - e, "reason":
                          f"{_per_fwd(n, fw):g} per {phase} forward where the block structure "
                          f"implies {_per_fwd(e, fw):g}"
                          + (f" ({info['role']})" if str(info.get("role", "")).startswith("extra")
                             else "")})
    obs_gpl = main["gemms_per_layer"]
    if fixed_gpl and obs_gpl > fixed_gpl and not extra:
        # Fewer given than the structure runs: which projection is redundant is a question for
        # the model code; list the per-layer groups.
        per_layer = {g["signature"] for v in layouts.values() for g in v["gemms"]}
        extra = [{**r, "reason": f"the trace runs {obs_gpl} GEMMs per layer ("
                  f"{summ['description']}) where {fixed_gpl} were given: compare this "
                  "per-layer group with the architecture"}
                 for r in by_shape if r["signature"] in per_layer][:obs_gpl]
    if outside > 0:
        extra.append({"signature": "(outside any step)", "kernel": "", "phase": "",
                      "calls": outside, "calls_per_forward": None, "reason":
                      f"{outside} GEMM calls launched outside the step ranges"})
        expected += 0
    del phase_of_step
    per_phase = {k: {"forwards": v["forwards"], "observed_gemm_calls": v["observed"],
                     "expected_gemm_calls": v["expected"],
                     "gemm_calls_per_forward": _per_fwd(v["observed"], v["forwards"]),
                     "layers": v["layers"].most_common(1)[0][0]} for k, v in phases.items()}
    how = _how(per_phase, gpl, lm_head, summ,
               ("the command line" if cli_gpl else "the manifest") if fixed_gpl else "")
    if no_head:
        how += f"; no lm_head GEMM after the last layer in {no_head} forward(s)"
    how += f"; layers {'from ' + spec.source if spec.layers == layers_per_fwd else 'inferred'}"
    notes = _config_notes(spec, summ, layers_per_fwd, gpl, fixed_gpl is not None)
    if notes:
        how += "; " + "; ".join(notes)
    return {
        "expected_gemm_calls": expected,
        "layers": layers_per_fwd,
        # The config/manifest is named as the source when the trace agrees with it.
        "layers_source": (spec.source if spec.layers == layers_per_fwd and spec.source in
                          ("config", "manifest", "cli") else "inferred"),
        "layers_inferred_from": _anchor_how(st, layers_per_fwd),
        "gemms_per_layer": gpl,
        "gemms_per_layer_source": ("command line" if cli_gpl else "manifest" if fixed_gpl
                                   else "structure observed"),
        "lm_head_per_forward": lm_head,
        "forwards": forwards,
        "forwards_source": ("manifest" if spec.forwards == forwards else "steps" if has_steps
                            else "layers" if forwards > 1 else "window"),
        "gemm_calls_per_forward": (_per_fwd(len(calls), forwards) if len(per_phase) == 1
                                   else None),
        "phases": per_phase,
        "structure": {**summ, "notes": notes},
        "by_shape": by_shape,
        "extra": extra,
        "missing": 0,
        "missing_lm_head": no_head,
        "_how": how,
    }


_LOW_PRECISION = ("fp8", "mxfp4", "nvfp4", "int4", "int8")


def gemm_precision(work: pd.DataFrame) -> dict[str, Any]:
    """Share of GEMM time per precision the kernel rules imply (unnamed: 'bf16/fp16/other')."""
    g = work[strcols.isin(work["class"], ("gemm", "gemv", "gemm_reduce"))]
    total = int(g["dur_ns"].sum())
    if not total:
        return {}
    dt = g["kernel_dtype"] if "kernel_dtype" in g else pd.Series(pd.NA, index=g.index,
                                                                   dtype="string")
    by = strcols.sum_by_value(dt, g["dur_ns"].to_numpy(), missing="unmarked").sort_values(
        ascending=False)
    shares = {str(k): round(int(v) / total, 4) for k, v in by.items()}
    low = sum(v for k, v in shares.items() if k in _LOW_PRECISION)
    return {"shares": shares, "low_precision_share": round(low, 4), "gemm_ns": total}


def moe_time(work: pd.DataFrame) -> dict[str, int]:
    """GPU time of MoE expert GEMMs, routing and combine kernels (by the rules' roles)."""
    if "role" not in work:
        return {}
    role = work["role"]
    out = {f"{r}_ns": int(work.loc[strcols.isin(role, (r,)), "dur_ns"].sum())
           for r in ("moe_expert", "moe_routing", "moe_combine")}
    out["moe_expert_calls"] = int(strcols.isin(role, ("moe_expert",)).sum())
    return out if out["moe_expert_ns"] else {}


def _anchor_how(st: dict[str, Any], layers: int) -> str:
    if st.get("layer_ranges") == layers:
        return "layer_N annotations"
    what = "attention op calls" if st.get("linked") else "attention kernels"
    if st.get("mixers"):
        what += " and linear-attention/SSM mixer kernels"
    return f"{what} per forward"


def _per_fwd(n: int, forwards: int) -> float:
    return round(n / forwards, 3) if forwards else float(n)


def _how(per_phase: dict[str, dict[str, Any]], gpl: int, lm_head: int, summ: dict[str, Any],
         given_by: str) -> str:
    parts = []
    for name, p in per_phase.items():
        label = "" if len(per_phase) == 1 else f"{name}: "
        parts.append(f"{label}({p['layers']} layers x {gpl} + {lm_head} lm_head) x "
                     f"{p['forwards']} forward{'s' if p['forwards'] != 1 else ''}")
    src = (f"{gpl} per layer from {given_by}; " if given_by else "") + (
        "structure observed: " + summ["description"])
    return "; ".join(parts) + f"; {src}"


def _config_notes(spec: ModelSpec, summ: dict[str, Any], layers: int, gpl: int,
                  fixed: bool) -> list[str]:
    notes: list[str] = []
    if spec.source != "config":
        return notes
    if spec.layers and spec.layers != layers:
        notes.append(f"config says {spec.layers} layers; the trace runs {layers} per forward")
    att = summ.get("attention_layers") or {}
    types = att.get("config_layer_types") or {}
    sliding_cfg = sum(v for k, v in types.items() if "sliding" in k)
    if types and att.get("sliding_window") and sliding_cfg != att["sliding_window"]:
        notes.append(f"config layer_types has {sliding_cfg} sliding-window layers; the trace's "
                     f"attention kernels run {att['sliding_window']:g} per forward")
    cfg_gpl = spec.gemms_per_layer
    if cfg_gpl and cfg_gpl != gpl and not fixed:
        runs = []
        if summ["fused_qkv"]:
            runs.append("fused QKV")
        if summ["fused_gate_up"]:
            runs.append("fused gate/up")
        if summ["moe"]:
            runs.append("MoE expert GEMMs")
        what = " and ".join(runs) if runs else "its own layout"
        notes.append(f"config implies {cfg_gpl} GEMMs per layer"
                     f"{' (separate projections)' if cfg_gpl == 7 else ''}; the trace runs "
                     f"{what}: {gpl} per layer{', as vLLM/SGLang do' if summ['fused_qkv'] else ''}")
    return notes


def _count_from_spec(calls: pd.DataFrame, work: pd.DataFrame, layers_df: pd.DataFrame,
                     spec: ModelSpec, steps: pd.DataFrame,
                     cli_gpl: int | None) -> dict[str, Any]:
    """No layer anchors in the trace: layers x GEMMs per layer from the config or manifest."""
    forwards = spec.forwards or (len(steps) if len(steps) else None)
    forwards_source = ("manifest" if spec.forwards else "steps" if len(steps) else "none")
    layers, layers_source, inferred_how = spec.layers, spec.source, ""
    if layers is None:
        layers, inferred_how = infer_layers(work, layers_df, forwards or 1)
        layers_source = "inferred" if layers is not None else "none"
    elif spec.source in ("config", "manifest", "cli"):
        layers_source = spec.source  # the file (or flag) that gave the layers
    gpl = cli_gpl or spec.gemms_per_layer or (7 if layers is not None else None)
    expected = None
    if layers is not None and gpl is not None and forwards:
        expected = (layers * gpl + spec.lm_head) * forwards
    by_shape = _by_shape(calls, forwards or 1)
    extra: list[dict[str, Any]] = []
    if expected is not None and len(calls) > expected:
        extra = _suspects(by_shape, layers or 0, forwards or 1, spec.lm_head)
    return {
        "expected_gemm_calls": expected,
        "layers": layers,
        "layers_source": layers_source,
        "layers_inferred_from": inferred_how or None,
        "gemms_per_layer": gpl,
        "gemms_per_layer_source": ("command line" if cli_gpl else spec.source
                                   if spec.gemms_per_layer else "assumed (7)"),
        "lm_head_per_forward": spec.lm_head,
        "forwards": forwards,
        "forwards_source": forwards_source,
        "gemm_calls_per_forward": round(len(calls) / forwards, 3) if forwards else None,
        "phases": {},
        "structure": None,
        "by_shape": by_shape,
        "extra": extra,
        "missing": 0,
        "_why": ("no model config (use --model-config or --layers)" if layers is None
                 else "number of forwards unknown"),
        "_how": (f"({layers} layers x {gpl} + {spec.lm_head} lm_head) x {forwards} "
                 f"forward{'s' if forwards != 1 else ''}; " + (
                     f"layers inferred from {inferred_how}" if layers_source == "inferred"
                     and inferred_how else "layers inferred" if layers_source == "inferred"
                     else f"layers from {layers_source}")),
    }


def _signatures(calls: pd.DataFrame) -> pd.Series:
    """The signature of every row, computed once per distinct (op, shapes, name) by code: a
    GEMM-heavy trace has millions of calls of a few hundred shapes."""
    sig = strcols.per_combo(calls, ("op_name", "input_dims", "name"),
                            lambda o, d, n: structure_mod.signature(o, d, str(n)))
    return pd.Series(sig, index=calls.index)


def _by_shape(calls: pd.DataFrame, forwards: int) -> list[dict[str, Any]]:
    """GEMM calls grouped by op + shape (or kernel name), with calls per forward."""
    if calls.empty:
        return []
    sig = _signatures(calls)
    g = calls.assign(signature=sig).groupby("signature", sort=False).agg(
        calls=("dur_ns", "size"), total_ns=("dur_ns", "sum"), kernel=("name", "first"))
    g = g.sort_values("calls", ascending=False)
    return [{"signature": s, "kernel": r["kernel"], "calls": int(r["calls"]),
             "calls_per_forward": round(r["calls"] / forwards, 3),
             "total_ns": int(r["total_ns"])} for s, r in g.iterrows()]


def _suspects(by_shape: list[dict[str, Any]], layers: int, forwards: int,
              lm_head: int) -> list[dict[str, Any]]:
    """Shape groups whose per-forward count is not a whole multiple of the layer count."""
    out = []
    for row in by_shape:
        per_fwd = row["calls"] / forwards
        if layers and per_fwd % layers and per_fwd != lm_head:
            out.append({**row, "reason": f"{per_fwd:g} calls per forward is not a multiple "
                        f"of {layers} layers"})
    return out


def _per_layer(work: pd.DataFrame, calls: pd.DataFrame, layers_df: pd.DataFrame,
               slow_factor: float) -> dict[str, Any]:
    """GPU time and GEMM calls per layer index (summed over forwards), with slow layers."""
    if layers_df.empty:
        return {"layers": [], "slow": [], "median_ns": None}
    starts = layers_df["start_ns"].to_numpy()
    ends = layers_df["end_ns"].to_numpy()
    idx = assign(work["launch_ns"].to_numpy(), starts, ends)
    lay_of = np.where(idx >= 0, layers_df["layer"].to_numpy()[np.clip(idx, 0, None)], -1)
    t = pd.Series(work["dur_ns"].to_numpy()).groupby(lay_of).sum()
    cidx = assign(calls["launch_ns"].to_numpy(), starts, ends)
    clay = np.where(cidx >= 0, layers_df["layer"].to_numpy()[np.clip(cidx, 0, None)], -1)
    c = pd.Series(clay).value_counts()
    rows = [{"layer": int(k), "gpu_ns": int(v), "gemm_calls": int(c.get(k, 0))}
            for k, v in t.items() if k >= 0]
    rows.sort(key=lambda r: r["layer"])
    if not rows:
        return {"layers": [], "slow": [], "median_ns": None}
    median = float(np.median([r["gpu_ns"] for r in rows]))
    slow = [r["layer"] for r in rows if median and r["gpu_ns"] > slow_factor * median]
    return {"layers": rows, "slow": slow, "median_ns": int(median)}
