"""The Kineto streamer's column building: string columns as codes + distinct values, the
per-piece fast path (msgspec Structs) against the per-event path, odd field types."""

import gzip
import json

import msgspec
import numpy as np
import orjson
import pandas as pd
import pytest

import profdiag
from profdiag.diagnosis import mode
from profdiag.parsers import _kineto_fast as fast, torch_json
from profdiag.parsers._io import Input

from helpers import FIXTURES, SHARED


def _whole_document(path):
    """The whole-document (per-event) path's extractor, through the input layer as parse does."""
    with Input(path) as src:
        return torch_json._parse_document(src)[0]

def _events() -> list[dict]:
    ops = [
        # one op, its Input Dims written with and without spaces: one compacted text
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 2, "ts": 10.0, "dur": 5.0,
         "args": {"External id": 7, "Input Dims": [[1, 4096], [4096, 11008]],
                  "Input type": ["c10::BFloat16", "c10::BFloat16"]}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 2, "ts": 20.0, "dur": 5.0,
         "args": {"External id": 8, "Input dims": [[32, 4096], [4096, 11008]]}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 2,
         "ts": 11.0, "dur": 1.0, "args": {"correlation": 100, "External id": 7}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 2,
         "ts": 21.0, "dur": 1.0, "args": {"correlation": 101, "External id": 8}},
        {"ph": "X", "cat": "kernel", "name": "void gemv_kernel<float>(float*)", "pid": 0, "tid": 7,
         "ts": 12.0, "dur": 3.0, "args": {"correlation": 100, "External id": 7, "device": 0,
                                          "stream": 7, "grid": [1, 2, 3], "block": [128, 1, 1]}},
        {"ph": "X", "cat": "kernel", "name": "sm90_xmma_gemm", "pid": 0, "tid": 7,
         "ts": 22.0, "dur": 4.0, "args": {"correlation": 101, "device": 0, "stream": 7,
                                          "grid": [4, 1, 1], "block": [256, 1, 1]}},
        {"ph": "i", "cat": "kernel", "name": "instant", "ts": 1.0},  # not a complete event
        {"ph": "X", "cat": "unknown_cat", "name": "skipped", "ts": 1.0, "dur": 1.0},
    ]
    return ops


def _frame_of(events: list[dict], fast_path: bool) -> pd.DataFrame:
    ex = fast.Extractor()
    if fast_path:
        ex.add_structs(fast._decode_events(orjson.dumps(events)))
    else:
        ex.add_objects(events)
    return torch_json._table(ex, [])


def test_fast_and_per_event_paths_build_the_same_table():
    a, b = _frame_of(_events(), True), _frame_of(_events(), False)
    assert a.equals(b) and list(a.dtypes) == list(b.dtypes)
    assert len(a) == 6  # the instant event and the unknown category are dropped
    # the same text for both spellings of the key; GPU rows take their op's shapes
    assert a["input_dims"].tolist()[:2] == ["[[1,4096],[4096,11008]]", "[[32,4096],[4096,11008]]"]
    assert a["input_types"].isna().tolist() == [False, True, True, True, False, True]
    kern = a[a["kind"] == "kernel"]
    assert kern["input_dims"].tolist() == ["[[1,4096],[4096,11008]]", "[[32,4096],[4096,11008]]"]
    assert kern["grid"].tolist() == ["1,2,3", "4,1,1"]
    assert kern["block"].tolist() == ["128,1,1", "256,1,1"]
    assert kern["short_name"].tolist() == ["gemv_kernel", "sm90_xmma_gemm"]
    # the second kernel has no External id: it inherits its launch call's (8)
    assert kern["external_id"].tolist() == [7, 8]
    assert a["start_ns"].tolist() == [10000, 20000, 11000, 21000, 12000, 22000]


