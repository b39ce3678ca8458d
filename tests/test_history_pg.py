"""The history on a real PostgreSQL server (--db postgresql://...), started by the test on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers import PREFILL, diagnosed, run_cli

psycopg = pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'profdiag[postgres]')")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not initdb or not postgres:
        pytest.skip("PostgreSQL server not installed (scripts/test installs it with apt-get "
                    "when run as root on Debian)")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # postgres refuses to run as root: use the postgres system user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="profdiag-pg-")
    os.chmod(base, 0o755)
    data = os.path.join(base, "data")
    os.mkdir(data)
    if owner:
        os.chown(base, owner.pw_uid, owner.pw_gid)
        os.chown(data, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    proc = None
    try:
        subprocess.run(prefix + [initdb, "-D", data, "-A", "trust", "-U", "profdiag", "-E",
                                 "UTF8", "--no-sync"], check=True, capture_output=True,
                       timeout=120)
        proc = subprocess.Popen(prefix + [postgres, "-D", data, "-p", str(port), "-k", base,
                                          "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"postgresql://profdiag@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the PostgreSQL server did not start within 30 s")
                time.sleep(0.3)
        yield url
    finally:
        if proc is not None:
            proc.send_signal(2)  # SIGINT: fast shutdown
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_record_list_show_trend_on_postgres(pg_url, tmp_path, capsys):
    from profdiag import history

    code, out, err = run_cli(["report", PREFILL, "-o", tmp_path / "r.json", "--record", "--db",
                              pg_url, "--label", "runner=a"], capsys)
    assert code == 0, err
    assert "recorded as run 1" in out
    # the same trace from another runner with another label is a second run; again = same id
    data = diagnosed(str(PREFILL)).to_dict()
    assert history.record(data, PREFILL, {"runner": "b"}, db=pg_url) == 2
    assert history.record(data, PREFILL, {"runner": "b"}, db=pg_url) == 2
    runs = history.list_runs(pg_url)
    assert runs["id"].tolist() == [1, 2]
    assert [r["runner"] for r in runs["labels"]] == ["a", "b"]
    assert history.list_runs(pg_url, labels={"runner": "b"})["id"].tolist() == [2]
    got = history.get(pg_url, 2)
    assert got["diagnosis"] == data and got["labels"] == {"runner": "b"}
    assert "overhead_share" in history.metric_names(pg_url)
    tr = history.trend(pg_url, "overhead_share")
    assert tr["value"].tolist() == pytest.approx([data["overhead"]["overhead_share"]] * 2)
    code, out, _ = run_cli(["history", "list", "--db", pg_url], capsys)
    assert code == 0 and "runner=a" in out and "runner=b" in out
    assert history.open(pg_url).metrics["run_id"].nunique() == 2
    assert history.delete(pg_url, 2) is True and history.list_runs(pg_url)["id"].tolist() == [1]


def test_concurrent_writers_lose_nothing(pg_url):
    """Eight writers at once (as from eight CI runners): eight runs, no duplicate ids."""
    from profdiag import history

    data = diagnosed(str(PREFILL)).to_dict()
    ids: list[int] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            ids.append(history.record(data, PREFILL, {"runner": f"ci-{i}"}, db=pg_url))
        except BaseException as exc:  # noqa: B036 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(set(ids)) == 8
    labels = {r["runner"] for r in history.list_runs(pg_url)["labels"]}
    assert {f"ci-{i}" for i in range(8)} <= labels


def test_unreachable_server_is_a_one_line_error(tmp_path, capsys):
    url = f"postgresql://nobody:secret@127.0.0.1:{_free_port()}/x"
    code, _, err = run_cli(["history", "list", "--db", url], capsys)
    assert code == 7 and err.count("\n") == 1
    assert "cannot reach the history server" in err and "secret" not in err
    assert not Path("postgresql:").exists()
