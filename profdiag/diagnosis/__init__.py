"""The five-step diagnosis: mode, categories, overhead, kernel counts, hotspots; plus verdict.

``run(trace, ...)`` returns a Diagnosis. Each step is a module of plain functions over the
classified event table; nothing here renders or prints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import engines, thresholds as typed_thresholds
from ..classify import load_rules
from ..errors import RulesError, UsageError
from ..modelspec import ModelSpec, find_manifest, load_config, merge
from ..trace import Trace, device_label
from . import (
    communication as comm_mod,
    counts as counts_mod,
    health as health_mod,
    idle as idle_mod,
    overhead as overhead_mod,
    per_step,
)
from .breakdown import breakdown, window_of
from .context import Context, assign, build, thresholds, union_ns
from .hotspots import hotspots
from .mode import EVIDENCE_COLUMNS, annotate, detect, shape_evidence
from .model import Breakdown, Check, Diagnosis, ModeResult, Phase, Verdict
from .step_detail import step_detail
from .verdict import bottleneck, recommendations

__all__ = ["run", "Diagnosis"]


def resolve_spec(trace: Trace, model_config: str | Path | None = None, layers: int | None = None,
                 gemms_per_layer: int | None = None, lm_head: int | None = None,
                 use_manifest: bool = True) -> ModelSpec:
    """Model facts: the architecture from --model-config (else the manifest beside the trace),
    what ran (tokens, batch, context, forwards, phase) from the manifest; CLI numbers override.

    A config never erases what the manifest says ran (modelspec.merge)."""
    spec = ModelSpec()
    manifest = find_manifest(trace.meta.path) if use_manifest else None
    if model_config is not None:
        spec = merge(load_config(model_config), manifest)
    elif manifest is not None:
        spec = manifest
    if layers is not None:
        if layers <= 0:
            raise UsageError("--layers must be positive")
        spec = replace(spec, layers=layers, source="cli" if spec.source == "none" else spec.source)
    if gemms_per_layer is not None:
        if gemms_per_layer <= 0:
            raise UsageError("--gemms-per-layer must be positive")
        spec = replace(spec, gemms_per_layer=gemms_per_layer)
    if lm_head is not None:
        spec = replace(spec, lm_head=lm_head)
    return spec


def run(trace: Trace, model_config: str | Path | None = None, layers: int | None = None,
        gemms_per_layer: int | None = None, lm_head: int | None = None,
        rules: Sequence[str | Path] = (), use_manifest: bool = True, hta: bool = False,
        gpu: str | None = None, gpu_spec: str | Path | None = None,
        shapes_from: str | Path | None = None) -> Diagnosis:
    """Diagnose ``trace``. ``rules`` adds user rule/threshold TOML files; ``shapes_from`` is an
    eager or graph-capture trace of the same model whose GEMM shapes fill in a replay's."""
    is_rule_file = {str(p): _has_rules(p) for p in rules}  # each file read once
    kernel_rules = [p for p in rules if is_rule_file[str(p)]]
    threshold_files = tuple(str(p) for p in rules if not is_rule_file[str(p)])
    limits = thresholds(threshold_files)
    typed = typed_thresholds.from_mapping(limits)  # validated when loaded
    spec = resolve_spec(trace, model_config, layers, gemms_per_layer, lm_head, use_manifest)
    ctx = build(trace, spec, load_rules(kernel_rules), limits)
    # Trace health first: impossible events must not reach the verdict.
    clean, health, health_warnings = health_mod.screen(ctx.work, trace.events, trace.meta.options)
    ctx.work = clean.reset_index(drop=True)
    idle_rules = idle_mod.load_idle_rules(tuple(str(p) for p in rules
                                                if idle_mod.has_idle_causes(p)))
    recovered = _recover_shapes(ctx, shapes_from) if shapes_from is not None else 0
    ctx.work = work = annotate(ctx.work)
    mode_cfg = limits["mode"]
    prefill_min_m = int(mode_cfg["prefill_min_m"])
    # A CPU trace is not judged against a GPU roof: the GEMM-M threshold (tokens per weight
    # pass that saturate a GPU's tensor cores) does not decide compute vs memory there.
    verdict_min_m = 1 if ctx.cpu_only else prefill_min_m

    steps_df, step_modes = _steps(ctx, prefill_min_m, float(mode_cfg["prefill_gemm_share"]))
    window = ((int(steps_df["_w0"].min()), int(steps_df["_w1"].max())) if len(steps_df)
              else window_of(work, ctx.steps))
    overall_bd = breakdown(work, window)
    # Where the idle time goes (not for CPU-only traces: no launches, no device queue).
    idle, idle_gaps = ({}, pd.DataFrame(columns=idle_mod.GAP_COLUMNS)) if ctx.cpu_only else \
        idle_mod.analyse(work, trace.events, ctx.host, steps_df, window, idle_rules)
    nsteps = len(ctx.steps)

    # Phases: contiguous or not, steps of one mode form one phase.
    phases: list[Phase] = []
    phase_work: dict[str, pd.DataFrame] = {}
    rows_of = _rows_by_step(work["step"].to_numpy())
    if nsteps:
        step_w0, step_w1 = steps_df["_w0"].to_numpy(), steps_df["_w1"].to_numpy()
        step_busy = steps_df["gpu_busy_ns"].to_numpy(dtype=np.int64)
    stated_m: dict[str, int | None] = {}  # per phase: GEMM rows = tokens the steps state
    if nsteps:
        for value in _ordered_unique([m.value for m in step_modes]):
            idx = [i for i, m in enumerate(step_modes) if m.value == value]
            sub = work[work["step"].isin(idx)]
            bd = per_step.phase_breakdown(work, rows_of, idx, step_w0, step_w1, step_busy)
            confs = [step_modes[i].confidence for i in idx]
            evid = _merge_evidence([step_modes[i] for i in idx])
            mode = ModeResult(value, float(np.mean(confs)), evid)
            phase_work[value] = sub
            stated_m[value] = engines.batch_tokens(steps_df.loc[idx])
            phases.append(_phase(value, mode, bd, sub, limits, verdict_min_m,
                                 steps_df.loc[idx, "wall_ns"], stated_m[value]))
        if len(phases) == 1:
            mode = phases[0].mode
        else:
            mode = ModeResult("mixed", float(np.mean([p.mode.confidence for p in phases])),
                              [f"{p.steps} {p.name} step(s)" + (
                                  f": {p.mode.evidence[0]}" if p.mode.evidence else "")
                               for p in phases])
    else:
        names = ctx.annotations["name"].astype(str).unique().tolist()
        mode = detect(work, names, prefill_min_m, float(mode_cfg["prefill_gemm_share"]),
                      limits=typed)
        phases.append(_phase(mode.value, mode, overall_bd, work, limits, verdict_min_m,
                             pd.Series([], dtype="int64")))
    if ctx.spec.phase and ctx.spec.run_source == "manifest":
        truth = "mixed" if ctx.spec.phase == "generate" else ctx.spec.phase
        if truth != mode.value:
            ctx.notes.append(f"manifest says {ctx.spec.phase}; the trace's evidence says "
                             f"{mode.value}")

    # Overall overhead and bottleneck: of the dominant phase when mixed (by wall time).
    main = max(phases, key=lambda p: p.breakdown.window_ns)
    ov_evidence = overhead_mod.host_evidence(ctx.host, work, window, max(nsteps, 1),
                                             int(typed.overhead.short_kernel_us * 1000))
    checks: list[Check] = []
    for p in phases:
        checks.append(overhead_mod.check(
            p.overhead_share, p.mode.value, limits, ov_evidence if len(phases) == 1 else {},
            trace.meta.options, phase=p.name if len(phases) > 1 else "",
            split=idle.get("by_phase", {}).get(p.name) if len(phases) > 1 else idle))
    verdict = main.bottleneck
    if len(phases) > 1:
        verdict = Verdict(verdict.value, [f"{main.name} phase dominates the window "
                                          f"({main.breakdown.window_ns / 1e6:.2f} ms)",
                                          *verdict.evidence])

    kc, count_checks = counts_mod.count(
        work, ctx.annotations, ctx.spec, ctx.steps, int(limits["counts"]["gemm_tolerance"]),
        float(limits["counts"]["slow_layer_factor"]),
        step_phases=[m.value for m in step_modes] or [mode.value], salvaged=bool(trace.meta.salvaged),
        gemms_per_layer=gemms_per_layer)
    checks.extend(count_checks)
    checks.append(idle_mod.step_outliers(steps_df, idle_gaps, idle_rules))
    if verdict.value == "overhead":
        verdict = Verdict(verdict.value, [*verdict.evidence,
                                          *idle_mod.evidence_lines(idle, idle_rules)])
    hot = hotspots(work, overall_bd.busy_ns, kc.get("forwards"), kc.get("layers"),
                   int(limits["hotspots"]["top"]),
                   phase_forwards={k: v["forwards"] for k, v in (kc.get("phases") or {}).items()},
                   step_phase={i: m.value for i, m in enumerate(step_modes)},
                   notes=typed.hotspots)
    checks.append(_mode_check(mode))
    checks.append(_busy_check(overall_bd))
    checks.extend(_pattern_checks(overall_bd, mode.value, limits))
    shapes = shape_evidence(phase_work.get(main.name, work))
    main_m = stated_m.get(main.name)
    recs = recommendations(verdict.value, main.breakdown, ov_evidence, trace.meta.options, kc,
                           hot.to_dict("records"), main_m if main_m is not None
                           else shapes.median_m, main.overhead_share, main.mode.value,
                           limits=typed)
    recs = idle_mod.merge_recommendations(recs, idle, idle_rules, verdict.value,
                                          overall_bd.window_ns)
    comm = _communication(ctx, window, gpu, gpu_spec)
    comm_check = comm_mod.check(comm, mode.value, limits)
    if comm_check is not None:
        checks.append(comm_check)
        recs.extend(comm_mod.recommendations(comm, comm_check.status, limits, nsteps))

    dev_info, dev_found = (None, "none") if ctx.cpu_only else trace.meta.device_info(ctx.device)
    if dev_found == "same-model" and dev_info is not None:
        ctx.notes.append(f"the kernels ran on device {_int_or_none(ctx.device)}, which the trace's "
                         f"device list ({', '.join(str(d.index) for d in trace.meta.devices)}) "
                         f"does not name; all listed GPUs are {dev_info.name}")
    warnings = list(trace.meta.warnings) + ctx.notes + health_warnings
    if ctx.cpu_only:
        warnings.append("CPU-only trace: 'busy' is CPU operator time on the profiled threads")
    if not ctx.cpu_only and len(work):
        graph_share = float(work["graph_launch"].fillna(False).mean())
        linked_share = float(work["op_name"].notna().mean())
        if graph_share > 0.5:
            warnings.append(f"{graph_share:.0%} of GPU work was replayed from CUDA-graph/HIP-graph "
                            "launches: no CPU op links, so classification used kernel names and "
                            + ("GEMM shapes come from --shapes-from (see the note above)"
                               if recovered else "shapes are unavailable (--shapes-from an "
                               "eager or capture trace of the same model recovers them)"))
        elif trace.meta.format != "torch":
            warnings.append(f"{trace.meta.format} traces carry no framework ops or shapes: "
                            "classification used kernel names, and GEMM shapes (mode evidence, "
                            "roofline) are unavailable")
        elif linked_share < 0.5:
            warnings.append(f"only {linked_share:.0%} of GPU work is linked to a CPU op "
                            "(GPU-only capture?): shapes are unavailable for the rest")
    diag = Diagnosis(
        source={"format": trace.meta.format, "path": trace.meta.path,
                "device": "cpu" if ctx.cpu_only else device_label(dev_info),
                "device_index": None if ctx.cpu_only else _int_or_none(ctx.device),
                "options": _jsonable(trace.meta.options), "salvaged": trace.meta.salvaged},
        mode=mode, bottleneck=verdict, breakdown=overall_bd, checks=checks, kernel_counts=kc,
        hotspots=hot, recommendations=recs, phases=phases if len(phases) > 1 else [],
        steps=steps_df.drop(columns=["_w0", "_w1"], errors="ignore"),
        # The window's share (= categories.overhead); each phase's own is phases[*].overhead_share.
        overhead={**ov_evidence, "overhead_share": overall_bd.shares.get("overhead", 0.0),
                  "scope": "window",
                  "limit": overhead_mod.limit_for(main.mode.value, limits),
                  "pathological": float(limits["overhead"]["pathological"])},
        warnings=warnings, model=ctx.spec.to_dict(), communication=comm,
        events=work.drop(columns=list(EVIDENCE_COLUMNS)), idle=idle, health=health,
        idle_gaps=idle_gaps, trace=trace, window=window,
        step_detail=step_detail(work, steps_df, idle_gaps, idle_mod.cause_titles(idle_rules)))
    if ctx.cpu_only:
        _cpu_wording(diag)
    if hta:
        from .hta_bridge import hta_figures

        diag.extras["hta"] = hta_figures(trace, idle)
        if not diag.extras["hta"].get("available"):
            diag.warnings.append(f"--hta: {diag.extras['hta'].get('reason', 'HTA unavailable')}")
    _attach_roofline(diag, ctx, gpu, gpu_spec)
    return diag


