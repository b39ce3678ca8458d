"""Rule-driven classification of GPU events into a category and a finer class.

Rules are data (``rules/kernels*.toml``, plus user files given with ``--rules``). Matching
runs once per unique (kind, name, op_name) triple, not once per event, so a trace with a
million launches of forty kernels costs forty regex evaluations per rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import _toml as toml, schema, strcols
from ._literals import Literals, parse as parse_pattern, required_literals
from .errors import RulesError
from .gemm import GEMM_OPS
from .rules_path import rules_dir

CATEGORIES = ("compute", "memory", "normalization", "elementwise", "communication", "overhead",
              "other")
UNMATCHED_CATEGORY = "other"
UNMATCHED_CLASS = "unclassified"
# Classes that are one GEMM call each (a split-K reduce belongs to its GEMM).
GEMM_CLASSES = ("gemm", "gemv")
# What a kernel does inside a decoder block, for the block-structure analysis
# (diagnosis/structure.py): MoE expert GEMMs, routing and combine kernels, the reduction pass
# of an attention kernel, the main kernel of a linear-attention / state-space mixer layer.
ROLES = ("", "moe_expert", "moe_routing", "moe_combine", "attention_aux", "mixer", "mixer_aux",
         "quantize")
# Rules see the first this many characters of a kernel name or op (the library, the tile
# and the dtype come first in every real name; a 1 MB name from a hostile trace must cost
# milliseconds, not minutes). See docs/security.md.
MAX_MATCH_CHARS = 4096


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    klass: str
    priority: int
    pattern: re.Pattern[str] | None = None
    op: re.Pattern[str] | None = None
    kind: str = "kernel"
    why: str = ""
    examples: tuple[dict[str, str], ...] = ()
    source: str = ""
    dtype: str = ""  # the precision the kernel implies (fp8, mxfp4, nvfp4, int4, ...), if any
    role: str = ""  # its part in a decoder block (moe_expert, moe_routing, attention_aux, ...)

    def matches(self, kind: str, name: str, op_name: str | None) -> bool:
        """Return True when every condition of this rule holds (callers bound the lengths,
        see RuleSet.match)."""
        if kind != self.kind:
            return False
        if self.pattern is not None and not self.pattern.search(name):
            return False
        if self.op is not None and (not op_name or not self.op.search(op_name)):
            return False
        return True


@dataclass(frozen=True)
class Match:
    category: str
    klass: str
    rule: Rule | None


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Stable: higher priority first, file order breaks ties.
        self.rules = sorted(self.rules, key=lambda r: -r.priority)

    def match(self, kind: str, name: str, op_name: str | None = None) -> Match:
        """Return the winning rule's category/class, or the unclassified fallback.

        The first matching rule in order, as ``match_slow``; faster: only the rules of
        ``kind`` are tried, and a rule whose name pattern requires literals of which none
        occurs in the (ASCII) name is skipped without running its regex (see _literals.py).
        """
        name = name[:MAX_MATCH_CHARS]
        if not name.isascii():
            return self.match_slow(kind, name, op_name)
        op_name = op_name[:MAX_MATCH_CHARS] if op_name else op_name
        lowered = name.lower()
        contains, lowered_contains = name.__contains__, lowered.__contains__
        for rule, exact, folded in self._index().get(kind, ()):
            # inlined Literals.may_match: any required literal present (C-level loops)
            if (exact is not None and not any(map(contains, exact))
                    and not any(map(lowered_contains, folded))):
                continue
            if rule.pattern is not None and not rule.pattern.search(name):
                continue
            if rule.op is not None and (not op_name or not rule.op.search(op_name)):
                continue
            return Match(rule.category, rule.klass, rule)
        return Match(UNMATCHED_CATEGORY, UNMATCHED_CLASS, None)

    def match_slow(self, kind: str, name: str, op_name: str | None = None) -> Match:
        """``match`` by trying every rule's conditions in order (the reference the fast path
        is tested against, and the path for non-ASCII names)."""
        name = name[:MAX_MATCH_CHARS]
        op_name = op_name[:MAX_MATCH_CHARS] if op_name else op_name
        for rule in self.rules:
            if rule.matches(kind, name, op_name):
                return Match(rule.category, rule.klass, rule)
        return Match(UNMATCHED_CATEGORY, UNMATCHED_CLASS, None)

    def _index(self) -> dict[str, list[tuple[Rule, tuple[str, ...] | None, tuple[str, ...]]]]:
        """Rules per kind, in order, each with its name pattern's required literals (exact,
        lowered; None when it has none: the regex always runs), built once."""
        key = (id(self.rules), len(self.rules))
        cached = self.__dict__.get("_index_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        index: dict[str, list[tuple[Rule, tuple[str, ...] | None, tuple[str, ...]]]] = {}
        for rule in self.rules:
            lits: Literals | None = (
                required_literals(rule.pattern.pattern, rule.pattern.flags)
                if rule.pattern is not None and isinstance(rule.pattern.pattern, str) else None)
            index.setdefault(rule.kind, []).append(
                (rule, None, ()) if lits is None else (rule, lits.exact, lits.lowered))
        self.__dict__["_index_cache"] = (key, index)
        return index

    def candidates(self, kind: str, name: str, op_name: str | None = None) -> list[Rule]:
        """Every rule that matches, winner first (for --explain)."""
        name = name[:MAX_MATCH_CHARS]
        op_name = op_name[:MAX_MATCH_CHARS] if op_name else op_name
        return [r for r in self.rules if r.matches(kind, name, op_name)]


def _compile(value: Any, where: str) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RulesError(f"{where}: pattern must be a string")
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise RulesError(f"{where}: bad regex {value!r}: {exc}") from None
    nested = nested_quantifier(value, compiled.flags)  # (the tree the prefilter reads too)
    if nested:
        raise RulesError(f"{where}: regex {value!r} repeats a repeated group ({nested}), which "
                         "can take exponential time on a long name; rewrite it without the "
                         "nesting (e.g. '(a+)+' as 'a+')")
    return compiled


def nested_quantifier(pattern: str, flags: int = 0) -> str | None:
    """The first unbounded repeat nested in another unbounded repeat ('(a+)+', '(\\w*x?)*'),
    the shape of catastrophic backtracking; None when there is none. Python's re has no
    timeout, so such user patterns are refused before any name is matched. ``flags``: the
    compiled pattern's (``Pattern.flags``), so that the prefilter's parse is this one."""
    try:
        from re._constants import MAXREPEAT  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover (Python < 3.11)
        from sre_constants import MAXREPEAT  # type: ignore[no-redef,unused-ignore]
    try:
        tree = parse_pattern(pattern, flags)
    except Exception:  # noqa: BLE001 (re.compile already accepted it)
        return None
    repeats = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}

    def walk(items: Any, inside: bool) -> str | None:
        for op, av in items:
            name = str(op)
            if name in repeats:
                lo, hi, body = av
                unbounded = hi == MAXREPEAT
                if unbounded and inside:
                    return "an unbounded repeat inside another"
                found = walk(body, inside or unbounded)
                if found:
                    return found
            elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
                body = av[-1] if name == "SUBPATTERN" else av
                found = walk(body, inside)
                if found:
                    return found
            elif name == "BRANCH":
                for alt in av[1]:
                    found = walk(alt, inside)
                    if found:
                        return found
            elif name in ("ASSERT", "ASSERT_NOT"):
                found = walk(av[1], False)
                if found:
                    return found
        return None

    return walk(tree, False)


def _parse_rule(raw: dict[str, Any], source: str) -> Rule:
    rid = raw.get("id")
    where = f"{source}: rule {rid!r}"
    if not isinstance(rid, str) or not rid:
        raise RulesError(f"{source}: a rule has no id")
    for key in ("category", "class"):
        if key not in raw:
            raise RulesError(f"{where}: missing {key!r}")
    if not isinstance(raw["category"], str) or raw["category"] not in CATEGORIES:
        raise RulesError(f"{where}: category {raw['category']!r} not in {', '.join(CATEGORIES)}")
    if "pattern" not in raw and "op" not in raw:
        raise RulesError(f"{where}: needs a 'pattern' or an 'op'")
    for key in ("dtype", "role"):
        if key in raw and not isinstance(raw[key], str):
            raise RulesError(f"{where}: {key!r} must be a string")
    if raw.get("role", "") not in ROLES:
        raise RulesError(f"{where}: role {raw['role']!r} not in {', '.join(r for r in ROLES if r)}")
    examples: list[dict[str, str]] = []
    raw_examples = raw.get("examples", [])
    if not isinstance(raw_examples, list):
        raise RulesError(f"{where}: 'examples' must be a list")
    for ex in raw_examples:
        if isinstance(ex, str):
            examples.append({"name": ex})
        elif isinstance(ex, dict) and isinstance(ex.get("name"), str) and all(
                isinstance(v, str) for v in ex.values()):
            examples.append(dict(ex))
        else:
            raise RulesError(f"{where}: an example must be a name or a table with a 'name'")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 10**6:
        raise RulesError(f"{where}: 'priority' must be an integer, got {priority!r}")
    for key in ("class", "kind", "why"):
        if key in raw and not isinstance(raw[key], str):
            raise RulesError(f"{where}: {key!r} must be a string")
    return Rule(
        id=rid,
        category=raw["category"],
        klass=raw["class"],
        priority=priority,
        pattern=_compile(raw.get("pattern"), where),
        op=_compile(raw.get("op"), where),
        kind=raw.get("kind", "kernel"),
        why=raw.get("why", ""),
        examples=tuple(examples),
        source=source,
        dtype=raw.get("dtype", ""),
        role=raw.get("role", ""),
    )


def load_rule_file(path: Path) -> list[Rule]:
    """Parse one TOML rule file; raise RulesError naming the file on any problem."""
    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError) as exc:
        raise RulesError(f"cannot read rules: {exc}", str(path)) from None
    rules = data.get("rule", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise RulesError("'rule' must be an array of tables ([[rule]])", str(path))
    return [_parse_rule(r, path.name) for r in rules]


def default_rule_files() -> list[Path]:
    """The shipped kernel rule files, in a stable order."""
    return sorted(rules_dir().glob("kernels*.toml"))


@lru_cache(maxsize=8)
def _load_cached(paths: tuple[str, ...]) -> RuleSet:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for p in paths:
        for rule in load_rule_file(Path(p)):
            if rule.id in seen:
                raise RulesError(f"duplicate rule id {rule.id!r} in {rule.source} and {seen[rule.id]}")
            seen[rule.id] = rule.source
            rules.append(rule)
    return RuleSet(rules)


def load_rules(extra: Sequence[str | Path] = ()) -> RuleSet:
    """Shipped rules plus user rule files (user files may add rules with new ids)."""
    paths = [str(p) for p in default_rule_files()] + [str(Path(p)) for p in extra]
    for p in paths:
        if not Path(p).is_file():
            raise RulesError("no such rules file", p)
    return _load_cached(tuple(paths))


def _distinct_keys(events: pd.DataFrame, rows: np.ndarray
                   ) -> tuple[list[tuple[Any, Any, Any]], np.ndarray]:
    """The distinct (kind, name, op_name) of ``rows`` (missing values as None) and each row's
    code into them, from per-column codes (no Python object per row; a compact column's
    codes as they are)."""
    parts = []
    for col in ("kind", "name", "op_name"):
        c, u = strcols.codes_values(events[col])
        values = [v if isinstance(v, str) or not pd.isna(v) else None for v in u.tolist()] + [None]
        parts.append((c[rows].astype(np.int64), values))
    combined = np.zeros(int(rows.sum()), dtype=np.int64)
    for c, values in parts:
        combined, _ = pd.factorize(combined * len(values) + np.where(c < 0, len(values) - 1, c))
        combined = np.asarray(combined, dtype=np.int64)
    first = np.unique(combined, return_index=True)[1]
    uniq = [tuple(values[c[i]] for c, values in parts) for i in first]
    return uniq, combined


# The columns classify adds, in order: each row's is one outcome (a tuple of these).
CLASS_COLUMNS = ("category", "class", "rule_id", "kernel_dtype", "role")
_Outcome = tuple[str | None, str | None, str | None, str | None, str | None]


def classify(events: pd.DataFrame, rules: RuleSet | None = None) -> pd.DataFrame:
    """Return ``events`` with ``category``, ``class``, ``rule_id``, ``kernel_dtype``, ``role`` added.

    ``kernel_dtype`` (the rule's ``dtype``) and ``role`` are the winning rule's (NA when it names none).

    Host-side rows get category "overhead"/class = their kind for runtime and sync calls,
    and NA for cpu_op/annotations (they are not device work).

    The added columns take the table's form: ``string`` columns for a canonical table,
    sorted Categoricals (as ``schema.compact`` writes string columns) for a compact one.
    """
    rules = rules or load_rules()
    out = events.copy(deep=False)  # copy-on-write: the columns added are out's alone
    n = len(out)
    # Each row's outcome as a code into ``table`` (-1: none), one rule match per distinct key.
    table: list[_Outcome] = []
    row_code = np.full(n, -1, dtype=np.int64)
    if n:
        kind = out["kind"]
        gpu = kind.isin(("kernel", "memcpy", "memset")).to_numpy(dtype=bool)
        if gpu.any():
            uniq, codes = _distinct_keys(out, gpu)
            for k, name, op in uniq:
                m = rules.match(str(k), name if isinstance(name, str) else "",
                                op if isinstance(op, str) else None)
                table.append((m.category, m.klass, m.rule.id if m.rule else None,
                              (m.rule.dtype or None) if m.rule else None,
                              (m.rule.role or None) if m.rule else None))
            row_code[gpu] = codes
            _shape_consistent(out, gpu, row_code, table)
        for host_kind in ("runtime", "sync"):
            host = (kind == host_kind).to_numpy(dtype=bool)
            if host.any():
                table.append(("overhead", host_kind, None, None, None))
                row_code[host] = len(table) - 1
    compact = schema.is_compact(out)
    for j, col in enumerate(CLASS_COLUMNS):
        out[col] = _outcome_column([t[j] for t in table], row_code, compact, out.index)
    return out


def _outcome_column(values: list[str | None], row_code: np.ndarray, compact: bool,
                    index: pd.Index) -> pd.Series:
    """One added column: each row's value from the outcome table (NA where code -1)."""
    if compact:
        return pd.Series(schema.coded_categorical(row_code, values), index=index, copy=False)
    arr = pd.array([*values, None], dtype="string")
    return pd.Series(arr.take(np.where(row_code < 0, len(values), row_code)), index=index,
                     copy=False)


# A GEMV is a GEMM whose token side is this small (the gemv rules' premise: M <= 8).
GEMV_MAX_ROWS = 8


def _shape_consistent(out: pd.DataFrame, gpu: np.ndarray, row_code: np.ndarray,
                      table: list[_Outcome]) -> None:
    """Make a kernel's class agree with its launching op's shapes, when they are known.

    A name rule may call a kernel a GEMV (an nvjet tile with an 8-wide side) that the trace
    shows running ``aten::mm [[2048, 2048], [2048, 512]]``: M = 2048 rows is a GEMM. Such rows
    become class ``gemm`` with rule id ``<rule>+shape`` (the rule matched, the shapes won):
    their outcome code moves to a ``+shape`` variant appended to ``table``.
    """
    if "input_dims" not in out.columns or "op_name" not in out.columns:
        return
    gemv = [i for i, t in enumerate(table) if t[1] == "gemv"]
    if not gemv:
        return
    cand = (gpu & np.isin(row_code, gemv) & strcols.isin(out["op_name"], GEMM_OPS)
            & out["input_dims"].notna().to_numpy(dtype=bool))
    if not cand.any():
        return
    from .roofline import _shape_of  # lazy: roofline imports pandas-heavy helpers

    pos = np.flatnonzero(cand)
    op_codes, op_values = strcols.codes_values(out["op_name"])
    dim_codes, dim_values = strcols.codes_values(out["input_dims"])
    # one shape per distinct (op, dims) pair of the candidate rows
    n_dims = len(dim_values) + 1
    keys, pair_of = np.unique(op_codes[pos].astype(np.int64) * n_dims + dim_codes[pos],
                              return_inverse=True)
    pairs = [(k // n_dims, k % n_dims) for k in keys.tolist()]
    wide = np.zeros(len(pairs), dtype=bool)
    for i, (oc, dc) in enumerate(pairs):
        shp = _shape_of(str(op_values[oc]), str(dim_values[dc]))
        wide[i] = shp is not None and int(min(shp.m, shp.n)) > GEMV_MAX_ROWS
    moved = pos[wide[np.asarray(pair_of).reshape(-1)]]
    remap = np.arange(len(table), dtype=np.int64)
    for code in np.unique(row_code[moved]).tolist():
        cat, _, rid, dt, role = table[code]
        table.append((cat, "gemm", f"{rid if rid is not None else pd.NA}+shape", dt, role))
        remap[code] = len(table) - 1
    row_code[moved] = remap[row_code[moved]]


def explain(name: str, rules: RuleSet | None = None, op_name: str | None = None,
            kind: str = "kernel") -> list[Rule]:
    """Every rule matching ``name`` (winner first); empty when none matches."""
    rules = rules or load_rules()
    return rules.candidates(kind, name, op_name)


def unmatched(events: pd.DataFrame) -> pd.DataFrame:
    """Names no rule matched in a classified table: name, op_name, calls, total_ns."""
    sub = events[events["class"] == UNMATCHED_CLASS]
    if sub.empty:
        return pd.DataFrame(columns=["name", "op_name", "calls", "total_ns"])
    g = sub.groupby(["name", "op_name"], dropna=False, observed=True)["dur_ns"]
    res = g.agg(calls="count", total_ns="sum").reset_index()
    return res.sort_values("total_ns", ascending=False, ignore_index=True)


def iter_examples(rules: RuleSet) -> Iterable[tuple[Rule, dict[str, str]]]:
    """(rule, example) pairs, for tests and `profdiag classify --check`."""
    for rule in rules.rules:
        for ex in rule.examples:
            yield rule, ex
