"""The typed report model (profdiag/report_model.py) and `profdiag schema`: the reports of a
torch, an nsys, a rocpd and an SGLang trace validate against it, both through the model and
through the printed JSON Schema with an independent validator."""

from __future__ import annotations

import copy

import orjson
import pytest

from profdiag import report_model as rm
from profdiag.errors import TraceFormatError
from profdiag.renderers.json_ import dumps

from helpers import FIXTURES, diagnosed, run_cli

SAMPLES = {
    "torch": FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz",
    "nsys": FIXTURES / "nsys" / "seed_microbench.sqlite",
    "rocpd": FIXTURES / "rocprof" / "rocpd" / "batched_gemm_ck_bmm_28_results.db.gz",
    "sglang": FIXTURES / "engines" / "sglang_Qwen3-8B_decode.json.gz",
}


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    # the JSON exactly as `profdiag report -f json` writes it (renderers/json_.dumps)
    return {k: orjson.loads(dumps(diagnosed(str(p)).to_dict())) for k, p in SAMPLES.items()}


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    from profdiag.cli import main

    out = tmp_path_factory.mktemp("schema") / "report.schema.json"
    try:
        code = main(["schema", "-o", str(out)])
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None)
    return orjson.loads(out.read_bytes())


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_reports_decode_into_the_typed_model(reports, kind):
    data = reports[kind]
    rep = rm.decode(data)
    assert rep.schema_version == data["schema_version"] == 1
    assert rep.mode.value == data["mode"]["value"]
    assert [h.class_ for h in rep.hotspots] == [h["class"] for h in data["hotspots"]]
    assert len(rep.phases) == len(data["phases"])
    assert [c.id for c in rep.checks] == [c["id"] for c in data["checks"]]
    with pytest.raises(AttributeError):
        rep.mode = rep.mode  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_reports_validate_against_the_printed_schema(reports, schema, kind):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(reports[kind], schema)


def test_schema_names_every_report_key(reports, schema):
    ref = schema["$ref"].rsplit("/", 1)[-1]
    props = schema["$defs"][ref]
    keys = set().union(*(r.keys() for r in reports.values()))
    assert keys <= set(props["properties"])
    assert set(props["required"]) <= keys
    assert props["additionalProperties"] is False


def test_a_wrong_report_is_rejected_with_its_path(reports):
    bad = copy.deepcopy(reports["torch"])
    bad["checks"][0]["status"] = 3
    with pytest.raises(TraceFormatError, match=r"\$\.checks\[0\]\.status"):
        rm.decode(bad, "r.json")
    extra = {**reports["torch"], "surprise": 1}
    with pytest.raises(TraceFormatError, match="surprise"):
        rm.decode(extra)
    missing = {k: v for k, v in reports["torch"].items() if k != "checks"}
    with pytest.raises(TraceFormatError, match="checks"):
        rm.decode(missing)


def test_schema_command_prints_to_stdout(capsys):
    code, out, _ = run_cli(["schema"], capsys)
    assert code in (0, None)
    assert orjson.loads(out) == rm.json_schema()


# ------------------------------------------------------------------- the printed schema

def test_schema_is_a_valid_draft_2020_12_document(schema):
    jsonschema = pytest.importorskip("jsonschema")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    # the always-written keys are required, the sometimes-written ones are not
    report = schema["$defs"]["Report"]
    assert {"checks", "steps", "roofline", "communication"} <= set(report["required"])
    assert not {"idle", "health", "extras", "perfetto"} & set(report["required"])
    assert "missing_lm_head" not in schema["$defs"]["KernelCounts"]["required"]
    assert "wall_ns" in schema["$defs"]["Step"]["required"]