_CPU_WORDS = (("GPU idle (host overhead)", "CPU idle (gaps between operators)"),
              ("GPU idle", "CPU idle"), ("GPU busy", "CPU busy"), ("GPU waits", "CPU waits"),
              ("the GPU", "the CPU"), ("The GPU", "The CPU"))


def _cpu_word(text: str) -> str:
    for a, b in _CPU_WORDS:
        text = text.replace(a, b)
    # The verdict ran with no GPU M threshold (verdict_min_m = 1): say so, not "(>= 1)".
    return re.sub(r"median GEMM M = (\d+) \(>= 1\)",
                  r"median GEMM M = \1 (CPU: no GPU tensor-core threshold applies)", text)


def _cpu_wording(diag: Diagnosis) -> None:
    """A CPU-only trace has no GPU: its checks, verdicts and advice say CPU."""
    diag.checks = [replace(c, summary=_cpu_word(c.summary)) for c in diag.checks]
    diag.bottleneck = replace(diag.bottleneck,
                              evidence=[_cpu_word(e) for e in diag.bottleneck.evidence]
                              + ["CPU trace: judged by operator time shares, not against a GPU "
                                 "roof"])
    diag.phases = [replace(p, bottleneck=replace(p.bottleneck, evidence=[
        _cpu_word(e) for e in p.bottleneck.evidence])) for p in diag.phases]
    diag.recommendations = [replace(r, evidence=_cpu_word(r.evidence), advice=_cpu_word(r.advice))
                            for r in diag.recommendations]


