"""Block structure from the trace: what each decoder layer runs, and so how many GEMMs to expect.

The layers are found by their anchor: one main attention call (or linear-attention / Mamba
mixer kernel) per layer. The GEMMs between two anchors are the previous layer's output side
(o projection, MLP or MoE) followed by the next layer's input side (q/k/v); the length of the
input side is the common suffix of the gap before the first layer and the gaps between
layers. Each layer's GEMMs are then named from their order and, when the trace has shapes,
from (K, N) against the config: fused QKV (N = (heads + 2 kv_heads) x head_dim), separate
q/k/v, fused gate/up (N = 2 x ffn), separate gate/up, down, MoE router and expert GEMMs (the
kernel rules' ``role = "moe_expert"``), MLA's low-rank projections. A GEMM that fits no role
(a projection run twice, a per-forward RoPE ``bmm``) is an extra call.

The expected count is the structure observed (its GEMMs less the extras) x layers + lm_head,
per forward and per phase; the config is checked against it, never the reverse.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .. import strcols
from ..classify import GEMM_CLASSES
from ..gemm import dims_of, weight_kn
from ..modelspec import ModelSpec

_ANCHOR_CLASSES = ("attention", "linear_attention")
_TP_DEGREES = (1, 2, 4, 8, 16, 32)
# Attention kernels that name a sliding-window (local) variant (TRT-LLM-gen FMHA, FlashInfer).
_MLA_KERNEL = re.compile(r"(?i)(?:^|[^a-z])mla(?:_|::|kernel|[^a-z]|$)|BatchMLA|FlashMLA")
_SLIDING = re.compile(r"Sliding|sliding_window|SlidingWindow|_swa_|LocalAttention", re.I)


@lru_cache(maxsize=4096)
def _sliding(name: str) -> bool:
    """The anchor kernel's name says sliding window; searched once per distinct name (every
    layer of every step has one: a case-insensitive search of a long kernel name each)."""
    return bool(_SLIDING.search(name))


@dataclass
class Gemm:
    sig: str  # op + shapes with the token dimension M masked, else the kernel name
    name: str
    k: int | None
    n: int | None
    role: str  # "" (dense) or the rule's role (moe_expert)
    dtype: str
    label: str = ""  # qkv, q, k, v, o, gate_up, gate, up, down, router, experts, extra...


@dataclass
class Layer:
    anchor: str  # "attention" | "mixer"
    pre: list[Gemm] = field(default_factory=list)
    post: list[Gemm] = field(default_factory=list)
    sliding: bool = False  # its attention kernel is a sliding-window (local) variant

    @property
    def gemms(self) -> list[Gemm]:
        return self.pre + self.post


@dataclass
class Forward:
    phase: str
    before: list[Gemm]  # GEMMs before the first layer's input side (extras, e.g. HF RoPE bmm)
    layers: list[Layer]
    tail: list[Gemm]  # after the last layer's output side: lm_head (and extras)

    @property
    def gemm_count(self) -> int:
        return len(self.before) + sum(len(ly.gemms) for ly in self.layers) + len(self.tail)


def raw_config(spec: ModelSpec) -> dict[str, Any]:
    """The Hugging Face config behind ``spec`` (for the MoE / MLA / hybrid fields), or {}."""
    if spec.source != "config" or not spec.path:
        return {}
    try:
        data = orjson.loads(Path(spec.path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    text = data.get("text_config")
    return {**data, **text} if isinstance(text, dict) else data


def signature(op: Any, dims_json: Any, name: str) -> str:
    """op and shapes with M (the token dimension) masked; the kernel name without shapes."""
    if not isinstance(op, str) or not isinstance(dims_json, str):
        return name
    try:
        dims = orjson.loads(dims_json)
    except orjson.JSONDecodeError:
        return f"{op} {dims_json}"
    if op in ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "aten::_scaled_mm"):
        i = 1 if op == "aten::addmm" and len(dims) > 2 else 0
        if isinstance(dims, list) and len(dims) > i and isinstance(dims[i], list) and dims[i]:
            dims = [d for d in dims]
            dims[i] = ["M", *dims[i][1:]]
            if op == "aten::addmm" and isinstance(dims[0], list) and len(dims[0]) == 2:
                dims[0] = ["M", dims[0][1]]
    return f"{op} {orjson.dumps(dims).decode()}".replace('"M"', "M")


def gemm_calls(work: pd.DataFrame) -> pd.DataFrame:
    """One row per GEMM call, in GPU order.

    The kernels of one op call (External id) are one call (cuBLAS multi-kernel algorithms),
    except MoE expert GEMMs: an engine's ``moe_forward`` op launches its gate/up and down
    expert GEMMs under one id, and each is a GEMM of the block.
    """
    cols = ["name", "op_name", "input_dims", "start_ns", "launch_ns", "dur_ns", "step", "role",
            "kernel_dtype"]
    # the GEMM rows of only the columns read (a row filter of the whole work table copies
    # every column)
    g = work.loc[strcols.isin(work["class"], GEMM_CLASSES),
                 [c for c in (*cols, "external_id") if c in work.columns]]
    g = g.assign(**{c: g[c] if c in g else pd.NA for c in ("step", "role", "kernel_dtype")})
    expert = strcols.isin(g["role"], ("moe_expert",))
    with_ext = g[g["external_id"].notna() & ~expert]
    merged = with_ext.groupby("external_id", sort=False).agg(
        name=("name", "first"), op_name=("op_name", "first"), input_dims=("input_dims", "first"),
        start_ns=("start_ns", "min"), launch_ns=("launch_ns", "min"), dur_ns=("dur_ns", "sum"),
        step=("step", "first"), role=("role", "first"), kernel_dtype=("kernel_dtype", "first"))
    rest = g[g["external_id"].isna() | expert][cols]
    calls = pd.concat([merged.reset_index(drop=True), rest.reset_index(drop=True)],
                      ignore_index=True)
    return calls.sort_values("start_ns", ignore_index=True)


def anchors(work: pd.DataFrame) -> pd.DataFrame:
    """One row per layer anchor (main attention call or mixer kernel): start_ns, step, kind."""
    cls, none = work["class"], np.zeros(len(work), dtype=bool)
    att = work[strcols.isin(cls, ("attention",)) & ~(
        strcols.isin(work["role"], ("attention_aux",)) if "role" in work else none)]
    mix = work[strcols.isin(cls, ("linear_attention",)) & (
        strcols.isin(work["role"], ("mixer",)) if "role" in work else none)]
    parts = []
    for df, kind in ((att, "attention"), (mix, "mixer")):
        if df.empty:
            continue
        step = df["step"] if "step" in df else pd.Series(-1, index=df.index)
        df = df.assign(step=step, kind=kind)
        linked = df[df["external_id"].notna()].groupby("external_id", sort=False).agg(
            start_ns=("start_ns", "min"), step=("step", "first"), kind=("kind", "first"),
            name=("name", "first")).assign(linked=True)
        parts += [linked.reset_index(drop=True),
                  df[df["external_id"].isna()][["start_ns", "step", "kind", "name"]].assign(
                      linked=False)]
    if not parts:
        return pd.DataFrame(columns=["start_ns", "step", "kind", "name"])
    return pd.concat(parts, ignore_index=True).sort_values("start_ns", ignore_index=True)


def _missing(v: Any) -> bool:
    """A table cell with no value (None, NaN, <NA>)."""
    return bool(pd.isna(v))


def _gemm_fields(role: Any, op: Any, dims: Any, name: Any, dtype: Any
                 ) -> tuple[str, str, int | None, int | None, str, str]:
    """(sig, name, k, n, role, dtype) of a GEMM call with these values (missing: pd.NA)."""
    expert = not _missing(role) and str(role) == "moe_expert"
    kn = None if expert else weight_kn(op, dims_of(dims))
    # An expert GEMM carries its MoE op's shapes (tokens x hidden), not its own: use its name.
    sig = str(name) if expert else signature(op, dims, str(name))
    return (sig, str(name), kn[0] if kn else None, kn[1] if kn else None,
            "" if _missing(role) else str(role), "" if _missing(dtype) else str(dtype))


def _gemms(rows: pd.DataFrame) -> list[Gemm]:
    # shapes parsed once per distinct (role, op, dims, name, dtype), one Gemm per row
    fields = strcols.per_combo(rows, ("role", "op_name", "input_dims", "name", "kernel_dtype"),
                               _gemm_fields)
    return [Gemm(*f) for f in fields.tolist()]


def _lm_head_cuts(calls: pd.DataFrame, anchors: int) -> list[float]:
    """Start times just after each lm_head call when the window holds several forwards."""
    kn = [weight_kn(o, dims_of(d)) for o, d in zip(calls["op_name"], calls["input_dims"])]
    ns = np.array([k[1] if k else -1 for k in kn])
    if not len(ns) or ns.max() <= 0:
        return []
    heads = np.flatnonzero(ns == ns.max())
    if len(heads) < 2 or anchors % len(heads) or anchors // len(heads) < 1:
        return []
    t = calls["start_ns"].to_numpy()
    return [float(t[i]) + 0.5 for i in heads[:-1]]


def _common_suffix(a: list[Gemm], b: list[Gemm], limit: int) -> int:
    n = 0
    while n < min(len(a), len(b), limit) and a[-1 - n].sig == b[-1 - n].sig:
        n += 1
    return n


def _merge_adjacent(anc: pd.DataFrame, gemm_t: np.ndarray) -> pd.DataFrame:
    """One anchor per layer: attention calls with no GEMM between them are one layer's (a
    mixed batch's prefill and decode attention kernels, an unrecognised combine pass)."""
    keep = _adjacent_keep(anc["start_ns"].to_numpy(), gemm_t)
    return anc[keep].reset_index(drop=True) if keep is not None else anc


