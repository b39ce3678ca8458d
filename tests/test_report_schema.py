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
