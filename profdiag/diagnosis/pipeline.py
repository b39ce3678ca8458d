"""The diagnosis as an ordered list of small steps (pyinstrument's processors are the model).

``PIPELINE`` names every step in the order ``run()`` calls them. A step is a plain function
``step(run, *earlier)``: ``run`` (a ``Run``: the trace, its context, the thresholds and the
options) plus the frozen results of the earlier steps it names in ``needs``; it returns its
own frozen result and changes nothing it was given. So each step can be run alone on a
small trace (tests/test_pipeline.py) and every input a step reads is in its signature.

The step index of each device-work row is ``Steps.step_of_row``, an array that later steps
take as an argument; no step writes a column another one reads. (counts.py and
structure.py still read a ``step`` column internally: the ``counts`` step hands them
``work.assign(step=...)``, built from ``Steps``; the exported events table gets its
``step`` column once, in ``assemble``.)

``assemble`` builds the one ``Diagnosis`` from the results; nothing patches it afterwards
(the CPU wording is applied to the findings before, the roofline and HTA figures are
steps).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from .. import engines, thresholds as typed_thresholds
from ..errors import RulesError
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
from .context import Context, assign, union_ns
from .hotspots import hotspots as hotspot_table
from .mode import EVIDENCE_COLUMNS, SHAPE_COLUMNS, annotate, detect, shape_evidence
from .model import Breakdown, Check, Diagnosis, ModeResult, Phase, Recommendation, Verdict
from .step_detail import step_detail as step_detail_of
from .verdict import bottleneck, recommendations as verdict_recommendations


@dataclass(frozen=True)
class Run:
    """What ``run()`` resolved before the first step: the trace and its context, the
    thresholds (as read and typed), the idle causes and the options that steps use."""

    trace: Trace
    ctx: Context
    limits: dict[str, Any]
    typed: typed_thresholds.Thresholds
    idle_rules: idle_mod.IdleRules
    gemms_per_layer: int | None = None
    gpu: str | None = None
    gpu_spec: str | Path | None = None
    shapes_from: str | Path | None = None
    hta: bool = False

    @property
    def prefill_min_m(self) -> int:
        return int(self.limits["mode"]["prefill_min_m"])

    @property
    def prefill_gemm_share(self) -> float:
        return float(self.limits["mode"]["prefill_gemm_share"])


# -- step results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    work: pd.DataFrame  # the context's work without impossible events (index 0..n-1)
    report: dict[str, Any]  # the JSON ``health`` object
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Work:
    """The analysed device work: health-screened, shapes recovered (--shapes-from), with
    the mode-evidence columns (mode.EVIDENCE_COLUMNS)."""

    frame: pd.DataFrame
    notes: tuple[str, ...]  # what --shapes-from took
    recovered: int  # kernels whose shapes came from --shapes-from


@dataclass(frozen=True)
class Steps:
    # step, name, phase, start_ns, host_ns, gpu_busy_ns, wall_ns, kernels, engine, the
    # stated batch, kv_written; _w0/_w1: each step's device window [w0, w1)
    table: pd.DataFrame
    modes: tuple[ModeResult, ...]  # each step's mode
    step_of_row: np.ndarray  # the step index of each row of Work.frame, -1 outside every step
    rows_of: dict[int, np.ndarray]  # step index -> positional rows of Work.frame


@dataclass(frozen=True)
class Window:
    window: tuple[int, int]  # the analysed [start_ns, end_ns)
    breakdown: Breakdown  # of the whole window


@dataclass(frozen=True)
class Idle:
    summary: dict[str, Any]  # the JSON ``idle`` object ({} for a CPU trace)
    gaps: pd.DataFrame  # every gap (idle.GAP_COLUMNS)
    outlier_check: Check  # idle.step_outliers


@dataclass(frozen=True)
class Phases:
    phases: tuple[Phase, ...]  # one per mode the steps have (one, "all", without steps)
    mode: ModeResult  # the trace's mode ("mixed" over several phases)
    main: Phase  # the phase with the longest window
    # per phase, its work rows with shape evidence (mode.SHAPE_COLUMNS: what
    # mode.shape_evidence reads)
    phase_work: dict[str, pd.DataFrame]
    stated_m: dict[str, int | None]  # per phase: the tokens the steps' annotations state
    notes: tuple[str, ...]  # the manifest's phase disagreeing with the evidence


@dataclass(frozen=True)
class Overhead:
    evidence: dict[str, Any]  # host launch/sync/alloc evidence of the window
    checks: tuple[Check, ...]  # one overhead check per phase


@dataclass(frozen=True)
class Counts:
    kernel_counts: dict[str, Any]
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class Hotspots:
    table: pd.DataFrame  # hotspots.HOTSPOT_COLUMNS


@dataclass(frozen=True)
class Communication:
    section: dict[str, Any]
    check: Check | None
    recommendations: tuple[Recommendation, ...]


@dataclass(frozen=True)
class Device:
    info: Any  # trace.DeviceInfo of the analysed device, or None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Findings:
    """What the report judges, in report order, before assembly (the CPU wording step
    rewrites these, never the Diagnosis)."""

    checks: tuple[Check, ...]
    bottleneck: Verdict
    phases: tuple[Phase, ...]  # the report's phases: empty unless there are several
    recommendations: tuple[Recommendation, ...]


@dataclass(frozen=True)
class Hta:
    figures: dict[str, Any] | None  # extras["hta"], None without --hta
    warning: str | None


# -- the steps ---------------------------------------------------------------------------


def health(run: Run) -> Health:
    """Trace health first: impossible events must not reach the verdict."""
    clean, report, warnings = health_mod.screen(run.ctx.work, run.trace.events,
                                                run.trace.meta.options)
    return Health(clean.reset_index(drop=True), report, tuple(warnings))


def annotate_work(run: Run, health: Health) -> Work:
    """Shapes from --shapes-from (a replay's GEMMs have none), then the evidence columns."""
    frame, recovered = health.work, 0
    notes: tuple[str, ...] = ()
    if run.shapes_from is not None:
        frame, notes, recovered = _recover_shapes(run.ctx, frame, run.shapes_from)
    return Work(annotate(frame), notes, recovered)


def steps(run: Run, work: Work) -> Steps:
    """Per-step table (host, GPU busy and wall time), each step's mode, each row's step."""
    w = work.frame
    st = run.ctx.steps
    cols = ["step", "name", "phase", "start_ns", "host_ns", "gpu_busy_ns", "wall_ns", "kernels",
            "engine", *engines.STEP_COLUMNS, engines.KV_WRITTEN]
    if st.empty:
        none = np.full(len(w), -1)
        return Steps(engines.typed_steps(pd.DataFrame(columns=cols)), (), none,
                     rows_by_step(none))
    idx = assign(w["launch_ns"].to_numpy(), st["start_ns"].to_numpy(), st["end_ns"].to_numpy())
    rows = []
    ends = (w["start_ns"] + w["dur_ns"]).to_numpy()
    starts = w["start_ns"].to_numpy()
    prev_gpu_end: int | None = None
    rows_of = rows_by_step(idx)
    kv_write = engines.kv_write_mask(w["name"])
    empty = np.array([], dtype=np.int64)
    records = st.to_dict("records")
    detected = per_step.detect_steps(w, idx, [s["name"] for s in records], run.prefill_min_m,
                                     run.prefill_gemm_share, limits=run.typed)
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
                     engines.KV_WRITTEN: engines.kv_write_tokens(kv, w["grid"].iloc[mask])
                     if kv.any() else None,
                     "_w0": w0, "_w1": w1})
    return Steps(engines.typed_steps(pd.DataFrame(rows)), tuple(modes), idx, rows_of)