def _recover_shapes(ctx: Context, shapes_from: str | Path) -> int:
    """Fill the shapeless GEMM/attention kernels from a reference trace; kernels matched."""
    from .. import shapes_from as shapes_mod

    if ctx.cpu_only:
        return 0
    batch = None
    if len(ctx.steps) and "prefill_tokens" in ctx.steps.columns:
        tok = (ctx.steps["prefill_tokens"].fillna(0) + ctx.steps["decode_tokens"].fillna(0))
        batch = int(tok.iloc[0]) if int(tok.iloc[0]) > 0 else None
    ref = shapes_mod.reference(shapes_from, batch)
    ctx.work, applied = shapes_mod.apply(ctx.work, ref)
    ctx.notes.extend(ref.notes)
    ctx.notes.append(applied.note(ref) if applied.kernels else
                     f"--shapes-from {Path(str(shapes_from)).name}: every GEMM/attention kernel "
                     "already has shapes; nothing taken from it")
    return applied.matched


def _attach_roofline(diag: Diagnosis, ctx: Context, gpu: str | None,
                     gpu_spec: str | Path | None) -> None:
    from .roofline_step import roofline_section

    diag.roofline = roofline_section(diag, ctx, gpu, gpu_spec)


def _communication(ctx: Context, window: tuple[int, int], gpu: str | None,
                   gpu_spec: str | Path | None) -> dict[str, Any]:
    """The communication section, with the interconnect of the trace's (or --gpu) GPU."""
    from .. import hardware

    link = None
    if not ctx.cpu_only and (ctx.work["category"] == comm_mod.CATEGORY).any():
        dev = ctx.trace.meta.devices[0] if ctx.trace.meta.devices else None
        try:
            spec = hardware.resolve(gpu, gpu_spec, dev.name if dev else None,
                                    sm_count=dev.sm_count if dev else None,
                                    memory_bytes=dev.memory_bytes if dev else None)
        except RulesError:
            spec = None  # the roofline step reports a bad --gpu/--gpu-spec
        link = comm_mod.interconnect(spec.key if spec else None, gpu_spec)
    world = ctx.trace.meta.options.get("world_size")
    return comm_mod.summarize(ctx.work, window, ctx.trace.meta.collectives,
                              world if isinstance(world, int) else None, link)


