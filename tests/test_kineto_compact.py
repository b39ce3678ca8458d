"""The Kineto parser's compact table: built from the string tables' codes, it equals
``schema.compact`` of the canonical table (values, categories, codes and their dtype) on
every torch trace, the Kineto samples, the fixtures and the streamer's odd paths."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import profdiag
from profdiag import schema
from profdiag.errors import TraceFormatError
from profdiag.parsers import _kineto_fast as fast, detect, torch_json

from helpers import EAGER, FIXTURES, SHARED


def _kineto_inputs() -> list[Path]:
    roots = [SHARED / "traces" / "torch", SHARED / "samples" / "kineto", FIXTURES / "torch",
             FIXTURES / "engines"]
    return sorted(p for root in roots if root.is_dir() for p in root.rglob("*.json*")
                  if p.is_file() and p.name != "manifest.json")


def assert_same_compact(path: Path) -> pd.DataFrame:
    """load(compact=True) is schema.compact(load()): the same frame, dtypes, categories
    and codes (with their integer dtype); returns the compact table."""
    canonical = profdiag.load(path).events
    built = profdiag.load(path, compact=True).events
    ref = schema.compact(canonical)
    assert built.equals(ref), path.name
    assert list(built.dtypes) == list(ref.dtypes)
    for col in schema.STRING_COLUMNS:
        a, b = built[col].array, ref[col].array
        assert a.categories.equals(b.categories), (path.name, col)
        assert a.codes.dtype == b.codes.dtype, (path.name, col)
        assert np.array_equal(a.codes, b.codes), (path.name, col)
    assert schema.expand(built).equals(canonical)
    return built


@pytest.mark.parametrize("path", _kineto_inputs(), ids=lambda p: p.name)
def test_compact_load_is_compact_of_the_canonical_table(path):
    try:
        fmt = detect(path)
    except TraceFormatError:
        fmt = None
    if fmt != "torch":
        pytest.skip("not a Kineto trace")
    assert_same_compact(path)


def _tiny() -> bytes:
    return gzip.decompress(EAGER.read_bytes())


# the streamer's other paths: truncated files (salvage), a truncated gzip stream, the
# whole-document path (NaN literals), per-event pieces (string timestamps, null args),
# kernels that inherit their External id from the runtime call, 2021 spellings
_VARIANTS = {
    "truncated_30.json": lambda src: src[: int(len(src) * 0.3)],
    "truncated_end.json": lambda src: src[: len(src) - 40],
    "truncated.json.gz": lambda src: gzip.compress(src)[:200_000],
    "nan.json": lambda src: re.sub(rb'"dur": [0-9.]+', b'"dur": NaN', src, count=3),
    "string_ts.json": lambda src: re.sub(rb'"ts": ([0-9.]+)', rb'"ts": "\1"', src, count=5),
    "null_args.json": lambda src: src.replace(b'"args": {', b'"args": null, "_": {', 50),
    "no_external_id.json": lambda src: src.replace(b'"External id": ', b'"Other id": '),
    "old_spellings.json": lambda src: src.replace(b'"External id": ', b'"external id": ', 3000)
    .replace(b'"device": ', b'"Device": ', 500).replace(b'"Input Dims": ', b'"Input dims": ', 500),
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_compact_load_on_the_streamers_other_paths(tmp_path, monkeypatch, variant):
    src = _tiny()
    data = _VARIANTS[variant](src)
    assert data != src
    path = tmp_path / variant
    path.write_bytes(data)
    monkeypatch.setattr(fast, "CHUNK_BYTES", 1 << 16)  # many pieces
    built = assert_same_compact(path)
    assert len(built)


def test_categorical_from_codes_by_hand():
    # "b" under two codes (a number name and its string spelling): one category
    values = ["b", "a", "b", "unused"]
    cat = torch_json._compact_strings(values, np.array([0, 1, -1, 2, 1], np.int32))
    assert list(cat.categories) == ["a", "b"]
    assert str(cat.categories.dtype) == "string"
    assert cat.codes.tolist() == [1, 0, -1, 1, 0]
    assert cat.codes.dtype == np.int8
    none = torch_json._compact_strings([], np.full(3, -1, np.int32))
    assert len(none.categories) == 0 and none.codes.tolist() == [-1, -1, -1]


def test_parse_opts_in_and_others_are_compacted_after(monkeypatch):
    """parsers.parse passes compact=True to a module with PARSES_COMPACT; a module
    without it is parsed plainly and compacted afterwards."""
    from profdiag import parsers

    seen: list[bool] = []
    real = torch_json.parse

    def spy(src, progress=None, compact=False):
        seen.append(compact)
        return real(src, progress, compact=compact)

    monkeypatch.setattr(torch_json, "parse", spy)
    tr = parsers.parse(EAGER, compact=True)
    assert seen == [True] and schema.is_compact(tr.events)
    monkeypatch.setattr(torch_json, "PARSES_COMPACT", False)
    tr = parsers.parse(EAGER, compact=True)
    assert seen == [True, False] and schema.is_compact(tr.events)
    assert not schema.is_compact(parsers.parse(EAGER).events)
    assert seen == [True, False, False]


def test_json_report_imports_no_optional_module(tmp_path):
    """`profdiag report -f json` of a Kineto trace starts without what a JSON report does not
    use (templates, HTA, torch, databases, dask, a process pool)."""
    import subprocess
    import sys

    code = ("import sys\nfrom profdiag.cli import main\n"
            f"try:\n    main(['report', {str(EAGER)!r}, '-f', 'json', '-q', '-o', "
            f"{str(tmp_path / 'r.json')!r}])\nexcept SystemExit as e:\n    assert not e.code\n"
            "heavy = ('jinja2', 'hta', 'torch', 'sqlalchemy', 'dask', 'multiprocessing')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "r.json").stat().st_size > 0