def window(run: Run, work: Work, steps: Steps) -> Window:
    """The analysed window (the steps' device windows, else the work's) and its breakdown."""
    t = steps.table
    win = ((int(t["_w0"].min()), int(t["_w1"].max())) if len(t)
           else window_of(work.frame, run.ctx.steps))
    return Window(win, breakdown(work.frame, win))


def idle(run: Run, work: Work, steps: Steps, window: Window) -> Idle:
    """Where the idle time goes (not for CPU-only traces: no launches, no device queue)."""
    if run.ctx.cpu_only:
        summary: dict[str, Any] = {}
        gaps = pd.DataFrame(columns=idle_mod.GAP_COLUMNS)
    else:
        summary, gaps = idle_mod.analyse(work.frame, run.trace.events, run.ctx.host, steps.table,
                                         window.window, run.idle_rules)
    return Idle(summary, gaps, idle_mod.step_outliers(steps.table, gaps, run.idle_rules))


def phases(run: Run, work: Work, steps: Steps, window: Window) -> Phases:
    """Phases: contiguous or not, steps of one mode form one phase; the trace's mode."""
    ctx, limits, w = run.ctx, run.limits, work.frame
    # A CPU trace is not judged against a GPU roof: the GEMM-M threshold (tokens per weight
    # pass that saturate a GPU's tensor cores) does not decide compute vs memory there.
    verdict_min_m = 1 if ctx.cpu_only else run.prefill_min_m
    out: list[Phase] = []
    phase_work: dict[str, pd.DataFrame] = {}
    stated_m: dict[str, int | None] = {}  # per phase: GEMM rows = tokens the steps state
    step_modes = steps.modes
    if len(ctx.steps):
        t = steps.table
        step_w0, step_w1 = t["_w0"].to_numpy(), t["_w1"].to_numpy()
        step_busy = t["gpu_busy_ns"].to_numpy(dtype=np.int64)
        has_shape = (w["_m"].notna() | w["_tq"].notna()).to_numpy(dtype=bool)
        for value in _ordered_unique([m.value for m in step_modes]):
            idx = [i for i, m in enumerate(step_modes) if m.value == value]
            # Only the rows and columns shape_evidence reads (a row filter of the whole
            # work table copies every kernel name: ~0.4 GB at 1M nsys kernels).
            sub = w.loc[np.isin(steps.step_of_row, idx) & has_shape, list(SHAPE_COLUMNS)]
            bd = per_step.phase_breakdown(w, steps.rows_of, idx, step_w0, step_w1, step_busy)
            confs = [step_modes[i].confidence for i in idx]
            evid = _merge_evidence([step_modes[i] for i in idx])
            phase_mode = ModeResult(value, float(np.mean(confs)), evid)
            phase_work[value] = sub
            stated_m[value] = engines.batch_tokens(t.loc[idx])
            out.append(_phase(value, phase_mode, bd, sub, limits, verdict_min_m,
                              t.loc[idx, "wall_ns"], stated_m[value]))
        if len(out) == 1:
            mode = out[0].mode
        else:
            mode = ModeResult("mixed", float(np.mean([p.mode.confidence for p in out])),
                              [f"{p.steps} {p.name} step(s)" + (
                                  f": {p.mode.evidence[0]}" if p.mode.evidence else "")
                               for p in out])
    else:
        names = ctx.annotations["name"].astype(str).unique().tolist()
        mode = detect(w, names, run.prefill_min_m, run.prefill_gemm_share, limits=run.typed)
        out.append(_phase(mode.value, mode, window.breakdown, w, limits, verdict_min_m,
                          pd.Series([], dtype="int64")))
    notes: tuple[str, ...] = ()
    if ctx.spec.phase and ctx.spec.run_source == "manifest":
        truth = "mixed" if ctx.spec.phase == "generate" else ctx.spec.phase
        if truth != mode.value:
            notes = (f"manifest says {ctx.spec.phase}; the trace's evidence says {mode.value}",)
    main = max(out, key=lambda p: p.breakdown.window_ns)
    return Phases(tuple(out), mode, main, phase_work, stated_m, notes)


