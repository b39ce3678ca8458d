"""Shared preparation for the five steps: device work, launch times, steps, intervals."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _toml as toml, engines, schema, strcols, thresholds as typed_thresholds
from ..classify import RuleSet, classify
from ..errors import NoGpuEventsError, RulesError
from ..gemm import CPU_COMPUTE_OPS, TOKEN_GEMM_OPS, dims_of, weight_kn
from ..modelspec import ModelSpec
from ..rules_path import rules_dir
from ..trace import Trace

LAYER_RE = re.compile(r"^(?:model\.)?(?:layers?|decoder[_.]layer|block|h)[_.\s#-]*(\d+)$",
                      re.IGNORECASE)
PREFILL_HINT = re.compile(r"prefill|context|extend|prompt", re.IGNORECASE)
DECODE_HINT = re.compile(r"decode|generation|generate_step|next_token", re.IGNORECASE)
SYNC_RE = re.compile(r"Synchronize|StreamWait|EventSynchronize|hipDeviceSynchronize", re.I)
ALLOC_RE = re.compile(r"(?:cuda|hip|cu)(?:Malloc|Free|MemAlloc|MemFree|HostAlloc|MallocAsync)", re.I)
LAUNCH_RE = re.compile(r"Launch|hipExtModuleLaunch|ModuleLaunch", re.I)
# Leaf CPU ops that are device work when a trace has no GPU at all (CPU inference).
# (the op set is gemm.CPU_COMPUTE_OPS: the GEMM ops plus baddbmm and SDPA)
CPU_COMPUTE_OP = re.compile("^(?:" + "|".join(map(re.escape, CPU_COMPUTE_OPS)) + ")")


@lru_cache(maxsize=4)
def _load_thresholds(extra: tuple[str, ...]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path in (rules_dir() / "thresholds.toml", *map(Path, extra)):
        try:
            loaded = toml.loads(path.read_text(encoding="utf-8"))
        except (OSError, toml.TOMLDecodeError) as exc:
            raise RulesError(f"cannot read thresholds: {exc}", str(path)) from None
        for section, values in loaded.items():
            if isinstance(values, dict):
                data.setdefault(section, {}).update(values)
    try:
        typed_thresholds.from_mapping(data)  # the one validation of every number
    except RulesError as exc:
        raise RulesError(exc.message, extra[-1] if extra else
                         str(rules_dir() / "thresholds.toml")) from None
    return data


def thresholds(extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Shipped thresholds, overridden by any [section] keys in ``extra`` TOML files."""
    return _load_thresholds(tuple(str(p) for p in extra))


# The event-table columns of Context.host (what idle.gaps and overhead.host_evidence read).
HOST_COLUMNS = ("name", "kind", "start_ns", "dur_ns", "tid", "correlation")


@dataclass(frozen=True)
class Context:
    trace: Trace
    work: pd.DataFrame  # classified device work of the primary device, sorted by start
    host: pd.DataFrame  # runtime + sync rows, the columns HOST_COLUMNS
    annotations: pd.DataFrame  # host user ranges
    steps: pd.DataFrame  # step, name, start_ns, end_ns (host range)
    device: Any
    cpu_only: bool
    spec: ModelSpec
    thresholds: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def leaf_cpu_ops(events: pd.DataFrame) -> pd.DataFrame:
    """cpu_op rows that contain no other cpu_op on the same thread."""
    ops = events[events["kind"] == schema.KIND_CPU_OP].sort_values(["tid", "start_ns"])
    if ops.empty:
        return ops
    end = (ops["start_ns"] + ops["dur_ns"]).to_numpy()
    start = ops["start_ns"].to_numpy()
    tid = ops["tid"].fillna(-1).to_numpy()
    nxt_start = np.append(start[1:], np.iinfo(np.int64).max)
    nxt_tid = np.append(tid[1:], -2)
    # An op is a leaf unless the next op on its thread starts inside it.
    leaf = ~((nxt_tid == tid) & (nxt_start < end))
    return ops[leaf]


# CPU ops that move no data and do no math: ignored when finding the leaf operators (an
# aten::mm on CPU records aten::resolve_conj children; SDPA records empty/transpose ones).
_TRIVIAL_CPU_OPS = re.compile(
    r"^(aten::(empty\w*|resize_|set_|view\w*|as_strided\w*|detach\w*|lift_fresh|t|transpose|"
    r"reshape|unsqueeze|squeeze|slice|select|expand|expand_as|permute|item|_local_scalar_dense|"
    r"result_type|alias|_unsafe_view|resolve_conj|resolve_neg|is_nonzero|_has_compatible_"
    r"shallow_copy_type|contiguous|size|stride|numel|dim)|detach)$")


