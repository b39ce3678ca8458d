"""Serving-engine step annotations: which user ranges are steps, and the batch each one ran.

``parse(name)`` is a pure function from an annotation name to a :class:`Composition` (or None
when the name is no step annotation). The formats are data in ``rules/engines.toml``: vLLM
``execute_context_N(T)_generation_M(T)`` and the detailed ``execute_T_context_N(sq..sk..)``
form, SGLang ``step[DECODE bs=N]`` / ``step[EXTEND bs=N toks=T]``, TensorRT-LLM
``_forward_step: N ctx reqs, M gen reqs``, ``ProfilerStep#N``, torch.compile regions and
profdiag's own ``prefill`` / ``decode_step_N``.

``find_steps(annotations)`` picks the step ranges of a trace (the lowest tier present, outermost
ranges) and merges the composition of ranges nested in each step (SGLang writes ``step[...]``
inside the TraceLens ``execute_...`` range).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import _toml as toml, strcols
from .errors import RulesError
from .rules_path import rules_dir

MODES = ("prefill", "decode", "mixed")
# Output fields a form may set; kv_tokens and requests are derived when not set.
FIELDS = ("prefill_tokens", "decode_tokens", "prefill_kv", "decode_kv", "prefill_requests",
          "decode_requests", "requests")
# The composition columns a steps table carries (nullable Int64) plus engine/form.
STEP_COLUMNS = ("prefill_tokens", "decode_tokens", "kv_tokens", "requests")
# Also per step: tokens written to the KV cache, from the KV-write kernels' grids.
KV_WRITTEN = "kv_written_tokens"
_KV_PAIR = re.compile(r"(\w+)=(\d+)")


@dataclass(frozen=True)
class Composition:
    """The batch one step ran, as its annotation states it (None: not stated)."""

    engine: str
    form: str
    mode: str | None = None  # prefill | decode | mixed, None when the name does not say
    prefill_tokens: int | None = None
    decode_tokens: int | None = None
    kv_tokens: int | None = None  # KV-cache tokens read (context + new), all requests
    requests: int | None = None
    prefill_requests: int | None = None
    decode_requests: int | None = None
    tier: int = 1
    ambiguous_engine: bool = False
    dummy: bool = False  # a dummy forward (graph capture), not a served step

    def to_row(self) -> dict[str, Any]:
        return {"engine": self.engine, "prefill_tokens": self.prefill_tokens,
                "decode_tokens": self.decode_tokens, "kv_tokens": self.kv_tokens,
                "requests": self.requests}


@dataclass(frozen=True)
class Form:
    id: str
    engine: str
    tier: int
    pattern: re.Pattern[str]
    keyvalues: bool = False
    mode: str | None = None
    ambiguous_engine: bool = False
    dummy: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    examples: tuple[dict[str, Any], ...] = ()
    source: str = ""


def _load(path: Path) -> tuple[Form, ...]:
    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, toml.TOMLDecodeError) as exc:
        raise RulesError(f"cannot read engine step forms: {exc}", str(path)) from None
    forms = []
    for i, f in enumerate(data.get("form", [])):
        where = f"{path}: form {f.get('id', i)}"
        try:
            pattern = re.compile(f["pattern"])
            mode = f.get("mode")
            if mode is not None and mode not in MODES:
                raise RulesError(f"mode must be one of {MODES}, not {mode!r}", where)
            fields = dict(f.get("fields", {}))
            bad = set(fields) - set(FIELDS)
            if bad:
                raise RulesError(f"unknown fields {sorted(bad)}", where)
            forms.append(Form(id=str(f["id"]), engine=str(f["engine"]), tier=int(f["tier"]),
                              pattern=pattern, keyvalues=bool(f.get("keyvalues", False)),
                              mode=mode, ambiguous_engine=bool(f.get("ambiguous_engine", False)),
                              dummy=bool(f.get("dummy", False)),
                              fields=fields, examples=tuple(f.get("example", [])),
                              source=str(f.get("source", ""))))
        except KeyError as exc:
            raise RulesError(f"missing key {exc}", where) from None
        except re.error as exc:
            raise RulesError(f"bad pattern: {exc}", where) from None
    return tuple(forms)


@lru_cache(maxsize=4)
def forms(path: str | None = None) -> tuple[Form, ...]:
    """The step-annotation forms of ``rules/engines.toml`` (or ``path``), in file order."""
    return _load(Path(path) if path else rules_dir() / "engines.toml")


@lru_cache(maxsize=4)
def kv_write_rule(path: str | None = None) -> tuple[re.Pattern[str], tuple[str, ...], tuple[str, ...]]:
    """(pattern, examples, not_examples) of the KV-cache write kernels ([kv_write])."""
    file = Path(path) if path else rules_dir() / "engines.toml"
    try:
        kv = toml.loads(file.read_text(encoding="utf-8")).get("kv_write", {})
        return (re.compile(kv["pattern"]), tuple(kv.get("examples", ())),
                tuple(kv.get("not_examples", ())))
    except (OSError, toml.TOMLDecodeError, KeyError, re.error) as exc:
        raise RulesError(f"cannot read [kv_write]: {exc}", str(file)) from None


def kv_write_mask(names: pd.Series, path: str | None = None) -> np.ndarray:
    """True for KV-cache write kernels (one regex search per distinct name)."""
    return strcols.search(names, kv_write_rule(path)[0])


def kv_write_tokens(is_kv_write: np.ndarray, grids: pd.Series) -> int | None:
    """Tokens one step wrote to the KV cache: grid x of its KV-write kernels (``is_kv_write``,
    from kv_write_mask), their median over the layers; None without such kernels or grids
    (CUDA-graph replays record none)."""
    if not len(grids) or not is_kv_write.any():
        return None
    g = grids[is_kv_write].dropna().astype(str)
    xs = [int(x) for x in (v.split(",")[0] for v in g) if x.isdigit()]
    return int(np.median(xs)) if xs else None


def _value(expr: Any, groups: dict[str, int]) -> int | None:
    if isinstance(expr, bool):
        raise RulesError(f"field expression {expr!r} is not a group, sum or integer")
    if isinstance(expr, int):
        return expr
    text = str(expr)
    if "|" in text:
        for alt in text.split("|"):
            v = _value(alt.strip(), groups)
            if v is not None:
                return v
        return None
    if "+" in text:
        parts = [_value(p.strip(), groups) for p in text.split("+")]
        return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)
    if text.lstrip("-").isdigit():
        return int(text)
    return groups.get(text)


def _derive_mode(c: dict[str, int | None]) -> str | None:
    p, d = c["prefill_tokens"], c["decode_tokens"]
    if p is None:
        p = c["prefill_requests"]
    if d is None:
        d = c["decode_requests"]
    req = c["requests"]
    # Every request is of the stated kind: the other kind has none.
    if d is None and p is not None and c["prefill_requests"] is not None and req is not None \
            and c["prefill_requests"] == req:
        d = 0
    if p is None and d is not None and c["decode_requests"] is not None and req is not None \
            and c["decode_requests"] == req:
        p = 0
    if p is None or d is None:
        return None
    if p > 0 and d > 0:
        return "mixed"
    if p > 0:
        return "prefill"
    if d > 0:
        return "decode"
    return None


def _compose(form: Form, m: re.Match[str], name: str) -> Composition:
    groups: dict[str, int] = {}
    if form.keyvalues:
        groups.update({k: int(v) for k, v in _KV_PAIR.findall(name)})
    groups.update({k: int(v) for k, v in m.groupdict().items()
                   if v is not None and v.isdigit()})
    c: dict[str, int | None] = {}
    for f in FIELDS:
        c[f] = _value(form.fields[f], groups) if f in form.fields else groups.get(f)
    if c["requests"] is None and c["prefill_requests"] is not None \
            and c["decode_requests"] is not None:
        c["requests"] = c["prefill_requests"] + c["decode_requests"]
    kv = None
    if c["prefill_kv"] is not None or c["decode_kv"] is not None:
        kv = (c["prefill_kv"] or 0) + (c["decode_kv"] or 0)
    mode = form.mode or _derive_mode(c)
    return Composition(engine=form.engine, form=form.id, mode=mode,
                       prefill_tokens=c["prefill_tokens"], decode_tokens=c["decode_tokens"],
                       kv_tokens=kv, requests=c["requests"],
                       prefill_requests=c["prefill_requests"],
                       decode_requests=c["decode_requests"], tier=form.tier,
                       ambiguous_engine=form.ambiguous_engine, dummy=form.dummy)


def parse(name: str, path: str | None = None) -> Composition | None:
    """Composition stated by one annotation name; None when it is no step annotation."""
    return _parse_cached(str(name), path)


@lru_cache(maxsize=4096)
def _parse_cached(name: str, path: str | None) -> Composition | None:
    for form in forms(path):
        m = form.pattern.match(name)
        if m:
            return _compose(form, m, name)
    return None


def iter_examples(path: str | None = None) -> Iterator[tuple[Form, dict[str, Any]]]:
    """(form, example) pairs of the shipped (or given) forms file, for the tests."""
    for form in forms(path):
        for ex in form.examples:
            yield form, ex


def merge(outer: Composition, nested: list[Composition]) -> Composition:
    """``outer`` with the fields it leaves unstated taken from ranges nested in it."""
    if not nested:
        return outer
    out = outer
    for c in nested:
        updates = {f: getattr(c, f) for f in ("mode", *STEP_COLUMNS, "prefill_requests",
                                               "decode_requests")
                   if getattr(out, f) is None and getattr(c, f) is not None}
        if out.ambiguous_engine and not c.ambiguous_engine and c.tier == 1:
            updates["engine"] = c.engine
            updates["ambiguous_engine"] = False
        if updates:
            out = replace(out, **updates)
    return out


def find_steps(annotations: pd.DataFrame, tiers: tuple[int, ...] = (1, 2),
               path: str | None = None) -> pd.DataFrame:
    """Step ranges of the lowest tier in ``tiers`` that the trace has, with their composition.

    Columns: step, name, start_ns, end_ns, engine, mode (the annotation's, or None), and the
    nullable Int64 composition columns prefill_tokens, decode_tokens, kv_tokens, requests.
    Ranges nested in a step are not steps; those of tier 1 fill in what the step's own name
    leaves unstated.
    """
    cols = ["step", "name", "start_ns", "end_ns", "engine", "annotated_mode", *STEP_COLUMNS]
    if annotations.empty:
        return _typed(pd.DataFrame(columns=cols))
    # one parse per distinct name (the compact column's categories); a missing name is
    # parsed as the text "nan", as its astype(str) reads
    comps = pd.Series(strcols.per_value(annotations["name"], lambda n: parse(n, path),
                                        parse("nan", path)),
                      index=annotations.index, dtype=object)
    have = comps.notna().to_numpy()
    if not have.any():
        return _typed(pd.DataFrame(columns=cols))
    tier = np.array([c.tier if c is not None else 99 for c in comps], dtype=np.int64)
    present = sorted(set(tier[have].tolist()) & set(tiers))
    if not present:
        return _typed(pd.DataFrame(columns=cols))
    best = present[0]
    ann = annotations.assign(_comp=comps.to_numpy(), _tier=tier)
    cand = ann[ann["_tier"] == best].sort_values("start_ns", kind="stable")
    served = ~cand["_comp"].map(lambda x: x.dummy).to_numpy(dtype=bool)
    if served.any():  # graph captures are steps only in a capture-only trace
        cand = cand[served]
    helpers = ann[ann["_tier"] == 1].sort_values("start_ns", kind="stable")
    h_start = helpers["start_ns"].to_numpy()
    h_end = (helpers["start_ns"] + helpers["dur_ns"]).to_numpy()
    h_comp = helpers["_comp"].to_numpy()
    rows: list[dict[str, Any]] = []
    cur_end = -1
    for s, d, n, c in zip(cand["start_ns"].to_numpy(), cand["dur_ns"].to_numpy(),
                          cand["name"].astype(str).to_numpy(), cand["_comp"].to_numpy()):
        e = s + d
        if s < cur_end:  # nested inside the previous step
            continue
        lo, hi = np.searchsorted(h_start, s, "left"), np.searchsorted(h_start, e, "right")
        nested = [h_comp[j] for j in range(lo, hi) if h_end[j] <= e and h_comp[j] is not c]
        m = merge(c, nested)
        rows.append({"step": len(rows), "name": n, "start_ns": int(s), "end_ns": int(e),
                     "engine": m.engine, "annotated_mode": m.mode,
                     **{k: getattr(m, k) for k in STEP_COLUMNS}})
        cur_end = e
    return _typed(pd.DataFrame(rows, columns=cols))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for c in STEP_COLUMNS:
        df[c] = pd.array(df[c].tolist(), dtype="Int64") if len(df) else pd.array([], "Int64")
    for c in ("step", "start_ns", "end_ns"):
        df[c] = df[c].astype("int64")
    return df


def trace_mode(step_modes: list[str]) -> str | None:
    """The trace's mode from its steps' modes: one mode, else mixed (None when no steps)."""
    known = [m for m in step_modes if m in MODES]
    if not known:
        return None
    return known[0] if len(set(known)) == 1 else "mixed"


def _int_or_none(v: Any) -> int | None:
    if v is None or v is pd.NA:
        return None
    try:
        if isinstance(v, float) and v != v:
            return None
        return int(v)
    except (TypeError, ValueError):
        return None


def composition_of(step: Any) -> dict[str, Any]:
    """engine and composition columns of one row of find_steps (absent: None)."""
    get = step.get if hasattr(step, "get") else (lambda k, d=None: d)
    engine = get("engine", None)
    out: dict[str, Any] = {"engine": engine if isinstance(engine, str) and engine else None}
    for c in STEP_COLUMNS:
        out[c] = _int_or_none(get(c, None))
    return out


def typed_steps(df: pd.DataFrame) -> pd.DataFrame:
    """The composition columns of a steps table as nullable Int64 (engine as object)."""
    for c in (*STEP_COLUMNS, KV_WRITTEN):
        if c not in df.columns:
            df[c] = None
        df[c] = pd.array([_int_or_none(v) for v in df[c].tolist()], dtype="Int64")
    if "engine" not in df.columns:
        df["engine"] = None
    df["engine"] = df["engine"].astype(object).where(df["engine"].notna(), None)
    return df


def describe(step: Any) -> str:
    """One line for a step's stated composition: engine, tokens, requests, KV."""
    c = composition_of(step)
    parts = []
    p, d = c["prefill_tokens"], c["decode_tokens"]
    if p is not None and d is not None:
        parts.append(f"{p} prefill + {d} decode tokens")
    elif p is not None:
        parts.append(f"{p} prefill tokens")
    elif d is not None:
        parts.append(f"{d} decode tokens")
    if c["requests"] is not None:
        parts.append(f"{c['requests']} request{'' if c['requests'] == 1 else 's'}")
    if c["kv_tokens"] is not None:
        parts.append(f"{c['kv_tokens']} KV tokens read")
    name = str(step.get("name", "")) if hasattr(step, "get") else ""
    short = name if len(name) <= 60 else name[:57] + "..."
    return (f"{c['engine'] or 'step'} annotation {short!r}"
            + (f": {', '.join(parts)}" if parts else ""))


def step_mode(step: Any, detected: Any) -> Any:
    """The step's mode: the annotation's when it states one, else ``detected`` (a ModeResult).

    A chunked-prefill step (prefill and decode tokens together) is ``mixed``.
    """
    stated = step.get("annotated_mode") if hasattr(step, "get") else None
    if stated not in MODES:
        return detected
    text = describe(step) + (" (chunked prefill: prefill and decode in one batch)"
                             if stated == "mixed" else "")
    if detected.value == stated:
        return replace(detected, value=stated, confidence=max(0.97, detected.confidence),
                       evidence=[text, *detected.evidence])
    return replace(detected, value=stated, confidence=0.9,
                   evidence=[text, *(f"(disagrees: {e})" if not e.startswith("(") else e
                                     for e in detected.evidence[:2])])


def batch_tokens(steps: pd.DataFrame) -> int | None:
    """Median tokens per step (prefill + decode) the steps' annotations state, else None."""
    if steps.empty or "prefill_tokens" not in steps.columns:
        return None
    p, d = steps["prefill_tokens"], steps["decode_tokens"]
    known = p.notna() | d.notna()
    if not known.any():
        return None
    tok = (p.fillna(0) + d.fillna(0))[known]
    tok = tok[tok > 0]
    return int(tok.median()) if len(tok) else None
