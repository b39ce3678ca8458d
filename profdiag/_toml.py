"""The one TOML parser every rule, threshold and hardware file is read with.

tomli's wheels are compiled with mypyc: the nine shipped rule files (130 KB) parse in ~13 ms
with them against ~40 ms with the standard library's ``tomllib``, the same parser in pure
Python, which a report paid on every run (docs/performance.md, "tenth pass"). tomli is a
dependency; ``tomllib`` is the fallback where it is missing (a source build of tomli is
pure Python too, and no slower than the stdlib). Both have the same API and errors.
"""

from __future__ import annotations

try:
    from tomli import TOMLDecodeError, load, loads
except ImportError:  # pragma: no cover (tomli is a dependency)
    from tomllib import TOMLDecodeError, load, loads  # type: ignore[no-redef,assignment,unused-ignore]

__all__ = ["TOMLDecodeError", "load", "loads"]
