"""Typed errors, each with the exit code the CLI returns for it.

Exit codes (documented in docs/cli.md, one place):
  0 success / gate passed
  1 gate policy violated
  2 usage error (bad options, missing file)
  3 unreadable input: empty, not a trace, corrupt, unknown format
  4 trace has nothing to diagnose (no GPU activity)
  5 output could not be written
  6 a required optional dependency is missing (torch for capture, nsys for .nsys-rep)
  7 a service could not be reached (the Dask scheduler of --scheduler, the --db server)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_NO_GPU_EVENTS = 4
EXIT_OUTPUT = 5
EXIT_MISSING_DEPENDENCY = 6
EXIT_UNREACHABLE = 7


class ProfdiagError(Exception):
    """Base class: a one-line, user-facing message and an exit code."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class UsageError(ProfdiagError):
    exit_code = EXIT_USAGE


class TraceFormatError(ProfdiagError):
    """The file is not a trace we can read (empty, random bytes, wrong JSON, corrupt)."""

    exit_code = EXIT_BAD_INPUT


class NoGpuEventsError(ProfdiagError):
    """The trace parsed but holds no GPU activity to diagnose."""

    exit_code = EXIT_NO_GPU_EVENTS


class OutputError(ProfdiagError):
    exit_code = EXIT_OUTPUT


class MissingDependencyError(ProfdiagError):
    exit_code = EXIT_MISSING_DEPENDENCY


class RulesError(ProfdiagError):
    """A rule, policy or hardware file is malformed."""

    exit_code = EXIT_USAGE


class SchedulerError(ProfdiagError):
    """The Dask scheduler (``--scheduler``) or the history server (``--db``) cannot be reached."""

    exit_code = EXIT_UNREACHABLE
