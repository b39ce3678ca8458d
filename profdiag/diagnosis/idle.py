"""Where the idle time goes: every gap in the device's busy time, split and attributed.

A *gap* is a stretch of the analysed window where the primary device runs nothing (the
complement of the union of its GPU intervals, so the gaps add up to ``breakdown.idle_ns``).
Each gap is split in two:

- ``host_wait``: the GPU queue was empty because the host had not launched the next work yet
  (the launch call of the work that ends the gap started after the gap began, or the host
  spent the gap inside that very call, e.g. a blocking copy; HTA's definition);
- ``kernel_wait``: the next work was already queued (graph replays, dependent kernels, stream
  waits): a GPU-side gap, not host overhead.

The host-wait part of every gap of at least ``min_gap_ns`` (and of the ``top_gaps`` largest)
is attributed to the innermost host activity spanning it on the launching thread, by the
patterns of ``rules/idle.toml``; shorter host waits are ``launch_gaps``, kernel waits are
``gpu_side``. Causes therefore add up to the idle time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _toml as toml, schema, strcols
from ..errors import RulesError
from ..rules_path import rules_dir
from .context import find_calls, first_runtime_calls
from .model import PASS, SKIP, WARN, Check, Recommendation

GAP_COLUMNS = ["start_ns", "dur_ns", "step", "host_wait_ns", "kernel_wait_ns", "cause", "op",
               "context", "next"]
GENERIC = ("launch_gaps", "gpu_side", "framework_op", "python", "unexplained")
# Host ranges that delimit steps or layers say nothing about why the host is idle.
_STRUCTURAL = re.compile(r"^(?:ProfilerStep#\d+|(?:prefill|decode|forward|step|generate|"
                         r"decode_step|layer|layers|model\.layers)[\w\s#.\[\]=-]*)$", re.I)
_PYTHON_KIND = schema.KIND_PYTHON


@dataclass(frozen=True)
class Cause:
    id: str
    pattern: re.Pattern[str] | None
    title: str
    description: str
    rec_title: str
    advice: str
    inside: bool = False
    blocking: bool = False
    examples: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class IdleRules:
    causes: tuple[Cause, ...]
    generic: dict[str, Cause]
    attribution: dict[str, Any]
    step_outliers: dict[str, Any]

    def describe(self, cause_id: str) -> Cause | None:
        return self.generic.get(cause_id) or next((c for c in self.causes if c.id == cause_id),
                                                  None)


def _cause(cid: str, d: dict[str, Any], path: Path) -> Cause:
    pattern = None
    if "match" in d:
        try:
            pattern = re.compile(str(d["match"]))
        except re.error as exc:
            raise RulesError(f"idle cause {cid!r}: bad regex ({exc})", str(path)) from None
    return Cause(id=cid, pattern=pattern, title=str(d.get("title", cid)),
                 description=str(d.get("description", "")), rec_title=str(d.get("rec_title", "")),
                 advice=str(d.get("advice", "")), inside=bool(d.get("inside", False)),
                 blocking=bool(d.get("blocking", False)),
                 examples={k: list(v) for k, v in (d.get("examples") or {}).items()})


@lru_cache(maxsize=4)
def load_idle_rules(extra: tuple[str, ...] = ()) -> IdleRules:
    """rules/idle.toml, then any user file's [attribution]/[step_outliers] keys and causes
    (a user cause with a shipped id replaces it; new ones are tried first)."""
    causes: dict[str, Cause] = {}
    user_first: list[str] = []
    generic: dict[str, Cause] = {}
    attribution: dict[str, Any] = {}
    outliers: dict[str, Any] = {}
    for i, path in enumerate((rules_dir() / "idle.toml", *map(Path, extra))):
        try:
            data = toml.loads(path.read_text(encoding="utf-8"))
        except (OSError, toml.TOMLDecodeError) as exc:
            raise RulesError(f"cannot read idle rules: {exc}", str(path)) from None
        attribution.update(data.get("attribution") or {})
        outliers.update(data.get("step_outliers") or {})
        for entry in data.get("cause") or []:
            if "id" not in entry or "match" not in entry:
                raise RulesError("an idle [[cause]] needs an id and a match", str(path))
            c = _cause(str(entry["id"]), entry, path)
            if i and c.id not in causes:
                user_first.append(c.id)
            causes[c.id] = c
        for cid, d in (data.get("generic") or {}).items():
            generic[cid] = _cause(cid, {k: v for k, v in d.items() if k != "match"}, path)
    order = user_first + [k for k in causes if k not in user_first]
    return IdleRules(tuple(causes[k] for k in order), generic, attribution, outliers)


def declares_idle_causes(text: str) -> bool:
    """Whether a rules file's ``text`` has idle causes, attribution or step-outlier settings."""
    return "[[cause]]" in text or "[attribution]" in text or "[step_outliers]" in text


# ---------------------------------------------------------------------------------------------
# Gaps and their split