def _has_rules(path: str | Path) -> bool:
    try:
        return "[[rule]]" in Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read rules file: {exc.strerror}", str(path)) from None


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(d.items()) if isinstance(v, (str, int, float, bool))}


def _ordered_unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _steps(ctx: Context, prefill_min_m: int,
           prefill_gemm_share: float) -> tuple[pd.DataFrame, list[ModeResult]]:
    """Per-step table (host, GPU busy and wall time) and each step's mode."""
    work = ctx.work
    st = ctx.steps
    cols = ["step", "name", "phase", "start_ns", "host_ns", "gpu_busy_ns", "wall_ns", "kernels",
            "engine", *engines.STEP_COLUMNS, engines.KV_WRITTEN]
    if st.empty:
        work["step"] = -1
        return engines.typed_steps(pd.DataFrame(columns=cols)), []
    idx = assign(work["launch_ns"].to_numpy(), st["start_ns"].to_numpy(), st["end_ns"].to_numpy())
    work["step"] = idx
    rows = []
    ends = (work["start_ns"] + work["dur_ns"]).to_numpy()
    starts = work["start_ns"].to_numpy()
    prev_gpu_end: int | None = None
    rows_of = _rows_by_step(idx)
    kv_write = engines.kv_write_mask(work["name"])
    empty = np.array([], dtype=np.int64)
    typed = typed_thresholds.from_mapping(ctx.thresholds)
    records = st.to_dict("records")
    detected = per_step.detect_steps(work, idx, [s["name"] for s in records], prefill_min_m,
                                     prefill_gemm_share, limits=typed)
    modes = [engines.step_mode(s, d) for s, d in zip(records, detected)]
    for i, s, mode in zip(st.index, records, modes):
        mask = rows_of.get(i, empty)  # positional rows of this step
        if len(mask):
            # Device-side window: from where the previous step's GPU work ended (the host
            # may run ahead, so host ranges overlap the GPU's) to this step's last GPU end.
            gpu_start, gpu_end = int(starts[mask].min()), int(ends[mask].max())
            w0 = gpu_start if prev_gpu_end is None else min(max(prev_gpu_end, int(s["start_ns"])),
                                                            gpu_start)
            w1 = gpu_end
            prev_gpu_end = gpu_end
            busy = union_ns(np.clip(starts[mask], w0, w1), np.clip(ends[mask], w0, w1))
        else:
            w0, w1, busy = int(s["start_ns"]), int(s["end_ns"]), 0
        kv = kv_write[mask]
        rows.append({"step": int(i), "name": s["name"], "phase": mode.value,
                     "start_ns": int(s["start_ns"]), "host_ns": int(s["end_ns"] - s["start_ns"]),
                     "gpu_busy_ns": busy, "wall_ns": w1 - w0, "kernels": int(len(mask)),
                     **engines.composition_of(s),
                     engines.KV_WRITTEN: engines.kv_write_tokens(kv, work["grid"].iloc[mask])
                     if kv.any() else None,
                     "_w0": w0, "_w1": w1})
    return engines.typed_steps(pd.DataFrame(rows)), modes