def test_raw_values_are_compacted_once_per_distinct_spelling():
    dims, types = fast.Strings(), fast.Strings()
    combos = fast.RawCombos([dims, types], [fast.json_text, fast.json_text])
    raw = fast.msgspec.Raw
    first = [raw(b) for b in (b"[[1, 2]]", b"[[1,2]]", b"null", b"[[1, 2]]", b"[]")]
    second = [raw(b) for b in (b'["f"]', b'["f"]', b'["f"]', b"null", b'["f"]')]
    d, t = combos.raw_codes([first, second])
    assert d.dtype == t.dtype == np.int32
    # two spellings of one value: two codes, one text; null: -1; [] is "[]" (not missing)
    assert [dims.values[c] if c >= 0 else None for c in d] == [
        "[[1,2]]", "[[1,2]]", None, "[[1,2]]", "[]"]
    assert [types.values[c] if c >= 0 else None for c in t] == [
        '["f"]', '["f"]', '["f"]', None, '["f"]']
    assert len(dims.by_raw) == 4  # b"null" and the three distinct spellings
    assert len(combos.by_key) == 5  # rows 1 and 4 share their dims, not their types
    # a second piece of known combinations decodes nothing new and gives the same codes
    d2, t2 = combos.raw_codes([first[::-1], second[::-1]])
    assert d2.tolist() == d.tolist()[::-1] and t2.tolist() == t.tolist()[::-1]
    assert len(combos.by_key) == 5 and len(dims.by_raw) == 4


def test_no_decoded_raw_value_holds_a_nul():
    """RawCombos joins raw values with NUL: msgspec must reject unescaped control characters
    in every string it decodes or skips, so no Raw can hold one."""
    for body in (b'[{"ph": "X", "args": {"Input Dims": ["a\x00b"]}}]',
                 b'[{"ph": "X", "args": {"skipped": "a\x00"}}]',
                 b'[{"ph": "f", "name": "a\x00"}]'):  # an event the strict decode skips
        for decode in (fast._decode_strict, fast._decode_events):
            with pytest.raises(msgspec.DecodeError):
                decode(body)
    # the escaped spelling is valid JSON, and stays escaped in the raw bytes
    ev = fast._decode_strict(b'[{"ph": "X", "args": {"Input Dims": ["a\\u0000b"]}}]')[0]
    assert b"\x00" not in bytes(ev.args.dims)


def test_odd_field_types_in_some_pieces_keep_the_per_event_semantics(tmp_path, monkeypatch):
    """Small pieces: some decode as Structs, those with odd types take the per-event path;
    the table equals the whole-document path's."""
    base = _events()
    events = []
    for i in range(60):
        for ev in base:
            ev = json.loads(json.dumps(ev))
            ev["ts"] = ev["ts"] + 100 * i
            events.append(ev)
    events[3]["args"] = None  # "args": null
    events[10]["pid"] = "process 12"  # a string pid (2021-era files)
    events[200]["name"] = 42  # a number as a name: kept as "42"
    events[201]["name"] = 42  # the same name again
    events[300]["ts"] = "31.5"  # a string timestamp
    events[400]["dur"] = None  # unusable: skipped and counted
    path = tmp_path / "odd.json"
    path.write_bytes(orjson.dumps({"traceEvents": events}))
    monkeypatch.setattr(fast, "CHUNK_BYTES", 2048)
    streamed = profdiag.load(path)
    whole = torch_json._table(_whole_document(path), [])
    assert streamed.events.equals(whole)
    ev = streamed.events
    assert (ev["name"] == "42").sum() == 2  # 42 and 42.0: one name
    assert ev.loc[ev["name"] == "42", "kind"].iloc[0] == "cpu_op"
    assert any("1 events without a usable ts/dur" in w for w in streamed.meta.warnings)
    assert 31500 in set(ev["start_ns"].tolist())
    assert 12 in set(ev["pid"].dropna().tolist())


def test_string_columns_equal_pandas_own_construction():
    values = ["a", "bb", "a", None, "ccc"]
    table = fast.Strings()
    table.parts.append(np.array([table.code_of(v) for v in values], dtype=np.int32))
    built = torch_json._strings(table.values, table.concat())
    expected = pd.array(values, dtype="string")
    assert built.dtype == expected.dtype
    assert pd.Series(built).equals(pd.Series(expected))
    none = pd.Series(torch_json._strings([], np.full(3, -1, np.int32)))
    assert none.equals(pd.Series(pd.array([None] * 3, dtype="string")))


def test_name_flags_run_each_regex_per_distinct_name():
    names = pd.Series(["flash_fwd_splitkv_kernel", "decode_attention", None, "prefill_attn",
                       "decode_attention", ""], dtype="string")
    flags = mode._name_flags(names)
    assert flags.tolist() == [[True, False, False], [False, True, False], [False, False, False],
                              [False, False, True], [False, True, False], [False, False, False]]


