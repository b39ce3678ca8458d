"""The CI gate: a policy (and optionally a baseline) applied to a diagnosis -> GateResult.

Library code: nothing here prints. ``profdiag gate`` (profdiag/commands/gate.py) loads the
profiles, calls :func:`evaluate` and renders the result (renderers/gate_text.py,
gate_markdown.py, junit.py all take ``GateResult.to_dict()``).

Regressions compare like with like: the median over steps of each phase, per decode step and
per prefill token (per prefill step when the prompt length of either profile is unknown), so
one noisy step does not fail a merge. Only getting worse fails a regression check.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, TypeAlias, TypeGuard, cast

import msgspec

from . import _toml as toml, report_model
from .errors import EXIT_GATE_FAILED, EXIT_OK, RulesError, TraceFormatError, UsageError
from .report_model import Report, Step

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
SEVERITIES = ("fail", "warn", "off")
MODES = ("prefill", "decode", "mixed", "unknown")
CATEGORIES = ("compute", "memory", "normalization", "elementwise", "communication", "other",
              "overhead")
KERNEL_COUNT_MODES = ("exact", "tolerance", "off")
POLICY_FILE = "policy.toml"
RESULT_SCHEMA_VERSION = 1


# ------------------------------------------------------------------------------------ policy

def _number(x: Any) -> TypeGuard[int | float]:
    """A real number (not a bool); narrows the type for the checks that use it."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# key -> validator(value) -> error text or None; tables are nested dicts of these.
def _share(v: Any) -> str | None:
    return None if _number(v) and 0 <= v <= 1 else "a share between 0 and 1"


def _nonneg(v: Any) -> str | None:
    return None if _number(v) and v >= 0 else "a number >= 0"


def _nonneg_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "an integer >= 0"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _severity(v: Any) -> str | None:
    return None if v in SEVERITIES else f"one of {', '.join(map(repr, SEVERITIES))}"


def _kc_mode(v: Any) -> str | None:
    return None if v in KERNEL_COUNT_MODES else f"one of {', '.join(map(repr, KERNEL_COUNT_MODES))}"


def _tolerance(v: Any) -> str | None:
    if _nonneg_int(v) is None:
        return None
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            if float(v.strip()[:-1]) >= 0:
                return None
        except ValueError:
            pass
    return 'an integer number of calls >= 0 or a percentage string such as "2%"'


def _share_table(keys: tuple[str, ...] | None) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not isinstance(v, dict):
            return "a table"
        for k, x in v.items():
            if keys is not None and k not in keys:
                return f"a table with keys from {', '.join(keys)} (got {k!r})"
            if _share(x):
                return f"a table of shares between 0 and 1 (got {k} = {x!r})"
        return None
    return check


SEVERITY_FAMILIES = (
    "overhead", "gpu_busy", "categories", "kernel_count", "step_time", "gpu_busy_per_step",
    "overhead_share", "category_share", "kernel_count_delta", "kernels_per_step",
    "top_kernel_time", "mode_change",
)

SCHEMA: dict[str, Any] = {
    "overhead": {"max_share": _share_table(MODES)},
    "gpu_busy": {"min_share": _share},
    "categories": {"max": _share_table(CATEGORIES), "min": _share_table(CATEGORIES)},
    "kernel_count": {"mode": _kc_mode, "tolerance": _tolerance, "require_expected": _bool},
    "regression": {
        "step_time_pct": _nonneg, "gpu_busy_per_step_pct": _nonneg,
        "overhead_share_abs": _nonneg, "category_share_abs": _nonneg,
        "kernel_count_delta": _nonneg_int, "kernels_per_step_pct": _nonneg,
        "top_kernels": _nonneg_int, "top_kernel_time_pct": _nonneg, "min_steps": _nonneg_int,
        "allow_mode_change": _bool, "require_beyond_noise": _bool,
    },
    "severity": {k: _severity for k in SEVERITY_FAMILIES},
}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: tables merge key by key, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validate(data: Mapping[str, Any], schema: Mapping[str, Any], where: str,
              path: str) -> None:
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise RulesError(f"unknown policy key {name!r} (known here: {known})", path)
        rule = schema[key]
        if isinstance(rule, dict):
            if not isinstance(value, Mapping):
                raise RulesError(f"policy key {name!r} must be a table", path)
            _validate(value, rule, name, path)
        else:
            problem = rule(value)
            if problem:
                raise RulesError(f"policy key {name!r} must be {problem}, got {value!r}", path)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return toml.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError("policy file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read policy: {exc}", str(path)) from None
    except toml.TOMLDecodeError as exc:
        raise RulesError(f"not valid TOML: {exc}", str(path)) from None


