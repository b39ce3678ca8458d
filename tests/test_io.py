import os
import stat

import pytest

from profdiag.errors import OutputError
from profdiag.io import write_atomic


def test_write_atomic_gives_normal_permissions_and_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "r.html"
    write_atomic(target, "<html></html>")
    assert target.read_text() == "<html></html>"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["r.html"]


def test_write_atomic_failure_leaves_nothing(tmp_path):
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_atomic(tmp_path / "blocker" / "r.html", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]