def overhead(run: Run, work: Work, window: Window, idle: Idle, phases: Phases) -> Overhead:
    """Host evidence of the window and one overhead check per phase."""
    ctx = run.ctx
    evidence = overhead_mod.host_evidence(ctx.host, work.frame, window.window,
                                          max(len(ctx.steps), 1),
                                          int(run.typed.overhead.short_kernel_us * 1000))
    many = len(phases.phases) > 1
    checks = tuple(overhead_mod.check(
        p.overhead_share, p.mode.value, run.limits, {} if many else evidence,
        run.trace.meta.options, phase=p.name if many else "",
        split=idle.summary.get("by_phase", {}).get(p.name) if many else idle.summary)
        for p in phases.phases)
    return Overhead(evidence, checks)


def verdict(run: Run, idle: Idle, phases: Phases) -> Verdict:
    """The bottleneck: the dominant phase's (by wall time), with the idle causes when it
    is overhead."""
    main = phases.main
    out = main.bottleneck
    if len(phases.phases) > 1:
        out = Verdict(out.value, [f"{main.name} phase dominates the window "
                                  f"({main.breakdown.window_ns / 1e6:.2f} ms)", *out.evidence])
    if out.value == "overhead":
        out = Verdict(out.value, [*out.evidence,
                                  *idle_mod.evidence_lines(idle.summary, run.idle_rules)])
    return out


