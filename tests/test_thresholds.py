"""rules/thresholds.toml as one typed struct: validation, and a --rules override reaching
every place that judges by a threshold (overhead, mode vote, hotspot notes, verdict and its
recommendations, the gate's default overhead limits)."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from profdiag import gate, thresholds
from profdiag.diagnosis.context import thresholds as merged_thresholds
from profdiag.diagnosis.mode import detect
from profdiag.errors import RulesError

from helpers import FIXTURES, REPO, diagnosed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DECODE = str(FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz")
PREFILL = str(FIXTURES / "torch" / "own_tiny_prefill_T128_B1.json.gz")


def _rules(tmp_path, text: str, name: str = "over.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_shipped_file_is_the_struct():
    t = thresholds.load()
    shipped = tomllib.loads((REPO / "rules" / "thresholds.toml").read_text())
    # every key of the file is a field, and every field is in the file (no default hides one)
    for f in dataclasses.fields(t):
        assert set(shipped[f.name]) == {g.name for g in dataclasses.fields(getattr(t, f.name))}
    assert t.overhead.limit("decode") == shipped["overhead"]["decode_max"] == 0.25
    assert t.overhead.limit("no-such-mode") == t.overhead.unknown_max
    assert t.mode.decode_max_q_len == 8 and t.hotspots.costly_min_us == 50
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.overhead.decode_max = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("text, message", [
    ("[mode]\ndecode_max_qlen = 4\n", "unknown key mode.decode_max_qlen"),
    ("[overhead]\ndecode_max = 1.5\n", "overhead.decode_max is a share and must be <= 1"),
    ("[hotspots]\ncostly_min_us = 'fifty'\n", "hotspots.costly_min_us must be a number"),
    ("[hotspots]\ntop = 2.5\n", "hotspots.top must be an integer"),
    ("[verdict]\nkv_share_min = -0.1\n", "verdict.kv_share_min must be >= 0"),
    ("[overhead]\npathological = 0.2\n", "overhead.pathological (0.2) is below a mode's limit"),
])
def test_a_bad_override_is_a_rules_error_naming_the_file_and_key(tmp_path, text, message):
    path = _rules(tmp_path, text)
    with pytest.raises(RulesError) as exc:
        merged_thresholds((path,))
    assert message in str(exc.value)
    assert str(exc.value).startswith(path)


def test_cli_reports_a_bad_threshold_in_one_line(tmp_path, capsys):
    from profdiag.cli import main

    path = _rules(tmp_path, "[mode_votes]\nannotation = 2\n")
    with pytest.raises(SystemExit) as exc:
        main(["report", DECODE, "--rules", path, "-f", "json", "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.strip().splitlines() == [
        f"profdiag: error: {path}: thresholds: mode_votes.annotation is a share and must be "
        "<= 1, got 2.0"] or "mode_votes.annotation is a share" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_overhead_hotspot_and_advice_overrides_reach_the_report(tmp_path):
    base = diagnosed(DECODE)
    # shipped: 99.3% of the 2368 kernels are under 10 us, every hotspot row "called often"
    assert base.overhead["short_kernel_share"] > 0.99
    assert "overhead.cuda_graphs" in [r.id for r in base.recommendations]
    path = _rules(tmp_path, "[overhead]\nshort_kernel_us = 1\n"
                            "[hotspots]\noften_max_us = 0\ncostly_min_us = 2\nshort_max_us = 1.5\n"
                            "[verdict]\ngraph_replayed_share_max = 0\n")
    d = diagnosed(DECODE, rules=(path,))
    work = d.events  # the classified device work the overhead evidence counts
    short = int((work["dur_ns"] < 1_000).sum())
    assert d.overhead["kernels"] == len(work) == 2368
    assert 0 < short < len(work)
    assert d.overhead["short_kernel_share"] == round(short / len(work), 4)
    # the label of every output is formatted from the limit the report carries
    from profdiag.renderers import text as text_r

    assert d.overhead["short_kernel_ns"] == 1_000 and base.overhead["short_kernel_ns"] == 10_000
    labels = [label for label, _ in text_r.overhead_items(d.to_dict())]
    assert "short kernel share (< 1 us)" in labels
    assert "short kernel share (< 10 us)" in [lb for lb, _ in text_r.overhead_items(base.to_dict())]
    fusion = [r for r in d.recommendations if r.id == "overhead.fusion"]
    assert all("< 1 us" in r.evidence for r in fusion)
    # graphs advice fires only while the replayed share is below the limit (0 now: never)
    assert "overhead.cuda_graphs" not in [r.id for r in d.recommendations]
    # notes: no "called often" (each call must be < 0 us); >= 2 us costly; < 1.5 us short
    for row in d.hotspots.to_dict("records"):
        us = row["mean_ns"] / 1000
        want = ("inherently costly" if us >= 2 else "short kernel" if us < 1.5
                else f"{us:.1f} us per call")
        assert row["note"].startswith(want), (us, row["note"])


def test_verdict_compute_share_override(tmp_path):
    # lift the prefill overhead limit so the verdict is decided on compute vs memory share
    lift = "[overhead]\nprefill_max = 0.99\npathological = 1.0\n"
    compute = diagnosed(PREFILL, rules=(_rules(tmp_path, lift + "[verdict]\n"
                                                "compute_share_min = 0\n", "a.toml"),))
    memory = diagnosed(PREFILL, rules=(_rules(tmp_path, lift + "[verdict]\n"
                                               "compute_share_min = 1\n", "b.toml"),))
    assert compute.bottleneck.value == "compute"
    assert memory.bottleneck.value == "memory"


def test_mode_vote_overrides_reach_detect(tmp_path):
    work = diagnosed(DECODE).events
    shipped = detect(work, [], 64, 0.6, limits=thresholds.load())
    assert shipped.value == "decode"
    assert shipped.evidence[0].startswith("attention query length Tq = 1 (one token")
    assert shipped.confidence == pytest.approx(0.95, abs=0.05)
    # Tq = 1 is "many tokens" once decode_max_q_len is 0; its vote (0.95) still leads
    t = thresholds.from_mapping(merged_thresholds((_rules(tmp_path, "[mode]\n"
                                                           "decode_max_q_len = 0\n"),)))
    flipped = detect(work, [], 64, 0.6, limits=t)
    assert flipped.value == "prefill"
    assert "Tq = 1 (many tokens: prefill)" in flipped.evidence[0]
    # weights: confidence = strongest vote + 0.03 per further agreeing vote (capped at 0.99)
    agreeing = [e for e in shipped.evidence if not e.startswith("(disagrees")]
    assert shipped.confidence == pytest.approx(min(0.99, 0.95 + 0.03 * (len(agreeing) - 1)))
    t = thresholds.from_mapping(merged_thresholds((_rules(tmp_path, "[mode_votes]\n"
                                                           "attention_q_len = 0.7\n",
                                                           "w.toml"),)))
    weaker = detect(work, [], 64, 0.6, limits=t)
    assert weaker.value == "decode" and weaker.evidence == shipped.evidence
    assert weaker.confidence == pytest.approx(0.7 + 0.03 * (len(agreeing) - 1))


def test_gate_default_overhead_limits_are_the_thresholds(tmp_path):
    t = thresholds.load()
    pol = gate.Policy.load()
    # one source of truth: the report's check and the gate agree (unknown was 0.30 vs 0.25)
    assert pol.get("overhead", "max_share") == {
        "prefill": t.overhead.prefill_max, "decode": t.overhead.decode_max,
        "mixed": t.overhead.mixed_max, "unknown": t.overhead.unknown_max}
    assert pol.get("overhead", "max_share")["unknown"] == 0.25
    # a --rules override moves the gate's default too; a --policy key still wins over both
    rules = _rules(tmp_path, "[overhead]\ndecode_max = 0.4\npathological = 0.5\n")
    assert gate.Policy.load(rules=(rules,)).get("overhead", "max_share")["decode"] == 0.4
    policy = _rules(tmp_path, "[overhead]\nmax_share = { decode = 0.3 }\n", "policy.toml")
    merged = gate.Policy.load(policy, rules=(rules,)).get("overhead", "max_share")
    assert merged["decode"] == 0.3 and merged["prefill"] == 0.15


def test_advice_picks_launch_bound_kernels_by_note_kind():
    d = diagnosed(DECODE)
    rows = d.hotspots.to_dict("records")
    prefix = {"often": "called often", "short": "short kernel", "costly": "inherently costly"}
    for r in rows:  # the kind is the note that fired
        kind = r["_note_kind"]
        assert r["note"].startswith(prefix[kind]) if kind in prefix else kind == "plain"
    launch_bound = tuple(r["name"] for r in rows if r["_note_kind"] in ("often", "short"))[:3]
    graphs = next(r for r in d.recommendations if r.id == "overhead.cuda_graphs")
    assert graphs.kernels == launch_bound and len(launch_bound) == 3
    assert "_note_kind" not in d.to_dict()["hotspots"][0]  # not part of the JSON contract
    assert "_note_kind" not in d.tables()["hotspots"].columns
