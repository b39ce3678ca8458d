"""docs/cli.md is generated from --help: fail when a command or option is undocumented."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_cli_docs
    finally:
        sys.path.pop(0)
    expected = gen_cli_docs.render()
    actual = (REPO / "docs" / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


def test_help_is_fast_and_imports_no_heavy_module():
    code = ("import sys, profdiag.cli as c; c.main(['--help']) if False else None; "
            "from click.testing import CliRunner; r = CliRunner().invoke(c.cli, ['--help']); "
            "assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('pandas', 'torch', 'hta', 'jinja2', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
