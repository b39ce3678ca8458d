"""`profdiag report` and `profdiag classify` through the CLI, with exit codes and outputs."""

import gzip
import json
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from profdiag.cli import cli, main


def run(args, **kw):
    """Invoke the real entry point (one-line errors, exit codes); return (code, out, err)."""
    runner = CliRunner()
    result = runner.invoke(main_wrapper, args, catch_exceptions=False, **kw)
    return result.exit_code, result.stdout, result.stderr


import click  # noqa: E402


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def main_wrapper(args):
    main(list(args))


def test_report_writes_html_and_prints_a_summary(tmp_path, tiny_decode):
    out = tmp_path / "r.html"
    code, stdout, _ = run(["report", str(tiny_decode), "-o", str(out)])
    assert code == 0
    assert out.exists()
    assert "decode" in stdout and "overhead" in stdout
    assert f"report: {out}" in stdout


@pytest.mark.parametrize("suffix,check", [
    (".json", lambda t: json.loads(t)["mode"]["value"] == "decode"),
    (".md", lambda t: t.lstrip().startswith("#")),
    (".txt", lambda t: "decode" in t),
])
def test_format_follows_the_suffix(tmp_path, tiny_decode, suffix, check):
    out = tmp_path / f"r{suffix}"
    code, _, _ = run(["report", str(tiny_decode), "-o", str(out), "-q"])
    assert code == 0
    assert check(out.read_text())


def test_format_flag_wins_and_quiet_prints_nothing(tmp_path, tiny_decode):
    out = tmp_path / "report.out"
    code, stdout, _ = run(["report", str(tiny_decode), "-o", str(out), "-f", "json", "--quiet"])
    assert code == 0 and stdout == ""
    assert json.loads(out.read_text())["schema_version"] == 1


def test_json_output_is_deterministic(tmp_path, tiny_graph):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run(["report", str(tiny_graph), "-o", str(a), "-q"])
    run(["report", str(tiny_graph), "-o", str(b), "-q"])
    assert a.read_bytes() == b.read_bytes()


def test_model_config_and_layers_options(tmp_path, tiny_decode):
    from helpers import FIXTURES

    out = tmp_path / "r.json"
    code, _, _ = run(["report", str(tiny_decode), "-o", str(out), "-q", "--no-manifest",
                      "--model-config", str(FIXTURES / "configs" / "llama_tiny.json")])
    assert code == 0
    kc = json.loads(out.read_text())["kernel_counts"]
    assert kc["expected_gemm_calls"] == kc["observed_gemm_calls"] == 232
    code, _, _ = run(["report", str(tiny_decode), "-o", str(out), "-q", "--no-manifest",
                      "--layers", "4", "--gemms-per-layer", "6"])
    kc = json.loads(out.read_text())["kernel_counts"]
    assert kc["expected_gemm_calls"] == 200 and kc["layers_source"] == "cli"  # the flag gave the layers


def _bad(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize("name,content,code,message", [
    ("empty.json", b"", 3, "empty file"),
    ("random.bin", bytes(range(256)) * 16, 3, "not a recognised trace"),
    ("other.json", b'{"model": "llama", "layers": 4}', 3, "not a recognised trace"),
    ("nogpu.json", json.dumps({"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 1, "dur": 2, "pid": 1,
         "tid": 1}]}).encode(), 4, "no GPU kernels"),
])
def test_bad_input_one_line_error_exit_code_no_output(tmp_path, name, content, code, message):
    p = _bad(tmp_path, name, content)
    out = tmp_path / "out" / "r.html"
    got, stdout, stderr = run(["report", str(p), "-o", str(out)])
    assert got == code
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("profdiag: error: ")
    assert str(p) in lines[0] and message in lines[0]
    assert "Traceback" not in stderr + stdout
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_trace_is_salvaged_with_a_warning(tmp_path, tiny_decode, compress):
    raw = gzip.decompress(tiny_decode.read_bytes())
    cut = raw[: int(len(raw) * 0.85)]
    p = _bad(tmp_path, "cut.json.gz" if compress else "cut.json",
             gzip.compress(cut) if compress else cut)
    out = tmp_path / "r.json"
    code, _, stderr = run(["report", str(p), "-o", str(out)])
    assert code == 0
    assert "truncated" in stderr
    data = json.loads(out.read_text())
    assert data["source"]["salvaged"] is True


def test_missing_file_is_a_usage_error(tmp_path):
    code, _, stderr = run(["report", str(tmp_path / "nope.json")])
    assert code == 2 and "no such file" in stderr


def test_unwritable_output_is_exit_5(tmp_path, tiny_prefill):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, stderr = run(["report", str(tiny_prefill), "-o", str(blocker / "r.html")])
    assert code == 5 and "cannot write" in stderr


def test_unknown_suffix_asks_for_format(tmp_path, tiny_prefill):
    code, _, stderr = run(["report", str(tiny_prefill), "-o", str(tmp_path / "r.pdf")])
    assert code == 2 and "--format" in stderr


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts = []
        self.text = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if not self._in_script:
            self.text.append(data)


def test_kernel_names_with_html_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    doc = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": evil, "ts": i * 10, "dur": 5, "pid": 0, "tid": 7,
         "args": {"device": 0, "stream": 7}} for i in range(4)]}
    p = _bad(tmp_path, "evil.json", json.dumps(doc).encode())
    out = tmp_path / "r.html"
    code, _, _ = run(["report", str(p), "-o", str(out), "-q"])
    assert code == 0
    html = out.read_text()
    parser = _Collect()
    parser.feed(html)
    # no script element came from the kernel name: every script is the report's own
    assert all("alert(1)" not in json.dumps(s) for s in parser.scripts)
    assert "<script>alert(1)</script>" not in html
    assert any(evil in t for t in parser.text)


