"""Communication: collectives and P2P transfers, exposed vs overlapped, bytes and bus bandwidth.

The kernels are found by the ``communication`` category of the rules (rules/kernels*.toml);
the collective type is the rule's class unless the trace's own collective args say otherwise
(Kineto records "Collective name", "In/Out msg nelems", "dtype" and "Group size" on NCCL
kernels; NCCL runs all-to-all as SendRecv kernels, so only the args tell them apart).

Exposed time is the part of the communication intervals during which no other GPU work of the
analysed device runs (on any stream): the GPU waits for the collective. Overlapped time is the
rest. Bus bandwidth follows nccl-tests: algbw = message bytes / time, busbw = algbw x
2(n-1)/n for all-reduce, x (n-1)/n for all-gather, reduce-scatter and all-to-all, x 1 otherwise.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RulesError
from .model import Check, Recommendation

CATEGORY = "communication"
TYPES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce", "p2p",
         "collective")
# Kineto "Collective name" values (c10d op names: allreduce, _allgather_base,
# allgather_into_tensor_coalesced, _reduce_scatter_base, all_to_all, alltoall_base, send, ...)
_COLL_TYPE = (
    (re.compile(r"(?i)all_?reduce"), "all_reduce"),
    (re.compile(r"(?i)all_?gather"), "all_gather"),
    (re.compile(r"(?i)reduce_?scatter"), "reduce_scatter"),
    (re.compile(r"(?i)all_?to_?all"), "all_to_all"),
    (re.compile(r"(?i)broadcast"), "broadcast"),
    (re.compile(r"(?i)^_?reduce(_oop)?$"), "reduce"),
    (re.compile(r"(?i)send|recv"), "p2p"),
)
# Framework ops whose first input is the collective's tensor (bytes when the kernel has no args).
_COMM_OP = re.compile(r"(?i)all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|broadcast|nccl|"
                      r"c10d::|symm_mem|custom_ar|_C_custom_ar|quick_?reduce")
_DTYPE_BYTES = (
    (re.compile(r"(?i)float8|fp8|e4m3|e5m2|uint8|int8|byte|char|bool"), 1),
    (re.compile(r"(?i)bfloat16|half|float16|fp16|bf16|short|int16"), 2),
    (re.compile(r"(?i)double|float64|long|int64"), 8),
    (re.compile(r"(?i)float|fp32|int|uint32"), 4),
)


def dtype_bytes(text: str | None) -> int | None:
    """Element size of a torch/Kineto dtype name (BFloat16 -> 2); None when unknown."""
    if not text:
        return None
    for pattern, size in _DTYPE_BYTES:
        if pattern.search(text):
            return size
    return None


def collective_type(name: str | None) -> str | None:
    """The type of a Kineto "Collective name" (``_allgather_base`` -> all_gather)."""
    if not name:
        return None
    for pattern, kind in _COLL_TYPE:
        if pattern.search(name):
            return kind
    return None


def busbw_factor(kind: str, n: int | None) -> float | None:
    """nccl-tests bus-bandwidth factor for a collective over ``n`` ranks; None when n unknown."""
    if kind in ("broadcast", "reduce", "p2p"):
        return 1.0
    if not n or n < 1 or kind == "collective":
        return None
    if kind == "all_reduce":
        return 2 * (n - 1) / n
    return (n - 1) / n


def message_bytes(kind: str, in_nelems: int | None, out_nelems: int | None, elem: int | None,
                  ) -> int | None:
    """The nccl-tests message size S from the collective args (all-gather: the gathered output)."""
    if not elem:
        return None
    if kind == "all_gather":
        n = out_nelems
    elif kind in ("all_reduce", "reduce_scatter", "all_to_all"):
        n = in_nelems
    else:
        n = max(in_nelems or 0, out_nelems or 0) or None
    return None if n is None else int(n) * elem


def _first_tensor_bytes(dims: Any, types: Any) -> int | None:
    """Bytes of the first input tensor from an op's JSON Input Dims / Input type."""
    if not isinstance(dims, str) or not isinstance(types, str):
        return None
    try:
        d, t = json.loads(dims), json.loads(types)
    except ValueError:
        return None
    if not d or not isinstance(d[0], list) or not d[0] or not t:
        return None
    elem = dtype_bytes(t[0] if isinstance(t[0], str) else None)
    if elem is None or not all(isinstance(x, int) for x in d[0]):
        return None
    return int(np.prod(d[0], dtype=np.int64)) * elem