def default_policy_path() -> Path:
    from .rules_path import rules_dir

    return rules_dir() / POLICY_FILE


@dataclass
class Policy:
    """The gate's limits: the shipped defaults with any --policy files deep-merged over them."""

    data: dict[str, Any]
    sources: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, *paths: str | Path | None, rules: tuple[str, ...] = ()) -> Policy:
        """The default policy, then each of ``paths`` (None skipped) merged over it in order.

        The default ``overhead.max_share`` is the diagnosis's own limits (thresholds
        ``[overhead] *_max``, with ``rules`` -- the run's ``--rules`` files -- merged over
        them): one source of truth, so the gate and the report's overhead check agree."""
        from .thresholds import load as load_thresholds

        default = default_policy_path()
        data = deep_merge(
            {"overhead": {"max_share": load_thresholds(tuple(map(str, rules)))
                          .overhead.max_share()}},
            _read_toml(default))
        _validate(data, SCHEMA, "", str(default))
        sources = [str(default)]
        for p in paths:
            if p is None:
                continue
            over = _read_toml(Path(p))
            _validate(over, SCHEMA, "", str(p))
            data = deep_merge(data, over)
            sources.append(str(p))
        return cls(data, sources)

    @classmethod
    def from_dict(cls, over: Mapping[str, Any]) -> Policy:
        """The default policy with ``over`` merged over it (for notebooks and tests)."""
        base = cls.load()
        _validate(over, SCHEMA, "", "<dict>")
        return cls(deep_merge(base.data, over), [*base.sources, "<dict>"])

    def get(self, table: str, key: str, default: Any = None) -> Any:
        return (self.data.get(table) or {}).get(key, default)

    def severity(self, family: str) -> str:
        return str(self.get("severity", family, "fail"))

    def to_dict(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "values": copy.deepcopy(self.data)}


# ---------------------------------------------------------------------------------- profiles

ReportLike: TypeAlias = "Report | Mapping[str, Any]"


@dataclass
class Profile:
    """A diagnosis to gate or compare: from a trace (with its events) or from a JSON report.

    ``data`` is the report dict (what renderers and attribution take); ``report`` is the same
    report typed (``report_model.load``), decoded once when the Profile is made so that a bad
    report fails here, on one line naming its path.
    """

    path: str
    kind: str  # "trace" | "report"
    data: dict[str, Any]
    events: Any = None  # pandas DataFrame of classified device work, traces only
    report: Report = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        # None (the default) until decoded here; typed as Report for every reader after
        if cast("Report | None", self.report) is None:
            self.report = report_model.load(self.data, self.path)

    @property
    def mode(self) -> str:
        return mode_of(self.report)


def read_report(path: str | Path) -> dict[str, Any] | None:
    """The dict of a `profdiag report -f json` file, or None when ``path`` is not one.

    Detected by content: a JSON object with ``schema_version`` and ``mode`` (and no
    ``traceEvents``), read by the one report sniffer (profdiag.parsers._io.read_report_json:
    gzipped files, files showing ``"traceEvents"`` early and files past 64 MiB are traces).
    A report this version cannot read (newer schema, a value of the wrong type) raises
    TraceFormatError naming the file and the JSON path.
    """
    from .parsers._io import read_report_json

    p = Path(path)
    data = read_report_json(p)
    if not isinstance(data, dict) or "schema_version" not in data or "mode" not in data:
        return None
    if "traceEvents" in data:
        return None
    if not isinstance(data.get("mode"), dict):
        version = data.get("schema_version")
        if isinstance(version, int) and version <= report_model.SCHEMA_VERSION:
            raise TraceFormatError("JSON report has no mode object", str(p))
    report_model.load(data, str(p))  # newer schema or a wrong value: one line, the JSON path
    return data