def test_classify_lists_classes_and_unmatched(tiny_decode):
    code, stdout, _ = run(["classify", str(tiny_decode)])
    assert code == 0 and "gemv" in stdout and "rmsnorm" in stdout
    code, stdout, _ = run(["classify", str(tiny_decode), "--unmatched"])
    assert code == 0


def test_classify_explain_and_check():
    code, stdout, _ = run(["classify", "--explain", "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT"])
    assert code == 0 and "gemv.nvjet_skinny" in stdout
    code, stdout, _ = run(["classify", "--check"])
    assert code == 0 and "rule examples classify" in stdout


def test_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "report" in result.output and "classify" in result.output


# ----------------------------------------------------------- numpy's BLAS threads
def test_the_cli_asks_openblas_for_one_thread_unless_told_or_running_torch(monkeypatch):
    import sys

    from profdiag import cli as cli_mod

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    # numpy is imported in this process already: too late to ask, nothing is set
    assert not cli_mod.single_threaded_blas(["report", "t.json"])
    assert "OPENBLAS_NUM_THREADS" not in cli_mod.os.environ
    monkeypatch.delitem(sys.modules, "numpy")  # as in a fresh `profdiag` process
    for argv in (["capture", "--model", "tiny"], ["sweep", "run"], ["--help"], []):
        assert not cli_mod.single_threaded_blas(argv), argv  # torch's commands, or none
    assert "OPENBLAS_NUM_THREADS" not in cli_mod.os.environ
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")  # the user's choice is kept
    assert not cli_mod.single_threaded_blas(["report", "t.json"])
    assert cli_mod.os.environ["OPENBLAS_NUM_THREADS"] == "4"
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    assert cli_mod.single_threaded_blas(["-q", "report", "t.json", "-o", "r.html"])
    assert cli_mod.os.environ["OPENBLAS_NUM_THREADS"] == "1"


def test_a_fresh_report_process_asks_before_numpy_is_imported(tmp_path, tiny_decode):
    """In a new `profdiag report` process the CLI asks before anything imports numpy (the
    report still comes out), and the child's environment carries it to --jobs workers; the
    process also collects garbage less often (an in-process caller's settings are left)."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom profdiag.cli import main\nassert 'numpy' not in sys.modules\n"
            "try:\n    main(sys.argv[1:])\nfinally:\n"
            "    import gc, os\n    print('BLAS', os.environ.get('OPENBLAS_NUM_THREADS'))\n"
            "    print('GC', gc.get_threshold()[0])\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code, "report", str(tiny_decode), "-f", "json",
                          "-q", "-o", str(tmp_path / "r.json")],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip().splitlines()[-2:] == ["BLAS 1", "GC 200000"]  # and fewer collections
    assert json.loads((tmp_path / "r.json").read_text())["mode"]["value"]


def _console(tmp_path, prelude, *args):
    """Run ``prelude`` then the console script's ``sys.exit(main())`` with ``args`` as
    sys.argv in a fresh interpreter: the CompletedProcess."""
    import subprocess
    import sys

    code = (f"import sys\n{prelude}\nfrom profdiag.cli import main\n"
            "sys.argv = ['profdiag', *sys.argv[1:]]\nsys.exit(main())\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, cwd=tmp_path, check=False)


def test_the_console_script_exits_without_teardown_but_keeps_codes_outputs_and_atexit(
        tmp_path, tiny_decode):
    """The console script ends a finished command with os._exit (cli._exit_now): the exit
    code is the command's, the report is whole, stdout and stderr are flushed, atexit
    handlers ran, and the interpreter's teardown did not (a __del__ of a module-level object
    runs at a normal exit only)."""
    prelude = ("import atexit\natexit.register(lambda: print('atexit ran'))\n"
               "class Witness:\n    def __del__(self):\n        print('teardown ran')\n"
               "witness = Witness()")
    out = tmp_path / "r.json"
    done = _console(tmp_path, prelude, "report", tiny_decode, "-f", "json", "-o", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("profdiag: ")  # the summary, flushed
    assert done.stdout.splitlines()[-1] == "atexit ran"
    assert "teardown ran" not in done.stdout
    assert json.loads(out.read_text())["mode"]["value"]  # complete JSON
    bad = _console(tmp_path, prelude, "report", tmp_path / "missing.json")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"profdiag: error: {tmp_path / 'missing.json'}: no such file or directory"]
    assert bad.stdout.splitlines() == ["atexit ran"]
    assert _console(tmp_path, prelude, "--version").stdout.splitlines()[-1] == "atexit ran"


def test_the_console_script_exits_normally_while_another_thread_runs(tmp_path, tiny_decode):
    """A thread still alive when the command ends (a Dask client's, a pool's) gets the normal
    exit, which waits for it: its last write lands."""
    prelude = ("import threading, time\n"
               "def late():\n    time.sleep(0.5)\n    open('late.txt', 'w').write('done')\n"
               "threading.Thread(target=late).start()")
    done = _console(tmp_path, prelude, "report", tiny_decode, "-f", "json", "-q", "-o",
                    tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "late.txt").read_text() == "done"