def test_fixture_tables_match_the_per_event_path():
    for fixture in sorted([*FIXTURES.glob("torch/*.json*"), *FIXTURES.glob("engines/*.json*")]):
        try:
            streamed = profdiag.load(fixture)
        except Exception:  # noqa: BLE001 - fixtures of other formats or bad input
            continue
        if streamed.meta.format != "torch":
            continue
        whole = torch_json._table(_whole_document(fixture), [])
        assert streamed.events.equals(whole), fixture.name


def test_string_fallback_without_arrow_storage(monkeypatch):
    """pandas 2 (or no pyarrow): the "string" column is built from an object array."""
    monkeypatch.setattr(torch_json, "_arrow_strings", lambda values, codes: None)
    table = fast.Strings()
    table.parts.append(np.array([table.code_of(v) for v in ["x", None, "x"]], dtype=np.int32))
    built = torch_json._strings(table.values, table.concat())
    assert pd.Series(built).equals(pd.Series(pd.array(["x", None, "x"], dtype="string")))


def test_rare_keys_are_read_in_the_pieces_that_hold_them(tmp_path, monkeypatch):
    """2021-era spellings ("external id", "Device", "Input dims"), copy sizes and an escaped
    key in some pieces only: every piece gives what the per-event path gives."""
    events = []
    for i in range(80):
        for ev in _events():
            ev = json.loads(json.dumps(ev))
            ev["ts"] = ev["ts"] + 100 * i
            events.append(ev)
    events[8 * 40]["args"] = {"external id": 7, "Input dims": [[2, 2]]}
    kernel = next(i for i in range(8 * 60, len(events)) if events[i]["cat"] == "kernel")
    events[kernel]["args"]["Device"] = 3
    del events[kernel]["args"]["device"]
    events[kernel]["args"]["bytes"] = 4096
    body = orjson.dumps({"traceEvents": events})
    # one escaped key: \u0045 is "E", so this is "External id" too
    body = body.replace(b'"External id":8', b'"\\u0045xternal id":8', 1)
    path = tmp_path / "rare.json"
    path.write_bytes(body)
    monkeypatch.setattr(fast, "CHUNK_BYTES", 2048)
    streamed = profdiag.load(path).events
    whole = torch_json._table(_whole_document(path), [])
    assert streamed.equals(whole)
    assert streamed.loc[streamed["device"] == 3, "bytes"].tolist() == [4096]
    assert "[[2,2]]" in set(streamed["input_dims"].dropna())


def _stream_in_small_pieces(tmp_path, monkeypatch, events):
    """Load ``events`` streamed in 2 KB pieces (no piece may go per event), check the table
    against the whole-document path's; return it and the sizes of the pieces decoded by the
    loose Structs. Undoes every monkeypatch, the caller's included."""
    loose_pieces = []
    real = fast.Extractor.add_structs

    def add_structs(self, evs, strict=False):
        if not strict:
            loose_pieces.append(len(evs))
        return real(self, evs, strict)

    monkeypatch.setattr(fast.Extractor, "add_objects",
                        lambda self, evs: pytest.fail("no piece should go per event"))
    monkeypatch.setattr(fast.Extractor, "add_structs", add_structs)
    path = tmp_path / "small_pieces.json"
    path.write_bytes(orjson.dumps({"traceEvents": events}))
    monkeypatch.setattr(fast, "CHUNK_BYTES", 2048)
    streamed = profdiag.load(path).events
    monkeypatch.undo()
    assert streamed.equals(torch_json._table(_whole_document(path), []))
    return streamed, loose_pieces


