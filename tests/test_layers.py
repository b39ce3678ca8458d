"""The layering docs/architecture.md promises, checked on the source (ast, not grep)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PKG = REPO / "profdiag"


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts[:-1])  # the package the module is in
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _library_modules() -> list[Path]:
    return [p for p in PKG.rglob("*.py")
            if p.name != "cli.py" and "commands" not in p.relative_to(PKG).parts]


def test_click_only_in_the_cli():
    offenders = [str(p.relative_to(REPO)) for p in _library_modules()
                 if any(m == "click" or m.startswith("click.") for m in _imports(p))]
    assert offenders == []


def test_gate_and_library_sentences_do_not_import_renderers():
    for name in ("gate.py", "attribution.py", "compare.py"):
        mods = _imports(PKG / name)
        assert not any(m.startswith("profdiag.renderers") for m in mods), (name, mods)


def test_one_jinja_environment():
    makers = [str(p.relative_to(REPO)) for p in PKG.rglob("*.py")
              if "Environment(" in p.read_text(encoding="utf-8")]
    assert makers == ["profdiag/renderers/templating.py"]
