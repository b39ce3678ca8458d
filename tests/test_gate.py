"""`profdiag gate`: policy checks, baseline regressions, outputs and exit codes, through the CLI.

Traces are the bundled real H100 captures (fixtures/torch) and, where present, the larger
ones in ../shared/traces/torch. Regressions are made from a real JSON report whose steps'
wall_ns are scaled (x1.2 = a real slow-down, x1.01 = noise); the extra-GEMM trace is a copy
of the real tiny prefill with one GEMM op (CPU op, launch, kernel and flow events) duplicated
in each of its 4 layers.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import profdiag.cli
from profdiag import gate

from helpers import EAGER, GRAPH, PREFILL, SHARED_TORCH, TINY, run_cli, splice_generate

DATA = Path(__file__).parent / "data"


run = run_cli


@pytest.fixture(autouse=True)
def _no_ci_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # the test runner may itself run in GitHub Actions
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """JSON reports of the tiny traces, written by `profdiag report -f json` (once)."""
    out = tmp_path_factory.mktemp("reports")
    paths = {}
    for key, trace in (("eager", EAGER), ("graph", GRAPH), ("prefill", PREFILL)):
        p = out / f"{key}.json"
        assert profdiag.cli.main(["report", str(trace), "-f", "json", "-o", str(p), "-q"]) in (
            None, 0)
        paths[key] = p
    return paths


def load_json(p: Path) -> dict[str, Any]:
    return json.loads(p.read_text())


def write_policy(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def checks_of(p: Path) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in load_json(p)["checks"]}


# ------------------------------------------------------------------------- absolute checks

def test_trace_gated_against_itself_passes(capsys, tmp_path):
    res = tmp_path / "gate.json"
    code, out, err = run(["gate", GRAPH, "--baseline", GRAPH, "--json", res], capsys)
    assert code == 0, out + err
    data = load_json(res)
    assert data["status"] in ("pass", "warn") and data["exit_code"] == 0
    checks = {c["id"]: c for c in data["checks"]}
    for cid in ("regression.step_time.decode", "regression.gpu_busy_per_step.decode",
                "regression.overhead_share", "regression.kernel_count",
                "regression.top_kernels", "regression.category_share"):
        assert checks[cid]["status"] == "pass", checks[cid]
    assert checks["regression.step_time.decode"]["details"]["change_pct"] == 0
    # events on both sides: every kernel known, so no "hotspots only" caveat
    assert "hotspots" not in checks["regression.top_kernels"]["summary"]
    assert "PASS" in out and "profdiag gate passed" in out


def _eager_graph_pairs() -> list[tuple[Path, Path]]:
    pairs = [(EAGER, GRAPH)]
    for p in sorted(SHARED_TORCH.glob("*_cudagraph.json.gz")) if SHARED_TORCH.exists() else []:
        twin = p.with_name(p.name.replace("_cudagraph", ""))
        if twin.exists() and not p.name.startswith("own_tiny"):
            pairs.append((twin, p))
    return pairs


@pytest.mark.parametrize("eager,graph", _eager_graph_pairs(), ids=lambda p: p.name[:30])
def test_eager_decode_fails_overhead_policy_graph_passes(eager, graph, capsys, tmp_path):
    policy = write_policy(tmp_path, "[overhead]\nmax_share = { decode = 0.3 }\n")
    code, out, _ = run(["gate", eager, "--policy", policy, "--json", tmp_path / "e.json"],
                       capsys)
    assert code == 1
    oh = checks_of(tmp_path / "e.json")["overhead"]
    assert oh["status"] == "fail" and oh["observed"] > 0.9 and oh["limit"] == 0.3
    assert "FAIL" in out and "overhead" in out
    code, out, _ = run(["gate", graph, "--policy", policy, "--json", tmp_path / "g.json"],
                       capsys)
    assert code == 0, out
    oh = checks_of(tmp_path / "g.json")["overhead"]
    assert oh["status"] == "pass" and oh["observed"] < 0.3


def test_category_limits_and_gpu_busy(capsys, tmp_path, reports):
    policy = write_policy(tmp_path, "[categories]\nmax = { overhead = 0.5 }\n"
                                    "min = { compute = 0.1 }\n[gpu_busy]\nmin_share = 0.5\n"
                                    "[severity]\ngpu_busy = 'warn'\n")
    code, _, _ = run(["gate", reports["graph"], "--policy", policy, "--json",
                      tmp_path / "r.json"], capsys)
    checks = checks_of(tmp_path / "r.json")
    assert code == 0
    assert checks["category.max.overhead"]["status"] == "pass"
    assert checks["category.min.compute"]["status"] == "pass"
    assert checks["gpu_busy"]["status"] == "pass"
    code, _, _ = run(["gate", reports["eager"], "--policy", policy, "--json",
                      tmp_path / "r.json"], capsys)
    checks = checks_of(tmp_path / "r.json")
    assert code == 1
    assert checks["category.max.overhead"]["status"] == "fail"
    assert checks["category.min.compute"]["status"] == "fail"
    assert checks["gpu_busy"]["status"] == "warn"  # severity warn: reported, not failing


# --------------------------------------------------------------------------- kernel counts

def extra_gemm_trace(src: Path, out_dir: Path) -> Path:
    """A copy of a real prefill trace with one 512x512 GEMM op duplicated in every layer.

    The duplicate gets its own External id and correlation (CPU op, driver launch, kernel and
    the flow arrows), so profdiag sees one more aten::mm call per layer. The capture's
    manifest entry is written beside it, so the expected count is the real model's.
    """
    doc = json.loads(gzip.decompress(src.read_bytes()))
    events = doc["traceEvents"]
    ops = {e["args"]["External id"]: e for e in events
           if e.get("cat") == "cpu_op" and e.get("name") == "aten::mm"
           and e["args"].get("Input Dims", [[0]])[1:] == [[512, 512]]}
    square = sorted(ops, key=lambda x: ops[x]["ts"])
    chosen = square[::4]  # q, k, v, o are 512x512 in the tiny model: one per layer
    assert len(chosen) == 4
    added = []
    for n, ext in enumerate(chosen):
        new_ext = 10_000_000 + n
        group = [e for e in events if e.get("args", {}).get("External id") == ext]
        corr = {e["args"]["correlation"] for e in group if "correlation" in e["args"]}
        group += [e for e in events if e.get("cat") == "ac2g" and e.get("id") in corr]
        for e in group:
            dup = copy.deepcopy(e)
            dup["ts"] += 1.0
            args = dup.get("args", {})
            if "External id" in args:
                args["External id"] = new_ext
            if "correlation" in args:
                args["correlation"] += 10_000_000
            if "id" in dup:
                dup["id"] += 10_000_000
            added.append(dup)
    doc["traceEvents"] = events + added
    out = out_dir / "tiny_prefill_extragemm.json.gz"
    out.write_bytes(gzip.compress(json.dumps(doc).encode()))
    entry = next(c for c in json.loads((TINY / "manifest.json").read_text())["captures"]
                 if c["file"] == src.name)
    (out_dir / "tiny_prefill_extragemm.manifest.json").write_text(
        json.dumps({**entry, "file": out.name}))
    return out


def test_extra_gemm_per_layer_fails_kernel_count(capsys, tmp_path):
    trace = extra_gemm_trace(PREFILL, tmp_path)
    code, _, _ = run(["gate", trace, "--json", tmp_path / "r.json"], capsys)
    kc = checks_of(tmp_path / "r.json")["kernel_count"]
    assert code == 1
    assert kc["status"] == "fail"
    assert kc["observed"] == 33 and kc["details"]["expected"] == 29
    assert "4 more than the 29 expected" in kc["summary"]
    assert "4 per forward" in kc["summary"]
    # the original trace passes the same policy
    code, _, _ = run(["gate", PREFILL, "--policy", write_policy(
        tmp_path, "[overhead]\nmax_share = { prefill = 1.0 }\n"), "--quiet"], capsys)
    assert code == 0


def test_gemms_per_layer_one_less_names_the_extra_calls(capsys, tmp_path):
    code, out, _ = run(["gate", GRAPH, "--gemms-per-layer", "6", "--json",
                        tmp_path / "r.json"], capsys)
    kc = checks_of(tmp_path / "r.json")["kernel_count"]
    assert code == 1 and kc["status"] == "fail"
    assert kc["observed"] == 232 and kc["details"]["expected"] == 200
    assert "32 more than the 200 expected" in kc["summary"]
    assert "(4 per forward)" in kc["summary"]
    assert kc["details"]["suspects"], kc  # the GEMM shape groups that hold the surplus
    assert "kernel_count" in out


def test_kernel_count_tolerance_and_off(capsys, tmp_path):
    for tol, code_expected in (("32", 0), ("31", 1), ('"16%"', 0), ('"15%"', 1)):
        policy = write_policy(tmp_path, f"[kernel_count]\nmode = 'tolerance'\n"
                                        f"tolerance = {tol}\n")
        code, out, _ = run(["gate", GRAPH, "--gemms-per-layer", "6", "--policy", policy],
                           capsys)
        assert code == code_expected, (tol, out)
    policy = write_policy(tmp_path, "[kernel_count]\nmode = 'off'\n")
    code, out, _ = run(["gate", GRAPH, "--gemms-per-layer", "6", "--policy", policy,
                        "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    assert checks_of(tmp_path / "r.json")["kernel_count"]["status"] == "skip"


def test_kernel_count_without_expected_skips_or_fails(reports):
    data = load_json(reports["graph"])
    data["kernel_counts"]["expected_gemm_calls"] = None
    result = gate.evaluate(data, gate.Policy.load())
    assert result.check("kernel_count").status == "skip"
    assert result.exit_code == 0
    strict = gate.Policy.from_dict({"kernel_count": {"require_expected": True}})
    result = gate.evaluate(data, strict)
    assert result.check("kernel_count").status == "fail"
    assert result.exit_code == 1


# ------------------------------------------------------------------------------ regressions

def scaled_report(src: Path, out: Path, factor: float, only_step: int | None = None) -> Path:
    """A copy of a real JSON report with its steps' wall_ns multiplied by ``factor``."""
    data = load_json(src)
    for s in data["steps"]:
        if only_step is None or s["step"] == only_step:
            s["wall_ns"] = int(s["wall_ns"] * factor)
    out.write_text(json.dumps(data))
    return out