def _cpu_work(trace: Trace) -> pd.DataFrame:
    """Leaf CPU compute ops re-expressed as device work on a pseudo device 'cpu'."""
    ev = trace.events
    # one regex match per distinct name (the compact table's categories), not per row
    ops = ev[(ev["kind"] == schema.KIND_CPU_OP).to_numpy(dtype=bool)
             & ~strcols.match(ev["name"], _TRIVIAL_CPU_OPS)]
    leaves = leaf_cpu_ops(ops)
    if leaves.empty or not strcols.match(leaves["name"], CPU_COMPUTE_OP).any():
        return leaves.iloc[0:0]
    work = leaves.copy()
    work["kind"] = pd.Categorical(["kernel"] * len(work), categories=list(schema.ALL_KINDS))
    work["op_name"] = work["name"]
    work["device"] = pd.array([-1] * len(work), dtype="Int64")
    work["stream"] = work["tid"]
    work["correlation"] = pd.array([pd.NA] * len(work), dtype="Int64")
    return work


def build(trace: Trace, spec: ModelSpec, rules: RuleSet, limits: dict[str, Any]) -> Context:
    """Classify the primary device's work, attach launch times, find the steps."""
    ev = trace.events
    # the kind tested once per distinct kind (a compact column's categories), not per row
    is_gpu = strcols.isin(ev["kind"], schema.GPU_KINDS)
    cpu_only = False
    notes: list[str] = []
    if not is_gpu.any():
        gpu = _cpu_work(trace)
        cpu_only = True
        if gpu.empty:
            raise NoGpuEventsError(
                "no GPU kernels, copies or memsets (and no CPU compute ops) to diagnose",
                trace.meta.path)
        notes.append("no GPU events: diagnosed the leaf CPU operators (CPU inference trace)")
    else:
        # Only the two numeric columns the device choice reads: no copy of the names.
        gpu = ev[["device", "dur_ns"]][is_gpu]
    # Primary device: the one with the most busy time; others are reported, not mixed in.
    dev_of = gpu["device"].fillna(-1)
    per_dev = gpu.groupby(dev_of, observed=True)["dur_ns"].sum()
    device = per_dev.idxmax()
    if len(per_dev) > 1:
        notes.append(f"{len(per_dev)} devices in the trace; analysed device {device} "
                     f"(the busiest); others: {sorted(int(d) for d in per_dev.index if d != device)}")
    if cpu_only:
        work = gpu[dev_of == device].sort_values("start_ns", kind="stable")
    else:
        # One positional take of the primary device's rows in start order (stable, as a
        # filter then sort_values gave): each copy of the table copies its Arrow name
        # strings, so filter, filter and sort was three copies of every kernel name.
        rows = np.flatnonzero(is_gpu)[(dev_of == device).to_numpy(dtype=bool)]
        rows = rows[np.argsort(ev["start_ns"].to_numpy()[rows], kind="stable")]
        work = ev.take(rows)
    work = classify(work, rules)  # row by row: the same values in any row order

    # Only the columns the host steps read (idle.gaps, overhead.host_evidence): a copy of
    # every column of millions of runtime rows held ~0.25 GB more at 1M nsys kernels.
    host = ev.loc[strcols.isin(ev["kind"], (schema.KIND_RUNTIME, schema.KIND_SYNC)),
                  list(HOST_COLUMNS)]
    # launch_ns: when the host issued the work (its runtime call), else its own start.
    if cpu_only:
        work["launch_ns"] = work["start_ns"].to_numpy()
    else:
        # The first runtime call of each correlation id, found by a sorted search (not a
        # copy of the runtime rows and a hash map of millions of ids); values go through
        # float64 as the Series.map (Float64) of before did.
        ids, first_row = first_runtime_calls(host)
        hit, at = find_calls(ids, work["correlation"])
        known = work["correlation"].notna().to_numpy(dtype=bool)
        start = work["start_ns"].to_numpy(dtype=np.int64)
        rt_start = host["start_ns"].to_numpy(dtype=np.int64)[first_row]
        launched = np.where(hit, rt_start[at] if len(ids) else start, start)
        work["launch_ns"] = launched.astype(np.float64).astype(np.int64)
        # Launched before the profiler's CPU window opened: no runtime call in the trace.
        orphan = (~hit & known) if len(ids) else np.zeros(len(work), dtype=bool)
        work["orphan"] = orphan
        if orphan.any():
            notes.append(f"{int(orphan.sum())} GPU events were launched before the profiled CPU "
                         "window (no runtime call in the trace)")

    annotations = ev[ev["kind"] == schema.KIND_ANNOTATION]
    # Engine step ranges (vLLM, SGLang, TRT-LLM) first, then generic ones (rules/engines.toml).
    steps = find_steps(annotations)
    if steps.empty:
        steps = infer_steps(work)
        if not steps.empty:
            notes.append(f"no step annotations: {len(steps)} forwards inferred from the lm_head "
                         "GEMM (the largest output dimension) that ends each forward")
    if steps.empty:
        steps = engines.find_steps(annotations, tiers=(3, 4))
        if not steps.empty:
            notes.append(f"no step annotations: {len(steps)} steps taken from torch.compile "
                         "regions (one compiled-graph call per step)")
    return Context(trace=trace, work=work.reset_index(drop=True), host=host,
                   annotations=annotations, steps=steps, device=device, cpu_only=cpu_only,
                   spec=spec, thresholds=limits, notes=notes)