def load_profile(path: str | Path, diagnose: Callable[[str], Any] | None = None) -> Profile:
    """A Profile from a trace (diagnosed by ``diagnose``, default profdiag defaults) or report."""
    p = Path(path)
    if not p.exists():
        raise UsageError("no such file", str(p))
    if p.is_dir():
        raise UsageError("is a directory, expected a trace or a JSON report", str(p))
    report = read_report(p)
    if report is not None:
        return Profile(str(p), "report", report)
    if diagnose is None:
        from . import diagnose as _diagnose, load

        def diagnose(x: str) -> Any:
            return _diagnose(load(x, compact=True))
    diag = diagnose(str(p))
    return Profile(str(p), "trace", diag.to_dict(), getattr(diag, "events", None))


def as_profile(obj: Any, path: str = "<memory>") -> Profile:
    """A Profile from a Profile, a Diagnosis, a typed Report or a diagnosis dict."""
    if isinstance(obj, Profile):
        return obj
    if isinstance(obj, Report):
        return Profile(obj.source.path or path, "report", msgspec.to_builtins(obj), report=obj)
    if hasattr(obj, "to_dict"):
        return Profile(path, "trace", obj.to_dict(), getattr(obj, "events", None))
    if isinstance(obj, Mapping):
        rep = report_model.load(obj, path)
        return Profile(str(rep.source.path or path), "report", dict(obj), report=rep)
    raise TypeError(f"cannot gate or compare a {type(obj).__name__}")


# ------------------------------------------------------------------------- derived figures
# Each takes a typed Report or a report dict (decoded by report_model.load).

def mode_of(data: ReportLike) -> str:
    if isinstance(data, Mapping) and isinstance(data.get("mode"), str):
        return str(data["mode"] or "unknown")  # a gate result's mode, already a string
    return report_model.load(data).mode.value or "unknown"


def overhead_share(data: ReportLike) -> float | None:
    rep = report_model.load(data)
    if rep.overhead.overhead_share is not None:
        return float(rep.overhead.overhead_share)
    cat = rep.categories.get("overhead")
    return float(cat) if _number(cat) else None


def forwards_of(data: ReportLike) -> int:
    """Forward passes in the profile: from the kernel counts, the model, else the steps."""
    rep = report_model.load(data)
    for value in (rep.kernel_counts.forwards, rep.model.forwards):
        if isinstance(value, int) and value > 0:
            return value
    return max(len(rep.steps), 1)