def test_regression_fails_beyond_threshold_and_passes_within_noise(capsys, tmp_path, reports):
    base = reports["graph"]
    slow = scaled_report(base, tmp_path / "slow.json", 1.2)
    noise = scaled_report(base, tmp_path / "noise.json", 1.01)
    code, out, _ = run(["gate", slow, "--baseline", base, "--json", tmp_path / "s.json"],
                       capsys)
    st = checks_of(tmp_path / "s.json")["regression.step_time.decode"]
    assert code == 1, out
    assert st["status"] == "fail"
    assert st["details"]["change_pct"] == pytest.approx(20.0, abs=0.01)
    assert "+20.0%" in st["summary"] and "limit +5%" in st["summary"]
    code, out, _ = run(["gate", noise, "--baseline", base, "--json", tmp_path / "n.json"],
                       capsys)
    assert code == 0, out
    assert checks_of(tmp_path / "n.json")["regression.step_time.decode"]["status"] == "pass"
    # a tighter policy catches the 1% too
    policy = write_policy(tmp_path, "[regression]\nstep_time_pct = 0.5\n")
    code, _, _ = run(["gate", noise, "--baseline", base, "--policy", policy], capsys)
    assert code == 1


def test_one_noisy_step_does_not_fail_the_median(capsys, tmp_path, reports):
    base = reports["graph"]
    spike = scaled_report(base, tmp_path / "spike.json", 10.0, only_step=3)
    code, out, _ = run(["gate", spike, "--baseline", base], capsys)
    assert code == 0, out