def _adjacent_keep(t: np.ndarray, gemm_t: np.ndarray) -> np.ndarray | None:
    """_merge_adjacent's rows to keep of anchors starting at ``t``; None: all of them."""
    if len(t) < 2:
        return None
    between = np.searchsorted(gemm_t, t[1:], side="left") - np.searchsorted(
        gemm_t, t[:-1], side="right")
    keep = np.concatenate(([True], between > 0))
    return None if keep.all() else keep


def segment(calls: pd.DataFrame, anc: pd.DataFrame, phase: str) -> Forward | None:
    """Split one forward's GEMM calls into layers at its anchors."""
    if anc.empty:
        return None
    names = strcols.as_str_objects(anc["name"]).tolist() if "name" in anc else [""] * len(anc)
    return _segment(calls["start_ns"].to_numpy(), _gemms(calls), anc["start_ns"].to_numpy(),
                    strcols.as_str_objects(anc["kind"]).tolist(), names, phase)


def _segment(c_t: np.ndarray, gems: list[Gemm], a_t: np.ndarray, kinds: list[str],
             names: list[str], phase: str) -> Forward | None:
    """segment() of the calls' starts and GEMMs and the anchors' starts, kinds and names."""
    if not len(a_t):
        return None
    keep = _adjacent_keep(a_t, c_t)
    if keep is not None:  # one anchor per layer (_merge_adjacent)
        a_t = a_t[keep]
        kinds = [k for k, x in zip(kinds, keep.tolist()) if x]
        names = [n for n, x in zip(names, keep.tolist()) if x]
    gaps_idx = np.searchsorted(a_t, c_t, side="right")
    gaps: list[list[Gemm]] = [[] for _ in range(len(a_t) + 1)]
    for g, i in zip(gems, gaps_idx):
        gaps[int(i)].append(g)
    first, inner, last = gaps[0], gaps[1:-1], gaps[-1]
    inner_kind = kinds[1:]  # the anchor each inner gap leads into
    # The input side of the first layer's kind: the suffix most gaps before that kind share
    # with the gap before layer 0 (an irregular gap does not shorten it for all).
    same = [gp for gp, k in zip(inner, inner_kind) if k == kinds[0]]
    pre0 = (Counter(_common_suffix(first, gp, len(gp)) for gp in same).most_common(1)[0][0]
            if same else len(first))
    # The output side (o, MLP) is as long for every layer; another kind's input side (a
    # hybrid model's linear-attention in_proj) is what is left of the gaps before it.
    post_n = (Counter(len(gp) - pre0 for gp in same).most_common(1)[0][0] if same else None)
    pre_of = {kinds[0]: pre0}
    for k in set(inner_kind) - {kinds[0]}:
        lens = [len(gp) for gp, kk in zip(inner, inner_kind) if kk == k]
        pre_of[k] = max(Counter(lens).most_common(1)[0][0] - (post_n or 0), 0)
    before = first[:len(first) - pre_of[kinds[0]]]
    pres = [first[len(first) - pre_of[kinds[0]]:]]
    posts = []
    for gp, k in zip(inner, inner_kind):
        n = min(pre_of[k], len(gp))
        pres.append(gp[len(gp) - n:])
        posts.append(gp[:len(gp) - n])
    modal_post = Counter(len(p) for p in posts).most_common(1)[0][0] if posts else None
    if modal_post is None:  # one layer: its output side is all of the last gap but the lm_head
        modal_post = max(len(last) - 1, 0)
    posts.append(last[:modal_post])
    tail = last[modal_post:]
    layers = [Layer(kind, pre, post, _sliding(name))
              for kind, pre, post, name in zip(kinds, pres, posts, names)]
    return Forward(phase, before, layers, tail)


