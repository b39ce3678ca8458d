"""The built wheel carries what the source tree uses: templates, rules, py.typed; and it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import EAGER

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (test extra)")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(REPO)], check=True,
                   capture_output=True, timeout=300)
    (whl,) = out.glob("profdiag-*.whl")
    return whl


def test_wheel_has_every_template_rule_file_and_py_typed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = REPO / "profdiag" / "renderers" / "templates"
    for f in templates.iterdir():
        assert f"profdiag/renderers/templates/{f.name}" in names
    for f in (REPO / "rules").glob("*.toml"):
        assert f"profdiag/_rules/{f.name}" in names
    assert "profdiag/py.typed" in names


def test_installed_wheel_renders_a_report(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    out = tmp_path / "r.html"
    # run from an empty folder with only the installed copy importable: no source tree
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c",
                           "import profdiag.cli, sys; from profdiag.rules_path import rules_dir; "
                           "print(rules_dir()); "
                           "sys.exit(profdiag.cli.main(['report', sys.argv[1], '-o', sys.argv[2], "
                           "'-q']))", str(EAGER), str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    assert str(target) in proc.stdout  # the rules came from the wheel, not the checkout
    html = out.read_text()
    assert "<html" in html and "profdiag" in html