def test_faster_new_passes_and_reports_the_improvement(capsys, tmp_path, reports):
    # CUDA graphs against the eager baseline: every step-time regression check passes
    code, out, _ = run(["gate", reports["graph"], "--baseline", reports["eager"], "--json",
                        tmp_path / "r.json"], capsys)
    checks = checks_of(tmp_path / "r.json")
    assert code == 0, out
    assert checks["regression.step_time.decode"]["details"]["change_pct"] < -90
    assert checks["regression.overhead_share"]["status"] == "pass"
    # from reports: the top-kernel check says it used the hotspots
    assert "hotspots" in checks["regression.top_kernels"]["summary"]
    # and the reverse is a regression
    code, _, _ = run(["gate", reports["eager"], "--baseline", reports["graph"], "--json",
                      tmp_path / "r.json"], capsys)
    checks = checks_of(tmp_path / "r.json")
    assert code == 1
    assert checks["regression.step_time.decode"]["status"] == "fail"
    assert checks["regression.overhead_share"]["status"] == "fail"


def test_mode_change_refused_unless_allowed(capsys, tmp_path, reports):
    code, out, err = run(["gate", reports["graph"], "--baseline", reports["prefill"]], capsys)
    assert code == 2
    assert "--allow-mode-change" in err and err.count("\n") == 1
    code, out, err = run(["gate", reports["graph"], "--baseline", reports["prefill"],
                          "--allow-mode-change", "--json", tmp_path / "r.json"], capsys)
    checks = checks_of(tmp_path / "r.json")
    assert code == 0, out + err
    assert checks["regression.mode"]["status"] == "warn"
    assert not any(c.startswith("regression.step_time.") for c in checks)  # no common phase


