"""The gate result as GitHub-flavoured Markdown: a PR comment or a job summary
($GITHUB_STEP_SUMMARY). Takes ``GateResult.to_dict()``."""

from __future__ import annotations

from typing import Any

from .markdown import code, esc, table

ICON = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "skip": "⏭️ skip"}
HEADLINE = {"pass": "✅ passed", "warn": "⚠️ passed with warnings", "fail": "❌ failed"}


def render(data: dict[str, Any]) -> str:
    """A heading with the verdict, what was gated, and one table row per check."""
    counts = data.get("counts") or {}
    status = str(data.get("status", ""))
    lines = [f"### profdiag gate {HEADLINE.get(status, esc(status))}", ""]
    lines.append(f"Trace {code(data.get('trace', ''), cell=False)} ({esc(data.get('mode'))})"
                 + (f" against baseline {code(data['baseline'], cell=False)} "
                    f"({esc(data.get('baseline_mode'))})" if data.get("baseline") else "")
                 + f": {counts.get('fail', 0)} failed, {counts.get('warn', 0)} warnings, "
                   f"{counts.get('pass', 0)} passed, {counts.get('skip', 0)} skipped.")
    lines.append("")
    # failures first, then warnings, passes, skips; stable within a status
    order = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
    checks = sorted(data.get("checks") or [], key=lambda c: order.get(c.get("status"), 9))
    rows = [(ICON.get(c["status"], esc(c["status"])), code(c["id"]), esc(c["summary"]))
            for c in checks]
    lines += table(["status", "check", "summary"], rows) if rows else ["(no checks)"]
    lines.append("")
    return "\n".join(lines) + "\n"