def _rows_by_step(step_of_row: np.ndarray) -> dict[int, np.ndarray]:
    """step index -> positional indices of its rows, in one pass (not a mask per step)."""
    order = np.argsort(step_of_row, kind="stable")
    keys, first = np.unique(step_of_row[order], return_index=True)
    return {int(k): part for k, part in zip(keys, np.split(order, first[1:]))}


def _merge_evidence(modes: list[ModeResult]) -> list[str]:
    first = modes[0].evidence
    if len(modes) == 1:
        return list(first)
    return [f"{len(modes)} steps; first step: {first[0]}", *first[1:3]]


def _phase(name: str, mode: ModeResult, bd: Breakdown, work: pd.DataFrame,
           limits: dict[str, Any], prefill_min_m: int, wall: pd.Series,
           stated_m: int | None = None) -> Phase:
    share = bd.idle_ns / bd.window_ns if bd.window_ns else 0.0
    limit = overhead_mod.limit_for(mode.value, limits)
    # The tokens an engine annotation states are every linear GEMM's M (graph replays have no
    # shapes; an eager lm_head over the sampled rows alone would mislead).
    m = stated_m if stated_m is not None else shape_evidence(work).median_m
    verdict = bottleneck(bd, mode.value, share, limit, m, prefill_min_m,
                         typed_thresholds.from_mapping(limits).verdict.compute_share_min)
    return Phase(name=name, mode=mode, breakdown=bd, bottleneck=verdict, overhead_share=share,
                 steps=len(wall), median_step_ns=int(wall.median()) if len(wall) else None)