def prefill_tokens(data: ReportLike) -> int | None:
    """Tokens in one prefill forward (prompt length x batch), when the model says; else the
    median prefill tokens the prefill steps' engine annotations state."""
    rep = report_model.load(data)
    model = rep.model
    tokens, batch = model.tokens, model.batch or 1
    if model.phase in ("prefill", "generate") and isinstance(tokens, int) and tokens > 0 \
            and batch > 0:
        return tokens * batch
    stated = sorted(s.prefill_tokens for s in rep.steps
                    if s.phase == "prefill" and s.prefill_tokens is not None
                    and s.prefill_tokens > 0)
    return stated[len(stated) // 2] if stated else None


def step_stats(data: ReportLike) -> dict[str, dict[str, Any]]:
    """Per phase: number of steps, median wall_ns and median gpu_busy_ns over its steps."""
    by_phase: dict[str, list[Step]] = {}
    for row in report_model.load(data).steps:
        by_phase.setdefault(row.phase or "all", []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for phase, rows in sorted(by_phase.items()):
        wall = [float(r.wall_ns) for r in rows if r.wall_ns is not None]
        busy = [float(r.gpu_busy_ns) for r in rows if r.gpu_busy_ns is not None]
        out[phase] = {"steps": len(rows),
                      "median_wall_ns": median(wall) if wall else None,
                      "median_gpu_busy_ns": median(busy) if busy else None,
                      "iqr_wall_ns": _iqr(wall), "iqr_gpu_busy_ns": _iqr(busy)}
    return out


def _iqr(values: list[float]) -> float | None:
    """Interquartile range (step-to-step spread) of at least 4 values, else None."""
    if len(values) < 4:
        return None
    from statistics import quantiles

    q1, _, q3 = quantiles(values, n=4, method="inclusive")
    return q3 - q1


def beyond_noise(vb: float, vn: float, iqr_b: float | None, iqr_n: float | None) -> bool | None:
    """Whether a change of the median exceeds the larger step-to-step spread (IQR) of the two
    profiles; None when either has too few steps to tell."""
    if iqr_b is None or iqr_n is None:
        return None
    return abs(vn - vb) > max(iqr_b, iqr_n)


def phase_unit(phase: str, base: ReportLike | None,
               new: ReportLike) -> tuple[int, int, str]:
    """(base divisor, new divisor, unit label) for one phase's step figures.

    Prefill is compared per token when both prompt lengths are known, else per step.
    """
    if phase == "prefill":
        tb = prefill_tokens(base) if base is not None else None
        tn = prefill_tokens(new)
        if tn and (base is None or tb):
            return tb or 1, tn, "per prefill token"
        return 1, 1, "per prefill step"
    return 1, 1, f"per {phase} step" if phase != "all" else "per step"


def kernel_unit(base: ReportLike, new: ReportLike) -> tuple[float, float, str]:
    """(base divisor, new divisor, label) for whole-profile kernel times: per prefill token
    when both are prefill with known prompt lengths, else per forward."""
    if mode_of(base) == mode_of(new) == "prefill":
        tb, tn = prefill_tokens(base), prefill_tokens(new)
        if tb and tn:
            return tb * forwards_of(base), tn * forwards_of(new), "per prefill token"
    return forwards_of(base), forwards_of(new), "per forward"


def kernel_table(profile: Profile) -> tuple[dict[str, dict[str, Any]], str]:
    """Per kernel name: class, category, calls and total_ns; and where it came from.

    From the classified events when the profile is a trace ("events": every kernel), else
    from the report's hotspots ("hotspots": the top N only).
    """
    events = profile.events
    if events is not None and len(events) and {"name", "dur_ns"} <= set(events.columns):
        cols = {"calls": ("dur_ns", "size"), "total_ns": ("dur_ns", "sum")}
        for extra in ("class", "category"):
            if extra in events.columns:
                cols[extra] = (extra, "first")
        g = events.assign(name=events["name"].astype(str)).groupby("name", sort=True).agg(**cols)
        table = {}
        for name, row in g.iterrows():
            table[str(name)] = {"class": str(row.get("class", "") or ""),
                                "category": str(row.get("category", "") or ""),
                                "calls": int(row["calls"]), "total_ns": int(row["total_ns"])}
        return table, "events"
    table = {}
    for h in profile.report.hotspots:
        table[h.name] = {"class": h.class_, "category": h.category, "calls": h.calls,
                         "total_ns": h.total_ns}
    return table, "hotspots"


def pct_change(base: float | None, new: float | None) -> float | None:
    if base is None or new is None or not base:
        return None
    return (new - base) / base * 100.0


def short_name(name: str, width: int = 60) -> str:
    from .formatting import short_kernel_name, truncate

    return truncate(short_kernel_name(name), width)


# ----------------------------------------------------------------------------------- results

@dataclass(frozen=True)
class GateCheck:
    """One gate check: stable id, status (pass|warn|fail|skip), the severity it ran under
    (fail|warn|off), a one-line summary, and the numbers behind it."""

    id: str
    status: str
    severity: str
    summary: str
    observed: Any = None
    limit: Any = None
    baseline: Any = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "severity": self.severity,
                "summary": self.summary, "observed": _clean(self.observed),
                "limit": _clean(self.limit), "baseline": _clean(self.baseline),
                "details": _clean(self.details)}


def _clean(x: Any) -> Any:
    """JSON-friendly: floats rounded to 6 places, NaN as None, containers recursed."""
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, 6)
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