def test_prefill_compared_per_token(tmp_path, reports):
    base = load_json(reports["prefill"])
    new = copy.deepcopy(base)
    new["model"]["tokens"] = base["model"]["tokens"] * 2  # twice the prompt...
    for s in new["steps"]:
        s["wall_ns"] = int(s["wall_ns"] * 2.04)  # ...in 2.04x the time: +2% per token
    result = gate.evaluate(new, gate.Policy.load(), base)
    st = result.check("regression.step_time.prefill")
    assert "per prefill token" in st.summary
    assert st.status == "pass"
    assert st.details["change_pct"] == pytest.approx(2.0, abs=0.05)


def test_mixed_trace_compares_both_phases(tmp_path):
    trace = splice_generate(tmp_path / "generate.json.gz")
    result = gate.evaluate(gate.load_profile(trace), gate.Policy.load(),
                           gate.load_profile(trace))
    ids = {c.id for c in result.checks}
    assert result.mode == "mixed"
    assert {"regression.step_time.prefill", "regression.step_time.decode"} <= ids
    assert result.check("regression.step_time.decode").status == "pass"


def test_too_few_steps_are_skipped(reports):
    base = load_json(reports["graph"])
    base["steps"] = base["steps"][:2]
    result = gate.evaluate(base, gate.Policy.load(), base)
    st = result.check("regression.step_time.decode")
    assert st.status == "skip" and "min_steps" in st.summary


# ----------------------------------------------------------------------------------- policy

def test_policy_is_deep_merged_over_defaults(tmp_path):
    p = write_policy(tmp_path, "[overhead]\nmax_share = { decode = 0.5 }\n"
                               "[severity]\nstep_time = 'warn'\n")
    pol = gate.Policy.load(p)
    assert pol.get("overhead", "max_share") == {"prefill": 0.15, "decode": 0.5,
                                                "mixed": 0.25, "unknown": 0.25}
    assert pol.severity("step_time") == "warn"
    assert pol.severity("overhead") == "fail"
    assert pol.get("regression", "step_time_pct") == 5.0
    assert pol.sources[-1] == str(p)


def test_example_policy_is_valid():
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "policy.toml"
    pol = gate.Policy.load(example)
    assert pol.get("kernel_count", "mode") == "tolerance"


@pytest.mark.parametrize("text,needle", [
    ("[overhead]\nmax_shares = 0.2\n", "overhead.max_shares"),
    ("[severity]\noverhead = 'error'\n", "severity.overhead"),
    ("[kernel_count]\nmode = 'close'\n", "kernel_count.mode"),
    ("[kernel_count]\ntolerance = 'lots'\n", "kernel_count.tolerance"),
    ("[categories]\nmax = { gpu = 0.5 }\n", "categories.max"),
    ("[regression]\nstep_time_pct = -1\n", "regression.step_time_pct"),
    ("[overhead\n", "not valid TOML"),
])
def test_bad_policy_is_a_usage_error(text, needle, capsys, tmp_path, reports):
    policy = write_policy(tmp_path, text)
    code, _, err = run(["gate", reports["graph"], "--policy", policy], capsys)
    assert code == 2
    assert needle in err and err.startswith("profdiag: error:")