def _segments(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of [start, end) intervals as sorted disjoint segments."""
    if len(starts) == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    e = np.maximum.accumulate(ends[order])
    new = np.concatenate(([True], s[1:] > e[:-1]))
    seg_s = s[new]
    # e is a running max: each segment's largest end is its last one
    last = np.append(np.flatnonzero(new)[1:] - 1, len(s) - 1)
    return seg_s, e[last].astype(np.int64)


_GAPS_COLUMNS = ["start_ns", "dur_ns", "step", "host_wait_ns", "kernel_wait_ns", "ready_ns",
                 "next_pos", "launch_tid"]


def gaps(work: pd.DataFrame, host: pd.DataFrame, windows: Sequence[tuple[int, int, int]]
         ) -> pd.DataFrame:
    """Every idle stretch of ``work`` inside ``windows`` ((w0, w1, step) triples that partition
    the analysed window), with its host-wait / kernel-wait split and the next work's launch."""
    got = gap_arrays(work, host, windows)
    if got is None:
        return pd.DataFrame(columns=_GAPS_COLUMNS)
    return pd.DataFrame(got, copy=False)


def gap_arrays(work: pd.DataFrame, host: pd.DataFrame, windows: Sequence[tuple[int, int, int]]
               ) -> dict[str, np.ndarray] | None:
    """gaps() as its int64 columns (None when there is none): writable arrays, not a frame's
    read-only views."""
    cols = _GAPS_COLUMNS
    if not windows:
        return None
    st = work["start_ns"].to_numpy(dtype=np.int64)
    en = st + work["dur_ns"].to_numpy(dtype=np.int64)
    launch = work["launch_ns"].to_numpy(dtype=np.int64)
    # The launch call of each work item: its end and thread (same correlation id), by a
    # sorted search over the runtime calls' ids (not a hash map of millions of calls);
    # values go through float64 as the Series.map of before did
    # (of those calls' rows only: the whole host table's columns through float64 cost
    # ~50 MB at 2.2M rows)
    ids, by = first_runtime_calls(host)
    rt_end = (host["start_ns"].take(by) + host["dur_ns"].take(by)).to_numpy(
        dtype=np.float64, na_value=-1.0)
    rt_tid = host["tid"].take(by).to_numpy(dtype=np.float64, na_value=-1.0)
    hit, at = find_calls(ids, work["correlation"])
    call_end = np.where(hit, rt_end[at] if len(ids) else -1.0, -1.0).astype(np.int64)
    call_tid = np.where(hit, rt_tid[at] if len(ids) else -1.0, -1.0).astype(np.int64)
    del ids, by, rt_end, rt_tid, hit, at
    # Sorted by start, then launch: the first event starting at t has the earliest launch.
    order = _by_start(st, launch)
    st_sorted = st[order]
    parts: list[tuple[np.ndarray, ...]] = []
    cw = [w for w in _contiguous(windows) if w[1] > w[0]]
    tiled = _tiled(cw)
    if tiled is not None:
        # Windows that tile the analysed window (none overlaps another): the gaps inside each
        # are the gaps of the whole work's union cut at the window edges, in one pass (a loop
        # per window cost ~0.5 ms per step: seconds at 10,000 steps).
        a, b, step_of = _cut(st, en, *tiled)
        windows_iter: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [(a, b, step_of)]
    else:
        windows_iter = []
        for w0, w1, step in cw:
            lo, hi = np.searchsorted(st_sorted, w0, "left"), np.searchsorted(st_sorted, w1, "left")
            # Work overlapping the window: started in it, or started before and still running.
            before = order[:lo]
            before = before[en[before] > w0]
            idx = np.concatenate((before, order[lo:hi]))
            seg_s, seg_e = _segments(np.clip(st[idx], w0, w1), np.clip(en[idx], w0, w1))
            g_s = np.concatenate(([w0], seg_e))
            g_e = np.concatenate((seg_s, [w1]))
            keep = g_e > g_s
            windows_iter.append((g_s[keep].astype(np.int64), g_e[keep].astype(np.int64),
                                 np.full(int(keep.sum()), step)))
    # (each temporary dropped once used: a million gaps' arrays are 8 MB each)
    for a, b, step_of in windows_iter:
        k = np.searchsorted(st_sorted, b, "left")
        has = k < len(st_sorted)
        has[has] = st_sorted[k[has]] == b[has]
        nxt = np.where(has, order[np.minimum(k, len(order) - 1)], -1)
        del k
        j = np.maximum(nxt, 0)
        ready = np.where(has, launch[j], b)
        tid = np.where(has, call_tid[j], -1)
        ce = np.where(has, call_end[j], -1)
        del has, j
        dur = b - a
        # The host spent (most of) the gap inside the call that issues the next work: a
        # blocking copy, or a graph launch that feeds its nodes one by one.
        inside_call = (ce > 0) & (np.minimum(ce, b) - np.maximum(ready, a) >= 0.5 * dur)
        del ce
        ready[inside_call] = b[inside_call]
        del inside_call
        # Launched after the gap began: the queue was empty, the whole gap (launch latency
        # included) is the host's. Launched before: the work sat queued, a GPU-side gap.
        hw = np.where(ready > a, dur, 0)
        np.maximum(ready, a, out=ready)
        parts.append((a, dur, step_of, hw, dur - hw, ready, nxt, tid))
        del a, b, step_of, dur, hw, ready, nxt, tid
    del windows_iter, order, st_sorted, st, en, launch, call_end, call_tid
    if not parts:
        return None
    if len(parts) == 1:  # (one pass over tiled windows: its arrays, not a copy of them)
        return {c: parts[0][i].astype(np.int64, copy=False) for i, c in enumerate(cols)}
    # column by column (a 2-D stack of the columns and its transposition cost ~0.2 s at a
    # million gaps)
    return {c: np.concatenate([p[i] for p in parts]).astype(np.int64, copy=False)
            for i, c in enumerate(cols)}


def _by_start(st: np.ndarray, launch: np.ndarray) -> np.ndarray:
    """``np.lexsort((launch, st))``: the identity when the rows are already in that order
    (the work table is sorted by start), without sorting them."""
    d = np.diff(st)
    if (d >= 0).all():
        tie = np.flatnonzero(d == 0)
        if (launch[tie + 1] >= launch[tie]).all():
            return np.arange(len(st))
    return np.lexsort((launch, st))


def _tiled(cw: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(starts, ends, steps) of windows sorted and each starting where the previous ends,
    else None."""
    if not cw:
        return None
    w = np.array(cw, dtype=np.int64).reshape(-1, 3)
    if len(w) > 1 and not np.array_equal(w[1:, 0], w[:-1, 1]):
        return None
    return w[:, 0], w[:, 1], w[:, 2]


def _cut(st: np.ndarray, en: np.ndarray, w0: np.ndarray, w1: np.ndarray, steps: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Idle stretches [a, b) of the work's union inside tiled windows, cut at window edges,
    with each stretch's window step: what the per-window loop of gaps() gives."""
    lo, hi = int(w0[0]), int(w1[-1])
    inside = (st < hi) & (en > lo)
    # zero-length work at the outer edges opens no stretch (the loop clipped it away too)
    seg_s, seg_e = _segments(np.clip(st[inside], lo, hi), np.clip(en[inside], lo, hi))
    g_s = np.concatenate(([lo], seg_e)).astype(np.int64)
    g_e = np.concatenate((seg_s, [hi])).astype(np.int64)
    keep = g_e > g_s
    g_s, g_e = g_s[keep], g_e[keep]
    j0 = np.searchsorted(w0, g_s, "right") - 1  # window holding each stretch's start
    j1 = np.searchsorted(w0, g_e, "left") - 1  # window holding its last instant
    n = j1 - j0 + 1
    rep = np.repeat(np.arange(len(g_s)), n)
    j = np.repeat(j0, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    a = np.maximum(g_s[rep], w0[j])
    b = np.minimum(g_e[rep], w1[j])
    return a, b, steps[j]


def _largest(values: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest values, largest first, equal ones in position order:
    ``sort_values(ascending=False, kind="stable").head(n)`` without sorting them all."""
    if 0 < n < len(values):
        kth = np.partition(values, len(values) - n)[len(values) - n]
        cand = np.flatnonzero(values >= kth)
        return cand[np.argsort(-values[cand], kind="stable")][:n]
    return np.argsort(-values, kind="stable")[:n]


def _contiguous(windows: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The step windows plus the holes between them (step -1), so that gaps cover the whole
    analysed window (a step's window starts at its own host range when the GPU was idle
    before it, leaving the time since the previous step's last work to no step)."""
    out: list[tuple[int, int, int]] = []
    for w in sorted(windows):
        if out and w[0] > out[-1][1]:
            out.append((out[-1][1], w[0], -1))
        out.append(w)
    return out


# ---------------------------------------------------------------------------------------------
# Attribution


@dataclass
class _HostIndex:
    """Host events sorted by start: their times and thread, and their name and kind as codes
    into the distinct values (per-row arrays of str objects held ~35 MB more at 2.2M rows)."""

    start: np.ndarray
    end: np.ndarray
    tid: np.ndarray
    # per event: its name's code into ``unique_names``; matches are computed once per name
    name_code: np.ndarray
    unique_names: np.ndarray
    name_structural: np.ndarray  # per distinct name: a step or layer range (_STRUCTURAL)
    kind_code: np.ndarray  # per event: its kind's code into ``kind_names``
    kind_names: np.ndarray
    short_max: int = 1_000_000
    _hits: dict[str, np.ndarray] = field(default_factory=dict)
    _by_class: list[tuple[np.ndarray, np.ndarray, int]] = field(default_factory=list)
    _split: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    _rows: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, events: pd.DataFrame, rows: np.ndarray | None = None) -> _HostIndex:
        """The index of ``events`` (of its ``rows`` positions only, when given): read from the
        table's columns, without a copy of its name strings."""
        rows = np.arange(len(events)) if rows is None else np.asarray(rows, dtype=np.int64)
        start = events["start_ns"].to_numpy(dtype=np.int64)[rows]
        order = np.argsort(start, kind="stable")
        start = start[order]
        pick = rows[order]
        del rows, order
        end = start + events["dur_ns"].to_numpy(dtype=np.int64)[pick]
        # names as str (as astype(str) gives them), one object per distinct name of the rows
        # (the compact column's codes and categories: no pass over the rows' text)
        all_codes, all_uniques = strcols.codes_values(events["name"])
        picked = all_codes[pick]
        used = np.flatnonzero(np.bincount(picked[picked >= 0], minlength=len(all_uniques)))
        na_text = pd.Series([None], dtype=events["name"].dtype).astype(str).iloc[0]
        unique_names = np.append(np.array([str(v) for v in all_uniques[used].tolist()],
                                          dtype=object), np.array([na_text], dtype=object))
        # each used code's rank among the used ones (np.unique's inverse), a missing name the
        # last code
        rank = np.full(len(all_uniques) + 1, len(unique_names) - 1, dtype=np.int32)
        rank[used] = np.arange(len(used), dtype=np.int32)
        name_code = rank[picked]  # (code -1 reads the last entry: the missing name's)
        del picked, rank
        # (a missing name stays missing, NaN: it matches nothing)
        structural = np.array([isinstance(n, str) and bool(_STRUCTURAL.match(n))
                               for n in unique_names], dtype=bool)
        kind = events["kind"]
        if isinstance(kind.dtype, pd.CategoricalDtype):
            # (code -1, a missing kind, reads "nan" as astype(str) writes it)
            kind_names = np.append(np.asarray(kind.cat.categories.astype(str), dtype=object),
                                   "nan")
            kind_code = kind.cat.codes.to_numpy()[pick]
            kind_code = np.where(kind_code < 0, len(kind_names) - 1, kind_code).astype(np.int16)
        else:
            kind_names, kind_code = np.unique(kind.astype(str).to_numpy(dtype=object)[pick],
                                              return_inverse=True)
            kind_code = kind_code.astype(np.int16)
        # only the rows' threads (the whole column through Float64 cost ~90 MB at 3.3M rows),
        # an Int64 column's straight to float64 (the values the Float64 path gives)
        tid_arr = events["tid"].array
        if isinstance(tid_arr, pd.arrays.IntegerArray):
            tid = tid_arr[pick].to_numpy(dtype=np.float64, na_value=-1.0)
        else:
            tid = pd.array(tid_arr[pick]).astype("Float64").fillna(-1).to_numpy(dtype=np.float64)
        return cls(start=start, end=end, tid=tid.astype(np.int64), name_code=name_code,
                   unique_names=unique_names, name_structural=structural, kind_code=kind_code,
                   kind_names=np.asarray(kind_names, dtype=object))

    def kind_is(self, kind: str) -> np.ndarray:
        """Per event: is its kind ``kind``."""
        return self.kind_code == self.code_of_kind(kind)

    def code_of_kind(self, kind: str) -> int:
        """The code of ``kind`` (-1 when no event has it)."""
        got = np.flatnonzero(self.kind_names == kind)
        return int(got[0]) if len(got) else -1

    def _per_event(self, key: str, per_code: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``per_code[codes]``: a per-event column from a per-distinct-value table, built
        on first use and kept under ``key``."""
        got = self._rows.get(key)
        if got is None:
            got = self._rows[key] = per_code[codes]
        return got

    @property
    def name(self) -> np.ndarray:
        """Per event: its name (a str, NaN when missing), built on first use."""
        return self._per_event("name", self.unique_names, self.name_code)

    @property
    def kind(self) -> np.ndarray:
        """Per event: its kind as text, built on first use."""
        return self._per_event("kind", self.kind_names, self.kind_code)

    @property
    def structural(self) -> np.ndarray:
        """Per event: is it a step or layer range."""
        return self._per_event("structural", self.name_structural, self.name_code)

    def name_hits(self, cause: Cause) -> np.ndarray:
        """Per distinct name: does ``cause.pattern`` search it (computed once)."""
        got = self._hits.get(cause.id)
        if got is None:
            pattern = cause.pattern
            got = self._hits[cause.id] = np.array(
                [isinstance(n, str) and pattern is not None and bool(pattern.search(n))
                 for n in self.unique_names], dtype=bool)
        return got

    def hits(self, cause: Cause) -> np.ndarray:
        """Per event: does ``cause.pattern`` search its name (once per distinct name)."""
        return self.name_hits(cause)[self.name_code]

    def overlapping(self, a: int, b: int) -> np.ndarray:
        """Positions of events overlapping [a, b)."""
        if self._split is None:
            # the long and the short events (and the short ones' starts), found once
            is_long = self.end - self.start >= self.short_max
            self._split = (np.flatnonzero(is_long), np.flatnonzero(~is_long),
                           self.start[~is_long])
        long_idx, short_idx, s_starts = self._split
        li = long_idx[(self.start[long_idx] < b) & (self.end[long_idx] > a)]
        lo = np.searchsorted(s_starts, a - self.short_max, "left")
        hi = np.searchsorted(s_starts, b, "left")
        si = short_idx[lo:hi]
        si = si[self.end[si] > a]
        return np.concatenate((li, si))


    def _classes(self) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """The events by class of duration (0, then floor(log2(dur)) + 1): per class its
        positions (by start), their starts and its longest duration; computed once."""
        if not self._by_class:
            dur = self.end - self.start
            # floor(log2(dur)) + 1 is frexp's exponent (dur = m * 2**e, 0.5 <= m < 1); any
            # partition by duration gives the same answers, this one a radix sort's keys
            klass = np.where(dur > 0, np.frexp(dur.astype(np.float64))[1], 0).astype(np.uint8)
            # each class's members by position (int32 positions: half the index's copy)
            order = np.argsort(klass, kind="stable").astype(
                np.int32 if len(dur) < 2**31 else np.int64)
            first = np.flatnonzero(np.diff(klass[order])) + 1  # where each later class starts
            del klass
            for members in np.split(order, first) if len(order) else []:
                self._by_class.append((members, self.start[members], int(dur[members].max())))
        return self._by_class

    def overlapping_many(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """overlapping(a[i], b[i]) of every stretch at once, as (offsets, positions): the
        positions of stretch i are ``positions[offsets[i]:offsets[i + 1]]``, in the order
        overlapping gives (long events, then short ones, each by position).

        Events are taken in classes of duration (powers of two): an event of a class can only
        overlap [a, b) when it starts in [a - the class's longest duration, b), a range found
        by a sorted search per class and stretch; the candidates are then kept when they end
        after a. The work is the candidates', not a pass over the events per stretch."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        if not len(a):
            return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
        gap_of: list[np.ndarray] = []
        pos_of: list[np.ndarray] = []
        for members, starts, longest in self._classes():
            lo = np.searchsorted(starts, a - longest, "left")
            hi = np.searchsorted(starts, b, "left")
            n = hi - lo
            if not n.sum():
                continue
            gap = np.repeat(np.arange(len(a)), n)
            at = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
            cand = members[at]
            keep = self.end[cand] > a[gap]
            gap_of.append(gap[keep])
            pos_of.append(cand[keep])
        if not gap_of:
            return np.zeros(len(a) + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
        gap = np.concatenate(gap_of)
        pos = np.concatenate(pos_of)
        is_short = self.end[pos] - self.start[pos] < self.short_max
        # lexsort((pos, is_short, gap)) as one sort of a combined key: (gap, pos) pairs are
        # distinct (each event is in one class), so the keys are and no tie is left to order
        key = (gap * 2 + is_short) * max(len(self.start), 1) + pos
        order = np.argsort(key)
        gap, pos = gap[order], pos[order]
        offsets = np.zeros(len(a) + 1, dtype=np.int64)
        np.cumsum(np.bincount(gap, minlength=len(a)), out=offsets[1:])
        return offsets, pos.astype(np.int64, copy=False)


def _match(rules: IdleRules, name: str | float, inside: bool = False) -> Cause | None:
    if not isinstance(name, str):  # a missing name (NaN) matches no cause
        return None
    for c in rules.causes:
        if c.pattern is not None and (c.inside or not inside) and c.pattern.search(name):
            return c
    return None


def attribute(a: int, b: int, tid: int, hix: _HostIndex, rules: IdleRules,
              cover: float, pos: np.ndarray | None = None) -> tuple[str, str, str]:
    """(cause, op, context) of the host-wait stretch [a, b); ``pos``: the host events
    overlapping it when already known (overlapping_many)."""
    if pos is None:
        pos = hix.overlapping(a, b)
    if not len(pos):
        return "unexplained", "", ""
    if tid >= 0:
        same = pos[(hix.tid[pos] == tid) | (hix.tid[pos] < 0)]
        pos = same if len(same) else pos
    if not len(pos):
        return "unexplained", "", ""
    ov = np.minimum(hix.end[pos], b) - np.maximum(hix.start[pos], a)
    span = pos[ov >= cover * (b - a)]
    span = span[np.argsort(hix.end[span] - hix.start[span], kind="stable")]  # innermost first
    span = span[~hix.structural[span]].astype(np.int64)
    context = ""
    for i, p in enumerate(span):
        c = _match(rules, hix.name[p])
        if c is not None:
            # Where it was called from: the user Python frame, else (for a runtime call) the
            # framework op that made the call.
            outer = [hix.name[q] for q in span[i + 1:] if hix.kind[q] == schema.KIND_CPU_OP]
            context = _context(span[i + 1:], hix) or (
                outer[0] if outer and hix.kind[p] == schema.KIND_RUNTIME else "")
            return c.id, hix.name[p], context
    # Calls made during the gap (nsys: a plan build is host silence ending in a library load).
    during = pos[(hix.start[pos] >= a) & (hix.kind[pos] == schema.KIND_RUNTIME)]
    for c in rules.causes:
        if not c.inside or c.pattern is None:
            continue
        hit = during[hix.hits(c)[during]].tolist()
        if hit:
            return c.id, hix.name[max(hit, key=lambda p: hix.end[p] - hix.start[p])], \
                _context(span, hix)
    ops = [p for p in span if hix.kind[p] == schema.KIND_CPU_OP]
    if ops:
        return "framework_op", hix.name[ops[0]], _context(span, hix)
    py = [p for p in span if hix.kind[p] == _PYTHON_KIND]
    if py:
        return "python", hix.name[py[0]].rsplit("/", 1)[-1], ""
    return "unexplained", "", ""


_LIBRARY_FRAME = re.compile(r"^<built-in|(?:^|/)(?:torch|triton|numpy|contextlib|threading|"
                            r"functools)(?:/|\.py)|site-packages/(?:torch|triton|numpy)/")


def _context(span: np.ndarray, hix: _HostIndex) -> str:
    """The innermost user Python frame among the enclosing events (where in the code, as
    'file.py(line): function'), else ''."""
    for p in span:
        name = hix.name[p]
        if hix.kind[p] == _PYTHON_KIND and not _LIBRARY_FRAME.search(name):
            return name.rsplit("/", 1)[-1]
    return ""


def _first_in_group(group: np.ndarray, flag: np.ndarray, n: int) -> np.ndarray:
    """Per group 0..n-1 (``group`` sorted): the first index k with ``flag[k]``, else -1."""
    out = np.full(n, -1, dtype=np.int64)
    hit = np.flatnonzero(flag)
    if len(hit):
        g, first = np.unique(group[hit], return_index=True)
        out[g] = hit[first]
    return out


def _next_in_group(group: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Per index k (``group`` sorted): the first index k' > k of k's group with
    ``flag[k']``, else -1."""
    k = len(group)
    at = np.where(flag, np.arange(k), k)
    nxt = np.append(np.minimum.accumulate(at[::-1])[::-1][1:], k) if k else at
    ok = nxt < k
    ok[ok] = group[nxt[ok]] == group[ok]
    return np.where(ok, nxt, -1)


def attribute_many(a: np.ndarray, b: np.ndarray, tid: np.ndarray, hix: _HostIndex,
                   rules: IdleRules, cover: float, offsets: np.ndarray, flat: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``attribute`` of every stretch [a[i], b[i]) at once, as (cause, op, context) object
    arrays; ``offsets``/``flat``: the host events overlapping each (overlapping_many).

    The same choices as attribute's loop, made with sorts and segment searches over the
    (stretch, event) pairs instead of a numpy pass per stretch: the launching thread's
    events (all, when it has none), those covering ``cover`` of the stretch innermost first
    without the structural ranges (the span), the first span event whose name matches a
    cause, else the longest call inside the stretch matching an ``inside`` cause, else the
    innermost framework op, else the innermost Python frame."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    tid = np.asarray(tid, dtype=np.int64)
    n = len(a)
    cause = np.full(n, "unexplained", dtype=object)
    op = np.full(n, "", dtype=object)
    ctx = np.full(n, "", dtype=object)
    if not n or not len(flat):
        return cause, op, ctx
    grp = np.repeat(np.arange(n), np.diff(offsets))
    pos = np.asarray(flat, dtype=np.int64)
    # the launching thread's events (and those of no thread), when it has any there
    ptid = hix.tid[pos]
    same = (ptid == tid[grp]) | (ptid < 0)
    has_same = np.zeros(n, dtype=bool)
    has_same[grp[same]] = True
    keep = same | (tid[grp] < 0) | ~has_same[grp]
    grp, pos = grp[keep], pos[keep]
    start, end = hix.start[pos], hix.end[pos]
    dur = end - start
    kind = hix.kind_code[pos]
    rt_code = hix.code_of_kind(schema.KIND_RUNTIME)
    is_op = kind == hix.code_of_kind(schema.KIND_CPU_OP)
    is_py = kind == hix.code_of_kind(_PYTHON_KIND)
    # per distinct name of the pairs: the first cause it matches, a user frame's short name
    codes = hix.name_code[pos]
    names = hix.unique_names
    first_cause = np.full(len(hix.unique_names), -1, dtype=np.int64)
    user_frame = np.zeros(len(hix.unique_names), dtype=bool)
    short = np.array(hix.unique_names, dtype=object)
    index_of = {c.id: i for i, c in enumerate(rules.causes)}
    for u in np.unique(codes).tolist():
        name = hix.unique_names[u]
        c = _match(rules, name)
        first_cause[u] = -1 if c is None else index_of[c.id]
        if isinstance(name, str):
            user_frame[u] = not _LIBRARY_FRAME.search(name)
            short[u] = name.rsplit("/", 1)[-1]
    # the span: covering events, innermost (shortest) first, ties in overlapping's order
    ov = np.minimum(end, b[grp]) - np.maximum(start, a[grp])
    sp = np.flatnonzero(ov >= cover * (b - a)[grp])
    sp = sp[np.lexsort((dur[sp], grp[sp]))]
    sp = sp[~hix.name_structural[codes[sp]]]
    s_grp, s_code = grp[sp], codes[sp]
    s_ctx = is_py[sp] & user_frame[s_code]  # where _context looks
    s_op = is_op[sp]
    decided = np.zeros(n, dtype=bool)
    # 1. the innermost span event naming a cause; its context: the next user frame out, else
    #    (for a runtime call) the next framework op out
    m = first_cause[s_code]
    hit = _first_in_group(s_grp, m >= 0, n)
    if (hit >= 0).any():
        nxt_frame = _next_in_group(s_grp, s_ctx)
        nxt_op = _next_in_group(s_grp, s_op)
        for i in np.flatnonzero(hit >= 0).tolist():
            k = int(hit[i])
            cause[i] = rules.causes[int(m[k])].id
            op[i] = names[s_code[k]]
            f, o = int(nxt_frame[k]), int(nxt_op[k])
            ctx[i] = (short[s_code[f]] if f >= 0 else "") or (
                names[s_code[o]] if o >= 0 and kind[sp[k]] == rt_code else "")
        decided |= hit >= 0
    first_frame = _first_in_group(s_grp, s_ctx, n)
    # 2. calls made during the stretch matching an inside cause: the longest (the first of
    #    equals, in overlapping's order)
    during = (start >= a[grp]) & (kind == rt_code) & ~decided[grp]
    for c in rules.causes:
        if not c.inside or c.pattern is None or not during.any():
            continue
        h = np.flatnonzero(during & hix.name_hits(c)[codes])
        if not len(h):
            continue
        h = h[np.lexsort((-dur[h], grp[h]))]
        gs, first = np.unique(grp[h], return_index=True)
        for i, k in zip(gs.tolist(), h[first].tolist()):
            cause[i] = c.id
            op[i] = names[codes[k]]
            f = int(first_frame[i])
            ctx[i] = short[s_code[f]] if f >= 0 else ""
        decided[gs] = True
        during &= ~decided[grp]
    # 3. the innermost framework op, 4. the innermost Python frame
    first_op = _first_in_group(s_grp, s_op, n)
    first_py = _first_in_group(s_grp, is_py[sp], n)
    for i in np.flatnonzero(~decided & ((first_op >= 0) | (first_py >= 0))).tolist():
        k = int(first_op[i])
        if k >= 0:
            f = int(first_frame[i])
            cause[i], op[i], ctx[i] = ("framework_op", names[s_code[k]],
                                       short[s_code[f]] if f >= 0 else "")
        else:
            cause[i], op[i] = "python", short[s_code[int(first_py[i])]]
    return cause, op, ctx


# ---------------------------------------------------------------------------------------------
# The idle section


def analyse(work: pd.DataFrame, events: pd.DataFrame, host: pd.DataFrame,
            steps_df: pd.DataFrame, window: tuple[int, int], rules: IdleRules,
            ) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the JSON ``idle`` object, the full gap table)."""
    att = rules.attribution
    min_gap = int(att.get("min_gap_ns", 50_000))
    top_n = int(att.get("top_gaps", 20))
    cover = float(att.get("cover", 0.5))
    unexplained_min = int(att.get("unexplained_min_ns", 1_000_000))
    if len(steps_df) and "_w0" in steps_df:
        windows = [(int(r["_w0"]), int(r["_w1"]), int(r["step"]))
                   for r in steps_df[["_w0", "_w1", "step"]].to_dict("records")]
    else:
        windows = [(int(window[0]), int(window[1]), -1)]
    # the gaps' columns as arrays (empty object ones, as an empty frame's, when none)
    g = gap_arrays(work, host, windows) or {c: np.zeros(0, dtype=object) for c in _GAPS_COLUMNS}
    n_gaps = len(g["start_ns"])
    if n_gaps:
        top = set(_largest(g["host_wait_ns"], top_n).tolist())
        want = g["host_wait_ns"] >= min_gap
        want[list(top)] = True
        want &= g["host_wait_ns"] > 0
    else:
        want = np.zeros(0, dtype=bool)
    # only the columns the index reads: a copy of every column of millions of host rows
    # cost over a GB on a 1M-kernel nsys export
    hosty = np.flatnonzero(strcols.isin(
        events["kind"], (schema.KIND_RUNTIME, schema.KIND_SYNC, schema.KIND_CPU_OP,
                         schema.KIND_ANNOTATION, _PYTHON_KIND)))
    hix = _HostIndex.of(events, hosty)
    # two shared str objects (an astype(object) of a text array makes one str per gap)
    cause = np.where(g["host_wait_ns"] > 0, np.array("launch_gaps", dtype=object),
                     np.array("gpu_side", dtype=object))
    op = np.full(n_gaps, "", dtype=object)
    ctx = np.full(n_gaps, "", dtype=object)
    g_start = g["start_ns"]
    g_hw = g["host_wait_ns"]
    g_kw = g["kernel_wait_ns"]
    g_tid = g["launch_tid"]
    blocking = {c.id for c in rules.causes if c.blocking}
    chosen = np.flatnonzero(want)
    # the host events overlapping every stretch, found and attributed for all at once
    a = g_start[chosen]
    b = a + g_hw[chosen]
    offsets, flat = hix.overlapping_many(a, b)
    c, o, x = attribute_many(a, b, g_tid[chosen], hix, rules, cover, offsets, flat)
    # host work between launches that the trace does not name
    c[(c == "unexplained") & (b - a < unexplained_min)] = "launch_gaps"
    cause[chosen], op[chosen], ctx[chosen] = c, o, x
    # A long GPU-side wait while the host sat in a blocking call (the queued work waited on a
    # copy or event the host drives): host wait too, attributed to that call.
    chosen = np.flatnonzero((g_kw >= min_gap) & bool(blocking))
    a = g_start[chosen] + g_hw[chosen]
    b = a + g_kw[chosen]
    offsets, flat = hix.overlapping_many(a, b)
    c, o, x = attribute_many(a, b, g_tid[chosen], hix, rules, cover, offsets, flat)
    was = cause[chosen]
    take = np.array([ci in blocking and (kw >= hw or wi in (ci, "launch_gaps", "unexplained"))
                     for ci, wi, kw, hw in zip(c.tolist(), was.tolist(), g_kw[chosen].tolist(),
                                               g_hw[chosen].tolist())], dtype=bool)
    chosen, c, o, x = chosen[take], c[take], o[take], x[take]
    cause[chosen], op[chosen], ctx[chosen] = c, o, x
    g_hw[chosen] += g_kw[chosen]
    g_kw[chosen] = 0
    # the index and the overlap lists are done with: freed before the table and its summary
    # (held to the end, they were the idle step's peak)
    del hix, offsets, flat, c, o, x, a, b, was, take, chosen
    nxt = g["next_pos"].astype(np.int64, copy=False)
    # names as str (as astype(str) writes each), one str object per distinct name: the
    # rows that follow the gaps share them (a str per gap of long kernel names cost ~0.8 GB
    # on a 1M-kernel export)
    if len(work):
        nxt_names = strcols.as_str_objects(work["name"], np.maximum(nxt, 0))
    else:
        nxt_names = np.full(len(nxt), "", dtype=object)
    # an object column of those shared str (a text column would copy each name per gap)
    nxt_col = np.where(nxt >= 0, nxt_names, np.array("", dtype=object)).astype(object, copy=False)
    del nxt_names
    # the table from the columns themselves (no copy of g's columns); cause, op and context
    # as assigned columns (str dtype), next an object column
    table = pd.DataFrame({k: g[k] for k in GAP_COLUMNS[:5]}, copy=False)
    del g
    # (the str columns from their few distinct values, not a conversion of each gap's)
    table["cause"] = strcols.text_array(cause)
    table["op"] = strcols.text_array(op)
    table["context"] = strcols.text_array(ctx)
    table["next"] = pd.Series(nxt_col, index=table.index, dtype=object)
    del cause, op, ctx, nxt_col
    return summarise(table, steps_df, rules), table


def _group_sums(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct keys, sorted; the int64 sum of ``values`` per key)."""
    if not len(keys):
        return keys[:0], np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    first = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    return k[first], np.add.reduceat(values[order].astype(np.int64), first)


def _cause_groups(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The cause rows of the gap table: a gap's host-wait part goes to its (cause, op), its
    kernel-wait part to (gpu_side, ""); per (cause, op), in order of first appearance (the
    host-wait parts before the kernel-wait ones): ns, gaps, the steps it hits materially (at
    least a quarter of its worst step's time) and its most frequent non-empty context.

    Sums by sorted codes: a groupby and a Python pass over every gap cost ~1 s at a million
    gaps."""
    hw = table["host_wait_ns"].to_numpy(dtype=np.int64)
    kw = table["kernel_wait_ns"].to_numpy(dtype=np.int64)
    step = table["step"].to_numpy(dtype=np.int64)
    h = np.flatnonzero(hw > 0)
    k = np.flatnonzero(kw > 0)
    cc, cu = pd.factorize(table["cause"])
    oc, ou = pd.factorize(table["op"])
    h = h[(cc[h] >= 0) & (oc[h] >= 0)]  # a missing cause or op is in no group (groupby's dropna)
    m = len(ou) + 1
    # group ids in order of first appearance (groupby's sort=False)
    gid_h, distinct = pd.factorize(cc[h].astype(np.int64) * m + oc[h])
    gid_h = gid_h.astype(np.int64)
    labels = [(cu[int(d) // m], ou[int(d) % m]) for d in distinct]
    index = {lab: i for i, lab in enumerate(labels)}
    if len(k) and ("gpu_side", "") not in index:
        index[("gpu_side", "")] = len(labels)
        labels.append(("gpu_side", ""))
    gid = np.concatenate((gid_h, np.full(len(k), index.get(("gpu_side", ""), 0))))
    ns = np.concatenate((hw[h], kw[k]))
    st = np.concatenate((step[h], step[k]))
    g_ids, g_ns = _group_sums(gid, ns)
    count = np.bincount(gid, minlength=len(labels))
    # per (group, step) sums of the steps >= 0
    sel = np.flatnonzero(st >= 0)
    order = sel[np.lexsort((st[sel], gid[sel]))]
    o_gid, o_st = gid[order], st[order]
    cut = np.flatnonzero(np.concatenate(([True], (o_gid[1:] != o_gid[:-1])
                                         | (o_st[1:] != o_st[:-1])))) if len(order) else order
    ps_gid, ps_step = o_gid[cut], o_st[cut]
    ps_ns = np.add.reduceat(ns[order], cut) if len(order) else np.zeros(0, dtype=np.int64)
    # contexts: the non-empty ones of the host-wait parts, per group in row order
    ctx_col = table["context"]
    if ctx_col.isna().any():
        ctx_of = _contexts_by_loop(ctx_col.to_numpy(dtype=object)[h], gid_h)
    else:
        xc, xu = pd.factorize(ctx_col)
        truthy = np.array([bool(u) for u in xu], dtype=bool)
        xh = xc[h]
        t = np.flatnonzero(truthy[xh]) if len(xh) else np.zeros(0, dtype=np.int64)
        t = t[np.argsort(gid_h[t], kind="stable")]
        ctx_of = {}
        bounds = np.flatnonzero(np.concatenate(([True], gid_h[t][1:] != gid_h[t][:-1]))) \
            if len(t) else t
        for lo, hi in zip(bounds.tolist(), [*bounds[1:].tolist(), len(t)]):
            codes = xh[t[lo:hi]]
            u, fi, cnt = np.unique(codes, return_index=True, return_counts=True)
            seen = np.argsort(fi, kind="stable")
            n_of = {xu[int(c)]: int(n) for c, n in zip(u[seen], cnt[seen])}
            # max over the set of contexts, as max(set(ctxs), key=ctxs.count) picks it (a set
            # built from the distinct values in first-appearance order iterates alike)
            ctx_of[int(gid_h[t[lo]])] = max(set(n_of), key=n_of.__getitem__)
    out = []
    ns_of = dict(zip(g_ids.tolist(), g_ns.tolist()))
    s_lo = np.searchsorted(ps_gid, np.arange(len(labels)), "left")
    s_hi = np.searchsorted(ps_gid, np.arange(len(labels)), "right")
    for i, (cid, op_name) in enumerate(labels):
        v = ps_ns[s_lo[i]:s_hi[i]]
        steps = (sorted(int(x) for x in ps_step[s_lo[i]:s_hi[i]][v >= 0.25 * v.max()])
                 if len(v) else [])
        out.append({"cause": cid, "op": op_name, "ns": int(ns_of.get(i, 0)),
                    "gaps": int(count[i]), "steps": steps, "context": ctx_of.get(i, "")})
    return out


def _contexts_by_loop(ctx: np.ndarray, gid: np.ndarray) -> dict[int, Any]:
    """Per group, its most frequent truthy context, by the loop (a context column with
    missing values: NaN is truthy)."""
    out: dict[int, Any] = {}
    for g in np.unique(gid).tolist():
        ctxs = [c for c in ctx[gid == g] if c]
        if ctxs:
            out[g] = max(set(ctxs), key=ctxs.count)
    return out


def summarise(table: pd.DataFrame, steps_df: pd.DataFrame, rules: IdleRules) -> dict[str, Any]:
    """The JSON ``idle`` object from the gap table."""
    top_n = int(rules.attribution.get("top_gaps", 20))
    host_wait = int(table["host_wait_ns"].sum()) if len(table) else 0
    kernel_wait = int(table["kernel_wait_ns"].sum()) if len(table) else 0
    idle = host_wait + kernel_wait
    causes: list[dict[str, Any]] = []
    for grp in (_cause_groups(table) if len(table) else []):
        cid = grp["cause"]
        desc = rules.describe(str(cid))
        causes.append({"cause": str(cid), "op": str(grp["op"]), "ns": grp["ns"],
                       "share_of_idle": round(float(grp["ns"]) / idle, 6) if idle else 0.0,
                       "gaps": grp["gaps"], "steps": grp["steps"], "context": grp["context"],
                       "title": desc.title if desc else str(cid)})
    causes.sort(key=lambda c: -c["ns"])
    largest = table.iloc[_largest(table["dur_ns"].to_numpy(), top_n)] if len(table) else table
    gap_rows = [{"start_ns": int(r["start_ns"]), "dur_ns": int(r["dur_ns"]),
                 "host_wait_ns": int(r["host_wait_ns"]), "kernel_wait_ns": int(r["kernel_wait_ns"]),
                 "step": int(r["step"]), "cause": r["cause"], "op": r["op"], "next": r["next"]}
                for r in largest.to_dict("records")]
    by_step = []
    if len(steps_df) and len(table):
        step = table["step"].to_numpy(dtype=np.int64)
        keys, host = _group_sums(step, table["host_wait_ns"].to_numpy(dtype=np.int64))
        _, kern = _group_sums(step, table["kernel_wait_ns"].to_numpy(dtype=np.int64))
        host_of = dict(zip(keys.tolist(), host.tolist()))
        kern_of = dict(zip(keys.tolist(), kern.tolist()))
        for r in steps_df[["step", "phase"]].to_dict("records"):
            s = int(r["step"])
            hw_s = int(host_of.get(s, 0))
            kw_s = int(kern_of.get(s, 0))
            by_step.append({"step": s, "phase": r["phase"], "host_wait_ns": hw_s,
                            "kernel_wait_ns": kw_s})
    by_phase: dict[str, dict[str, int]] = {}
    for r in by_step:
        p = by_phase.setdefault(str(r["phase"]), {"host_wait_ns": 0, "kernel_wait_ns": 0})
        p["host_wait_ns"] += r["host_wait_ns"]
        p["kernel_wait_ns"] += r["kernel_wait_ns"]
    return {"idle_ns": idle, "host_wait_ns": host_wait, "kernel_wait_ns": kernel_wait,
            "host_wait_share": round(host_wait / idle, 6) if idle else 0.0,
            "kernel_wait_share": round(kernel_wait / idle, 6) if idle else 0.0,
            "gap_count": int(len(table)),
            "min_gap_ns": int(rules.attribution.get("min_gap_ns", 50_000)),
            "causes": causes, "gaps": gap_rows, "by_step": by_step, "by_phase": by_phase}


# ---------------------------------------------------------------------------------------------
# Step outliers, advice, wording


def step_outliers(steps_df: pd.DataFrame, table: pd.DataFrame, rules: IdleRules) -> Check:
    """Steps far slower than their phase's typical step while doing the same GPU work."""
    cfg = rules.step_outliers
    factor = float(cfg.get("factor", 1.5))
    ktol = float(cfg.get("kernel_tolerance", 0.10))
    btol = float(cfg.get("busy_tolerance", 0.25))
    min_steps = int(cfg.get("min_steps", 3))
    if steps_df.empty:
        return Check("step_outliers", SKIP, "no step ranges: no per-step comparison", {})
    flagged: list[dict[str, Any]] = []
    compared = 0
    waits_of: dict[int, np.ndarray] | None = None  # step -> its host-wait gaps' positions
    for phase, grp in steps_df.groupby("phase", sort=False):
        if len(grp) < min_steps:
            continue
        compared += len(grp)
        typical = float(np.percentile(grp["wall_ns"], 25))
        k_med = float(grp["kernels"].median())
        b_med = float(grp["gpu_busy_ns"].median())
        for r in grp.to_dict("records"):
            same = (abs(r["kernels"] - k_med) <= ktol * max(k_med, 1)
                    and abs(r["gpu_busy_ns"] - b_med) <= btol * max(b_med, 1))
            if not same or r["wall_ns"] <= factor * typical:
                continue
            extra = int(r["wall_ns"] - typical)
            if waits_of is None:
                # the gaps with host wait, by step, found once (a mask of the whole table
                # per slow step cost ~50 ms each at a million gaps)
                waits = np.flatnonzero((table["host_wait_ns"] > 0).to_numpy())
                of_step = table["step"].to_numpy()[waits]
                order = np.argsort(of_step, kind="stable")
                keys, first = np.unique(of_step[order], return_index=True)
                waits_of = dict(zip(keys.tolist(), np.split(waits[order], first[1:])))
                pairs = _Pairs(table, waits)
            mine = waits_of.get(r["step"], waits[:0])
            cause, op, cause_ns = pairs.top(mine, extra)
            flagged.append({"step": int(r["step"]), "phase": str(phase),
                            "wall_ns": int(r["wall_ns"]), "typical_ns": int(typical),
                            "extra_ns": extra, "cause": str(cause), "op": str(op),
                            "cause_ns": cause_ns})
    if not compared:
        return Check("step_outliers", SKIP,
                     f"fewer than {min_steps} steps per phase: no per-step comparison", {})
    ev = {"factor": factor, "outliers": flagged,
          "steps": [f["step"] for f in flagged]}
    if not flagged:
        return Check("step_outliers", PASS, f"no step is slower than {factor:g}x its phase's "
                     "typical step with the same GPU work", ev)
    steps = [f["step"] for f in flagged]
    extra = sum(f["extra_ns"] for f in flagged)
    causes: dict[str, int] = {}
    for f in flagged:
        key = f"{f['op'] or f['cause']}"
        causes[key] = causes.get(key, 0) + f["cause_ns"]
    main = max(causes, key=lambda k: causes[k])
    why = (f"{_ms(causes[main])} ms of the {_ms(extra)} ms extra is {main}"
           if causes[main] <= extra else
           f"{_ms(extra)} ms extra; the largest cause in them is {main} ({_ms(causes[main])} ms)")
    ev["cause"] = main
    return Check("step_outliers", WARN,
                 f"steps {step_ranges(steps)} take {_ms(min(f['wall_ns'] for f in flagged))}-"
                 f"{_ms(max(f['wall_ns'] for f in flagged))} ms against a typical "
                 f"{_ms(flagged[0]['typical_ns'])} ms with the same GPU work; {why}", ev)


class _Pairs:
    """The (cause, op) pairs of some gaps of the gap table, coded once: per set of gaps, the
    host wait summed per pair as ``groupby(["cause", "op"]).sum()`` gives it (pairs in
    sorted order), without a copy of the gaps' rows and a groupby of their strings."""

    def __init__(self, table: pd.DataFrame, rows: np.ndarray) -> None:
        self.hw = table["host_wait_ns"].to_numpy(dtype=np.int64)
        self.key = np.zeros(len(table), dtype=np.int64)
        self.text: list[np.ndarray] = []
        width = 1
        for c in ("cause", "op"):
            codes, values = strcols.codes_values(table[c])
            rank = np.empty(len(values), dtype=np.int64)  # each value's place in sorted order
            rank[np.argsort(values.astype(str), kind="stable")] = np.arange(len(values))
            sorted_values = np.empty(len(values), dtype=object)
            sorted_values[rank] = values
            width = len(values) + 1
            self.key = self.key * width + rank[np.maximum(codes, 0)]
            self.text.append(sorted_values)
        self.width = width

    def top(self, rows: np.ndarray, extra: int) -> tuple[str, str, int]:
        """(cause, op, host wait) of the pair of ``rows`` that explains a slow step: the
        largest specific one when it holds half of ``extra``, else the largest."""
        if not len(rows):
            return "unexplained", "", 0
        keys, inv = np.unique(self.key[rows], return_inverse=True)  # the groupby's order
        sums = np.zeros(len(keys), dtype=np.int64)
        np.add.at(sums, inv, self.hw[rows])
        order = pd.Series(sums).sort_values(ascending=False).index.to_numpy()
        causes = self.text[0][keys[order] // self.width]
        specific = np.flatnonzero([c not in ("launch_gaps", "gpu_side") for c in causes])
        at = (order[specific[0]] if len(specific) and sums[order[specific[0]]] >= 0.5 * extra
              else order[0])
        return (str(self.text[0][keys[at] // self.width]), str(self.text[1][keys[at] % self.width]),
                int(sums[at]))


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.1f}" if ns < 1e9 else f"{ns / 1e6:.0f}"


def step_ranges(steps: list[int]) -> str:
    """'3-7, 9' for steps [3, 4, 5, 6, 7, 9]."""
    out: list[str] = []
    for s in sorted(steps):
        if out and out[-1].split("-")[-1] == str(s - 1):
            out[-1] = out[-1].split("-")[0] + f"-{s}"
        else:
            out.append(str(s))
    return ", ".join(out)


def recommendations(idle: dict[str, Any], rules: IdleRules) -> list[Recommendation]:
    """One card per specific cause holding at least advice_min_share of idle, largest first."""
    min_share = float(rules.attribution.get("advice_min_share", 0.05))
    out: list[Recommendation] = []
    seen: set[str] = set()
    for c in idle.get("causes", []):
        cid = c["cause"]
        if cid in ("launch_gaps", "gpu_side") or c["share_of_idle"] < min_share or cid in seen:
            continue
        desc = rules.describe(cid)
        if desc is None or not desc.advice:
            continue
        same = [x for x in idle["causes"] if x["cause"] == cid]
        ns = sum(x["ns"] for x in same)
        share = sum(x["share_of_idle"] for x in same)
        steps = c["steps"]  # those of its largest row (the others are the op's small gaps)
        where = c["op"] + (f" in {c['context']}" if c.get("context") else "")
        big = [g["dur_ns"] for g in idle.get("gaps", []) if g["cause"] == cid
               and g["dur_ns"] >= 1_000_000]
        stalls = (f"; {len(big)} stall(s) of {_ms(min(big))}-{_ms(max(big))} ms" if len(big) > 1
                  else f"; one stall of {_ms(big[0])} ms" if big else "")
        evidence = (f"{_ms(ns)} ms ({share:.0%} of GPU idle) in {sum(x['gaps'] for x in same)} "
                    f"gap(s): {desc.title}" + (f", {where}" if where else "") + stalls
                    + (f"; steps {step_ranges(steps)}" if steps else ""))
        seen.add(cid)
        out.append(Recommendation(id=f"idle.{cid}", title=desc.rec_title or desc.title,
                                  evidence=evidence, advice=desc.advice,
                                  kernels=tuple(x["op"] for x in same if x["op"])[:3],
                                  bottleneck="overhead"))
    return out


def evidence_lines(idle: dict[str, Any], rules: IdleRules) -> list[str]:
    """Verdict evidence: the split and the largest specific cause."""
    idle_ns = idle.get("idle_ns") or 0
    if not idle_ns:
        return []
    lines = [f"of {_ms(idle_ns)} ms GPU idle, {_ms(idle['host_wait_ns'])} ms "
             f"({idle['host_wait_share']:.0%}) is host wait and {_ms(idle['kernel_wait_ns'])} ms "
             f"({idle['kernel_wait_share']:.0%}) GPU-side gaps"]
    spec = [c for c in idle["causes"] if c["cause"] not in ("launch_gaps", "gpu_side")]
    if spec and spec[0]["share_of_idle"] >= float(rules.attribution.get("advice_min_share", 0.05)):
        c = spec[0]
        desc = rules.describe(c["cause"])
        lines.append(f"largest cause: {desc.title if desc else c['cause']} in {c['op'] or '?'}"
                     + (f" ({c['context']})" if c.get("context") else "")
                     + f", {_ms(c['ns'])} ms = {c['share_of_idle']:.0%} of idle"
                     + (f", steps {step_ranges(c['steps'])}" if c["steps"] else ""))
    return lines


def merge_recommendations(recs: list[Recommendation], idle: dict[str, Any], rules: IdleRules,
                          verdict: str, window_ns: int) -> list[Recommendation]:
    """Cause cards first when the verdict is overhead (else those worth 5% of the window);
    the CUDA-graph card only when launch gaps are a real share of idle time."""
    cards = recommendations(idle, rules)
    if verdict != "overhead":
        cards = [c for c in cards
                 if _card_ns(c, idle) >= 0.05 * max(window_ns, 1)]
    graphs_min = float(rules.attribution.get("graphs_min_share", 0.25))
    # Launch gaps against the window without the specific stalls (what graphs can remove).
    stalls = sum(c["ns"] for c in idle.get("causes", []) if c["cause"] not in GENERIC)
    launch = sum(c["ns"] for c in idle.get("causes", []) if c["cause"] == "launch_gaps")
    rest = max(window_ns - stalls, 1)
    kept = [r for r in recs if not (r.id == "overhead.cuda_graphs" and idle.get("idle_ns")
                                    and launch < graphs_min * rest)]
    return cards + kept


def _card_ns(card: Recommendation, idle: dict[str, Any]) -> int:
    cid = card.id.removeprefix("idle.")
    return sum(c["ns"] for c in idle.get("causes", []) if c["cause"] == cid)


def cause_titles(rules: IdleRules) -> dict[str, str]:
    """cause id -> its human title, for every shipped, user and generic cause."""
    out = {c.id: c.title for c in rules.causes}
    out.update({cid: c.title for cid, c in rules.generic.items()})
    return out