def counts(run: Run, work: Work, steps: Steps, phases: Phases) -> Counts:
    """Expected vs observed GEMM calls per forward (counts.py, structure.py)."""
    limits = run.limits["counts"]
    kc, checks = counts_mod.count(
        # counts.py groups its GEMM calls by a "step" column: given here, from Steps
        work.frame.assign(step=steps.step_of_row), run.ctx.annotations, run.ctx.spec,
        run.ctx.steps, int(limits["gemm_tolerance"]), float(limits["slow_layer_factor"]),
        step_phases=[m.value for m in steps.modes] or [phases.mode.value],
        salvaged=bool(run.trace.meta.salvaged), gemms_per_layer=run.gemms_per_layer)
    return Counts(kc, tuple(checks))


def hotspots(run: Run, work: Work, steps: Steps, window: Window, counts: Counts) -> Hotspots:
    """The top kernels, calls per forward counted per phase."""
    kc = counts.kernel_counts
    return Hotspots(hotspot_table(
        work.frame, window.breakdown.busy_ns, kc.get("forwards"), kc.get("layers"),
        int(run.limits["hotspots"]["top"]),
        phase_forwards={k: v["forwards"] for k, v in (kc.get("phases") or {}).items()},
        step_phase={i: m.value for i, m in enumerate(steps.modes)},
        notes=run.typed.hotspots, step_of_row=steps.step_of_row))


def mode_checks(run: Run, window: Window, phases: Phases) -> tuple[Check, ...]:
    """The mode check, the busy-time check and the healthy-pattern comparisons."""
    return (mode_check(phases.mode), busy_check(window.breakdown),
            *pattern_checks(window.breakdown, phases.mode.value, run.limits))


def recommendations(run: Run, work: Work, window: Window, idle: Idle, phases: Phases,
                    overhead: Overhead, verdict: Verdict, counts: Counts,
                    hotspots: Hotspots) -> tuple[Recommendation, ...]:
    """Advice for the bottleneck, merged with the idle causes' cards."""
    main = phases.main
    shapes = shape_evidence(phases.phase_work.get(main.name, work.frame))
    main_m = phases.stated_m.get(main.name)
    recs = verdict_recommendations(
        verdict.value, main.breakdown, overhead.evidence, run.trace.meta.options,
        counts.kernel_counts, cast("list[dict[str, Any]]", hotspots.table.to_dict("records")),
        main_m if main_m is not None else shapes.median_m, main.overhead_share,
        main.mode.value, limits=run.typed)
    return tuple(idle_mod.merge_recommendations(recs, idle.summary, run.idle_rules,
                                                verdict.value, window.breakdown.window_ns))


def communication(run: Run, work: Work, window: Window, phases: Phases) -> Communication:
    """The communication section (with the GPU's interconnect), its check and advice."""
    from .. import hardware

    ctx = run.ctx
    link = None
    if not ctx.cpu_only and (work.frame["category"] == comm_mod.CATEGORY).any():
        dev = ctx.trace.meta.devices[0] if ctx.trace.meta.devices else None
        try:
            spec = hardware.resolve(run.gpu, run.gpu_spec, dev.name if dev else None,
                                    sm_count=dev.sm_count if dev else None,
                                    memory_bytes=dev.memory_bytes if dev else None)
        except RulesError:
            spec = None  # the roofline step reports a bad --gpu/--gpu-spec
        link = comm_mod.interconnect(spec.key if spec else None, run.gpu_spec)
    world = ctx.trace.meta.options.get("world_size")
    section = comm_mod.summarize(work.frame, window.window, ctx.trace.meta.collectives,
                                 world if isinstance(world, int) else None, link)
    check = comm_mod.check(section, phases.mode.value, run.limits)
    recs: tuple[Recommendation, ...] = ()
    if check is not None:
        recs = tuple(comm_mod.recommendations(section, check.status, run.limits,
                                              len(ctx.steps)))
    return Communication(section, check, recs)