def _mode_check(mode: ModeResult) -> Check:
    status = "pass" if mode.value != "unknown" and mode.confidence >= 0.6 else "warn"
    return Check("mode", status, f"{mode.value} (confidence {mode.confidence:.2f}): "
                 f"{mode.evidence[0] if mode.evidence else 'no evidence'}",
                 {"evidence": mode.evidence})


def _busy_check(bd: Breakdown) -> Check:
    overlap = bd.kernel_sum_ns - bd.busy_ns
    return Check("categories", "pass", f"GPU busy {bd.busy_share:.1%} of a "
                 f"{bd.window_ns / 1e6:.3f} ms window; largest category "
                 f"{max(bd.category_ns, key=bd.category_ns.get) if bd.category_ns else 'none'}"
                 + (f"; {overlap / 1e6:.3f} ms of multi-stream overlap not double-counted"
                    if overlap > 0 else ""),
                 {"busy_ns": bd.busy_ns, "window_ns": bd.window_ns, "overlap_ns": overlap})


def _pattern_checks(bd: Breakdown, mode: str, limits: dict[str, Any]) -> list[Check]:
    """Healthy-pattern comparisons from domain.md (shares of busy time)."""
    pat = limits["patterns"]
    busy = bd.busy_ns or 1
    cls = bd.class_ns
    out = []
    if mode == "prefill":
        g = (cls.get("gemm", 0) + cls.get("gemm_reduce", 0) + cls.get("gemv", 0)) / busy
        lo = float(pat["prefill_gemm_min"])
        out.append(Check("pattern.gemm_share", "pass" if g >= lo else "warn",
                         f"GEMM is {g:.0%} of busy time (healthy prefill >= {lo:.0%})",
                         {"gemm_share": round(g, 4)}))
        sm = cls.get("softmax", 0) / busy
        hi = float(pat["softmax_heavy"])
        out.append(Check("pattern.softmax", "pass" if sm <= hi else "warn",
                         f"softmax is {sm:.0%} of busy time (heavy above {hi:.0%})",
                         {"softmax_share": round(sm, 4)}))
    elif mode == "decode":
        g = (cls.get("gemv", 0) + cls.get("gemm", 0) + cls.get("gemm_reduce", 0)) / busy
        lo = float(pat["decode_gemv_min"])
        out.append(Check("pattern.gemv_share", "pass" if g >= lo else "warn",
                         f"GEMV/GEMM is {g:.0%} of busy time (healthy decode >= {lo:.0%})",
                         {"gemv_share": round(g, 4)}))
    return out
