"""parsers._prefetch: a forked child streams a Kineto JSON while the parent imports. The table,
the warnings and the errors are those of streaming in-process; any failure of the child
falls back to that; the conditions keep it out of library callers and non-JSON inputs."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import signal
import subprocess
import sys

import pytest

import profdiag
from profdiag.errors import TraceFormatError
from profdiag.parsers import _kineto_fast as fast, _prefetch

from helpers import EAGER, FIXTURES

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not sys.platform.startswith("linux"),
                                reason="the prefetch forks (Linux only)")


@pytest.fixture(autouse=True)
def _no_child_left():
    yield
    _prefetch.discard()


def _plain(tmp_path, data: bytes, name: str = "t.json"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_the_child_s_table_is_the_in_process_one(tmp_path):
    ref = profdiag.load(EAGER, compact=True)
    assert _prefetch.start(str(EAGER), "always")
    got = _taken_load(EAGER)
    assert got.events.equals(ref.events)
    assert list(got.events.dtypes) == list(ref.events.dtypes)
    assert got.meta.warnings == ref.meta.warnings
    assert got.meta.collectives == ref.meta.collectives


def _taken_load(path):
    """profdiag.load(path, compact=True) with the in-process streamer refused."""
    saved = fast.stream

    def refuse(*args, **kwargs):
        raise AssertionError("streamed in-process")

    fast.stream = refuse
    try:
        return profdiag.load(path, compact=True)
    finally:
        fast.stream = saved


def test_a_truncated_trace_is_salvaged_with_the_same_warning(tmp_path):
    data = gzip.decompress(EAGER.read_bytes())
    head = data[: int(len(data) * 0.7)]
    cut = _plain(tmp_path, head[: head.rfind(b"},") + 2])  # killed after an event
    ref = profdiag.load(cut, compact=True)
    assert any("truncated" in w for w in ref.meta.warnings)
    assert _prefetch.start(str(cut), "always")
    got = _taken_load(cut)
    assert got.events.equals(ref.events)
    assert got.meta.warnings == ref.meta.warnings


def test_the_child_s_format_error_is_raised_with_its_message(tmp_path, monkeypatch):
    # a gzip inflating past --max-inflated-size (the environment the child inherits), past
    # the head the parent sniffs: the child's streamer raises it
    monkeypatch.setenv("PROFDIAG_MAX_INFLATED_SIZE", str(1 << 20))
    with pytest.raises(TraceFormatError) as ref:
        profdiag.load(EAGER)
    assert "max-inflated-size" in str(ref.value)
    assert _prefetch.start(str(EAGER), "always")
    with pytest.raises(TraceFormatError) as got:
        _taken_load(EAGER)
    assert str(got.value) == str(ref.value)
    assert got.value.exit_code == ref.value.exit_code


def test_a_corrupt_gzip_fails_as_it_does_without_the_child(tmp_path):
    data = bytearray(EAGER.read_bytes())  # corrupt past the sniffed head: StreamUnsupported
    at = len(data) // 2
    data[at: at + 64] = bytes(64)
    bad = _plain(tmp_path, bytes(data), "bad.json.gz")
    with pytest.raises(TraceFormatError) as ref:
        profdiag.load(bad)
    assert "corrupt gzip stream" in str(ref.value)
    assert _prefetch.start(str(bad), "always")
    with pytest.raises(TraceFormatError) as got:
        profdiag.load(bad)
    assert str(got.value) == str(ref.value)


def test_a_layout_the_streamer_refuses_goes_to_the_whole_document_path(tmp_path):
    # NaN mid-file: the streamer's piece does not decode (StreamUnsupported in the child),
    # the parent reads the whole document as it would have
    events = [{"ph": "X", "cat": "kernel", "name": f"k{i}", "ts": i * 10, "dur": 5, "pid": 0,
               "tid": 7, "args": {"device": 0, "stream": 7}} for i in range(50)]
    text = json.dumps({"traceEvents": events}).replace('"dur": 5, "pid": 0, "tid": 7, "args": '
                                                       '{"device": 0, "stream": 7}}, {"ph": "X", '
                                                       '"cat": "kernel", "name": "k20"',
                                                       '"dur": 5, "pid": 0, "tid": 7, "args": '
                                                       '{"device": 0, "stream": 7, "x": NaN}}, '
                                                       '{"ph": "X", "cat": "kernel", "name": "k20"')
    assert "NaN" in text
    p = _plain(tmp_path, text.encode())
    ref = profdiag.load(p, compact=True)
    assert _prefetch.start(str(p), "always")
    got = profdiag.load(p, compact=True)
    assert got.events.equals(ref.events)
    assert len(got.events) == 50


def test_a_killed_child_falls_back_to_streaming_here(tmp_path):
    ref = profdiag.load(EAGER, compact=True)
    assert _prefetch.start(str(EAGER), "always")
    pid = _prefetch._PENDING.pid
    os.kill(pid, signal.SIGKILL)
    assert _prefetch.take(EAGER, None) is None  # EOF: nothing taken, the child reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)
    assert profdiag.load(EAGER, compact=True).events.equals(ref.events)


def test_a_file_changed_since_the_fork_is_read_again(tmp_path):
    first = _plain(tmp_path, gzip.decompress(EAGER.read_bytes()))
    assert _prefetch.start(str(first), "always")
    other = gzip.decompress((FIXTURES / "torch" / "own_tiny_prefill_T128_B1.json.gz").read_bytes())
    tmp = tmp_path / "new.json"
    tmp.write_bytes(other)
    tmp.replace(first)  # a new inode under the same name
    assert _prefetch.take(first, None) is None
    assert _prefetch._PENDING is None
    got = profdiag.load(first, compact=True)
    assert got.events.equals(profdiag.load(tmp_path / "t.json", compact=True).events)
    assert len(got.events) != len(profdiag.load(EAGER).events)


def test_progress_is_forwarded_byte_for_byte(tmp_path):
    p = _plain(tmp_path, gzip.decompress(EAGER.read_bytes()))
    seen: list[int] = []
    assert _prefetch.start(str(p), "always")
    result = _prefetch.take(p, seen.append)
    assert result is not None and result.extractor.cols.rows > 0
    here: list[int] = []
    fast.stream(p, here.append)
    assert sum(seen) == sum(here) == p.stat().st_size


def test_work_registered_while_waiting_runs_once_before_the_result_is_read(tmp_path):
    p = _plain(tmp_path, gzip.decompress(EAGER.read_bytes()))
    ran: list[str] = []
    _prefetch.while_waiting(lambda: ran.append("no child"))  # nothing pending: not kept
    assert not _prefetch._WHILE_WAITING
    assert _prefetch.start(str(p), "always")

    def failing() -> None:
        ran.append("failing")
        raise ValueError("the command does this again and raises it there")

    _prefetch.while_waiting(lambda: ran.append("rules"), failing, lambda: ran.append("template"))
    result = _prefetch.take(p, lambda n: ran.append("progress"))
    assert result is not None and result.extractor.cols.rows > 0  # the failure is dropped
    assert ran[:3] == ["rules", "failing", "template"] and set(ran[3:]) == {"progress"}
    assert not _prefetch._WHILE_WAITING
    assert _prefetch.start(str(p), "always")
    _prefetch.while_waiting(lambda: ran.append("late"))
    _prefetch.discard()  # a child nobody takes: its work is dropped with it
    assert not _prefetch._WHILE_WAITING and "late" not in ran


def test_when_it_applies(tmp_path):
    js = _plain(tmp_path, b" \n" + gzip.decompress(EAGER.read_bytes()))
    assert _prefetch.worth_it(str(js), "always") is not None
    assert _prefetch.worth_it(str(EAGER), "always") is not None  # gzip
    assert _prefetch.worth_it(str(js), "0") is None  # turned off
    # this process imported pandas: a library caller has paid its imports already
    assert _prefetch.worth_it(str(js), "") is None
    sqlite = FIXTURES / "nsys" / "seed_microbench.sqlite"
    assert _prefetch.worth_it(str(sqlite), "always") is None  # not JSON
    sqlite_gz = tmp_path / "t.sqlite.gz"
    sqlite_gz.write_bytes(gzip.compress(sqlite.read_bytes()))
    assert _prefetch.worth_it(str(sqlite_gz), "always") is None  # gzipped, not JSON inside
    bad_gz = tmp_path / "bad.json.gz"
    bad_gz.write_bytes(b"\x1f\x8b" + bytes(100))
    assert _prefetch.worth_it(str(bad_gz), "always") is None  # no gzip stream: the parser says
    assert _prefetch.worth_it(str(tmp_path), "always") is None  # a directory
    assert _prefetch.worth_it(str(tmp_path / "missing.json"), "always") is None
    assert _prefetch.start(str(js), "always")
    assert not _prefetch.start(str(js), "always")  # one child at a time
    _prefetch.discard()
    assert _prefetch._PENDING is None


def test_the_pipe_s_unpickler_takes_only_a_stream_result():
    import io

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    with pytest.raises(pickle.UnpicklingError):
        _prefetch._Unpickler(io.BytesIO(pickle.dumps(("ok", Evil())))).load()
    result = fast.stream(EAGER)
    _prefetch._drop_lookups(result.extractor)
    back = _prefetch._Unpickler(io.BytesIO(pickle.dumps(("ok", result), protocol=5))).load()
    assert back[1].extractor.cols.rows == result.extractor.cols.rows


def _cli(tmp_path, setting, *args):
    """`profdiag ARGS` in a fresh interpreter with PROFDIAG_PREFETCH=setting; prints whether
    the Kineto parser took a child's result."""
    code = ("import sys\nfrom profdiag.parsers import _prefetch\n_take = _prefetch.take\n"
            "def take(*a):\n    r = _take(*a)\n    print('TAKEN', r is not None, file=sys.stderr)\n"
            "    return r\n_prefetch.take = take\n_run = _prefetch._run_while_waiting\n"
            "def run():\n    print('WHILE WAITING', len(_prefetch._WHILE_WAITING), file=sys.stderr)\n"
            "    _run()\n_prefetch._run_while_waiting = run\nfrom profdiag.cli import main\n"
            "sys.argv = ['profdiag', *sys.argv[1:]]\nsys.exit(main())\n")
    env = {**os.environ, "PROFDIAG_PREFETCH": setting}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, check=False)


