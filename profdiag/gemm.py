"""The one GEMM-shape parser: dense matmul ops' Input Dims -> batch, M, K, N, FLOPs, bytes.

The roofline (per-op FLOPs and compulsory bytes) and the mode vote (median GEMM rows M)
both read shapes here, so they agree on which ops are GEMMs:

- ``GEMM_OPS``: every op with a parser below (mm, addmm, matmul, linear, bmm, _scaled_mm).
- ``TOKEN_GEMM_OPS``: those whose rows are tokens (activations x weights), the mode
  vote's M. ``aten::bmm`` is left out: in eager attention it multiplies activations by
  activations ([B*H, Tq, d] x [B*H, d, Tk]) and its batch x rows is B*H*Tq, not tokens.
- ``CPU_COMPUTE_OPS``: the GEMM ops plus baddbmm and SDPA, the leaf CPU ops counted as
  device work in a CPU-only trace (diagnosis/context.py).

``weight_kn`` gives a token GEMM's weight dimensions (K, N): the lm_head search of
diagnosis/context.py (largest N) and the layer structure of diagnosis/structure.py
(GEMM signatures by K and N) read them here. ``dims_of`` parses Input Dims text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

GEMM_OPS = frozenset({"aten::mm", "aten::addmm", "aten::matmul", "aten::linear", "aten::bmm",
                      "aten::_scaled_mm"})
TOKEN_GEMM_OPS = GEMM_OPS - {"aten::bmm"}
# Leaf CPU ops that are compute when a trace has no GPU (prefix match on the op name).
CPU_COMPUTE_OPS = tuple(sorted({*GEMM_OPS, "aten::baddbmm", "aten::_scaled_dot_product"}))


def gemm_flops(m: float, k: float, n: float, batch: float = 1) -> float:
    """Return the FLOPs of ``batch`` GEMMs [m, k] x [k, n]: one multiply-add (2 FLOPs) per
    (i, j, l) triple, so 2·batch·m·k·n."""
    return 2.0 * batch * m * k * n


@dataclass(frozen=True)
class Shape:
    op_class: str  # "gemm" | "attention"
    batch: int  # GEMM batch (bmm) or B·H (attention)
    m: int  # rows of A, or Tq
    k: int  # inner dim, or head dim d
    n: int  # columns of B, or Tk
    flops: float
    elems: float  # compulsory elements moved (inputs read once + output written once)


def prod(xs: Iterable[int]) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _broadcast_batch(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Return the product of the broadcast batch dims, None when they do not broadcast."""
    la, lb = list(a), list(b)
    n = max(len(la), len(lb))
    la = [1] * (n - len(la)) + la
    lb = [1] * (n - len(lb)) + lb
    out = 1
    for x, y in zip(la, lb):
        if x != y and 1 not in (x, y):
            return None
        out *= max(x, y)
    return out


