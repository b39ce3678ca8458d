"""RuleSet.match (per-kind rules, literal prefilter) gives exactly match_slow's result
(every rule tried in order) on every name we can find: fixtures, ../shared, rule examples,
and adversarial names (1 KB, several rule keywords, case games, non-ASCII, past the cut)."""

from __future__ import annotations

import csv
import gzip
import re
import sqlite3
import tempfile
from functools import lru_cache

import orjson
import pytest

from profdiag._literals import required_literals
from profdiag.classify import MAX_MATCH_CHARS, Rule, RuleSet, load_rules
from profdiag.gemm import GEMM_OPS

from helpers import FIXTURES, SHARED

RULES = load_rules()


# every "name": "..." string of a JSON trace (kernels, ops, annotations; a scan of the bytes
# instead of a parse: several times faster on the 35 MB samples, and a superset of the names)
NAME_RE = re.compile(rb'"name":\s*"((?:[^"\\]|\\.)*)"')


def _names_of_json(raw: bytes) -> set[str]:
    out: set[str] = set()
    for m in set(NAME_RE.findall(raw)):
        try:
            value = orjson.loads(b'"' + m + b'"')
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, str):
            out.add(value)
    return out


def _names_of_sqlite(raw: bytes) -> set[str]:
    with tempfile.NamedTemporaryFile(suffix=".sqlite") as tmp:
        tmp.write(raw)
        tmp.flush()
        con = sqlite3.connect(tmp.name)
        try:
            out: set[str] = set()
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            if "CUPTI_ACTIVITY_KIND_KERNEL" in tables and "StringIds" in tables:  # nsys: kernels
                cols = {r[1] for r in con.execute("PRAGMA table_info(CUPTI_ACTIVITY_KIND_KERNEL)")}
                ids = " UNION ".join(f"SELECT {c} FROM CUPTI_ACTIVITY_KIND_KERNEL" for c in
                                     ("shortName", "demangledName", "mangledName") if c in cols)
                return {v for (v,) in con.execute(f"SELECT value FROM StringIds WHERE id IN ({ids})")}
            for t in tables:
                cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]
                for c in cols:
                    if t == "StringIds" and c == "value" or "name" in c.lower():
                        out |= {v for (v,) in con.execute(f'SELECT DISTINCT "{c}" FROM "{t}"')
                                if isinstance(v, str)}
            return out
        except sqlite3.DatabaseError:
            return set()
        finally:
            con.close()


def _names_of_csv(raw: bytes) -> set[str]:
    text = raw.decode("utf-8", "replace").splitlines()
    rows = csv.reader(text)
    header = next(rows, [])
    cols = [i for i, h in enumerate(header) if "name" in h.lower() or "kernel" in h.lower()]
    return {row[i] for row in rows for i in cols if i < len(row)}


@lru_cache(maxsize=1)
def trace_names() -> frozenset[str]:
    """Every event/string/kernel name in fixtures/ and ../shared (traces, samples)."""
    names: set[str] = set()
    roots = [FIXTURES, SHARED / "traces", SHARED / "samples"]
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file():
                continue
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            suffixes = "".join(path.suffixes)
            if ".json" in suffixes:
                names |= _names_of_json(raw)
            elif raw[:16] == b"SQLite format 3\x00":
                names |= _names_of_sqlite(raw)
            elif ".csv" in suffixes:
                names |= _names_of_csv(raw)
    return frozenset(names)


def example_names() -> list[tuple[str, str, str | None]]:
    return [(ex.get("kind", "kernel"), ex["name"], ex.get("op"))
            for r in RULES.rules for ex in r.examples]


def ops() -> list[str | None]:
    found = {op for _, _, op in example_names() if op}
    return [None, "", *sorted(found | set(GEMM_OPS) | {"aten::add", "aten::mean", "aten::copy_"})]