# ----------------------------------------------------------------------------- intervals

def merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, sorted [start, end) segments covering the union of the intervals."""
    if len(starts) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.argsort(starts, kind="stable")
    s = starts[order].astype(np.int64)
    e = np.maximum.accumulate(ends[order].astype(np.int64))
    new = np.concatenate(([True], s[1:] > e[:-1]))
    first = np.flatnonzero(new)
    last = np.concatenate((first[1:] - 1, [len(s) - 1]))
    return s[first], e[last]


def covered_ns(seg_s: np.ndarray, seg_e: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each [a, b), the length of it covered by the disjoint segments (seg_s, seg_e)."""
    if len(seg_s) == 0:
        return np.zeros(len(a), np.int64)
    cum = np.concatenate(([0], np.cumsum(seg_e - seg_s)))

    def upto(x: np.ndarray) -> np.ndarray:  # covered length in (-inf, x)
        i = np.searchsorted(seg_s, x, side="right") - 1
        ok = i >= 0
        j = np.clip(i, 0, None)
        part = np.clip(x - seg_s[j], 0, seg_e[j] - seg_s[j])
        return np.where(ok, cum[j] + part, 0)

    return upto(b) - upto(a)


# ----------------------------------------------------------------------------- interconnect

@lru_cache(maxsize=4)
def _interconnects(path: str) -> dict[str, dict[str, Any]]:
    from .. import _toml as toml

    try:
        doc = toml.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, toml.TOMLDecodeError) as exc:
        raise RulesError(f"cannot read interconnect table: {exc}", path) from None
    table = doc.get("interconnect") or {}
    return {str(k): dict(v) for k, v in table.items() if isinstance(v, dict)}


def interconnect(gpu_key: str | None, spec_file: str | Path | None = None) -> dict[str, Any] | None:
    """The [interconnect.<gpu_key>] entry (a spec file's own first, then the shipped table)."""
    if not gpu_key:
        return None
    from ..hardware import table_path

    for path in ([str(spec_file)] if spec_file else []) + [str(table_path())]:
        entry = _interconnects(path).get(gpu_key)
        if entry and isinstance(entry.get("bytes_per_s"), (int, float)):
            return {"gpu": gpu_key, "link": str(entry.get("link", "")),
                    "bytes_per_s": float(entry["bytes_per_s"]),
                    "source": str(entry.get("source", ""))}
    return None


# ----------------------------------------------------------------------------- the step

def calls_table(work: pd.DataFrame, collectives: list[dict[str, Any]],
                world_size: int | None) -> pd.DataFrame:
    """One row per communication kernel: start/end, type, bytes, group size, implementation."""
    comm = work[work["category"] == CATEGORY]
    cols = ["start_ns", "end_ns", "dur_ns", "type", "rule_id", "bytes", "bytes_source",
            "group_size", "group_source"]
    if comm.empty:
        return pd.DataFrame(columns=cols)
    by_corr = {c["correlation"]: c for c in collectives if c.get("correlation") is not None}
    rows = []
    for r in comm[["start_ns", "dur_ns", "class", "rule_id", "correlation", "op_name",
                   "input_dims", "input_types"]].itertuples(index=False):
        kind = str(r[2]) if str(r[2]) in TYPES else "collective"
        args = by_corr.get(int(r[4])) if pd.notna(r[4]) else None
        nbytes: int | None = None
        source = None
        group = None
        gsource = None
        if args:
            kind = collective_type(args.get("collective")) or kind
            group = args.get("group_size")
            gsource = "args" if group else None
            nbytes = message_bytes(kind, args.get("in_nelems"), args.get("out_nelems"),
                                   dtype_bytes(args.get("dtype")))
            source = "collective args" if nbytes is not None else None
        if group is None and world_size:
            group, gsource = world_size, "world_size"
        if nbytes is None and isinstance(r[5], str) and _COMM_OP.search(r[5]):
            first = _first_tensor_bytes(r[6], r[7])
            if first is not None and kind == "all_gather":
                first = first * group if group else None  # the op's input is this rank's shard
            if first is not None and kind != "collective":
                nbytes, source = first, "op input"
        rows.append((int(r[0]), int(r[0]) + int(r[1]), int(r[1]), kind,
                     None if pd.isna(r[3]) else str(r[3]), nbytes, source, group, gsource))
    return pd.DataFrame(rows, columns=cols)


