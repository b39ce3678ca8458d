"""The one input layer (profdiag/parsers/_io.py): a trace is inflated once per run, whatever
the number of sniffers and parsers that look at it, and a damaged stream ends the way each
consumer asks for."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import pytest

from profdiag.cli import main
from profdiag.errors import TraceFormatError
from profdiag.parsers import _io, detect, parse

from helpers import FIXTURES

TORCH_GZ = FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"
NSYS_GZ = FIXTURES / "nsys" / "saxpy-mpi-cuda_nsys_perlmutter0.sqlite.gz"
ROCPD_GZ = FIXTURES / "rocprof" / "rocpd" / "batched_gemm_ck_bmm_28_results.db.gz"
ROCPROF_V1 = FIXTURES / "rocprof" / "v1_llamacpp_gfx1201"


@pytest.fixture
def inflations(monkeypatch):
    """The paths of every Inflater made (one per pass of zlib over a compressed file)."""
    made: list[str] = []
    real = _io.Inflater.__init__

    def counting(self, path, fh, compressed_size):
        made.append(Path(path).name)
        real(self, path, fh, compressed_size)

    monkeypatch.setattr(_io.Inflater, "__init__", counting)
    return made


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


# --------------------------------------------------------------- once per run
@pytest.mark.parametrize("path, fmt", [
    (TORCH_GZ, "torch"),            # sniffed by head (4 KiB), then streamed
    (NSYS_GZ, "nsys"),              # head, then the nsys sniffer opens the SQLite copy
    (ROCPD_GZ, "rocpd"),            # torch and nsys sniffers look first, then rocprof's
    (ROCPROF_V1 / "results.db.gz", "rocprof-v1"),
    (ROCPROF_V1 / "results.json.gz", "rocprof-v1"),
    (ROCPROF_V1 / "results.csv.gz", "rocprof-v1"),
], ids=lambda v: v.name if isinstance(v, Path) else v)
def test_a_compressed_trace_is_inflated_once_per_parse(path, fmt, inflations, private_tmp):
    trace = parse(path)
    assert trace.meta.format == fmt
    assert inflations == [path.name]
    assert list(private_tmp.iterdir()) == []  # the SQLite copy went with the parse


@pytest.mark.parametrize("path", [TORCH_GZ, NSYS_GZ, ROCPD_GZ], ids=lambda p: p.name)
def test_one_inflation_for_a_whole_report_run(path, inflations, private_tmp, tmp_path, capsys):
    """Through the CLI (option checks, sniffing, parsing, diagnosis, writing): still one."""
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        main(["report", str(path), "-f", "json", "-q", "-o", str(out)])
        raise SystemExit(0)
    assert (exc.value.code or 0) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["schema_version"] >= 1
    assert inflations == [path.name]
    assert list(private_tmp.iterdir()) == []


def test_a_long_head_continues_the_same_inflation(tmp_path, inflations):
    """A JSON trace whose first 4 KiB no sniffer accepts is looked at again over 1 MiB:
    from the same inflater, not a new one."""
    meta = {"pad": "x" * 200_000}  # a large metadata object before traceEvents
    doc = {"meta": meta, "traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "ts": 1,
                                         "dur": 2, "pid": 0, "tid": 7}]}
    p = tmp_path / "t.json.gz"
    p.write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert detect(p) == "torch"
    assert inflations == ["t.json.gz"]


# --------------------------------------------------------------------- the views
def _members(tmp_path: Path, *parts: bytes, tail: bytes = b"") -> tuple[Path, bytes]:
    p = tmp_path / "m.gz"
    p.write_bytes(b"".join(gzip.compress(x) for x in parts) + tail)
    return p, b"".join(parts)


def test_head_blocks_and_bytes_agree_with_gzip(tmp_path):
    big = os.urandom(300_000).hex().encode()  # 600 kB: several inflate blocks
    p, whole = _members(tmp_path, b"\xef\xbb\xbf" + big[:1000], big[1000:], b"end",
                        tail=b"\x00" * 512)
    with _io.Input(p) as src:
        assert src.compressed and not src.is_dir
        assert src.head(10) == big[:7]  # 10 bytes read, less the UTF-8 byte order mark
        assert src.head(100_000) == big[:100_000 - 3]  # a longer head: same inflation
        warnings: list[str] = []
        assert b"".join(src.blocks(warnings, limit=4096)) == whole
        assert warnings == []
    with _io.Input(p) as src:
        assert src.read_bytes() == whole
    with _io.Input(p) as src:  # no head first: a member longer than a block ends mid-tail
        assert b"".join(src.blocks(warnings, limit=4096)) == whole
    assert gzip.decompress(p.read_bytes()) == whole


def test_trailing_junk_after_the_last_member_is_ignored(tmp_path):
    p, whole = _members(tmp_path, b"abc" * 1000, tail=b"\x00\x00trailing junk")
    with _io.Input(p) as src:
        assert src.read_bytes(on_truncated=pytest.fail) == whole


def test_progress_counts_compressed_bytes_including_the_head(tmp_path):
    p, _ = _members(tmp_path, os.urandom(50_000))
    seen: list[int] = []
    with _io.Input(p) as src:
        src.head()
        list(src.blocks([], progress=seen.append))
    assert sum(seen) == p.stat().st_size


def test_a_plain_file_is_read_as_is(tmp_path):
    p = tmp_path / "t.json"
    p.write_bytes(b'{"traceEvents": []}')
    with _io.Input(p) as src:
        assert not src.compressed
        assert src.head(5) == b'{"tra'
        assert src.read_bytes() == p.read_bytes()
        assert src.sqlite_file() == (p, True)


# ------------------------------------------------------------- damaged streams
def _cut(tmp_path: Path, n: int = 200_000) -> tuple[Path, bytes]:
    raw = os.urandom(n // 2).hex().encode()
    packed = gzip.compress(raw)
    p = tmp_path / "cut.gz"
    p.write_bytes(packed[: len(packed) // 2])
    return p, raw


def test_truncated_stream_each_consumer_chooses(tmp_path):
    p, raw = _cut(tmp_path)
    warnings: list[str] = []
    with _io.Input(p) as src:
        got = b"".join(src.blocks(warnings))
    assert 0 < len(got) < len(raw) and raw.startswith(got)
    assert warnings == ["gzip stream is truncated; read what could be inflated"]
    flagged = []
    with _io.Input(p) as src:
        assert raw.startswith(src.read_bytes(on_truncated=lambda: flagged.append(1)))
    assert flagged == [1]
    with _io.Input(p) as src, pytest.raises(TraceFormatError,
                                            match=r"truncated gzip stream: the compressed "
                                                  r"SQLite export is incomplete \(inflated \d+"):
        src.sqlite_file()
    with _io.Input(p) as src, pytest.raises(TraceFormatError, match="corrupt gzip stream"):
        src.head(len(raw) + 1)  # the head ends before n bytes


def test_corrupt_stream_messages(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(b"\x1f\x8b not really gzip")
    with _io.Input(p) as src, pytest.raises(TraceFormatError,
                                            match=r"bad\.gz: corrupt gzip stream \("):
        list(src.blocks([]))
    with _io.Input(p) as src, pytest.raises(TraceFormatError, match="corrupt gzip stream"):
        src.read_bytes()
    with _io.Input(p) as src, pytest.raises(TraceFormatError, match="corrupt gzip stream"):
        src.sqlite_file()


def test_the_inflation_bound_applies_to_every_view(tmp_path, monkeypatch):
    p = tmp_path / "bomb.gz"
    p.write_bytes(gzip.compress(b"\x00" * (4 << 20)))
    monkeypatch.setenv("PROFDIAG_MAX_INFLATED_SIZE", "1M")
    for view in ("blocks", "read_bytes", "sqlite_file"):
        with _io.Input(p) as src, pytest.raises(TraceFormatError, match="--max-inflated-size"):
            out = getattr(src, view)([]) if view == "blocks" else getattr(src, view)()
            list(out)


def test_the_sqlite_copy_lives_until_close(tmp_path, private_tmp):
    raw = gzip.decompress(NSYS_GZ.read_bytes())
    with _io.Input(NSYS_GZ) as src:
        copy, immutable = src.sqlite_file()
        assert immutable and copy.parent == private_tmp and copy.read_bytes() == raw
        assert src.sqlite_file()[0] == copy  # made once
        assert src.head(16) == raw[:16]  # read back from the copy, no second inflation
    assert not copy.exists() and list(private_tmp.iterdir()) == []


def test_a_failed_inflation_leaves_no_copy(tmp_path, private_tmp):
    p, _ = _cut(tmp_path)
    with _io.Input(p) as src, pytest.raises(TraceFormatError):
        src.sqlite_file()
    assert list(private_tmp.iterdir()) == []


# ------------------------------------------------------------- the report sniffer
def test_one_report_sniffer_for_gate_and_index(tmp_path):
    """gate.read_report and the index site read reports through _io.read_report_json: one
    set of limits (plain JSON object, <= 64 MiB, no "traceEvents" in its first MiB)."""
    from profdiag import gate, index_site

    report = {"schema_version": 1, "mode": {"mode": "decode"}, "bottleneck": {}, "source": {}}
    p = tmp_path / "r.json"
    p.write_bytes(json.dumps(report).encode())
    assert _io.read_report_json(p) == report
    assert gate.read_report(p) == report
    assert index_site._read_report(p) == {"diagnosis": report}
    assert _io.read_report_json(p, max_bytes=p.stat().st_size - 1) is None  # too big
    gz = tmp_path / "r.json.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert _io.read_report_json(gz) is None  # gzipped files are traces
    trace = tmp_path / "t.json"
    trace.write_bytes(json.dumps({"traceEvents": [], **report}).encode())
    assert _io.read_report_json(trace) is None
    assert gate.read_report(trace) is None and index_site._read_report(trace) is None
    listing = tmp_path / "l.json"
    listing.write_text("[1, 2]")
    assert _io.read_report_json(listing) is None


# --------------------------------------------------------------- zlib-ng and zlib alike
def _gzip_variants() -> dict[str, bytes]:
    body = TORCH_GZ.read_bytes()
    member = gzip.compress(b'{"traceEvents": []}\n' * 50)
    corrupt = bytearray(body)
    corrupt[len(body) // 2: len(body) // 2 + 64] = b"\xff" * 64
    return {
        "whole": body,
        "two members, NUL padding, trailing bytes": member + b"\x00" * 100 + member + b"junk",
        "cut inside a member": body[: len(body) * 2 // 3],
        "corrupt in the middle": bytes(corrupt),
        "unknown compression method": body[:2] + b"\x09" + body[3:],
        "nothing but a gzip header": body[:10],
    }


def _inflate(path: Path) -> tuple[bytes, list[str], str | None]:
    """What Input.blocks gives: the bytes, the warnings, or the error's kind."""
    warnings: list[str] = []
    out = bytearray()
    try:
        with _io.Input(path) as src:
            for block in src.blocks(warnings, None, 1 << 16):
                out += block
    except TraceFormatError as exc:
        return bytes(out), warnings, str(exc).split("(")[0]
    return bytes(out), [w.split("(")[0] for w in warnings], None


@pytest.mark.parametrize("variant", list(_gzip_variants()))
def test_zlib_ng_inflates_every_stream_as_the_stdlib_zlib_does(variant, tmp_path, monkeypatch):
    """The inflater uses zlib-ng when it is installed: the same bytes, the same salvage
    and the same refusals as the stdlib's zlib (only the library's own wording of a
    corrupt stream, in parentheses, may differ)."""
    import zlib

    pytest.importorskip("zlib_ng")
    path = tmp_path / "t.json.gz"
    path.write_bytes(_gzip_variants()[variant])
    assert _io.zlib is not zlib  # zlib-ng is the one in use
    fast = _inflate(path)
    monkeypatch.setattr(_io, "zlib", zlib)
    monkeypatch.setattr(_io, "_INFLATE_ERROR", zlib.error)
    assert _inflate(path) == fast
    if variant == "whole":
        assert fast[0] == gzip.decompress(TORCH_GZ.read_bytes()) and not fast[1]
