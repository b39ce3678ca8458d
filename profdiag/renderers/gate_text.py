"""The gate result for a terminal: a plain fixed-width table (or a rich table on a TTY),
and GitHub Actions annotations. Each function takes ``GateResult.to_dict()``."""

# no `from __future__ import annotations` here: this module defines a public function
# called annotations(), which that import would shadow for type checkers.
from typing import Any

STATUS_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}
STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
SUMMARY_WIDTH = 300


def verdict_line(data: dict[str, Any]) -> str:
    """One line: the verdict and the check counts."""
    c = data.get("counts") or {}
    word = {"pass": "passed", "warn": "passed with warnings", "fail": "FAILED"}.get(
        data.get("status", ""), str(data.get("status")))
    against = f" against {data['baseline']}" if data.get("baseline") else ""
    return (f"profdiag gate {word}: {data.get('trace')} ({data.get('mode')}){against}: "
            f"{c.get('fail', 0)} failed, {c.get('warn', 0)} warnings, {c.get('pass', 0)} "
            f"passed, {c.get('skip', 0)} skipped")


def render(data: dict[str, Any]) -> str:
    """A plain-text table of the checks, then the verdict line."""
    from .text import table, truncate

    rows = [(STATUS_MARK.get(c["status"], c["status"]), c["id"],
             truncate(c["summary"], SUMMARY_WIDTH)) for c in data.get("checks") or []]
    lines = table(["status", "check", "summary"], rows, indent="") if rows else ["(no checks)"]
    return "\n".join([*lines, "", verdict_line(data)]) + "\n"


def rich_table(data: dict[str, Any]) -> Any:
    """A rich Table of the checks (for a TTY), titled with the verdict."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=verdict_line(data), title_justify="left", show_lines=False, expand=False)
    t.add_column("status", no_wrap=True)
    t.add_column("check", no_wrap=True)
    t.add_column("summary", overflow="fold")
    for c in data.get("checks") or []:
        t.add_row(Text(STATUS_MARK.get(c["status"], c["status"]),
                       style=STATUS_STYLE.get(c["status"], "")),
                  Text(c["id"]), Text(c["summary"]))
    return t


def _escape_data(text: str) -> str:
    """Escape a GitHub workflow-command message (% CR LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotations(data: dict[str, Any]) -> list[str]:
    """GitHub Actions workflow commands: ::error for failed checks, ::warning for warnings."""
    out = []
    for c in data.get("checks") or []:
        level = {"fail": "error", "warn": "warning"}.get(c["status"])
        if level is None:
            continue
        title = _escape_property("profdiag gate")
        out.append(f"::{level} title={title}::{_escape_data(c['id'] + ': ' + c['summary'])}")
    return out
