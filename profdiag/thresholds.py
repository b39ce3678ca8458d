"""Every number the diagnosis and the gate judge by, as one typed, frozen, validated struct.

The values live in ``rules/thresholds.toml`` (commented there); ``--rules FILE`` merges a
user's ``[section]`` keys over them, key by key. :func:`from_mapping` checks each known
section: an unknown key (a typo), a non-number or a value out of range is a ``RulesError``
naming the section and key, so a mistyped override fails loudly instead of being ignored.
Sections this module does not know (kernel rules, idle causes sharing a ``--rules`` file)
are left alone.

The diagnosis keeps passing the merged mapping around (``Context.thresholds``); code that
needs a number calls ``from_mapping(limits)`` (cheap) and reads a typed field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import RulesError

MODES = ("prefill", "decode", "mixed", "unknown")


@dataclass(frozen=True)
class Overhead:
    """GPU idle (host-side overhead) as a share of the analysed window."""

    prefill_max: float
    decode_max: float
    mixed_max: float
    unknown_max: float
    pathological: float
    short_kernel_us: float  # kernels shorter than this count as "short" (launch-bound)

    def limit(self, mode: str) -> float:
        """The limit for ``mode``; a mode without its own key gets unknown's."""
        return float(getattr(self, f"{mode}_max", self.unknown_max))

    def max_share(self) -> dict[str, float]:
        return {m: self.limit(m) for m in MODES}


@dataclass(frozen=True)
class Mode:
    prefill_min_m: int
    prefill_gemm_share: float
    decode_max_q_len: int  # attention Tq at or below this is decode
    gemv_decode_share: float  # GEMV share of GEMM time at or above this votes decode
    gemv_prefill_share: float  # ... at or below this votes prefill (full tiles)


@dataclass(frozen=True)
class ModeVotes:
    """Confidence of each kind of mode evidence; the strongest vote decides."""

    attention_q_len: float
    gemm_m: float
    annotation: float
    gemv_share: float
    full_tiles: float
    split_kv: float
    kernel_names: float
    kernel_names_both: float
    gemm_time_share: float


@dataclass(frozen=True)
class Patterns:
    prefill_gemm_min: float
    decode_gemv_min: float
    softmax_heavy: float


@dataclass(frozen=True)
class Counts:
    gemm_tolerance: int
    slow_layer_factor: float


@dataclass(frozen=True)
class Hotspots:
    top: int
    often_calls_per_layer: float  # "called often" above this many calls per layer per forward
    often_max_us: float  # ... when each call is shorter than this
    costly_min_us: float  # "inherently costly" at or above this per call
    short_max_us: float  # "short kernel" below this per call


@dataclass(frozen=True)
class Verdict:
    """The compute/memory call and the shares that trigger each recommendation."""

    compute_share_min: float
    graph_replayed_share_max: float
    short_kernel_share_min: float
    sync_window_share_min: float
    kv_share_min: float
    elementwise_share_min: float
    attention_share_min: float
    low_precision_share_min: float
    moe_share_min: float
    moe_side_share_min: float


@dataclass(frozen=True)
class Communication:
    prefill_max: float
    decode_max: float
    mixed_max: float
    unknown_max: float
    pathological: float
    small_message_bytes: int
    low_busbw_share: float


@dataclass(frozen=True)
class Thresholds:
    overhead: Overhead
    mode: Mode
    mode_votes: ModeVotes
    patterns: Patterns
    counts: Counts
    hotspots: Hotspots
    verdict: Verdict
    communication: Communication


_T = TypeVar("_T")
# keys whose value is a share of something: must lie in [0, 1]
_SHARE_SECTIONS = {"overhead", "patterns", "mode_votes", "verdict"}
_NOT_SHARES = {"short_kernel_us", "prefill_min_m", "decode_max_q_len", "gemm_tolerance",
               "slow_layer_factor", "top", "often_calls_per_layer", "often_max_us",
               "costly_min_us", "short_max_us", "small_message_bytes"}


def _section(cls: type[_T], name: str, values: Any) -> _T:
    if not isinstance(values, Mapping):
        raise RulesError(f"thresholds: [{name}] must be a table")
    fields = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RulesError(f"thresholds: unknown key {name}.{unknown[0]} "
                         f"(known: {', '.join(fields)})")
    missing = [k for k in fields if k not in values]
    if missing:
        raise RulesError(f"thresholds: [{name}] lacks {missing[0]}")
    out: dict[str, Any] = {}
    for key, kind in fields.items():
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RulesError(f"thresholds: {name}.{key} must be a number, got {v!r}")
        if kind == "int":
            if float(v) != int(v):
                raise RulesError(f"thresholds: {name}.{key} must be an integer, got {v!r}")
            v = int(v)
        else:
            v = float(v)
        if v < 0:
            raise RulesError(f"thresholds: {name}.{key} must be >= 0, got {v!r}")
        share = (name in _SHARE_SECTIONS or key.endswith("_share")
                 or (name == "communication" and key not in _NOT_SHARES))
        if share and key not in _NOT_SHARES and v > 1:
            raise RulesError(f"thresholds: {name}.{key} is a share and must be <= 1, got {v!r}")
        out[key] = v
    return cls(**out)


def from_mapping(data: Mapping[str, Any]) -> Thresholds:
    """The typed thresholds of a merged thresholds mapping; RulesError on a bad value."""
    parts = {f.name: _section(_CLASSES[f.name], f.name, data.get(f.name, {}))
             for f in dataclasses.fields(Thresholds)}
    t = Thresholds(**parts)
    for sec in (t.overhead, t.communication):
        name = "overhead" if sec is t.overhead else "communication"
        worst = max(sec.prefill_max, sec.decode_max, sec.mixed_max, sec.unknown_max)
        if sec.pathological < worst:
            raise RulesError(f"thresholds: {name}.pathological ({sec.pathological}) is below a "
                             f"mode's limit ({worst})")
    if t.hotspots.top < 1:
        raise RulesError("thresholds: hotspots.top must be at least 1")
    return t


_CLASSES: dict[str, type[Any]] = {
    "overhead": Overhead, "mode": Mode, "mode_votes": ModeVotes, "patterns": Patterns,
    "counts": Counts, "hotspots": Hotspots, "verdict": Verdict, "communication": Communication,
}


def load(extra: tuple[str, ...] = ()) -> Thresholds:
    """The shipped thresholds with ``extra`` TOML files (``--rules``) merged over them."""
    from .diagnosis.context import thresholds

    return from_mapping(thresholds(extra))
