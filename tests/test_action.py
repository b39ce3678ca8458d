"""The composite GitHub Action (action.yml): its structure, and its steps run as a runner
would run them (bash -eo pipefail, $GITHUB_OUTPUT, $GITHUB_STEP_SUMMARY), with the `uses:`
steps recorded instead of run and the install step checked instead of run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import REPO

ACTION = REPO / "action.yml"
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
REF = re.compile(r"\b(inputs\.[\w-]+|github\.action_path|steps\.[\w-]+\.outputs\.[\w-]+)")


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    return yaml.safe_load(ACTION.read_text())


def test_action_yml_is_a_valid_composite_action(action):
    assert action["runs"]["using"] == "composite"
    assert action["name"] and action["description"]
    declared = set(action["inputs"])
    assert action["inputs"]["traces"]["required"] is True
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name
        assert spec.get("required") or "default" in spec, name
    steps = action["runs"]["steps"]
    ids = {s["id"] for s in steps if "id" in s}
    text = ACTION.read_text()
    for ref in REF.findall(" ".join(EXPR.findall(text)) + " " + " ".join(
            str(s.get("if", "")) for s in steps)):
        kind, _, rest = ref.partition(".")
        if kind == "inputs":
            assert rest in declared, f"undeclared input {rest}"
        elif kind == "steps":
            assert rest.split(".")[0] in ids, f"unknown step {rest}"
    for s in steps:
        assert s.get("name"), s
        assert ("uses" in s) != ("run" in s), s["name"]
        if "run" in s:
            assert s.get("shell") == "bash", s["name"]  # composite run steps need a shell
            assert "${{" not in s["run"], f"{s['name']}: pass inputs through env, not inline"
        else:
            assert re.fullmatch(r"actions/[\w-]+@v\d+", s["uses"]), s["uses"]
    for out in action["outputs"].values():
        assert EXPR.fullmatch(out["value"])
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"].startswith("always()")  # reports are uploaded when the gate failed


class Runner:
    """Just enough of the Actions runner to run this composite action's steps."""

    def __init__(self, action: dict[str, Any], inputs: dict[str, str], work: Path):
        self.action = action
        self.inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
        self.inputs.update(inputs)
        self.work = work
        self.outputs: dict[str, dict[str, str]] = {}
        self.summary = work / "summary.md"
        self.summary.write_text("")
        self.log: list[tuple[str, str]] = []  # (step name, what happened)
        shim = work / "bin"
        shim.mkdir()
        # the console script profdiag, running this checkout
        (shim / "profdiag").write_text(
            f"#!/bin/sh\nexec '{sys.executable}' -c 'import sys; from profdiag.cli import main; "
            f"sys.exit(main())' \"$@\"\n")
        (shim / "profdiag").chmod(0o755)
        self.path = f"{shim}{os.pathsep}{os.environ['PATH']}"

    def value(self, ref: str) -> str:
        if ref == "github.action_path":
            return str(REPO)
        kind, _, rest = ref.partition(".")
        if kind == "inputs":
            return self.inputs[rest]
        step, _, key = rest.partition(".outputs.")
        return self.outputs.get(step, {}).get(key, "")

    def expr(self, text: str) -> Any:
        """Evaluate a GitHub expression made of refs, strings, ==, !=, ||, && and always()."""
        values: dict[str, str] = {}

        def name(m: re.Match[str]) -> str:
            key = f"v{len(values)}"
            values[key] = self.value(m.group(1))
            return key

        py = REF.sub(name, text)
        py = py.replace("always()", "True").replace("&&", " and ").replace("||", " or ")
        assert re.fullmatch(r"[\s\w'=!()]*", py), py
        return eval(py, {"__builtins__": {}}, {"True": True, **values})  # noqa: S307

    def render(self, text: str) -> str:
        return EXPR.sub(lambda m: str(self.expr(m.group(1))), text)

    def run(self) -> bool:
        failed = False
        for step in self.action["runs"]["steps"]:
            cond = step.get("if")
            if cond is None:
                go = not failed
            else:
                go = bool(self.expr(cond)) and (not failed or "always()" in cond)
            if not go:
                self.log.append((step["name"], "skipped"))
                continue
            if "uses" in step:
                with_ = {k: self.render(str(v)) for k, v in (step.get("with") or {}).items()}
                self.log.append((step["name"], f"uses {step['uses']} {with_}"))
                continue
            env = {k: self.render(str(v)) for k, v in (step.get("env") or {}).items()}
            if step.get("id") == "install":
                self.log.append((step["name"], f"install {env['PROFDIAG_SPEC']}"))
                continue
            out_file = self.work / f"{step.get('id', 'step')}.out"
            out_file.write_text("")
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=self.work, capture_output=True, text=True, timeout=300,
                env={**os.environ, "PYTHONPATH": str(REPO), "PATH": self.path,
                     "GITHUB_OUTPUT": str(out_file), "GITHUB_STEP_SUMMARY": str(self.summary),
                     **env})
            if "id" in step:
                self.outputs[step["id"]] = dict(
                    line.split("=", 1) for line in out_file.read_text().splitlines() if line)
            self.log.append((step["name"], f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"))
            failed = failed or proc.returncode != 0
        return not failed


def _junit_cases(path: Path) -> dict[str, str]:
    """testcase name -> 'failure' | 'skipped' | 'pass'."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        status = "pass"
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failure"
            elif child.tag == "skipped" and status == "pass":
                status = "skipped"
        out[case.get("name")] = status
    return out


def test_action_passes_with_a_baseline_and_uploads_everything(action, tmp_path, tiny_decode):
    policy = tmp_path / "policy.toml"
    policy.write_text("[overhead]\nmax_share = { decode = 0.995 }\n")  # tiny decode: 98.6% idle
    runner = Runner(action, {"traces": str(tiny_decode), "baseline": str(tiny_decode),
                             "policy": str(policy), "python-version": ""}, tmp_path)
    assert runner.run(), runner.log
    steps = dict(runner.log)
    assert steps["Set up Python"] == "skipped"
    assert steps["Install profdiag"] == f"install {REPO}"  # this checkout when no spec is given
    assert steps["Gate the traces"].startswith("exit 0")
    assert runner.outputs["gate"] == {"exit-code": "0", "output-dir": "profdiag-out"}
    assert steps["Fail when the gate failed"] == "skipped"
    upload = steps["Upload the reports and Perfetto traces"]
    assert "actions/upload-artifact@v4" in upload and "'path': 'profdiag-out'" in upload
    out = tmp_path / "profdiag-out"
    name = "own_tiny_decode_ctx512_B1_steps8"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{name}.junit.xml", f"{name}.report.html", f"{name}.perfetto.json.gz"])
    cases = _junit_cases(out / f"{name}.junit.xml")
    assert cases["overhead"] == "pass" and "failure" not in cases.values()
    assert any(c.startswith("regression.") for c in cases)  # the baseline was compared
    summary = runner.summary.read_text()
    assert "| overhead |" in summary.replace("`", "") or "overhead" in summary
    assert 'id="perfetto"' in (out / f"{name}.report.html").read_text()


def test_action_fails_the_job_after_writing_the_artifacts(action, tmp_path, tiny_decode):
    bad = tmp_path / "broken.json"
    bad.write_text("{not a trace")
    runner = Runner(action, {"traces": f"{tiny_decode}\n{bad}", "perfetto": "false",
                             "output-dir": "out dir"}, tmp_path)
    assert not runner.run()
    steps = dict(runner.log)
    # the default policy fails the decode (overhead 98.6% > 25%: exit 1); the broken file is
    # unreadable input (exit 3): the worst code wins
    assert runner.outputs["gate"]["exit-code"] == "3"
    assert "gate exit code 1" in steps["Gate the traces"]
    assert "gate exit code 3" in steps["Gate the traces"]
    assert "actions/upload-artifact" in steps["Upload the reports and Perfetto traces"]
    assert steps["Fail when the gate failed"].startswith("exit 3")
    assert "::error::profdiag gate failed (exit code 3)" in steps["Fail when the gate failed"]
    out = tmp_path / "out dir"
    name = "own_tiny_decode_ctx512_B1_steps8"
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.junit.xml",
                                                    f"{name}.report.html"]
    assert _junit_cases(out / f"{name}.junit.xml")["overhead"] == "failure"
    assert "FAIL" in runner.summary.read_text().upper()


def test_gate_docs_show_the_action(action):
    doc = (REPO / "docs" / "gate.md").read_text()
    steps = [s for block in re.findall(r"```yaml\n(.*?)```", doc, re.S)
             for job in (yaml.safe_load(block).get("jobs") or {}).values()
             for s in job["steps"]]
    uses = next(s for s in steps if "/profdiag@" in s.get("uses", ""))
    assert set(uses["with"]) <= set(action["inputs"])
    assert "traces" in uses["with"]
    for name in action["inputs"]:
        assert f"`{name}`" in doc, f"input {name} not documented in docs/gate.md"