def test_a_report_process_takes_the_child_s_columns_and_writes_the_same_report(tmp_path):
    for setting in ("always", "0"):
        out = _cli(tmp_path, setting, "report", EAGER, "-f", "json", "-q", "-o",
                   tmp_path / f"{setting}.json")
        assert out.returncode == 0, out.stderr
        assert ("TAKEN True" in out.stderr) == (setting == "always"), out.stderr
    assert (tmp_path / "always.json").read_bytes() == (tmp_path / "0.json").read_bytes()


def test_a_report_compiles_its_rules_and_template_while_the_child_streams(tmp_path):
    """The default HTML report: the diagnosis' rules and the page's template are prepared
    while the parent waits for the child, and the page is the one written without a child."""
    for setting in ("always", "0"):
        out = _cli(tmp_path, setting, "report", EAGER, "-q", "-o", tmp_path / f"{setting}.html")
        assert out.returncode == 0, out.stderr
        assert ("WHILE WAITING 2" in out.stderr) == (setting == "always"), out.stderr
    assert (tmp_path / "always.html").read_bytes() == (tmp_path / "0.html").read_bytes()


def test_a_report_process_s_error_is_the_same_with_the_child(tmp_path):
    bad = _plain(tmp_path, b'{"traceEvents": "not a list"}', "bad.json")
    outs = [_cli(tmp_path, s, "report", bad, "-f", "json", "-q", "-o", tmp_path / "r.json")
            for s in ("always", "0")]
    assert outs[0].returncode == outs[1].returncode == 3
    first, second = ("".join(line for line in o.stderr.splitlines(keepends=True)
                             if not line.startswith(("TAKEN", "WHILE WAITING"))) for o in outs)
    assert first == second
    assert "'traceEvents' is not a list" in outs[0].stderr
    assert not (tmp_path / "r.json").exists()


def test_the_child_s_modules_import_no_pandas():
    """The child streams with numpy, msgspec and orjson only: a pandas import there would
    cost what the parent's import costs, and the overlap would be gone."""
    code = ("import sys\nfrom profdiag.parsers import _prefetch, _kineto_fast\n"
            "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_child_nobody_takes_is_killed_and_reaped_at_exit():
    code = ("import atexit, os, sys\nfrom profdiag.parsers import _prefetch\n"
            "assert _prefetch.start(sys.argv[1], 'always')\npid = _prefetch._PENDING.pid\n"
            "atexit._run_exitfuncs()\nassert _prefetch._PENDING is None\n"
            "try:\n    os.waitpid(pid, 0)\nexcept ChildProcessError:\n    print('reaped')\n")
    out = subprocess.run([sys.executable, "-c", code, str(EAGER)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "reaped"


def test_a_busy_or_single_core_machine_gets_no_child(monkeypatch):
    monkeypatch.setattr(_prefetch, "_usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 0.5, 0.5))
    assert _prefetch.has_a_free_core()
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 0.5, 0.5))  # both cores busy
    assert not _prefetch.has_a_free_core()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(_prefetch, "_usable_cores", lambda: 1)
    assert not _prefetch.has_a_free_core()