def test_missing_inputs_are_usage_errors(capsys, tmp_path, reports):
    code, _, err = run(["gate", tmp_path / "nope.json.gz"], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = run(["gate", reports["graph"], "--baseline", tmp_path / "nope.json"],
                       capsys)
    assert code == 2
    code, _, err = run(["gate", reports["graph"], "--policy", tmp_path / "nope.toml"],
                       capsys)
    assert code == 2 and "policy file not found" in err


def test_unreadable_trace_and_newer_report(capsys, tmp_path, reports):
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\x00\x01 not a trace")
    code, _, err = run(["gate", junk], capsys)
    assert code == 3
    newer = load_json(reports["graph"])
    newer["schema_version"] = 999
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    code, _, err = run(["gate", tmp_path / "newer.json"], capsys)
    assert code == 3 and "schema_version" in err


def test_unwritable_output_is_exit_5(capsys, tmp_path, reports):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["gate", reports["graph"], "--junit", blocker / "sub" / "j.xml"],
                       capsys)
    assert code == 5 and "cannot write" in err


# ----------------------------------------------------------------------------------- outputs

def _xsd_validate(doc: ET.Element, xsd_path: Path) -> list[str]:
    """Validate ``doc`` against the XSD subset in tests/data/junit.xsd (stdlib only)."""
    xs = "{http://www.w3.org/2001/XMLSchema}"
    schema = ET.parse(xsd_path).getroot()
    elements = {e.get("name"): e for e in schema.findall(f"{xs}element")}
    simple = {}
    for st in schema.findall(f"{xs}simpleType"):
        pat = st.find(f"{xs}restriction/{xs}pattern")
        simple[st.get("name")] = re.compile(pat.get("value")) if pat is not None else None
    builtin = {"xs:string": None, "xs:nonNegativeInteger": re.compile(r"\+?[0-9]+"),
               "xs:int": re.compile(r"[+-]?[0-9]+"), "xs:decimal": re.compile(
                   r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"),
               "xs:dateTime": re.compile(r"-?[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9:]+)?")}
    errors: list[str] = []

    def occurs(node: ET.Element) -> str:
        lo, hi = node.get("minOccurs", "1"), node.get("maxOccurs", "1")
        return "{" + lo + "," + ("" if hi == "unbounded" else hi) + "}"

    def model(node: ET.Element) -> str:
        """A regex over the child element names ('<name>' tokens) for a content model."""
        tag = node.tag.replace(xs, "")
        if tag == "element":
            return f"(?:<{re.escape(node.get('ref') or node.get('name'))}>){occurs(node)}"
        parts = [model(c) for c in node if c.tag.replace(xs, "") in
                 ("element", "sequence", "choice")]
        joined = "|".join(parts) if tag == "choice" else "".join(parts)
        return f"(?:{joined}){occurs(node)}"

    def check(el: ET.Element, path: str) -> None:
        decl = elements.get(el.tag)
        if decl is None:
            errors.append(f"{path}: element {el.tag!r} not declared")
            return
        ctype = decl.find(f"{xs}complexType")
        if ctype is None:  # simple type element: text only
            if len(el) or el.attrib:
                errors.append(f"{path}: {el.tag} must hold text only")
            return
        attrs = {a.get("name"): a for a in ctype.findall(f"{xs}attribute")}
        for name, value in el.attrib.items():
            if name not in attrs:
                errors.append(f"{path}: attribute {name!r} not allowed")
                continue
            typ = attrs[name].get("type", "xs:string")
            pat = simple.get(typ) if typ in simple else builtin.get(typ)
            if pat is not None and not pat.fullmatch(value):
                errors.append(f"{path}/@{name}: {value!r} is not a {typ}")
        for name, a in attrs.items():
            if a.get("use") == "required" and name not in el.attrib:
                errors.append(f"{path}: required attribute {name!r} missing")
        groups = [c for c in ctype if c.tag.replace(xs, "") in ("sequence", "choice")]
        regex = model(groups[0]) if groups else ""
        names = "".join(f"<{c.tag}>" for c in el)
        if not re.fullmatch(regex, names):
            errors.append(f"{path}: children {names or '(none)'} do not match the schema")
        if ctype.get("mixed") != "true" and (el.text or "").strip():
            errors.append(f"{path}: text not allowed in {el.tag}")
        for i, child in enumerate(el):
            check(child, f"{path}/{child.tag}[{i}]")

    check(doc, doc.tag)
    return errors


def test_xsd_validator_rejects_bad_documents():
    xsd = DATA / "junit.xsd"
    ok = ET.fromstring('<testsuites><testsuite name="a" tests="1"><testcase name="x">'
                       '<failure message="m">t</failure></testcase></testsuite></testsuites>')
    assert _xsd_validate(ok, xsd) == []
    for bad in ('<testsuites><testsuite tests="1"/></testsuites>',  # name missing
                '<testsuites><testsuite name="a" tests="-1"/></testsuites>',
                '<testsuites><testsuite name="a" tests="1"><failure/></testsuite></testsuites>',
                ('<testsuites><testsuite name="a" tests="1"><testcase name="x" when="now"/>'
                 '</testsuite></testsuites>'),
                ('<testsuites><testsuite name="a" tests="1"><system-out/><testcase name="x"/>'
                 '</testsuite></testsuites>')):
        assert _xsd_validate(ET.fromstring(bad), xsd), bad


def test_junit_counts_and_schema(capsys, tmp_path, reports):
    from junitparser import Failure, JUnitXml, Skipped

    # fail (overhead), warn (category_share), skip (kernel_count off), pass (the rest)
    policy = write_policy(tmp_path, "[kernel_count]\nmode = 'off'\n")
    junit = tmp_path / "gate.xml"
    code, _, _ = run(["gate", reports["eager"], "--baseline", reports["graph"], "--policy",
                      policy, "--junit", junit, "--json", tmp_path / "r.json"], capsys)
    assert code == 1
    result = load_json(tmp_path / "r.json")
    statuses = [c["status"] for c in result["checks"]]
    assert {"fail", "warn", "skip", "pass"} <= set(statuses)

    doc = ET.parse(junit).getroot()
    assert _xsd_validate(doc, DATA / "junit.xsd") == []
    suites = doc.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "profdiag gate"

    xml = JUnitXml.fromfile(str(junit))
    suite = next(iter(xml))
    cases = list(suite)
    assert suite.name == "profdiag gate"
    assert len(cases) == len(statuses) == suite.tests
    assert {c.classname for c in cases} == {"profdiag.gate"}
    assert [c.name for c in cases] == [c["id"] for c in result["checks"]]
    failed = [c for c in cases if any(isinstance(r, Failure) for r in c.result)]
    skipped = [c for c in cases if any(isinstance(r, Skipped) for r in c.result)]
    assert len(failed) == statuses.count("fail") == suite.failures
    assert len(skipped) == statuses.count("skip") == suite.skipped
    assert suite.errors == 0
    by_name = {c.name: c for c in cases}
    assert "overhead share" in by_name["overhead"].result[0].message
    warn = next(c["id"] for c in result["checks"] if c["status"] == "warn")
    assert by_name[warn].is_passed and "WARNING" in (by_name[warn].system_out or "")


def test_junit_escapes_hostile_text():
    from profdiag.renderers import junit

    data = {"trace": "t<&>\x01.json", "mode": "decode", "status": "fail", "checks": [
        {"id": "overhead", "status": "fail", "severity": "fail",
         "summary": 'kernel <lambda(int)#1> & "x" \x07 ]]>', "observed": 1, "limit": 0,
         "baseline": None}]}
    doc = ET.fromstring(junit.render(data).encode())
    failure = doc.find("testsuite/testcase/failure")
    assert failure.get("message").startswith('kernel <lambda(int)#1> & "x"')
    assert junit.render(data) == junit.render(data)  # deterministic


def test_markdown_table_and_step_summary_append(capsys, tmp_path, monkeypatch, reports):
    md = tmp_path / "gate.md"
    code, _, _ = run(["gate", reports["eager"], "--markdown", md], capsys)
    text = md.read_text()
    assert code == 1
    assert text.startswith("### profdiag gate ❌ failed")
    assert "| status | check | summary |" in text
    assert "| ❌ fail | `overhead` | overhead share" in text
    # written again: replaced, not appended
    run(["gate", reports["graph"], "--markdown", md], capsys)
    assert md.read_text().count("### profdiag gate") == 1
    # $GITHUB_STEP_SUMMARY collects several steps: appended
    summary = tmp_path / "step_summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run(["gate", reports["eager"], "--markdown", summary], capsys)
    run(["gate", reports["graph"], "--markdown", summary], capsys)
    text = summary.read_text()
    assert text.startswith("# earlier step\n")
    assert text.count("### profdiag gate") == 2
    # --append forces it for any file
    run(["gate", reports["graph"], "--markdown", md, "--append"], capsys)
    assert md.read_text().count("### profdiag gate") == 2


def test_github_annotations(capsys, monkeypatch, reports):
    code, out, _ = run(["gate", reports["eager"]], capsys)
    assert "::error" not in out
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, out, _ = run(["gate", reports["eager"], "--baseline", reports["graph"]], capsys)
    assert code == 1
    lines = out.splitlines()
    errors = [ln for ln in lines if ln.startswith("::error ")]
    warnings = [ln for ln in lines if ln.startswith("::warning ")]
    assert any(ln.startswith("::error title=profdiag gate::overhead: overhead share ")
               for ln in errors)
    assert any("regression.step_time.decode" in ln for ln in errors)
    assert all("%25" in ln or "%" not in ln.split("::", 2)[2] for ln in errors + warnings)
    assert warnings  # category shares moved: a warning
    # --quiet keeps the annotations (CI needs them) but drops the table
    code, out, err = run(["gate", reports["eager"], "--quiet"], capsys)
    assert code == 1 and out.startswith("::error") and "status  check" not in out
    assert "FAILED" in err


def test_quiet_success_prints_nothing(capsys, reports):
    code, out, err = run(["gate", reports["graph"], "--quiet"], capsys)
    assert code == 0 and out == "" and err == ""


def test_json_result_contract(capsys, tmp_path, reports):
    code, _, _ = run(["gate", reports["graph"], "--baseline", reports["graph"], "--json",
                      tmp_path / "r.json"], capsys)
    assert code == 0
    data = load_json(tmp_path / "r.json")
    assert set(data) >= {"schema_version", "status", "exit_code", "trace", "mode", "baseline",
                         "baseline_mode", "policy", "counts", "checks"}
    assert data["counts"]["fail"] == 0 and sum(data["counts"].values()) == len(data["checks"])
    for c in data["checks"]:
        assert set(c) >= {"id", "status", "severity", "summary", "observed", "limit",
                          "baseline"}
        assert c["status"] in ("pass", "warn", "fail", "skip")
        assert c["severity"] in ("fail", "warn", "off")


def test_record_stores_the_gate_result(capsys, tmp_path, reports):
    db = tmp_path / "h.db"
    code, out, _ = run(["gate", reports["eager"], "--record", "--db", db, "--label",
                        "commit=abc"], capsys)
    assert code == 1 and "recorded as run" in out
    from profdiag import history

    runs = history.open(db).runs
    assert len(runs) == 1


@pytest.mark.torch
def test_capture_with_extra_gemm_fails_kernel_count(capsys, tmp_path):
    """End to end with the workload generator: `capture --extra-gemm` adds one GEMM per layer.

    Skipped where the captured trace cannot be diagnosed (no torch, no capture command, or a
    CPU-only machine whose CPU traces profdiag does not diagnose yet).
    """
    pytest.importorskip("torch")
    code, out, err = run(["capture", "--out", tmp_path, "--preset", "tiny", "--phase",
                          "prefill", "--tokens", "16", "--device", "auto", "--extra-gemm",
                          "--name", "xg", "-q"], capsys)
    if code != 0:
        pytest.skip(f"capture unavailable here (exit {code}): {err.strip()[:200]}")
    trace = tmp_path / "xg.json.gz"
    code, out, err = run(["gate", trace, "--json", tmp_path / "r.json"], capsys)
    if code == 4:
        pytest.skip("the captured trace has nothing profdiag can diagnose on this machine")
    kc = checks_of(tmp_path / "r.json")["kernel_count"]
    assert code == 1 and kc["status"] == "fail", out
    layers = json.loads((tmp_path / "xg.manifest.json").read_text())["config"]["layers"]
    assert kc["details"]["difference"] == layers  # one extra projection per layer


def test_rich_table_for_a_terminal(reports):
    from rich.console import Console

    from profdiag.renderers import gate_text

    data = gate.evaluate(gate.load_profile(reports["eager"])).to_dict()
    console = Console(record=True, width=120, force_terminal=True)
    console.print(gate_text.rich_table(data))
    text = console.export_text()
    assert "FAIL" in text and "overhead" in text and "profdiag gate FAILED" in text
