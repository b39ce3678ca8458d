"""The diagnosis model: findings, phases and the Diagnosis with its JSON contract."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

SCHEMA_VERSION = 1

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    """One check of the five steps: stable id, status and a one-line summary with numbers."""

    id: str
    status: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recommendation:
    id: str
    title: str
    evidence: str
    advice: str
    kernels: tuple[str, ...] = ()
    bottleneck: str = ""


@dataclass(frozen=True)
class ModeResult:
    value: str  # prefill | decode | mixed | unknown
    confidence: float
    evidence: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "confidence": round(self.confidence, 2),
                "evidence": list(self.evidence)}


@dataclass(frozen=True)
class Verdict:
    value: str  # compute | memory | overhead | unknown
    evidence: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "evidence": list(self.evidence)}


@dataclass(frozen=True)
class Breakdown:
    """Time accounting over an analysed window of one device."""

    window_ns: int
    busy_ns: int
    idle_ns: int
    category_ns: dict[str, int]  # busy time apportioned per category (sums to busy_ns)
    class_ns: dict[str, int]
    kernel_sum_ns: int  # plain sum of GPU event durations (>= busy_ns when streams overlap)
    class_category: dict[str, str] = field(default_factory=dict)  # class -> its category

    @property
    def shares(self) -> dict[str, float]:
        """Share of the window per category, idle as 'overhead'; sums to 1."""
        if self.window_ns <= 0:
            return {}
        shares = {k: v / self.window_ns for k, v in self.category_ns.items() if k != "overhead"}
        shares["overhead"] = self.idle_ns / self.window_ns + self.category_ns.get(
            "overhead", 0) / self.window_ns
        return {k: round(v, 6) for k, v in sorted(shares.items())}

    @property
    def busy_share(self) -> float:
        return self.busy_ns / self.window_ns if self.window_ns else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_ns": self.window_ns, "busy_ns": self.busy_ns, "idle_ns": self.idle_ns,
            "busy_share": round(self.busy_share, 6), "kernel_sum_ns": self.kernel_sum_ns,
            "category_ns": dict(sorted(self.category_ns.items())),
            "class_ns": dict(sorted(self.class_ns.items())),
            "class_category": dict(sorted(self.class_category.items())),
        }


@dataclass(frozen=True)
class Phase:
    name: str  # "prefill" | "decode" | "all"
    mode: ModeResult
    breakdown: Breakdown
    bottleneck: Verdict
    overhead_share: float
    steps: int
    median_step_ns: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "mode": self.mode.to_dict(), "steps": self.steps,
            "median_step_ns": self.median_step_ns,
            "categories": self.breakdown.shares, "breakdown": self.breakdown.to_dict(),
            "bottleneck": self.bottleneck.to_dict(),
            "overhead_share": round(self.overhead_share, 6),
        }


@dataclass(frozen=True)
class Diagnosis:
    source: dict[str, Any]
    mode: ModeResult
    bottleneck: Verdict
    breakdown: Breakdown
    checks: list[Check]
    kernel_counts: dict[str, Any]
    hotspots: pd.DataFrame  # name, class, category, calls, total_ns, mean_ns, share, note
    recommendations: list[Recommendation]
    phases: list[Phase]
    # step, name, phase, start_ns, host_ns, gpu_busy_ns, wall_ns, kernels, engine and the
    # stated batch: prefill_tokens, decode_tokens, kv_tokens, requests (Int64, <NA> unstated)
    steps: pd.DataFrame
    overhead: dict[str, Any]
    warnings: list[str]
    model: dict[str, Any]
    roofline: dict[str, Any] | None = None
    # collectives: exposed/overlapped time, per type bytes and bus bandwidth (communication.py)
    communication: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    events: pd.DataFrame | None = None  # the classified device work (not serialised)
    # per phase: the parts of its median step (diagnosis/step_detail.py), for attribution
    step_detail: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)  # idle split, causes, largest gaps
    health: dict[str, Any] = field(default_factory=dict)  # trace health findings
    # Every idle gap: start_ns, dur_ns, step, host_wait_ns, kernel_wait_ns, cause, op, context,
    # next (not serialised; idle["gaps"] holds the largest).
    idle_gaps: pd.DataFrame | None = None
    # Not serialised either: the parsed trace (for export/Perfetto) and the analysed window
    # [start_ns, end_ns) of the overall breakdown.
    trace: Any = field(default=None, repr=False, compare=False)
    window: tuple[int, int] | None = None

    def __repr__(self) -> str:
        from ..notebook import short_repr

        return short_repr(self)

    def _repr_html_(self) -> str:
        from ..notebook import repr_html

        return repr_html(self)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the diagnosis as a DataFrame (kernels, hotspots, steps, ...).

        The same tables, with the same columns, that ``profdiag export`` writes; see
        docs/export.md for the columns and their units.
        """
        from ..tables import build_tables

        return build_tables(self)

    @property
    def categories(self) -> dict[str, float]:
        return self.breakdown.shares

    @property
    def class_breakdown(self) -> pd.DataFrame:
        """Busy time per category and class, largest first (for notebooks)."""
        rows = [{"class": k, "total_ns": v} for k, v in self.breakdown.class_ns.items()]
        df = pd.DataFrame(rows, columns=["class", "total_ns"])
        df["category"] = df["class"].map(self.breakdown.class_category)
        busy = self.breakdown.busy_ns or 1
        df["share_of_busy"] = df["total_ns"] / busy
        return df.sort_values("total_ns", ascending=False, ignore_index=True)

    def check(self, check_id: str) -> Check | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON contract (see docs/json-schema.md)."""
        hot = self.hotspots
        hotspots = [
            {"name": r["name"], "class": r["class"], "category": r["category"],
             "calls": int(r["calls"]), "total_ns": int(r["total_ns"]),
             "mean_ns": int(r["mean_ns"]), "share": round(float(r["share"]), 6),
             "note": r["note"]}
            for r in hot.to_dict("records")
        ]
        steps = [
            {k: (None if v is pd.NA or v is None else
                 int(v) if isinstance(v, (int, float)) and k != "phase" and v == v else v)
             for k, v in r.items()}
            for r in self.steps.to_dict("records")
        ]
        return {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "mode": self.mode.to_dict(),
            "bottleneck": self.bottleneck.to_dict(),
            "categories": self.categories,
            "breakdown": self.breakdown.to_dict(),
            "overhead": self.overhead,
            "checks": [asdict(c) for c in self.checks],
            "kernel_counts": self.kernel_counts,
            "hotspots": hotspots,
            "recommendations": [
                {"id": r.id, "title": r.title, "evidence": r.evidence, "advice": r.advice,
                 "kernels": list(r.kernels), "bottleneck": r.bottleneck}
                for r in self.recommendations
            ],
            "phases": [p.to_dict() for p in self.phases],
            "steps": steps,
            "step_detail": self.step_detail,
            "model": self.model,
            "roofline": self.roofline,
            "communication": self.communication,
            "warnings": list(self.warnings),
            **({"idle": self.idle} if self.idle else {}),
            **({"health": self.health} if self.health else {}),
            **({"extras": self.extras} if self.extras else {}),
        }
