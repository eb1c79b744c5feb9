"""Numbers that hold on a rerun: intervals over sessions, one top-1 rule, validated result
files, one run per build folder, content-based freshness. Unit tests, no model runs."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
from conftest import REPO
from test_report import make_result

from mobilenet import accuracy
from mobilenet.bench.stats import session_interval, t975
from mobilenet.files import hold_build_lock
from mobilenet.freshness import is_fresh, record_stamp
from mobilenet.report import markdown as report
from mobilenet.results import ResultsError, cpu_flags, load_results, write_result

# ---------------------------------------------------------------- intervals

def test_session_interval_is_a_log_scale_rerun_interval():
    values = [10.0, 11.0, 12.0, 10.5, 11.5]
    interval = session_interval(values)
    logs = np.log(values)
    half = 2.776 * logs.std(ddof=1) * math.sqrt(2 / 5)  # a rerun's mean misses ours by both runs' noise
    assert interval.estimate == pytest.approx(math.exp(logs.mean()))
    assert interval.low == pytest.approx(math.exp(logs.mean() - half))
    assert interval.high == pytest.approx(math.exp(logs.mean() + half))
    assert interval.sessions == 5 and 0 < interval.half_width_pct < 15


def test_one_session_has_no_interval_and_two_a_wide_one():
    assert session_interval([10.0]).low is None and session_interval([10.0]).half_width_pct is None
    two = session_interval([10.0, 11.0])
    assert t975(1) == pytest.approx(12.706) and two.low < 8 and two.high > 13  # honest about 2 draws


def test_clears_below_needs_disjoint_intervals():
    fast, slow = session_interval([5.0, 5.1, 5.2]), session_interval([6.0, 6.1, 6.2])
    assert fast.clears_below(slow) and not slow.clears_below(fast)
    assert not session_interval([5.0, 7.0, 6.0]).clears_below(session_interval([6.0, 6.5, 7.0]))


# ---------------------------------------------------------------- one top-1 rule

def test_a_tie_at_the_top_is_decided_by_one_rule_everywhere():
    # Row 0: classes 3 and 1 tie at the top; the rule gives the lower index, 1, as argmax does.
    logits = np.zeros((2, 10), dtype=np.float32)
    logits[0, [1, 3]] = 5.0
    logits[1, 7] = 4.0
    reference = np.zeros((2, 10), dtype=np.float32)
    reference[0, 1] = 1.0
    reference[1, 7] = 1.0
    labels = [1, 7]
    assert accuracy.ranked(logits, 1)[:, 0].tolist() == logits.argmax(1).tolist() == [1, 7]
    scores = accuracy.score(logits, reference, labels)
    assert scores.top1_pct == 100.0 and scores.agreement_pct == 100.0 and scores.tied_top1_rows == 1
    # The same photo labelled 3 is a miss for top-1 under the rule, and the gate agrees with the label score.
    assert accuracy.topk_pct(logits, [3, 7], 1) == 50.0 and accuracy.topk_pct(logits, [3, 7], 2) == 100.0


def test_sort_order_of_many_ties_is_the_class_index():
    logits = np.full((1, 1000), 2.0, dtype=np.float32)
    assert accuracy.ranked(logits, 5).tolist() == [[0, 1, 2, 3, 4]]


# ---------------------------------------------------------------- result files are validated

def _written(tmp_path, **changes):
    write_result(tmp_path, make_result("onnx-fp32", 8.0, eager_p50=20.0))
    path = tmp_path / "onnx-fp32@1t.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("changes, field", [
    ({"p50_ms": 0}, "p50_ms"),
    ({"p50_ms": "fast"}, "p50_ms"),
    ({"runs": 2.5}, "runs"),
    ({"variant": KeyError}, "variant"),
    ({"status": "great"}, "status"),
    ({"env": "a string"}, "env"),
])
def test_a_hand_edited_result_names_the_file_and_field(tmp_path, changes, field):
    path = _written(tmp_path, **changes)
    with pytest.raises(ResultsError, match=f"{path.name}.*'?{field}'?"):
        load_results(tmp_path)


def test_bad_json_and_other_schemas_name_the_file(tmp_path):
    (tmp_path / "broken@1t.json").write_text("{not json")
    with pytest.raises(ResultsError, match="broken@1t.json: not readable JSON"):
        load_results(tmp_path)
    (tmp_path / "broken@1t.json").write_text(json.dumps({"schema": 1, "variant": "x"}))
    with pytest.raises(ResultsError, match="schema 1"):
        load_results(tmp_path)


def test_a_valid_result_round_trips(tmp_path):
    original = make_result("onnx-int8", 6.0, eager_p50=20.0)
    write_result(tmp_path, original)
    assert asdict(load_results(tmp_path)[0]) == asdict(original)


def test_text_from_result_files_is_escaped_in_the_report(tmp_path):
    hostile = make_result("fp32-eager", 20.0, machine="evil | <script>alert(1)</script> ![x](http://a/b)")
    hostile.status_reason = "reference | injected ** cell"
    text = report.render([hostile])
    assert "<script>" not in text and "![x](" not in text
    assert "\\<script\\>" in text and "evil \\|" in text


# ---------------------------------------------------------------- recorded facts

def test_threads_the_runtime_cannot_report_show_as_requested():
    litert = make_result("litert-fp32", 9.0, eager_p50=20.0, threads_effective=None)
    eager = make_result("fp32-eager", 20.0)
    text = report.render([eager, litert])
    assert "1 (requested; the runtime cannot report)" in text and "1 → 1" in text


def test_cpu_flags_are_read_from_cpuinfo():
    x86 = "processor : 0\nflags\t\t: fpu sse4_2 avx2 fma avx512f avx512_vnni\n"
    arm = "processor : 0\nFeatures\t: fp asimd asimddp i8mm sve\n"
    assert cpu_flags(x86) == ["avx2", "fma", "avx512f", "avx512_vnni"]
    assert cpu_flags(arm) == ["asimd", "asimddp", "i8mm", "sve"]


def test_summary_claims_a_winner_only_when_intervals_clear():
    eager = make_result("fp32-eager", 20.0)
    clear = [eager, make_result("onnx-int8", 6.0, eager_p50=20.0, ci=0.02),
             make_result("onnx-fp32", 8.0, eager_p50=20.0, ci=0.02)]
    assert "- Fastest: `onnx-int8`" in "\n".join(report.summary_lines(clear))
    tied = [eager, make_result("onnx-int8", 6.0, eager_p50=20.0, ci=0.10),
            make_result("onnx-fp32", 6.5, eager_p50=20.0, ci=0.10)]
    line = report.summary_lines(tied)[0]
    assert line.startswith("- Fastest: tied within noise") and "`onnx-int8`" in line and "`onnx-fp32`" in line


# ---------------------------------------------------------------- one run per build folder, freshness

def test_a_second_run_in_the_same_build_folder_is_refused(tmp_path):
    hold_build_lock(tmp_path)
    hold_build_lock(tmp_path)  # the next task of the same chain: fine
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from mobilenet.files import hold_build_lock; hold_build_lock(sys.argv[1])",
         str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0
    assert f"another run (pid {__import__('os').getpid()}) is using {tmp_path}" in probe.stderr


def test_freshness_follows_content_not_mtimes(tmp_path):
    build = tmp_path / "build"
    stamp = build / "stamps" / "step.json"
    source, out = tmp_path / "input.txt", build / "out.txt"
    source.write_text("one")
    build.mkdir()
    out.write_text("made")
    record_stamp(stamp, {"a": 1}, [source])
    assert is_fresh([out], [source], {"a": 1}, stamp) == (True, "up to date")
    source.touch()  # a newer mtime with the same content is not a change
    assert is_fresh([out], [source], {"a": 1}, stamp)[0]
    source.write_text("two")
    assert is_fresh([out], [source], {"a": 1}, stamp) == (False, f"{source} changed")
    assert is_fresh([out], [source], {"a": 2}, stamp) == (False, "settings changed")


def test_a_rerun_lands_inside_the_rerun_interval_95_percent_of_the_time():
    # Processes draw a speed factor (here lognormal, 6 %); two runs of 7 sessions each. The
    # interval must hold the other run's estimate at its stated rate: a confidence interval
    # of the mean (sqrt(2) narrower) would hold it only about 85 % of the time.
    rng = np.random.default_rng(7)
    trials, held = 3000, 0
    for _ in range(trials):
        first, second = np.exp(rng.normal(0, 0.06, size=(2, 7))) * 20.0
        held += session_interval(first).low <= session_interval(second).estimate <= session_interval(first).high
    assert 0.93 <= held / trials <= 0.97


def test_with_exact_95_percent_intervals_at_most_one_of_15_variants_missing_is_the_exception():
    # Issue #8's consistency target: three runs, and for all variants but at most one, each
    # run's figure inside the other two runs' 95 % intervals. Each variant faces six checks,
    # so even exact intervals pass all six only ~81 % of the time, whatever the session count:
    # with 15 variants, "at most one misses" comes up in about one set of three runs in five.
    rng = np.random.default_rng(8)
    variants, passed = 1500, 0
    for _ in range(variants):
        runs = [session_interval(np.exp(rng.normal(0, 0.07, size=7))) for _ in range(3)]
        passed += all(runs[j].low <= runs[i].estimate <= runs[j].high
                      for i in range(3) for j in range(3) if i != j)
    p = passed / variants
    at_most_one_of_15 = p ** 15 + 15 * (1 - p) * p ** 14
    assert 0.76 <= p <= 0.86
    assert 0.08 <= at_most_one_of_15 <= 0.35


class _SteadyWorker:
    """A worker whose every call takes the same time: enough to drive the rounds."""

    def __init__(self, ms: float):
        self.ms, self.log_path = ms, "none"

    def burst(self, count: int) -> dict:
        return {"samples_ms": [self.ms] * count}


def test_variants_leave_the_rounds_when_done_but_the_reference_stays_for_every_pairing():
    from mobilenet.bench.stats import median_round_ratio
    from mobilenet.measure.session import SessionPlan, Take, _interleave
    times = {"fp32-eager": 35.0, "slow": 40.0, "fast": 10.0}
    workers = {vid: _SteadyWorker(ms) for vid, ms in times.items()}
    takes = {vid: Take(vid) for vid in times}
    plan = SessionPlan(threads=1, warmup=0, burst=10, min_runs=20, min_seconds=1.0, eval_npy="-", log_dir="-",
                       reference="fp32-eager")
    _interleave(workers, takes, plan, None, None)
    rounds = {vid: len(take.rounds) for vid, take in takes.items()}
    assert rounds == {"fp32-eager": 10, "slow": 3, "fast": 10}  # 1 s of 10 ms calls takes 10 bursts
    assert median_round_ratio(takes["fp32-eager"].rounds, takes["slow"].rounds) == pytest.approx(35 / 40)
    assert median_round_ratio(takes["fp32-eager"].rounds, takes["fast"].rounds) == pytest.approx(3.5)