def summarize(work: pd.DataFrame, window: tuple[int, int], collectives: list[dict[str, Any]],
              world_size: int | None, link: dict[str, Any] | None) -> dict[str, Any]:
    """The ``communication`` section: exposed/overlapped time, per type bytes and bandwidth."""
    w0, w1 = window
    window_ns = max(w1 - w0, 0)
    calls = calls_table(work, collectives, world_size)
    out: dict[str, Any] = {"calls": int(len(calls)), "total_ns": 0, "busy_ns": 0, "exposed_ns": 0,
                           "overlapped_ns": 0, "exposed_share": 0.0, "overlapped_share": 0.0,
                           "by_type": {}, "interconnect": link, "world_size": world_size}
    if calls.empty:
        return out
    other = work[work["category"] != CATEGORY]
    o_s, o_e = merge(np.clip(other["start_ns"].to_numpy(np.int64), w0, w1),
                     np.clip((other["start_ns"] + other["dur_ns"]).to_numpy(np.int64), w0, w1))
    a = np.clip(calls["start_ns"].to_numpy(np.int64), w0, w1)
    b = np.clip(calls["end_ns"].to_numpy(np.int64), w0, w1)

    def exposure(mask: np.ndarray) -> tuple[int, int, int]:
        """(union, exposed, overlapped) of the selected calls, in ns."""
        c_s, c_e = merge(a[mask], b[mask])
        union = int((c_e - c_s).sum())
        hidden = int(covered_ns(o_s, o_e, c_s, c_e).sum())
        return union, union - hidden, hidden

    union, exposed, hidden = exposure(np.ones(len(calls), bool))
    out.update(total_ns=int((b - a).sum()), busy_ns=union, exposed_ns=exposed,
               overlapped_ns=hidden,
               exposed_share=round(exposed / window_ns, 6) if window_ns else 0.0,
               overlapped_share=round(hidden / union, 6) if union else 0.0)
    peak = link["bytes_per_s"] if link else None
    for kind in [t for t in TYPES if t in set(calls["type"])]:
        mask = (calls["type"] == kind).to_numpy()
        sub = calls[mask]
        u, e, h = exposure(mask)
        clipped = (b - a)[mask]
        known = sub["bytes"].notna().to_numpy() & (clipped > 0)
        nbytes = int(sub.loc[known, "bytes"].sum()) if known.any() else None
        t_known = int(clipped[known].sum())
        groups = Counter(int(g) for g in sub["group_size"].dropna())
        group = groups.most_common(1)[0][0] if groups else None
        factor = busbw_factor(kind, group)
        algbw = nbytes / (t_known / 1e9) if nbytes and t_known else None
        busbw = algbw * factor if algbw is not None and factor is not None else None
        sources = sorted({s for s in sub["bytes_source"].dropna()})
        out["by_type"][kind] = {
            "calls": int(mask.sum()), "total_ns": int(clipped.sum()), "busy_ns": u,
            "exposed_ns": e, "overlapped_ns": h,
            "bytes": nbytes, "calls_with_bytes": int(known.sum()),
            "mean_message_bytes": int(nbytes / known.sum()) if nbytes else None,
            "bytes_source": sources[0] if len(sources) == 1 else (sources or None),
            "group_size": group,
            "group_size_source": (sub["group_source"].dropna().mode().iat[0]
                                  if sub["group_source"].notna().any() else None),
            "algbw_bytes_per_s": None if algbw is None else round(algbw, 1),
            "busbw_bytes_per_s": None if busbw is None else round(busbw, 1),
            "busbw_share": None if busbw is None or not peak else round(busbw / peak, 4),
            "implementations": dict(sorted(Counter(
                str(x) for x in sub["rule_id"].fillna("unmatched")).items())),
        }
    return out