# --------------------------------------------------------------------------- naming roles

@dataclass
class Dims:
    """Per-rank projection widths the config implies (None where unknown)."""

    hidden: int | None = None
    q: int | None = None
    kv: int | None = None
    ffn: int | None = None
    experts: int | None = None
    tp: int = 1
    q_lora: int | None = None  # MLA (DeepSeek): q_lora_rank, kv_lora_rank, qk_rope_head_dim
    kv_lora: int | None = None
    rope: int | None = None


def _dims(spec: ModelSpec, cfg: dict[str, Any], layers: list[Layer]) -> Dims:
    hd = cfg.get("head_dim") or (spec.hidden // spec.heads if spec.hidden and spec.heads else None)
    q = spec.heads * hd if spec.heads and hd else None
    kv = spec.kv_heads * hd if spec.kv_heads and hd else None
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts")
    d = Dims(hidden=spec.hidden, q=q, kv=kv, ffn=spec.ffn, experts=experts,
             q_lora=cfg.get("q_lora_rank"), kv_lora=cfg.get("kv_lora_rank"),
             rope=cfg.get("qk_rope_head_dim"))
    # Tensor parallelism: the fused QKV width per rank tells the degree.
    first = next((ly.pre[0] for ly in layers if ly.pre and ly.pre[0].n), None)
    if first is not None and q and kv:
        for tp in _TP_DEGREES:
            if first.n in ((q + 2 * kv) // tp, q // tp):
                d.tp = tp
                break
    return d


def _mla_label(g: Gemm, d: Dims) -> str:
    """An MLA projection named by its shape against the config's low ranks, or ''."""
    if g.n is None or d.kv_lora is None:
        return ""
    rope = d.rope or 0
    if d.q_lora and g.n == d.q_lora + d.kv_lora + rope:
        return "q_a+kv_a (fused)"
    if g.n == d.kv_lora + rope:
        return "kv_a"
    if d.q_lora and g.n == d.q_lora:
        return "q_a"
    if d.q_lora and g.k == d.q_lora:
        return "q_b"
    if g.k == d.kv_lora:
        return "kv_b"
    return ""


def label_layer(layer: Layer, d: Dims, mla: bool) -> None:
    """Name each GEMM of ``layer`` (in place) from its position and, when known, its shape."""
    pre, post = layer.pre, layer.post
    tp = d.tp
    if layer.anchor == "mixer":
        for i, g in enumerate(pre):
            g.label = "in_proj" if i == 0 else f"in_proj_{i}"
    elif mla:
        names = ["q_a+kv_a (fused)", "q_b", "kv_b"] if len(pre) <= 3 else []
        for i, g in enumerate(pre):
            g.label = _mla_label(g, d) or (names[i] if i < len(names) else f"mla_proj_{i}")
    elif len(pre) == 1:
        pre[0].label = "qkv (fused)"
    elif len(pre) == 3:
        for g, lab in zip(pre, ("q", "k", "v")):
            g.label = lab
    elif len(pre) == 2:
        pre[0].label, pre[1].label = "q", "kv (fused)"
    else:
        for i, g in enumerate(pre):
            g.label = f"in_proj_{i}"
    if not post:
        return
    post[0].label = "out_proj" if layer.anchor == "mixer" else "o"
    rest = post[1:]
    # A second call with the o projection's shape right after it: the projection run twice.
    while rest and post[0].k is not None and rest[0].sig == post[0].sig:
        rest[0].label = "extra (repeats the o projection)"
        rest = rest[1:]
    if any(g.role == "moe_expert" for g in rest):
        first_expert = next(i for i, g in enumerate(rest) if g.role == "moe_expert")
        dense_before = rest[:first_expert]
        for i, g in enumerate(dense_before):
            is_router = (d.experts is not None and g.n == d.experts) or (g.n is None and i == 0)
            g.label = "router" if is_router or i == 0 else "shared expert"
        experts = [g for g in rest[first_expert:] if g.role == "moe_expert"]
        names = ["experts gate/up (fused)", "experts down"] if len(experts) == 2 else []
        for i, g in enumerate(experts):
            g.label = names[i] if names else f"experts_{i}"
        for g in rest[first_expert:]:
            if g.role != "moe_expert":
                g.label = "shared expert"
        return
    if len(rest) == 2:
        gu, dn = rest
        fused = gu.n is None or dn.k is None or gu.n == 2 * dn.k
        gu.label, dn.label = ("gate_up (fused)" if fused else "up (ungated)"), "down"
    elif len(rest) == 3:
        rest[0].label, rest[1].label, rest[2].label = "gate", "up", "down"
    elif len(rest) == 1:
        rest[0].label = "mlp (fc)" if rest[0].n and d.hidden and rest[0].n != d.hidden else "down"
    else:
        for i, g in enumerate(rest):
            g.label = f"mlp_{i}"
    if d.ffn and len(rest) in (2, 3):
        want = 2 * d.ffn // tp if len(rest) == 2 else d.ffn // tp
        if rest[0].n is not None and rest[0].n != want:
            rest[0].label += f" (N {rest[0].n}, config implies {want})"


def describe(layer: Layer) -> str:
    return ", ".join(g.label for g in layer.gemms)


def analyse(calls: pd.DataFrame, anc: pd.DataFrame, spec: ModelSpec,
            forwards: list[tuple[int, str]]) -> dict[str, Any]:
    """The observed structure over the given (step, phase) forwards (step -1: the window)."""
    cfg = raw_config(spec)
    segs: list[Forward] = []
    # each step's rows, found once (a mask of every call per step cost seconds at 1,000 steps)
    per_step = any(step >= 0 for step, _ in forwards)
    calls_of = _rows_by_step(calls) if per_step else {}
    anc_of = _rows_by_step(anc) if per_step else {}
    # the columns segment() reads, taken once for all forwards: starts, each call's GEMM
    # fields (computed once per distinct call), the anchors' kinds and names
    c_t = calls["start_ns"].to_numpy()
    a_t = anc["start_ns"].to_numpy()
    fields_of, fields = _gemm_table(calls)
    kinds = strcols.as_str_objects(anc["kind"])
    anc_names = (strcols.as_str_objects(anc["name"]) if "name" in anc else
                 np.full(len(anc), "", dtype=object))
    all_c, all_a = np.arange(len(calls)), np.arange(len(anc))
    for step, phase in forwards:
        rc = calls_of.get(step, _NO_ROWS) if step >= 0 else all_c
        ra = anc_of.get(step, _NO_ROWS) if step >= 0 else all_a
        if step < 0 and spec.layers and len(ra) > spec.layers and len(ra) % spec.layers == 0:
            # No step ranges but several forwards: one forward per `layers` anchors.
            t = a_t[ra]
            cuts = [t[i] for i in range(spec.layers, len(t), spec.layers)]
        else:
            # No step ranges: one forward ends after each lm_head (the widest GEMM).
            cuts = _lm_head_cuts(calls, len(ra)) if step < 0 else []
        bounds = [-np.inf, *cuts, np.inf]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            sc = rc[(c_t[rc] >= lo) & (c_t[rc] < hi)] if cuts else rc
            sa = ra[(a_t[ra] >= lo) & (a_t[ra] < hi)] if cuts else ra
            seg = _segment(c_t[sc], [Gemm(*fields[j]) for j in fields_of[sc].tolist()],
                           a_t[sa], kinds[sa].tolist(), anc_names[sa].tolist(), phase)
            if seg:
                segs.append(seg)
    if not segs:
        return {}
    all_layers = [ly for f in segs for ly in f.layers]
    mla = bool(cfg.get("kv_lora_rank")) or bool(
        "name" in anc and strcols.search(anc["name"], _MLA_KERNEL).any())
    d = _dims(spec, cfg, all_layers)
    for ly in all_layers:
        label_layer(ly, d, mla)
    for f in segs:
        _label_edges(f)
    linked = bool(anc["linked"].any()) if "linked" in anc else False
    return {"forwards": segs, "dims": d, "mla": mla, "config": cfg, "linked": linked,
            "mixers": bool((anc["kind"] == "mixer").any()),
            # each call's signature (as its Gemm's), for counts' per-signature times
            "signatures": [fields[j][0] for j in fields_of.tolist()]}


_NO_ROWS = np.zeros(0, dtype=np.int64)
_GEMM_KEYS = ("name", "op_name", "input_dims", "role", "kernel_dtype")


def _gemm_table(calls: pd.DataFrame) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """(per call, the index of its distinct (name, op, shapes, role, dtype); per distinct
    one, the fields of _gemms' Gemm): a GEMM-heavy trace has hundreds of thousands of calls
    of a few hundred kinds, each of whose shapes _gemms would parse again."""
    key, first = strcols.combo_codes(calls, _GEMM_KEYS)
    fields = [(g.sig, g.name, g.k, g.n, g.role, g.dtype) for g in _gemms(calls.iloc[first])]
    return key, fields


def _rows_by_step(table: pd.DataFrame) -> dict[Any, np.ndarray]:
    """step value -> the positions of its rows, in table order (what ``table["step"] ==
    step`` selects; rows of a missing step in none)."""
    if "step" not in table or not len(table):
        return {}
    groups = table["step"].groupby(table["step"].to_numpy(), sort=False).indices
    return {k: np.asarray(v, dtype=np.int64) for k, v in groups.items()}


def _label_edges(f: Forward) -> None:
    for g in f.before:
        g.label = "extra (before the first layer)"
    if not f.tail:
        return
    # lm_head: the widest GEMM of the tail when shapes are known, else the last one.
    widest = max(range(len(f.tail)), key=lambda i: (f.tail[i].n or 0, i))
    for i, g in enumerate(f.tail):
        g.label = "lm_head" if i == widest else "extra (after the last layer)"


def is_extra(g: Gemm) -> bool:
    return is_extra_label(g.label)


def is_extra_label(label: str) -> bool:
    return label.startswith("extra")


def layout_key(layer: Layer) -> tuple[str, ...]:
    return tuple(g.label for g in layer.gemms)


def summary(structure: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """The JSON ``kernel_counts.structure`` object and the per-layer expectation."""
    segs: list[Forward] = structure["forwards"]
    layers = [ly for f in segs for ly in f.layers]
    kinds = Counter((ly.anchor, any(g.role == "moe_expert" for g in ly.gemms)) for ly in layers)
    layouts: dict[str, Any] = {}
    for (anchor, moe), _n in kinds.items():
        group = [ly for ly in layers if ly.anchor == anchor and
                 any(g.role == "moe_expert" for g in ly.gemms) == moe]
        key, _cnt = Counter(layout_key(ly) for ly in group).most_common(1)[0]
        name = ("moe" if moe else "dense") + ("" if anchor == "attention" else "_mixer")
        rep = next(ly for ly in group if layout_key(ly) == key)
        layouts[name] = {
            "layers_per_forward": round(len(group) / max(len(segs), 1), 3),
            "gemms": [{"role": g.label, "signature": g.sig, "kernel": g.name,
                       **({"dtype": g.dtype} if g.dtype else {})} for g in rep.gemms],
            "gemms_per_layer": sum(1 for g in rep.gemms if not is_extra(g)),
        }
    main = max(layouts.values(), key=lambda v: v["layers_per_forward"])
    labels = [g["role"] for g in main["gemms"]]
    fused_qkv = True if "qkv (fused)" in labels else False if "q" in labels and "k" in labels \
        else None
    fused_gate_up = (True if any(lab.startswith("gate_up") for lab in labels) else
                     False if "gate" in labels and "up" in labels else None)
    moe = any(k.startswith("moe") for k in layouts)
    hybrid = any(k.endswith("_mixer") for k in layouts)
    kind = ("hybrid" if hybrid else "mla" if structure["mla"] else "moe" if moe else
            "fused" if fused_qkv and fused_gate_up is not False else
            "separate" if fused_qkv is False or fused_gate_up is False else "unknown")
    shapes = any(g.k is not None for ly in layers for g in ly.gemms)
    att_layers = [ly for ly in layers if ly.anchor == "attention"]
    fwd = max(len(segs), 1)
    attention: dict[str, Any] = {
        "full": round(sum(not ly.sliding for ly in att_layers) / fwd, 3),
        "sliding_window": round(sum(ly.sliding for ly in att_layers) / fwd, 3),
        "mixer": round(sum(ly.anchor == "mixer" for ly in layers) / fwd, 3)}
    cfg_types = structure.get("config", {}).get("layer_types")
    if isinstance(cfg_types, list) and cfg_types:
        tc = Counter(str(x) for x in cfg_types)
        attention["config_layer_types"] = dict(sorted(tc.items()))
    d: Dims = structure["dims"]
    return {
        "kind": kind,
        "fused_qkv": fused_qkv,
        "fused_gate_up": fused_gate_up,
        "moe": moe,
        "mla": bool(structure["mla"]),
        "hybrid": hybrid,
        "layouts": layouts,
        "description": "; ".join(f"{k}: " + ", ".join(g["role"] for g in v["gemms"])
                                 for k, v in layouts.items()),
        "evidence": "GEMM shapes and order" if shapes else "kernel order (no shapes)",
        "tensor_parallel": d.tp if d.tp > 1 else None,
        "attention_layers": attention,
    }