def first_runtime_calls(host: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct correlation ids of the runtime calls in ``host``, sorted; the position
    in ``host`` of each id's first call)."""
    is_rt = ((host["kind"] == schema.KIND_RUNTIME) & host["correlation"].notna()
             ).to_numpy(dtype=bool)
    ids, first = np.unique(host["correlation"].to_numpy(dtype=np.int64, na_value=0)[is_rt],
                           return_index=True)  # the first occurrence of each id
    return ids, np.flatnonzero(is_rt)[first]


def find_calls(ids: np.ndarray, correlation: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``correlation``: (its id is one of the sorted ``ids``; that id's position
    in ``ids``, meaningful where found), by a sorted search."""
    known = correlation.notna().to_numpy(dtype=bool)
    wc = correlation.to_numpy(dtype=np.int64, na_value=0)
    at = np.minimum(np.searchsorted(ids, wc), max(len(ids) - 1, 0))
    hit = known & (len(ids) > 0)
    if len(ids):
        hit &= ids[at] == wc
    return hit, at


def find_steps(annotations: pd.DataFrame) -> pd.DataFrame:
    """Outermost step ranges (engine steps, else prefill / decode_step_N / ProfilerStep#N)."""
    return engines.find_steps(annotations, tiers=(1, 2))


def assign(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the [start, end) range holding each point, -1 when none (ranges sorted)."""
    if len(starts) == 0:
        return np.full(len(points), -1)
    idx = np.searchsorted(starts, points, side="right") - 1
    ok = (idx >= 0) & (points < ends[np.clip(idx, 0, None)])
    return np.where(ok, idx, -1)


def union_ns(starts: np.ndarray, ends: np.ndarray) -> int:
    """Total length of the union of [start, end) intervals."""
    if len(starts) == 0:
        return 0
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    e = np.maximum.accumulate(ends[order])
    # A new segment begins where a start is past every end before it.
    prev_end = np.concatenate(([s[0]], e[:-1]))
    new = s > prev_end
    new[0] = True
    # s is sorted and e is a running max: a segment spans from its first start to its last end
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(s) - 1)
    return int((e[last] - s[first]).sum())


def infer_steps(work: pd.DataFrame) -> pd.DataFrame:
    """Forwards delimited by the lm_head GEMM (largest N) when the trace has no step ranges.

    Each inferred step spans, in launch time, from just after the previous lm_head call to
    just after its own; work after the last lm_head (sampling) joins the last step.
    """
    cols = ["step", "name", "start_ns", "end_ns"]
    gem = work[work["op_name"].isin(TOKEN_GEMM_OPS) & work["input_dims"].notna()]
    if gem.empty:
        return pd.DataFrame(columns=cols)
    calls = gem.drop_duplicates("external_id")
    kn = [weight_kn(o, dims_of(d)) for o, d in zip(calls["op_name"], calls["input_dims"])]
    ns = pd.Series([k[1] if k else None for k in kn], index=calls.index, dtype="float64")
    if ns.isna().all():
        return pd.DataFrame(columns=cols)
    vocab = ns.max()
    heads = calls.loc[ns == vocab, "launch_ns"].sort_values().to_numpy()
    per_layer = (ns != vocab).sum()
    # One lm_head per forward; a model whose biggest GEMM is per-layer gives no boundaries.
    if len(heads) < 2 or per_layer < len(heads) or per_layer % len(heads):
        return pd.DataFrame(columns=cols)
    first = int(work["launch_ns"].min())
    last = int(work["launch_ns"].max()) + 1
    bounds = [first] + [int(h) + 1 for h in heads[:-1]] + [last]
    rows = [(i, f"forward_{i} (inferred)", bounds[i], bounds[i + 1]) for i in range(len(heads))]
    return pd.DataFrame(rows, columns=cols)