def limit_for(mode: str, limits: dict[str, Any]) -> float:
    cfg = limits.get("communication") or {}
    return float(cfg.get(f"{mode}_max", cfg.get("unknown_max", 0.15)))


def check(section: dict[str, Any], mode: str, limits: dict[str, Any]) -> Check | None:
    """pass/warn/fail on the exposed share of the window; None when there is no communication."""
    if not section["calls"]:
        return None
    limit = limit_for(mode, limits)
    worst = float((limits.get("communication") or {}).get("pathological", 0.35))
    share = section["exposed_share"]
    status = "fail" if share > worst else "warn" if share > limit else "pass"
    types = ", ".join(f"{k} {v['calls']}x {v['total_ns'] / 1e6:.2f} ms"
                      for k, v in section["by_type"].items())
    return Check("communication", status,
                 f"communication exposed {section['exposed_ns'] / 1e6:.3f} ms = {share:.1%} of the "
                 f"window (limit {limit:.0%} for {mode}); "
                 f"{section['overlapped_ns'] / 1e6:.3f} ms overlapped with other GPU work; "
                 f"{types}",
                 {"exposed_ns": section["exposed_ns"], "overlapped_ns": section["overlapped_ns"],
                  "exposed_share": share, "limit": limit, "pathological": worst})


def recommendations(section: dict[str, Any], status: str, limits: dict[str, Any],
                    steps: int) -> list[Recommendation]:
    """Advice for exposed communication (rules/advice.toml [communication.*])."""
    from .verdict import _rec

    if status == "pass" or not section["calls"]:
        return []
    cfg = limits.get("communication") or {}
    small = int(cfg.get("small_message_bytes", 262144))
    low = float(cfg.get("low_busbw_share", 0.3))
    recs: list[Recommendation] = []
    share = section["exposed_share"]
    by_type = section["by_type"]
    if section["overlapped_share"] < 0.5:
        recs.append(_rec("communication.overlap",
                         f"{share:.0%} of the window is exposed communication; only "
                         f"{section['overlapped_share']:.0%} of collective time overlaps other "
                         "GPU work"))
    smallish = {k: v for k, v in by_type.items()
                if v["mean_message_bytes"] is not None and v["mean_message_bytes"] < small}
    if smallish:
        per_step = f", {section['calls'] / steps:.0f} per step" if steps else ""
        recs.append(_rec("communication.fewer_larger",
                         f"{section['calls']} collectives{per_step}; mean message "
                         + ", ".join(f"{k} {v['mean_message_bytes'] / 1024:.0f} KiB"
                                     for k, v in smallish.items())))
    ar = by_type.get("all_reduce")
    if ar and ar["implementations"].keys() & {"comm.nccl_all_reduce", "collective"} and (
            ar["mean_message_bytes"] is None or ar["mean_message_bytes"] < 8 * small):
        recs.append(_rec("communication.custom_all_reduce",
                         f"{ar['calls']} all-reduces run through NCCL kernels "
                         f"({ar['total_ns'] / 1e6:.2f} ms)"))
    groups = [v["group_size"] for v in by_type.values() if v["group_size"]]
    if groups and max(groups) >= 4:
        recs.append(_rec("communication.tp_degree",
                         f"collectives span {max(groups)} ranks and leave {share:.0%} of the "
                         "window exposed"))
    slow = {k: v for k, v in by_type.items() if v["busbw_share"] is not None
            and (v["mean_message_bytes"] or 0) >= small and v["busbw_share"] < low}
    if slow and section.get("interconnect"):
        link = section["interconnect"]
        recs.append(_rec("communication.bandwidth", "; ".join(
            f"{k} bus bandwidth {v['busbw_bytes_per_s'] / 1e9:.0f} GB/s = "
            f"{v['busbw_share']:.0%} of {link['link']} {link['bytes_per_s'] / 1e9:.0f} GB/s"
            for k, v in slow.items())))
    return recs