def test_the_strict_args_are_the_loose_args_with_int64_ids():
    """_StrictArgs is made from _Args' own fields: the same attributes, JSON keys and default
    objects (the extractor compares Raw defaults by identity), the five id fields int64 and
    every other field of the loose type; an id of another JSON type fails validation."""
    loose = msgspec.structs.fields(fast._Args)
    strict = msgspec.structs.fields(fast._StrictArgs)
    assert [(f.name, f.encode_name) for f in strict] == [(f.name, f.encode_name) for f in loose]
    assert all(s.default is lo.default for s, lo in zip(strict, loose))
    assert fast._STRICT_ARG_FIELDS <= {f.name for f in loose}
    assert {f.name for f in strict if f.type is fast._I64} == fast._STRICT_ARG_FIELDS
    assert all(s.type == lo.type for s, lo in zip(strict, loose) if s.type is not fast._I64)
    decode = msgspec.json.Decoder(fast._StrictArgs).decode
    got = decode(b'{"External id": 7, "Device": 1, "stream": "0x0", "grid": [1, 2, 3]}')
    assert (got.ext, got.device_upper, got.stream, bytes(got.grid)) == (7, 1, "0x0", b"[1, 2, 3]")
    assert got.correlation == fast.MISS and got.dims is fast._NULL_RAW
    for odd in (b'{"correlation": "12"}', b'{"External id": 1.5}', b'{"device": null}'):
        with pytest.raises(msgspec.ValidationError):
            decode(odd)


def test_the_strict_decode_skips_other_phases_and_leaves_odd_ones_to_the_loose_path(
        tmp_path, monkeypatch):
    """The strict decode is tagged by "ph": a complete event is a _StrictEvent, an event of
    any other phase (flows, metadata, instants, counters) an empty Struct with no category.
    An event with no "ph", or a phase the format does not define, fails validation: its
    piece is decoded by the loose Structs, which drop it as before. The table is the
    whole-document path's either way."""
    kinds = [type(e).__name__ for e in fast._decode_strict(orjson.dumps([
        {"ph": "X", "cat": "kernel"}, {"ph": "f", "id": 1, "cat": "ac2g", "bp": "e"},
        {"ph": "s", "cat": "ac2g"}, {"ph": "M", "name": "process_name", "pid": "Spans"},
        {"ph": "i", "cat": "kernel", "s": "t"}, {"ph": "C", "args": {"x": "y"}}]))]
    assert kinds[0] == "_StrictEvent" and all(k.startswith("_Skipped") for k in kinds[1:])
    assert all(e.cat is None for e in fast._decode_strict(b'[{"ph": "f", "cat": "kernel"}]'))
    for odd in (b'[{"cat": "kernel", "ts": 1}]', b'[{"ph": "Z", "cat": "kernel"}]',
                b'[{"ph": null, "cat": "kernel"}]'):
        with pytest.raises(msgspec.ValidationError):
            fast._decode_strict(odd)
        fast._decode_events(odd)  # the loose Structs take it

    events = []
    for i in range(40):
        for ev in _events():
            ev = json.loads(json.dumps(ev))
            ev["ts"] = ev["ts"] + 100 * i
            events.append(ev)
        events.append({"ph": "f", "id": i, "pid": 0, "tid": 7, "ts": 12.0 + 100 * i,
                       "cat": "ac2g", "name": "ac2g", "bp": "e"})
        events.append({"ph": "s", "id": i, "pid": 1, "tid": 2, "ts": 11.0 + 100 * i,
                       "cat": "ac2g", "name": "ac2g"})
    events.insert(5, {"ph": "M", "name": "process_name", "pid": "Spans", "args": {"name": "x"}})
    events.insert(9 * 30, {"cat": "kernel", "name": "no phase", "ts": 1.0, "dur": 1.0})
    streamed, loose_pieces = _stream_in_small_pieces(tmp_path, monkeypatch, events)
    assert len(streamed) == 40 * 6  # per copy: 6 complete events of a known category
    assert len(loose_pieces) == 1  # the piece with the event that has no "ph"


