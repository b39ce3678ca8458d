"""`profdiag classify`: how the rules classify a trace's kernels, which match none, and why."""

from __future__ import annotations

from typing import Any

import click

from .textout import echo


@click.command("classify")
@click.argument("trace", type=click.Path(), required=False)
@click.option("--unmatched", is_flag=True, help="List only kernel names no rule matched.")
@click.option("--explain", "explain_name", metavar="NAME",
              help="Say which rule matches kernel NAME (and which others would).")
@click.option("--op", "op_name", metavar="OP", help="With --explain: the launching CPU op.")
@click.option("--check", is_flag=True, help="Check every rule's examples classify to its class.")
@click.option("--rules", "rules", multiple=True, type=click.Path(dir_okay=False),
              help="Extra TOML rule file (repeatable).")
@click.option("--trace-format", type=click.Choice(["torch", "nsys", "rocprof"]))
@click.option("--limit", type=click.IntRange(0, 10**9), default=50, show_default=True, help="Rows to print.")
def command(trace: str | None, unmatched: bool, explain_name: str | None, op_name: str | None,
            check: bool, rules: tuple[str, ...], trace_format: str | None, limit: int) -> None:
    """Classify the GPU events of TRACE by the rule files (rules/kernels*.toml + --rules)."""
    import os

    from ..classify import classify, explain, iter_examples, load_rules, unmatched as unmatched_of
    from ..errors import UsageError
    from ..io import check_input

    for rules_file in rules:
        if os.path.lexists(rules_file):  # special files refused; a missing one: load_rules
            check_input(rules_file, what="rules file", error=UsageError)
    ruleset = load_rules(rules)
    if check:
        bad = 0
        total = 0
        for rule, ex in iter_examples(ruleset):
            total += 1
            got = ruleset.match(ex.get("kind", "kernel"), ex["name"], ex.get("op"))
            if got.klass != rule.klass:
                bad += 1
                echo(f"FAIL {rule.id}: example classified as {got.klass} by "
                           f"{got.rule.id if got.rule else 'no rule'}: {ex['name'][:100]}")
        echo(f"{total - bad} of {total} rule examples classify as their rule says")
        if bad:
            raise click.exceptions.Exit(1)
        return
    if explain_name is not None:
        matches = explain(explain_name, ruleset, op_name)
        if not matches:
            echo(f"no rule matches {explain_name!r}: category other, class unclassified")
            return
        win = matches[0]
        echo(f"{win.category}/{win.klass} by rule {win.id} ({win.source}, priority "
                   f"{win.priority}): {win.why}")
        for other in matches[1:]:
            echo(f"  also matches {other.id} ({other.klass}, priority {other.priority})")
        return
    if trace is None:
        raise UsageError("give a TRACE, or --explain NAME, or --check")
    from .. import load
    from ..schema import GPU_KINDS

    tr = load(trace, format=trace_format)
    gpu = tr.events[tr.events["kind"].isin(GPU_KINDS)]
    classified = classify(gpu, ruleset)
    if unmatched:
        table = unmatched_of(classified)
        if table.empty:
            echo("every GPU event matched a rule")
            return
        for r in table.head(limit).to_dict("records"):
            echo(f"{r['calls']:>8} {r['total_ns'] / 1e6:>10.3f} ms  {_op(r)}{r['name']}")
        return
    g = classified.groupby(["category", "class"], dropna=False, observed=True)["dur_ns"].agg(
        ["count", "sum"]).reset_index().sort_values("sum", ascending=False)
    echo(f"{'category':<14}{'class':<16}{'calls':>8}{'total ms':>12}")
    for r in g.to_dict("records"):
        echo(f"{r['category']!s:<14}{r['class']!s:<16}{r['count']:>8}{r['sum'] / 1e6:>12.3f}")


def _op(r: dict[str, Any]) -> str:
    op = r.get("op_name")
    return f"[{op}] " if isinstance(op, str) else ""