@dataclass
class GateResult:
    checks: list[GateCheck]
    trace: str
    mode: str
    baseline: str | None = None
    baseline_mode: str | None = None
    policy_sources: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS

    @property
    def exit_code(self) -> int:
        return EXIT_GATE_FAILED if self.status == FAIL else EXIT_OK

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if c.status == FAIL]

    def check(self, check_id: str) -> GateCheck | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PASS, WARN, FAIL, SKIP)}
        for c in self.checks:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "status": self.status, "exit_code": self.exit_code,
            "trace": self.trace, "mode": self.mode,
            "baseline": self.baseline, "baseline_mode": self.baseline_mode,
            "policy": list(self.policy_sources),
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


# -------------------------------------------------------------------------------- evaluation

class _Checks:
    """Collects checks, turning 'violated or not' into a status by the family's severity."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.items: list[GateCheck] = []

    def judge(self, family: str, check_id: str, violated: bool, summary: str,
              observed: Any = None, limit: Any = None, baseline: Any = None,
              **details: Any) -> None:
        severity = self.policy.severity(family)
        if severity == "off":
            status, summary = SKIP, f"{summary} (off by policy: severity.{family})"
        elif violated:
            status = FAIL if severity == "fail" else WARN
        else:
            status = PASS
        self.items.append(GateCheck(check_id, status, severity, summary, observed, limit,
                                    baseline, details))

    def skip(self, family: str, check_id: str, reason: str, **details: Any) -> None:
        severity = self.policy.severity(family)
        self.items.append(GateCheck(check_id, SKIP, severity, reason, details=details))

    def fail_always(self, family: str, check_id: str, summary: str, **details: Any) -> None:
        """A check that cannot be evaluated but must be (require_expected): fails by severity."""
        self.judge(family, check_id, True, summary, **details)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _ns(ns: float | None) -> str:
    from .formatting import fmt_ns

    return fmt_ns(ns) if ns is not None else "-"


def evaluate(trace: Any, policy: Policy | None = None, baseline: Any = None,
             allow_mode_change: bool | None = None) -> GateResult:
    """Apply ``policy`` to ``trace`` (and against ``baseline`` when given).

    ``trace`` and ``baseline`` are Profiles, Diagnoses or diagnosis dicts. Profiles of
    different modes raise UsageError unless ``allow_mode_change`` (or the policy's
    regression.allow_mode_change) is true.
    """
    policy = policy or Policy.load()
    new = as_profile(trace)
    base = as_profile(baseline) if baseline is not None else None
    out = _Checks(policy)
    mode = new.mode
    if base is not None:
        allowed = (allow_mode_change if allow_mode_change is not None
                   else bool(policy.get("regression", "allow_mode_change", False)))
        if base.mode != mode and not allowed:
            raise UsageError(f"cannot compare a {mode} profile against a {base.mode} baseline "
                             f"({base.path}); pass --allow-mode-change to compare anyway")
    _absolute(new.report, policy, out)
    if base is not None:
        _regression(base, new, policy, out)
    return GateResult(out.items, new.path, mode, base.path if base else None,
                      base.mode if base else None, list(policy.sources))


def _absolute(data: Report, policy: Policy, out: _Checks) -> None:
    mode = mode_of(data)
    # overhead share, limit by mode
    limits = policy.get("overhead", "max_share") or {}
    observed = overhead_share(data)
    limit = limits.get(mode, limits.get("unknown"))
    if limit is None:
        out.skip("overhead", "overhead", f"no overhead limit for mode {mode}")
    elif observed is None:
        out.skip("overhead", "overhead", "the profile has no overhead share")
    else:
        word = "above" if observed > limit else "within"
        out.judge("overhead", "overhead", observed > limit,
                  f"overhead share {_pct(observed)} is {word} the {mode} limit {_pct(limit)}",
                  observed, limit, mode=mode)
    # GPU busy share
    min_busy = float(policy.get("gpu_busy", "min_share", 0.0) or 0.0)
    if min_busy > 0:
        busy = data.breakdown.busy_share
        if not _number(busy):
            out.skip("gpu_busy", "gpu_busy", "the profile has no GPU busy share")
        else:
            word = "below" if busy < min_busy else "at or above"
            out.judge("gpu_busy", "gpu_busy", busy < min_busy,
                      f"GPU busy {_pct(busy)} of the window is {word} the minimum "
                      f"{_pct(min_busy)}", busy, min_busy)
    # category share limits
    shares = data.categories
    for bound in ("max", "min"):
        for cat, lim in sorted((policy.get("categories", bound) or {}).items()):
            share = float(shares.get(cat, 0.0) or 0.0)
            bad = share > lim if bound == "max" else share < lim
            rel = ("above" if bad else "within") if bound == "max" else (
                "below" if bad else "at or above")
            out.judge("categories", f"category.{bound}.{cat}", bad,
                      f"{cat} share {_pct(share)} is {rel} the {bound}imum {_pct(lim)}",
                      share, lim, category=cat)
    _kernel_count(data, policy, out)


def _kernel_count(data: Report, policy: Policy, out: _Checks) -> None:
    kc_policy = policy.data.get("kernel_count") or {}
    mode = kc_policy.get("mode", "exact")
    if mode == "off":
        out.items.append(GateCheck("kernel_count", SKIP, "off",
                                   "kernel count check off by policy (kernel_count.mode)"))
        return
    kc = data.kernel_counts
    observed, expected = kc.observed_gemm_calls, kc.expected_gemm_calls
    if not isinstance(expected, int) or not isinstance(observed, int):
        reason = ("no expected GEMM count: give --model-config (a config.json or capture "
                  "manifest) or --layers")
        if kc_policy.get("require_expected"):
            out.fail_always("kernel_count", "kernel_count",
                            reason + " (kernel_count.require_expected = true)",
                            observed=observed)
        else:
            out.skip("kernel_count", "kernel_count", reason, observed=observed)
        return
    tol_spec = kc_policy.get("tolerance", 0) if mode == "tolerance" else 0
    if isinstance(tol_spec, str):
        tol = float(tol_spec.strip().rstrip("%")) / 100.0 * expected
        tol_text = f"{tol_spec.strip()} of expected = {tol:g} calls"
    else:
        tol = float(tol_spec)
        tol_text = f"{int(tol)} calls"
    diff = observed - expected
    forwards = kc.forwards or 0
    how = (f"({kc.layers} layers x {kc.gemms_per_layer} + "
           f"{kc.lm_head_per_forward} lm_head) x {forwards} "
           f"forward{'' if forwards == 1 else 's'}")
    if diff == 0:
        summary = f"{observed} GEMM calls = the {expected} expected {how}"
    else:
        word = "more" if diff > 0 else "fewer"
        per = f" ({abs(diff) / forwards:g} per forward)" if forwards else ""
        summary = (f"{observed} GEMM calls: {abs(diff)} {word} than the {expected} expected "
                   f"{how}{per}")
        suspects = _suspects(data)
        if diff > 0 and suspects:
            summary += "; look at " + "; ".join(suspects[:3])
    if mode == "tolerance":
        summary += f"; tolerance {tol_text}"
    out.judge("kernel_count", "kernel_count", abs(diff) > tol, summary, observed,
              expected + tol if diff > 0 else expected - tol, None,
              expected=expected, difference=diff, tolerance=tol, mode=mode,
              suspects=_suspects(data))


def _suspects(data: Report) -> list[str]:
    """The GEMM shape groups the diagnosis names as the likely extra calls."""
    out = []
    for row in data.kernel_counts.extra:
        sig = row.signature or short_name(str(row.kernel), 50)
        per = row.calls_per_forward
        out.append(f"{sig} x {per:g}/forward" if _number(per) else str(sig))
    return out


def _regression(base: Profile, new: Profile, policy: Policy, out: _Checks) -> None:
    reg = policy.data.get("regression") or {}
    b, n = base.report, new.report
    if base.mode != new.mode:
        out.judge("mode_change", "regression.mode", True,
                  f"mode changed from {base.mode} (baseline) to {new.mode}: only phases in "
                  f"both are compared", new.mode, None, base.mode)
    # per-phase medians of step wall time and GPU busy time
    sb, sn = step_stats(b), step_stats(n)
    min_steps = int(reg.get("min_steps", 3))
    require_noise = bool(reg.get("require_beyond_noise", False))
    from .attribution import attribute, top_contributors

    att = attribute(base.data, new.data)
    phases = sorted(set(sb) & set(sn))
    if not phases:
        out.skip("step_time", "regression.step_time",
                 "no phase with step ranges in both profiles: step times not compared")
    for phase in phases:
        db, dn, unit = phase_unit(phase, b, n)
        pb, pn = sb[phase], sn[phase]
        few = min(pb["steps"], pn["steps"])
        for family, key, what, threshold_key in (
                ("step_time", "median_wall_ns", "wall time", "step_time_pct"),
                ("gpu_busy_per_step", "median_gpu_busy_ns", "GPU busy time",
                 "gpu_busy_per_step_pct")):
            check_id = f"regression.{family}.{phase}"
            if phase != "prefill" and few < min_steps:
                out.skip(family, check_id, f"{phase}: {few} step(s) in a profile, fewer than "
                         f"regression.min_steps = {min_steps}: not compared")
                continue
            vb, vn = pb[key], pn[key]
            if vb is None or vn is None or vb <= 0:
                out.skip(family, check_id, f"no {phase} {what} in both profiles")
                continue
            vb, vn = vb / db, vn / dn
            change = pct_change(vb, vn) or 0.0
            threshold = float(reg.get(threshold_key, 5.0))
            iqr_key = key.replace("median_", "iqr_")
            iqr_b = pb[iqr_key] / db if pb.get(iqr_key) is not None else None
            iqr_n = pn[iqr_key] / dn if pn.get(iqr_key) is not None else None
            noise = beyond_noise(vb, vn, iqr_b, iqr_n)
            violated = change > threshold and not (require_noise and noise is False)
            summary = (f"median {what} {unit}: {_ns(vb)} -> {_ns(vn)} "
                       f"({change:+.1f}%, limit +{threshold:g}%; medians of "
                       f"{pb['steps']} and {pn['steps']} steps")
            if noise is not None:
                spread = _ns(max(iqr_b or 0.0, iqr_n or 0.0))
                summary += (f"; {'beyond' if noise else 'within'} the step-to-step spread "
                            f"(IQR {spread})")
            summary += ")"
            if change > threshold and require_noise and noise is False:
                summary += ": within noise, passed (regression.require_beyond_noise)"
            if violated and family == "step_time":
                why = top_contributors(att, phase)
                if why:
                    summary += f"; top contributors: {why}"
            out.judge(family, check_id, violated, summary, vn,
                      vb * (1 + threshold / 100.0), vb, change_pct=change,
                      threshold_pct=threshold, unit=f"ns {unit}", phase=phase,
                      steps={"baseline": pb["steps"], "new": pn["steps"]},
                      beyond_noise=noise,
                      attribution=next((p["rows"][:5] for p in att.get("phases") or []
                                        if p["phase"] == phase), None)
                      if family == "step_time" else None)
    # overhead share (points)
    ob, on = overhead_share(b), overhead_share(n)
    if ob is None or on is None:
        out.skip("overhead_share", "regression.overhead_share", "no overhead share in both")
    else:
        delta = (on - ob) * 100
        threshold = float(reg.get("overhead_share_abs", 5.0))
        out.judge("overhead_share", "regression.overhead_share", delta > threshold,
                  f"overhead share {_pct(ob)} -> {_pct(on)} ({delta:+.1f} points, limit "
                  f"+{threshold:g})", on, ob + threshold / 100, ob, delta_points=delta)
    # category shares moving either way (the profile changed shape)
    cb, cn = b.categories, n.categories
    threshold = float(reg.get("category_share_abs", 10.0))
    moves = {c: (float(cn.get(c, 0) or 0) - float(cb.get(c, 0) or 0)) * 100
             for c in sorted(set(cb) | set(cn))}
    big = {c: d for c, d in moves.items() if abs(d) > threshold}
    largest = max(moves.items(), key=lambda kv: abs(kv[1]), default=(None, 0.0))
    if big:
        summary = ("category shares moved more than " + f"{threshold:g} points: " +
                   ", ".join(f"{c} {d:+.1f}" for c, d in sorted(big.items(),
                                                                key=lambda kv: -abs(kv[1]))))
    elif largest[0] is not None:
        summary = (f"category shares within {threshold:g} points (largest move: "
                   f"{largest[0]} {largest[1]:+.1f})")
    else:
        summary = "no category shares"
    out.judge("category_share", "regression.category_share", bool(big), summary,
              largest[1], threshold, None, moves_points=moves)
    # GEMM calls per forward
    gb, gn = b.kernel_counts.gemm_calls_per_forward, n.kernel_counts.gemm_calls_per_forward
    if not _number(gb) or not _number(gn):
        out.skip("kernel_count_delta", "regression.kernel_count",
                 "GEMM calls per forward not known in both profiles")
    else:
        delta = gn - gb
        allowed = int(reg.get("kernel_count_delta", 0))
        out.judge("kernel_count_delta", "regression.kernel_count", delta > allowed,
                  f"GEMM calls per forward {gb:g} -> {gn:g} ({delta:+g}, allowed +{allowed})",
                  gn, gb + allowed, gb, delta=delta)
    # launched kernels per step
    pb_k, pn_k = b.overhead.kernels_per_step, n.overhead.kernels_per_step
    if not _number(pb_k) or not _number(pn_k) or not pb_k:
        out.skip("kernels_per_step", "regression.kernels_per_step",
                 "kernels per step not known in both profiles")
    else:
        change = pct_change(pb_k, pn_k) or 0.0
        threshold = float(reg.get("kernels_per_step_pct", 5.0))
        out.judge("kernels_per_step", "regression.kernels_per_step", change > threshold,
                  f"kernels per step {pb_k:g} -> {pn_k:g} ({change:+.1f}%, limit "
                  f"+{threshold:g}%)", pn_k, pb_k * (1 + threshold / 100), pb_k,
                  change_pct=change)
    _top_kernels(base, new, reg, out)


def _top_kernels(base: Profile, new: Profile, reg: Mapping[str, Any], out: _Checks) -> None:
    top_n = int(reg.get("top_kernels", 5))
    if top_n <= 0:
        return
    threshold = float(reg.get("top_kernel_time_pct", 10.0))
    tb, src_b = kernel_table(base)
    tn, src_n = kernel_table(new)
    db, dn, unit = kernel_unit(base.report, new.report)
    top = sorted(tb.items(), key=lambda kv: -kv[1]["total_ns"])[:top_n]
    if not top:
        out.skip("top_kernel_time", "regression.top_kernels", "no kernels in the baseline")
        return
    rows, slower = [], []
    for name, row in top:
        vb = row["total_ns"] / db
        other = tn.get(name)
        if other is None:
            # absent from NEW: gone when NEW lists every kernel, else below its top N
            rows.append({"name": name, "baseline_ns": vb, "new_ns": 0.0 if src_n == "events"
                         else None, "change_pct": -100.0 if src_n == "events" else None})
            continue
        vn = other["total_ns"] / dn
        change = pct_change(vb, vn)
        rows.append({"name": name, "baseline_ns": vb, "new_ns": vn, "change_pct": change})
        if change is not None and change > threshold:
            slower.append((name, change, vb, vn))
    note = "" if src_b == src_n == "events" else " (from report hotspots: top kernels only)"
    if slower:
        worst = max(slower, key=lambda s: s[1])
        summary = (f"{len(slower)} of the baseline's top {len(top)} kernels slower {unit} by "
                   f"more than {threshold:g}%: " + "; ".join(
                       f"{short_name(s[0], 50)} {_ns(s[2])} -> {_ns(s[3])} ({s[1]:+.1f}%)"
                       for s in sorted(slower, key=lambda s: -s[1])[:3]) + note)
        observed: float | None = worst[1]
    else:
        changes = [r["change_pct"] for r in rows if r["change_pct"] is not None]
        worst_change = max(changes) if changes else None
        summary = (f"the baseline's top {len(top)} kernels within +{threshold:g}% {unit}" +
                   (f" (largest change {worst_change:+.1f}%)" if worst_change is not None
                    else "") + note)
        observed = worst_change
    out.judge("top_kernel_time", "regression.top_kernels", bool(slower), summary, observed,
              threshold, None, unit=f"ns {unit}", kernels=rows, source=f"{src_b}/{src_n}")