def test_a_category_outside_the_known_ones_switches_the_file_to_cat_as_any_string(
        tmp_path, monkeypatch):
    """Categories are decoded as KNOWN_CATS' shared strings; the first piece with another
    category is decoded with cat as any string (not by the loose Structs), and so is every
    later piece. The table is the whole-document path's."""
    shared = fast._decode_known(b'[{"ph": "X", "cat": "kernel"}, {"ph": "X", "cat": "kernel"}]')
    assert shared[0].cat is shared[1].cat  # one str object, not one per event
    with pytest.raises(msgspec.ValidationError):
        fast._decode_known(b'[{"ph": "X", "cat": "my_new_category"}]')
    events = []
    for i in range(40):
        for ev in _events():
            ev = json.loads(json.dumps(ev))
            ev["ts"] = ev["ts"] + 100 * i
            if ev["cat"] == "unknown_cat":
                ev["cat"] = "overhead"  # known to Kineto, dropped by profdiag
            events.append(ev)
    events[8 * 25 + 7]["cat"] = "my_new_category"  # a dropped event: of a new category
    events[8 * 30]["cat"] = "Operator"  # a 2021-era spelling: known, kept as cpu_op
    decoders = []
    real = {name: getattr(fast, name) for name in ("_decode_known", "_decode_strict",
                                                   "_decode_events")}
    for name, fn in real.items():
        monkeypatch.setattr(fast, name, lambda piece, _n=name, _f=fn: (decoders.append(_n), _f(piece))[1])
    streamed, loose_pieces = _stream_in_small_pieces(tmp_path, monkeypatch, events)
    assert not loose_pieces and "_decode_events" not in decoders  # never the loose Structs
    switch = decoders.index("_decode_strict")  # the piece with the new category...
    assert decoders[switch - 1] == "_decode_known" and switch > 1
    assert set(decoders[:switch]) == {"_decode_known"}
    assert set(decoders[switch:]) == {"_decode_strict"}  # ... and every one after it
    assert streamed["kind"].iloc[6 * 30] == "cpu_op"


def test_the_shared_kineto_traces_write_only_known_categories():
    """Every complete event of the real traces has a category of KNOWN_CATS, so they take
    the shared-string decode throughout (a new category costs one piece decoded twice)."""
    paths = [p for root in (SHARED / "traces" / "torch", SHARED / "samples" / "kineto")
             if root.is_dir() for p in root.rglob("*.json*")
             if p.is_file() and p.name != "manifest.json"]
    if not paths:
        pytest.skip("no shared traces")
    seen = 0
    for path in paths:
        try:
            doc = orjson.loads(gzip.decompress(path.read_bytes()) if path.suffix == ".gz"
                               else path.read_bytes())
        except (orjson.JSONDecodeError, OSError, EOFError, gzip.BadGzipFile):
            continue
        events = doc.get("traceEvents") if isinstance(doc, dict) else doc
        if not isinstance(events, list):
            continue
        cats = {e.get("cat") for e in events if isinstance(e, dict) and e.get("ph") == "X"}
        assert cats <= {*fast.KNOWN_CATS, None}, (path.name, cats - set(fast.KNOWN_CATS))
        seen += 1
    assert seen >= 20


def test_a_piece_the_strict_structs_reject_is_read_by_the_loose_ones(tmp_path, monkeypatch):
    """The strict decode takes ids and counts as int64 ints and ts/dur as numbers; a piece
    with a float id, a string correlation or an id past int64 is decoded again with the loose
    Structs (not per event), and the table is the whole-document path's."""
    events = []
    for i in range(60):
        for ev in _events():
            ev = json.loads(json.dumps(ev))
            ev["ts"] = ev["ts"] + 100 * i
            events.append(ev)
    events[2]["args"]["External id"] = 7.0  # a float id: 7
    events[3]["args"]["correlation"] = "101"  # a string id: 101
    events[8 * 37]["args"]["External id"] = 2**63  # past int64 (an op's): <NA>
    events[8 * 37 + 2]["args"]["stream"] = "0x0"  # ROCm writes strings on runtime rows
    strict_ok = [False, False, False, True]  # a runtime row's stream is not read: strict
    for ev, ok in zip((events[2], events[3], events[8 * 37], events[8 * 37 + 2]), strict_ok):
        body = orjson.dumps([ev])
        if ok:
            fast._decode_strict(body)
        else:
            with pytest.raises(msgspec.ValidationError):
                fast._decode_strict(body)
        fast._decode_events(body)  # the loose Structs take every one
    streamed, loose_pieces = _stream_in_small_pieces(tmp_path, monkeypatch, events)
    assert 0 < len(loose_pieces) < 10  # the pieces with those events, not all of them
    # rows keep the events' order: 6 of each copy's 8 events (the instant and the unknown
    # category are dropped), so event 8 * k + j (j < 6) is row 6 * k + j
    assert streamed["external_id"].iloc[2] == 7  # the float id, as the per-event parser reads it
    assert streamed["correlation"].iloc[3] == 101
    assert pd.isna(streamed["external_id"].iloc[6 * 37])
    assert streamed["external_id"].iloc[6 * 36] == 7  # the copy before: untouched
