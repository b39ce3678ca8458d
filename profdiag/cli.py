"""The `profdiag` command: a thin click group whose subcommands live in profdiag.commands.*.

Subcommand modules are imported only when invoked (or listed by --help), so `profdiag --help`
stays fast. Every ProfdiagError ends as one line on stderr and its exit code; a traceback is
never shown to a user (set PROFDIAG_DEBUG=1 to see one).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from . import __version__
from .errors import EXIT_USAGE, ProfdiagError

# name -> (module, one-line help shown by `profdiag --help` without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "report": ("profdiag.commands.report", "Diagnose a trace and write an HTML/JSON/MD/TXT report."),
    "classify": ("profdiag.commands.classify", "Show how kernels are classified by the rules."),
    "gate": ("profdiag.commands.gate", "Check a trace against a policy (CI gate, exit codes)."),
    "compare": ("profdiag.commands.compare", "What changed between two profiles."),
    "capture": ("profdiag.commands.capture", "Capture real prefill/decode traces with torch."),
    "history": ("profdiag.commands.history", "Browse the local history of recorded diagnoses."),
    "index": ("profdiag.commands.index", "Build a static HTML index of many profiles."),
    "export": ("profdiag.commands.export",
               "Write the diagnosis as CSV/Parquet tables (and a Perfetto trace)."),
    "roofline": ("profdiag.commands.roofline", "Napkin roofline: ridge, bound, speed limits."),
    "sweep": ("profdiag.commands.sweep", "Sweep prompt length, output length and batch."),
    "schema": ("profdiag.commands.schema", "Print the JSON Schema of the JSON report."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _) in COMMANDS.items() if _module_exists(mod)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _module_exists(COMMANDS[name][0]):
            return None
        return importlib.import_module(COMMANDS[name][0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="profdiag")
def cli() -> None:
    """profdiag: diagnose GPU profiler traces of LLM inference.

    Reads PyTorch profiler (Kineto JSON), Nsight Systems (SQLite) and rocprof traces and says
    whether the workload is prefill or decode, whether it is compute-, memory- or
    overhead-bound, whether the kernel count is what the model implies, and what to do.

    Exit codes: 0 ok, 1 gate failed, 2 usage, 3 unreadable input, 4 nothing to diagnose,
    5 output not writable, 6 missing optional dependency, 7 scheduler or database server
    unreachable (see docs/cli.md).
    """


class Terminated(BaseException):
    """SIGTERM (a CI timeout, `kill`): unwinds like Ctrl-C so temporary files are removed."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _install_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # pragma: no cover (embedded interpreters)
            pass


# commands that run torch, whose CPU threads are its own business
_TORCH_COMMANDS = frozenset({"capture", "sweep"})


def single_threaded_blas(argv: list[str]) -> bool:
    """Ask numpy's OpenBLAS for one thread (OPENBLAS_NUM_THREADS=1), when it is not imported
    yet, the user set no count and the command runs no torch: OpenBLAS starts a thread per
    core at numpy's import, and their spinning cost ~0.1 s of CPU per run, which profdiag's
    few small linear-algebra calls (the sweep's fits) never repay. True when it was set."""
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return False
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is None or command in _TORCH_COMMANDS:
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    return True


def process_settings(argv: list[str]) -> None:
    """A fresh `profdiag` process' settings, before numpy is imported (an in-process caller,
    which has numpy already, keeps its own): the GC threshold below and single_threaded_blas.
    benchmarks/phases.py applies the same ones."""
    if "numpy" not in sys.modules:
        import gc

        # young objects collected every 200,000 allocations, not 700: a report makes few
        # cycles, and its imports alone leave ~127,000 objects the collector tracks (a 250 MB
        # report ~145,000 in all), which at 50,000 cost two collections, 35-45 ms, of module
        # objects that live to the end; the default's collections cost ~2% of its CPU
        gc.set_threshold(200_000, 50, 100)
    single_threaded_blas(argv)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: run the group, turning errors into one line and an exit code."""
    from .io import forget_protected

    process_settings(sys.argv[1:] if argv is None else list(argv))
    _install_sigterm()
    forget_protected()  # each command protects its own inputs (in-process callers run many)
    saved_bound = os.environ.get("PROFDIAG_MAX_INFLATED_SIZE")
    try:
        result = _main(argv)
    except SystemExit as exc:
        if argv is None:  # the console script (tests and other callers pass argv)
            _exit_now(exc.code)
        raise
    finally:  # --max-inflated-size holds for this command only
        if saved_bound is None:
            os.environ.pop("PROFDIAG_MAX_INFLATED_SIZE", None)
        else:
            os.environ["PROFDIAG_MAX_INFLATED_SIZE"] = saved_bound
    if argv is None:
        _exit_now(result)
    return result


def _exit_now(code: Any) -> None:
    """End a console-script run whose command has finished, as ``sys.exit(code)`` would, but
    without the interpreter's teardown: its full garbage collections and the freeing of every
    module and object cost ~0.05 s of CPU per run, 4-5% of a small report (mypy's
    ``hard_exit`` does the same). The atexit handlers still run (temporary directories,
    logging, multiprocessing) and stdout/stderr are flushed; every output file was closed by
    its own ``with``. Returns, and the caller exits normally, when the code is not None or an
    int in 0-255, or when another thread is alive (a Dask client's, a pool's): the normal
    exit waits for it."""
    import threading

    code = 0 if code is None else code
    if type(code) is not int or not 0 <= code <= 255 or threading.active_count() > 1:
        return
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    os._exit(code)


def _main(argv: list[str] | None) -> Any:
    try:
        return cli.main(args=argv, prog_name="profdiag", standalone_mode=False)
    except ProfdiagError as exc:
        _fail(str(exc), exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        # usage errors: one line naming the command, and where the help is; exit 2
        _fail(_click_message(exc), exc.exit_code if exc.exit_code else EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Terminated:
        _fail("terminated (SIGTERM); nothing was written", 143)
    except MemoryError:
        _fail("out of memory", 3)
    except RecursionError:
        _fail("input nested too deeply to read", 3)
    except Exception as exc:  # a bug: still one line, unless debugging
        if os.environ.get("PROFDIAG_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              " (set PROFDIAG_DEBUG=1 for a traceback; please report it)", 70)


def _click_message(exc: click.ClickException) -> str:
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f"{ctx.command_path}: {message} (see '{ctx.command_path} --help')"
    return message


def _fail(message: str, code: int) -> None:
    from .textsafe import clean

    click.echo(f"profdiag: error: {clean(message)}", err=True)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