def device(run: Run) -> Device:
    """The analysed GPU's entry in the trace's device list (a note when only its model
    matches)."""
    ctx, meta = run.ctx, run.trace.meta
    info, found = (None, "none") if ctx.cpu_only else meta.device_info(ctx.device)
    notes: tuple[str, ...] = ()
    if found == "same-model" and info is not None:
        notes = (f"the kernels ran on device {_int_or_none(ctx.device)}, which the trace's "
                 f"device list ({', '.join(str(d.index) for d in meta.devices)}) "
                 f"does not name; all listed GPUs are {info.name}",)
    return Device(info, notes)


def warnings(run: Run, health: Health, work: Work, phases: Phases,
             device: Device) -> tuple[str, ...]:
    """The report's warnings (before --hta's): the parser's, the context's notes, health,
    and what the trace lacks (CPU only, graph replays, no shapes)."""
    ctx, w = run.ctx, work.frame
    out = [*run.trace.meta.warnings, *ctx.notes, *work.notes, *phases.notes, *device.notes,
           *health.warnings]
    if ctx.cpu_only:
        out.append("CPU-only trace: 'busy' is CPU operator time on the profiled threads")
    if not ctx.cpu_only and len(w):
        graph_share = float(w["graph_launch"].fillna(False).mean())
        linked_share = float(w["op_name"].notna().mean())
        if graph_share > 0.5:
            out.append(f"{graph_share:.0%} of GPU work was replayed from CUDA-graph/HIP-graph "
                       "launches: no CPU op links, so classification used kernel names and "
                       + ("GEMM shapes come from --shapes-from (see the note above)"
                          if work.recovered else "shapes are unavailable (--shapes-from an "
                          "eager or capture trace of the same model recovers them)"))
        elif run.trace.meta.format != "torch":
            out.append(f"{run.trace.meta.format} traces carry no framework ops or shapes: "
                       "classification used kernel names, and GEMM shapes (mode evidence, "
                       "roofline) are unavailable")
        elif linked_share < 0.5:
            out.append(f"only {linked_share:.0%} of GPU work is linked to a CPU op "
                       "(GPU-only capture?): shapes are unavailable for the rest")
    return tuple(out)


def step_detail(run: Run, work: Work, steps: Steps, idle: Idle) -> dict[str, Any]:
    """Per phase, the parts of its median step (step_detail.py)."""
    return step_detail_of(work.frame, steps.table, idle.gaps,
                          idle_mod.cause_titles(run.idle_rules), step_of_row=steps.step_of_row)


def findings(run: Run, idle: Idle, phases: Phases, overhead: Overhead, verdict: Verdict,
             counts: Counts, mode_checks: tuple[Check, ...],
             recommendations: tuple[Recommendation, ...],
             communication: Communication) -> Findings:
    """Checks, bottleneck, phases and advice in report order; a CPU trace's say CPU."""
    checks = (*overhead.checks, *counts.checks, idle.outlier_check, *mode_checks,
              *((communication.check,) if communication.check is not None else ()))
    out = Findings(checks, verdict, phases.phases if len(phases.phases) > 1 else (),
                   (*recommendations, *communication.recommendations))
    return cpu_wording(out) if run.ctx.cpu_only else out


def hta(run: Run, idle: Idle) -> Hta:
    """HTA's figures beside ours (--hta), and a warning when HTA cannot run."""
    if not run.hta:
        return Hta(None, None)
    from .hta_bridge import hta_figures

    figures = hta_figures(run.trace, idle.summary)
    warning = (None if figures.get("available")
               else f"--hta: {figures.get('reason', 'HTA unavailable')}")
    return Hta(figures, warning)


def roofline(run: Run, work: Work, steps: Steps, phases: Phases) -> dict[str, Any]:
    """The roofline section (roofline_step.py)."""
    from .roofline_step import roofline_section

    return roofline_section(run.ctx, work.frame, public_steps(steps), steps.step_of_row,
                            phases.mode.value, run.gpu, run.gpu_spec)