def adversarial(base: list[str]) -> list[str]:
    """Long, keyword-stuffed, case-changed and non-ASCII variants of ``base``."""
    words = sorted({s for r in RULES.rules if r.pattern is not None
                    for lits in [required_literals(r.pattern.pattern, r.pattern.flags)]
                    if lits for s in lits.exact + lits.lowered})
    out: list[str] = []
    for i, name in enumerate(base):
        pad = " /*variant " + str(i) + ": " + "x" * max(0, 1000 - len(name)) + "*/"
        out += [name + pad, pad + name, name.upper(), name.lower(), name.swapcase()]
        out.append(name.replace("k", "\u212a").replace("s", "\u017f"))  # Kelvin sign, long s
        out.append("\u0130" + name)  # a non-ASCII first character
        if i % 4 == 0:
            out.append("x" * (MAX_MATCH_CHARS - len(name) // 2) + name)  # straddles the cut
        w1, w2 = words[i % len(words)], words[(i * 7 + 3) % len(words)]
        out += [w1 + w2, w2 + "_" + w1, w1.upper() + name, name + w2]
    for a, b in zip(base, base[1:] + base[:1]):
        out += [a + " " + b, b + a]
    out += words + [w.upper() for w in words] + [w.title() for w in words]
    out += ["", "x" * 5000, "\u00e9" * 100, "nvjet_", "^nvjet_", "a" * 1024]
    return out


def assert_same(rules: RuleSet, kind: str, name: str, op: str | None) -> None:
    fast = rules.match(kind, name, op)
    slow = rules.match_slow(kind, name, op)
    assert fast == slow and fast.rule is slow.rule, (kind, name[:120], op, fast, slow)


def test_fast_match_equals_slow_on_examples_and_trace_names():
    cases = example_names()
    names = sorted(trace_names())
    assert len(names) > 100  # fixtures alone hold hundreds of kernel names
    op_list = ops()
    for i, name in enumerate(names):
        cases.append(("kernel", name, op_list[i % len(op_list)]))  # None, "" and ops in turn
    for kind in ("memcpy", "memset", "runtime", "no_such_kind"):
        cases += [(kind, n, None) for n in names[:50]]
    for kind, name, op in cases:
        assert_same(RULES, kind, name, op)


def test_fast_match_equals_slow_on_adversarial_names():
    base = [n for _, n, _ in example_names()] + sorted(trace_names())[::50]
    op_list = ops()
    for i, name in enumerate(adversarial(base)):
        assert_same(RULES, "kernel", name, op_list[i % len(op_list)])


def _rule(rid: str, pattern: str, flags: int = 0, priority: int = 0) -> Rule:
    return Rule(id=rid, category="compute", klass=rid, priority=priority,
                pattern=re.compile(pattern, flags))


@pytest.mark.parametrize("pattern,flags,required", [
    ("^nvjet_", 0, ({"nvjet_"}, set())),
    ("(?i)gemv|matvec", 0, (set(), {"gemv", "matvec"})),
    ("gemv|matvec", re.IGNORECASE, (set(), {"gemv", "matvec"})),   # flags given to compile
    ("ab(?i:CD)", 0, ({"ab"}, set())),                              # the longest run wins a tie
    ("x(?i:GEMM_KERNEL)", 0, (set(), {"gemm_kernel"})),
    ("foo(bar)?baz", 0, ({"foo"}, set())),
    ("(abc)+", 0, ({"abc"}, set())),
])
def test_required_literals(pattern, flags, required):
    lits = required_literals(pattern, flags)
    assert lits is not None
    assert (set(lits.exact), set(lits.lowered)) == required


@pytest.mark.parametrize("pattern", [".", "a?", "(abc)*", "a|.", "(?=abc)", "[ab]c?", "(?:a|)b?",
                                     "a{0,3}"])
def test_no_literal_required(pattern):
    assert required_literals(pattern) is None


def test_hand_built_ruleset_with_compile_flags_and_priorities():
    rules = RuleSet([_rule("low", "kernel"), _rule("ci", "gemm", re.IGNORECASE, priority=5),
                     _rule("uni", "stra\u00dfe", re.IGNORECASE, priority=3)])
    for name in ["GEMM_kernel", "my_kernel", "Gemm", "STRASSE_kernel", "stra\u00dfe", "nothing",
                 "\u212aernel gemm"]:
        assert_same(rules, "kernel", name, None)
    assert rules.match("kernel", "GEMM_kernel").klass == "ci"  # priority 5 before file order
    assert rules.match("kernel", "my_kernel").klass == "low"