def test_a_report_missing_an_always_written_nested_key_fails_the_schema(reports, schema):
    jsonschema = pytest.importorskip("jsonschema")
    bad = copy.deepcopy(reports["torch"])
    del bad["steps"][0]["wall_ns"]
    with pytest.raises(jsonschema.ValidationError, match="wall_ns"):
        jsonschema.validate(bad, schema)
    bad = copy.deepcopy(reports["torch"])
    bad["overhead"]["kernels"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# --------------------------------------------------------------------- the one decoder

def test_load_reads_paths_dicts_diagnoses_and_reports(reports, tmp_path):
    data = reports["nsys"]
    path = tmp_path / "r.json"
    path.write_text(dumps(data))
    from_path, from_dict = rm.load(path), rm.load(data)
    assert from_path == from_dict == rm.decode(data)
    assert rm.load(from_dict) is from_dict
    assert rm.load(diagnosed(str(SAMPLES["nsys"]))) == from_dict  # numpy scalars and all
    # typed sections, exactly the numbers the JSON holds
    rep = from_dict
    assert rep.overhead.kernels == data["overhead"]["kernels"]
    assert rep.kernel_counts.observed_gemm_calls == data["kernel_counts"]["observed_gemm_calls"]
    assert [s.wall_ns for s in rep.steps] == [s["wall_ns"] for s in data["steps"]]
    assert rep.communication.calls == data["communication"]["calls"]
    assert rep.source.format == "nsys" and rep.source.path == data["source"]["path"]


def test_load_reads_an_older_or_newer_minor_report(reports):
    """A report from an earlier minor of schema 1 lacks keys added since (idle, step_detail,
    communication, short_kernel_ns, kv_written_tokens...); a later minor adds keys: both load,
    missing figures read as unknown (None), missing tables as empty."""
    old = copy.deepcopy(reports["torch"])
    for key in ("idle", "step_detail", "communication", "health"):
        old.pop(key, None)
    old["overhead"].pop("short_kernel_ns")
    for s in old["steps"]:
        s.pop("kv_written_tokens")
    old["kernel_counts"].pop("lm_head_per_forward")
    old["a_key_from_a_later_minor"] = {"x": 1}
    old["kernel_counts"]["also_later"] = [1, 2]
    rep = rm.load(old, "old.json")
    assert rep.idle is None and rep.step_detail == {}
    assert rep.communication.calls is None and rep.communication.by_type == {}
    assert rep.overhead.short_kernel_ns is None
    assert all(s.kv_written_tokens is None for s in rep.steps)
    assert rep.kernel_counts.lm_head_per_forward == 1  # what a missing key always meant
    with pytest.raises(TraceFormatError, match="step_detail"):
        rm.decode(old)  # the strict check of what this version writes
    with pytest.raises(TraceFormatError, match="a_key_from_a_later_minor"):
        rm.decode({**reports["torch"], "a_key_from_a_later_minor": 1})


def test_load_names_the_file_and_json_path_of_a_bad_value(reports, tmp_path):
    bad = copy.deepcopy(reports["torch"])
    bad["steps"][2]["wall_ns"] = "slow"
    with pytest.raises(TraceFormatError, match=r"\$\.steps\[2\]\.wall_ns") as err:
        rm.load(bad, "bad.json")
    assert str(err.value).startswith("bad.json: ") and "\n" not in str(err.value)
    newer = {**reports["torch"], "schema_version": 99}
    with pytest.raises(TraceFormatError, match="newer"):
        rm.load(newer)
    with pytest.raises(TraceFormatError, match="expected an object"):
        rm.load([1, 2])
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(TraceFormatError, match="junk.json"):
        rm.load(junk)


@pytest.mark.parametrize("command", [["gate"], ["compare", "{good}"], ["index", "--output", "{out}"]])
def test_cli_readers_give_one_line_with_the_json_path(reports, tmp_path, capsys, command):
    bad = copy.deepcopy(reports["torch"])
    bad["kernel_counts"]["observed_gemm_calls"] = "lots"
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "bad.json"
    path.write_text(dumps(bad))
    good = tmp_path / "good.json"
    good.write_text(dumps(reports["torch"]))
    args = [a.format(good=good, out=tmp_path / "site") for a in command]
    if command[0] == "index":
        # a directory: the bad report is skipped with its path, the good one indexed
        (tmp_path / "in" / "good.json").write_text(dumps(reports["torch"]))
        code, out, err = run_cli(["index", str(tmp_path / "in"), *args[1:]], capsys)
        assert code in (0, None)
        assert "skipping bad.json" in err and "$.kernel_counts.observed_gemm_calls" in err
        return
    code, out, err = run_cli([args[0], str(path), *args[1:]], capsys)
    assert code == 3, (out, err)
    assert err.count("\n") == 1 and str(path) in err
    assert "$.kernel_counts.observed_gemm_calls" in err and "Traceback" not in err


# ------------------------------------------------------------ docs/json-schema.md

def _doc_rows() -> dict[str, str]:
    import re

    from helpers import REPO

    text = (REPO / "docs" / "json-schema.md").read_text().split("## Other documents")[0]
    rows: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([a-z_.]+)`[^|]*\|", line)
        if m:
            key = m.group(1).split(".")[0]
            rows[key] = rows.get(key, "") + line
    return rows


def _own_structs(tp, top: set, seen: list) -> None:
    import msgspec

    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if tp in seen or (seen and tp in top):
            return
        seen.append(tp)
        for f in msgspec.structs.fields(tp):
            _own_structs(f.type, top, seen)
    for arg in getattr(tp, "__args__", ()) or ():
        _own_structs(arg, top, seen)


def test_the_docs_table_matches_the_model():
    """docs/json-schema.md cannot go stale: its table has a row for every top-level key of
    the model (and none other), and each row names every field of its typed section."""
    import re

    import msgspec

    rows = _doc_rows()
    fields = msgspec.structs.fields(rm.Report)
    assert set(rows) == {f.encode_name for f in fields}
    # sections typed by a struct another key owns (phases[*].mode is a Mode) are checked there
    top = {t for f in fields for t in [f.type] if isinstance(t, type)}
    missing = {}
    for f in fields:
        structs: list = []
        _own_structs(f.type, top - {f.type}, structs)
        names = {g.encode_name for s in structs for g in msgspec.structs.fields(s)}
        gone = sorted(n for n in names if not re.search(rf"(?<![A-Za-z0-9_]){n}(?![A-Za-z0-9_])",
                                                       rows[f.encode_name]))
        if gone:
            missing[f.encode_name] = gone
    assert missing == {}, f"fields of the model not named in docs/json-schema.md: {missing}"


def test_a_stored_run_with_a_bad_value_is_one_line(reports, tmp_path, capsys):
    import zlib

    from profdiag import history

    db = tmp_path / "h.db"
    bad = copy.deepcopy(reports["torch"])
    run_id = history.record(bad, None, db=db)
    import sqlite3

    bad["mode"]["confidence"] = "high"
    with sqlite3.connect(db) as conn:  # a run written by a broken tool, not by profdiag
        conn.execute("UPDATE runs SET diagnosis = ? WHERE id = ?",
                     (zlib.compress(dumps(bad).encode()), run_id))
    code, out, err = run_cli(["history", "show", str(run_id), "--db", str(db)], capsys)
    assert code == 3 and err.count("\n") == 1
    assert f"run {run_id}: stored diagnosis" in err and "$.mode.confidence" in err
