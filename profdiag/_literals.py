"""Required literals of a regex: a cheap, exact prefilter for the kernel rules (issue 18).

``required_literals(pattern)`` returns strings of which at least one occurs in every text the
pattern can ``search`` (a necessary condition, never a sufficient one), or None when no such
set could be derived. ``str.__contains__`` over a 1 KB kernel name is about a hundred times
cheaper than ``re.search`` over it, so a rule whose literals are all absent is skipped without
running its regex; the rule order and the regex of every remaining rule are unchanged, so the
first matching rule is the same as without the prefilter.

Only what the parse tree proves is used: a run of LITERAL nodes in one sequence is a substring
of every match; a group or a repeat of at least one brings its body's requirement; a branch
requires the union of its alternatives' (none when one alternative requires nothing).
Lookarounds, classes, backreferences and optional parts require nothing. Case-insensitive
literals (``(?i)`` anywhere above them) are lowered and must be tested against the lowered
text; that is exact for ASCII texts only, so callers skip the prefilter for other texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

try:
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
    from re._constants import SRE_FLAG_IGNORECASE as _IGNORECASE  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover (Python < 3.11)
    import sre_parse as _sre_parse  # type: ignore[no-redef,unused-ignore]
    from sre_constants import SRE_FLAG_IGNORECASE as _IGNORECASE  # type: ignore[no-redef,unused-ignore]

# One required alternative: (text, case_insensitive). A requirement: any of its alternatives.
Requirement = frozenset[tuple[str, bool]]


@lru_cache(maxsize=1024)
def parse(pattern: str, flags: int = 0) -> Any:
    """``re``'s parse tree of ``pattern`` under ``flags``, parsed once per (pattern, flags):
    the rule loader's nested-repeat check (classify.nested_quantifier) and the prefilter read
    the same tree, and neither changes it. Raises what the parser raises (not cached)."""
    return _sre_parse.parse(pattern, flags)


@dataclass(frozen=True)
class Literals:
    """Strings of which one occurs in every match: ``exact`` in the text itself, ``lowered``
    (already lower case) in ``text.lower()``."""

    exact: tuple[str, ...]
    lowered: tuple[str, ...]

    def may_match(self, text: str, lowered: str) -> bool:
        """False only when no match of the pattern is possible in ``text`` (ASCII)."""
        for s in self.exact:
            if s in text:
                return True
        for s in self.lowered:
            if s in lowered:
                return True
        return False


def _score(req: Requirement) -> tuple[int, int]:
    """Prefer requirements with a long shortest alternative, then fewer alternatives."""
    return (min(len(s) for s, _ in req), -len(req))


def _best(cands: list[Requirement]) -> Requirement | None:
    return max(cands, key=_score) if cands else None


def _sequence(items: Any, ci: bool) -> Requirement | None:
    """The best requirement of a sequence of parse items (every item must match)."""
    cands: list[Requirement] = []
    run: list[str] = []

    def close() -> None:
        if run:
            cands.append(frozenset({("".join(run), ci)}))
            run.clear()

    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            ch = chr(av)
            if ci:
                if not ch.isascii():
                    close()
                    continue
                ch = ch.lower()
            run.append(ch)
            continue
        close()
        sub: Requirement | None = None
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, _hi, body = av
            if lo >= 1:
                sub = _sequence(body, ci)
        elif name == "SUBPATTERN":
            _group, add_flags, del_flags, body = av
            inner = ci
            if add_flags & _IGNORECASE:
                inner = True
            if del_flags & _IGNORECASE:
                inner = False
            sub = _sequence(body, inner)
        elif name == "ATOMIC_GROUP":
            sub = _sequence(av, ci)
        elif name == "BRANCH":
            union: set[tuple[str, bool]] = set()
            for alt in av[1]:
                req = _sequence(alt, ci)
                if req is None:
                    union.clear()
                    break
                union |= req
            if union:
                sub = frozenset(union)
        # anything else (IN, ANY, AT, ASSERT, GROUPREF, CATEGORY, ...) requires nothing
        if sub is not None:
            cands.append(sub)
    close()
    return _best(cands)


def required_literals(pattern: str, flags: int = 0) -> Literals | None:
    """The prefilter of ``pattern`` compiled with ``flags`` (``Pattern.flags``), or None when
    no literal is provably required."""
    try:
        tree = parse(pattern, flags)
    except Exception:  # noqa: BLE001 (the caller compiles and reports bad patterns)
        return None
    ci = bool(tree.state.flags & _IGNORECASE)
    req = _sequence(tree, ci)
    if req is None or any(not s for s, _ in req):
        return None
    exact = tuple(sorted(s for s, c in req if not c))
    lowered = tuple(sorted(s for s, c in req if c))
    return Literals(exact, lowered)