def assemble(run: Run, health: Health, work: Work, steps: Steps, window: Window, idle: Idle,
             phases: Phases, overhead: Overhead, counts: Counts, hotspots: Hotspots,
             communication: Communication, device: Device, warnings: tuple[str, ...],
             step_detail: dict[str, Any], findings: Findings, hta: Hta,
             roofline: dict[str, Any]) -> Diagnosis:
    """The one Diagnosis, built once from the step results."""
    ctx, trace, limits = run.ctx, run.trace, run.limits
    bd = window.breakdown
    events = work.frame.drop(columns=list(EVIDENCE_COLUMNS))
    events["step"] = steps.step_of_row  # the exported events table's step column
    return Diagnosis(
        source={"format": trace.meta.format, "path": trace.meta.path,
                "device": "cpu" if ctx.cpu_only else device_label(device.info),
                "device_index": None if ctx.cpu_only else _int_or_none(ctx.device),
                "options": _jsonable(trace.meta.options), "salvaged": trace.meta.salvaged},
        mode=phases.mode, bottleneck=findings.bottleneck, breakdown=bd,
        checks=list(findings.checks), kernel_counts=counts.kernel_counts,
        hotspots=hotspots.table, recommendations=list(findings.recommendations),
        phases=list(findings.phases), steps=public_steps(steps),
        # The window's share (= categories.overhead); each phase's own is phases[*].overhead_share.
        overhead={**overhead.evidence, "overhead_share": bd.shares.get("overhead", 0.0),
                  "scope": "window",
                  "limit": overhead_mod.limit_for(phases.main.mode.value, limits),
                  "pathological": float(limits["overhead"]["pathological"])},
        warnings=[*warnings, *((hta.warning,) if hta.warning else ())],
        model=ctx.spec.to_dict(), communication=communication.section,
        events=events, idle=idle.summary, health=health.report, idle_gaps=idle.gaps,
        trace=trace, window=window.window, step_detail=step_detail, roofline=roofline,
        extras={"hta": hta.figures} if hta.figures is not None else {})


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[..., Any]
    needs: tuple[str, ...] = ()  # the earlier steps whose results it takes, in order


# The diagnosis, in order: each step takes the Run and the results of ``needs``.
PIPELINE: tuple[Step, ...] = (
    Step("health", health),
    Step("work", annotate_work, ("health",)),
    Step("steps", steps, ("work",)),
    Step("window", window, ("work", "steps")),
    Step("idle", idle, ("work", "steps", "window")),
    Step("phases", phases, ("work", "steps", "window")),
    Step("overhead", overhead, ("work", "window", "idle", "phases")),
    Step("verdict", verdict, ("idle", "phases")),
    Step("counts", counts, ("work", "steps", "phases")),
    Step("hotspots", hotspots, ("work", "steps", "window", "counts")),
    Step("mode_checks", mode_checks, ("window", "phases")),
    Step("recommendations", recommendations, ("work", "window", "idle", "phases", "overhead",
                                              "verdict", "counts", "hotspots")),
    Step("communication", communication, ("work", "window", "phases")),
    Step("device", device),
    Step("warnings", warnings, ("health", "work", "phases", "device")),
    Step("step_detail", step_detail, ("work", "steps", "idle")),
    Step("findings", findings, ("idle", "phases", "overhead", "verdict", "counts",
                                "mode_checks", "recommendations", "communication")),
    Step("hta", hta, ("idle",)),
    Step("roofline", roofline, ("work", "steps", "phases")),
    Step("diagnosis", assemble, ("health", "work", "steps", "window", "idle", "phases",
                                 "overhead", "counts", "hotspots", "communication", "device",
                                 "warnings", "step_detail", "findings", "hta", "roofline")),
)


def execute(run: Run, until: str = "diagnosis") -> dict[str, Any]:
    """Run the PIPELINE in order up to and including step ``until``; every result by name."""
    results: dict[str, Any] = {}
    for step in PIPELINE:
        results[step.name] = step.fn(run, *(results[n] for n in step.needs))
        if step.name == until:
            return results
    raise KeyError(f"no step {until!r} in the pipeline")


# -- helpers -----------------------------------------------------------------------------


def public_steps(steps: Steps) -> pd.DataFrame:
    """The steps table as the report shows it (without the device-window columns)."""
    return steps.table.drop(columns=["_w0", "_w1"], errors="ignore")


def rows_by_step(step_of_row: np.ndarray) -> dict[int, np.ndarray]:
    """step index -> positional indices of its rows, in one pass (not a mask per step)."""
    order = np.argsort(step_of_row, kind="stable")
    keys, first = np.unique(step_of_row[order], return_index=True)
    return {int(k): part for k, part in zip(keys, np.split(order, first[1:]))}