def gemm_shape(op: str, dims: list[Any]) -> Shape | None:
    """(batch, m, k, n), FLOPs and compulsory elements of a GEMM op from its Input Dims.

    None when the op is not in GEMM_OPS or its dims do not make a GEMM (inner dims differ,
    wrong ranks)."""
    mats = [d for d in dims if isinstance(d, list)]
    if op == "aten::addmm":
        # addmm(bias, mat1, mat2): bias first ([n], [m, n] or [1, n]).
        if len(mats) < 3 or len(mats[1]) != 2 or len(mats[2]) != 2:
            return None
        bias, (m, k), (k2, n) = mats[0], mats[1], mats[2]
        if k != k2:
            return None
        return Shape("gemm", 1, m, k, n, gemm_flops(m, k, n), m * k + k * n + m * n + prod(bias))
    if op in ("aten::mm", "aten::_scaled_mm"):
        # _scaled_mm(mat_a [m, k], mat_b [k, n], scale_a, scale_b, ...): an FP8 mm.
        if len(mats) < 2 or len(mats[0]) != 2 or len(mats[1]) != 2:
            return None
        (m, k), (k2, n) = mats[0], mats[1]
        if k != k2:
            return None
        return Shape("gemm", 1, m, k, n, gemm_flops(m, k, n), m * k + k * n + m * n)
    if op == "aten::bmm":
        if len(mats) < 2 or len(mats[0]) != 3 or len(mats[1]) != 3:
            return None
        (b, m, k), (b2, k2, n) = mats[0], mats[1]
        if k != k2 or b != b2:
            return None
        return Shape("gemm", b, m, k, n, gemm_flops(m, k, n, b), b * (m * k + k * n + m * n))
    if op == "aten::linear":
        # linear(input [..., k], weight [n, k], bias [n] or absent).
        if len(mats) < 2 or len(mats[0]) < 1 or len(mats[1]) != 2:
            return None
        x, (n, k) = mats[0], mats[1]
        if x[-1] != k:
            return None
        m = prod(x[:-1])
        bias_elems = prod(mats[2]) if len(mats) > 2 and mats[2] else 0
        return Shape("gemm", 1, m, k, n, gemm_flops(m, k, n), m * k + k * n + m * n + bias_elems)
    if op == "aten::matmul":
        if len(mats) < 2 or not mats[0] or not mats[1]:
            return None
        a, b = list(mats[0]), list(mats[1])
        if len(a) == 1:
            a = [1, a[0]]  # vector @ matrix
        if len(b) == 1:
            b = [b[0], 1]  # matrix @ vector
        if a[-1] != b[-2]:
            return None
        k = a[-1]
        if len(b) == 2:
            # [..., m, k] @ [k, n] folds the leading dims into m (one GEMM, weights read once).
            m, n = prod(a[:-1]), b[-1]
            return Shape("gemm", 1, m, k, n, gemm_flops(m, k, n), m * k + k * n + m * n)
        batch = _broadcast_batch(a[:-2], b[:-2])
        if batch is None:
            return None
        m, n = a[-2], b[-1]
        elems = prod(a) + prod(b) + batch * m * n
        return Shape("gemm", batch, m, k, n, gemm_flops(m, k, n, batch), elems)
    return None


def dims_of(dims_json: Any) -> list[Any] | None:
    """Input Dims from their JSON text (a trace's ``input_dims``), None unless a JSON list."""
    import orjson

    if not isinstance(dims_json, (str, bytes)):
        return None
    try:
        dims = orjson.loads(dims_json)
    except orjson.JSONDecodeError:
        return None
    return dims if isinstance(dims, list) else None


def _ints(dims: Any) -> bool:
    return isinstance(dims, list) and all(
        isinstance(x, int) and not isinstance(x, bool) for x in dims)


def weight_kn(op: Any, dims: list[Any] | None) -> tuple[int, int] | None:
    """(K, N) of a token GEMM: activations [..., K] x weight [K, N] (linear stores its weight
    transposed, [N, K]; addmm's bias comes first).

    None: not a TOKEN_GEMM_OPS op; an activation of rank < 2 or a weight that is not a 2-D
    matrix (a batched matmul multiplies activations, not weights); dims that are not ints;
    inner dims that differ."""
    if op not in TOKEN_GEMM_OPS or not dims:
        return None
    mats = [d for d in dims if isinstance(d, list)]
    first = 1 if op == "aten::addmm" else 0
    if len(mats) < first + 2:
        return None
    act, weight = mats[first], mats[first + 1]
    if len(act) < 2 or len(weight) != 2 or not (_ints(act) and _ints(weight)):
        return None
    shape = gemm_shape(op, dims)
    return None if shape is None else (int(shape.k), int(shape.n))


def gemm_rows(op: str, dims: list[Any]) -> int | None:
    """Rows M of a token GEMM (batch x tokens: every leading dim of the activation input),
    or None: not a TOKEN_GEMM_OPS op, an activation of rank < 2, or dims that make no GEMM."""
    if op not in TOKEN_GEMM_OPS:
        return None
    mats = [d for d in dims if isinstance(d, list)]
    act = mats[1] if op == "aten::addmm" and len(mats) > 1 else (mats[0] if mats else None)
    if not isinstance(act, list) or len(act) < 2 or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in act):
        return None
    shape = gemm_shape(op, dims)
    return None if shape is None else shape.batch * shape.m
