"""docs/cli.md is generated from --help: fail when a command or option is undocumented."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    # a fresh interpreter: click caches help options per command object, so in-process
    # renders depend on which tests ran first
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_cli_docs.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


def test_help_is_fast_and_imports_no_heavy_module():
    code = ("import sys, profdiag.cli as c; c.main(['--help']) if False else None; "
            "from click.testing import CliRunner; r = CliRunner().invoke(c.cli, ['--help']); "
            "assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('pandas', 'torch', 'hta', 'jinja2', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