def _recover_shapes(ctx: Context, work: pd.DataFrame, shapes_from: str | Path
                    ) -> tuple[pd.DataFrame, tuple[str, ...], int]:
    """Fill the shapeless GEMM/attention kernels from a reference trace: (work, notes,
    kernels matched)."""
    from .. import shapes_from as shapes_mod

    if ctx.cpu_only:
        return work, (), 0
    batch = None
    if len(ctx.steps) and "prefill_tokens" in ctx.steps.columns:
        tok = (ctx.steps["prefill_tokens"].fillna(0) + ctx.steps["decode_tokens"].fillna(0))
        batch = int(tok.iloc[0]) if int(tok.iloc[0]) > 0 else None
    ref = shapes_mod.reference(shapes_from, batch)
    work, applied = shapes_mod.apply(work, ref)
    note = (applied.note(ref) if applied.kernels else
            f"--shapes-from {Path(str(shapes_from)).name}: every GEMM/attention kernel "
            "already has shapes; nothing taken from it")
    return work, (*ref.notes, note), applied.matched


_CPU_WORDS = (("GPU idle (host overhead)", "CPU idle (gaps between operators)"),
              ("GPU idle", "CPU idle"), ("GPU busy", "CPU busy"), ("GPU waits", "CPU waits"),
              ("the GPU", "the CPU"), ("The GPU", "The CPU"))


def _cpu_word(text: str) -> str:
    for a, b in _CPU_WORDS:
        text = text.replace(a, b)
    # The verdict ran with no GPU M threshold (verdict_min_m = 1): say so, not "(>= 1)".
    return re.sub(r"median GEMM M = (\d+) \(>= 1\)",
                  r"median GEMM M = \1 (CPU: no GPU tensor-core threshold applies)", text)


def cpu_wording(f: Findings) -> Findings:
    """A CPU-only trace has no GPU: its checks, verdicts and advice say CPU."""
    return Findings(
        checks=tuple(replace(c, summary=_cpu_word(c.summary)) for c in f.checks),
        bottleneck=replace(f.bottleneck, evidence=[_cpu_word(e) for e in f.bottleneck.evidence]
                           + ["CPU trace: judged by operator time shares, not against a GPU "
                              "roof"]),
        phases=tuple(replace(p, bottleneck=replace(p.bottleneck, evidence=[
            _cpu_word(e) for e in p.bottleneck.evidence])) for p in f.phases),
        recommendations=tuple(replace(r, evidence=_cpu_word(r.evidence),
                                      advice=_cpu_word(r.advice))
                              for r in f.recommendations))


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(d.items()) if isinstance(v, (str, int, float, bool))}


def _ordered_unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


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


def mode_check(mode: ModeResult) -> Check:
    status = "pass" if mode.value != "unknown" and mode.confidence >= 0.6 else "warn"
    return Check("mode", status, f"{mode.value} (confidence {mode.confidence:.2f}): "
                 f"{mode.evidence[0] if mode.evidence else 'no evidence'}",
                 {"evidence": mode.evidence})


def busy_check(bd: Breakdown) -> Check:
    overlap = bd.kernel_sum_ns - bd.busy_ns
    return Check("categories", "pass", f"GPU busy {bd.busy_share:.1%} of a "
                 f"{bd.window_ns / 1e6:.3f} ms window; largest category "
                 f"{max(bd.category_ns, key=bd.category_ns.__getitem__) if bd.category_ns else 'none'}"
                 + (f"; {overlap / 1e6:.3f} ms of multi-stream overlap not double-counted"
                    if overlap > 0 else ""),
                 {"busy_ns": bd.busy_ns, "window_ns": bd.window_ns, "overlap_ns": overlap})


def pattern_checks(bd: Breakdown, mode: str, limits: dict[str, Any]) -> list[Check]:
    """Healthy-pattern comparisons from domain.md (shares of busy time)."""
    pat = limits["patterns"]
    busy = bd.busy_ns or 1
    cls = bd.class_ns
    out = []
    # GEMM and GEMV time together (a decode GEMM at small M is often named GEMV, and back)
    g = (cls.get("gemm", 0) + cls.get("gemm_reduce", 0) + cls.get("gemv", 0)) / busy
    if mode == "prefill":
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
        lo = float(pat["decode_gemv_min"])
        out.append(Check("pattern.gemv_share", "pass" if g >= lo else "warn",
                         f"GEMV/GEMM is {g:.0%} of busy time (healthy decode >= {lo:.0%})",
                         {"gemv_share": round(g, 4)}))
    return out
