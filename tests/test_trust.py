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
from mobilenet.bench.stats import RunLevel, rerun_interval, t975, within_run_interval
from mobilenet.files import hold_build_lock
from mobilenet.freshness import is_fresh, record_stamp
from mobilenet.report import markdown as report
from mobilenet.results import ResultsError, cpu_flags, load_results, write_result

# ---------------------------------------------------------------- intervals

def test_the_within_run_interval_is_a_log_scale_confidence_interval():
    values = [10.0, 11.0, 12.0, 10.5, 11.5]
    interval = within_run_interval(values)
    logs = np.log(values)
    half = 2.776 * logs.std(ddof=1) / math.sqrt(5)  # this run's mean: t(n-1)·s/√n
    assert interval.estimate == pytest.approx(math.exp(logs.mean()))
    assert interval.low == pytest.approx(math.exp(logs.mean() - half))
    assert interval.high == pytest.approx(math.exp(logs.mean() + half))
    assert interval.sessions == 5 and 0 < interval.half_width_pct < 10


def test_the_rerun_interval_adds_both_runs_run_level_shift_and_the_reruns_sessions():
    values = [10.0, 11.0, 12.0, 10.5, 11.5]
    logs = np.log(values)
    level = RunLevel(log_var=0.02 ** 2, log_var_se=0.0, runs=50, rows=10)  # a well-known 2 % shift
    interval = rerun_interval(values, level)
    variance = 2 * 0.02 ** 2 + logs.var(ddof=1) * (1 / 5 + 1 / 5)
    dof = 2 * variance ** 2 / (2 * (logs.var(ddof=1) * 2 / 5) ** 2 / 4)  # Satterthwaite: only the sessions vary
    assert interval.high == pytest.approx(math.exp(logs.mean() + t975(dof) * math.sqrt(variance)))
    assert interval.half_width_pct > within_run_interval(values).half_width_pct
    assert rerun_interval(values, None) is None  # no history: not known, never the within-run one


def test_t975_covers_satterthwaites_fractional_dof():
    from scipy import stats
    for dof in (1, 1.5, 2.3, 4, 6.7, 12.5, 29.5, 45, 200, 1e6):
        assert t975(dof) == pytest.approx(stats.t.ppf(0.975, dof), rel=0.03 if dof < 2 else 0.005)


def test_one_session_has_no_interval_and_two_a_wide_one():
    assert within_run_interval([10.0]).low is None and within_run_interval([10.0]).half_width_pct is None
    two = within_run_interval([10.0, 11.0])
    assert t975(1) == pytest.approx(12.706) and two.low < 9 and two.high > 12  # honest about 2 draws


def test_clears_below_needs_disjoint_intervals():
    fast, slow = within_run_interval([5.0, 5.1, 5.2]), within_run_interval([6.0, 6.1, 6.2])
    assert fast.clears_below(slow) and not slow.clears_below(fast)
    assert not within_run_interval([5.0, 7.0, 6.0]).clears_below(within_run_interval([6.0, 6.5, 7.0]))


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


def test_with_exact_95_percent_intervals_at_most_one_of_15_variants_missing_is_the_exception():
    # The consistency target: three runs, and for all variants but at most one, each run's
    # figure inside the other two runs' 95 % intervals. Which interval: the rerun interval,
    # as a rerun is what is checked. Here it is exact: the run-to-run spread is known (a
    # long history), and the machine shifts by 3 % per run for every variant at once. Each
    # variant faces six checks, so even exact intervals pass all six only ~81 % of the time,
    # whatever the session count. As a run's shift moves every variant together, misses come
    # in groups, so "at most one of 15 misses" holds in about half of the sets (with
    # independent variants it would be one in five): no honest 95 % interval meets it
    # reliably. The within-run interval, which leaves the run's shift and the rerun's sessions
    # out, fails most checks and almost every set.
    rng = np.random.default_rng(8)
    level = RunLevel(log_var=0.03 ** 2, log_var_se=0.0, runs=1000, rows=15)

    def passes(interval, runs) -> list[bool]:
        return [all(interval(runs[j][v]).holds(math.exp(np.log(runs[i][v]).mean()))
                    for i in range(3) for j in range(3) if i != j) for v in range(15)]

    sets, variant_checks, at_most_one, within_run_sets = 300, [], 0, 0
    for _ in range(sets):
        shifts = rng.normal(0, 0.03, size=3)
        runs = [[np.exp(shift + rng.normal(0, 0.07, size=7)) for _ in range(15)] for shift in shifts]
        rerun = passes(lambda values: rerun_interval(values, level), runs)
        variant_checks += rerun
        at_most_one += 15 - sum(rerun) <= 1
        within_run_sets += 15 - sum(passes(within_run_interval, runs)) <= 1
    p = sum(variant_checks) / len(variant_checks)
    assert 0.76 <= p <= 0.86
    assert 0.35 <= at_most_one / sets <= 0.70
    assert within_run_sets / sets < 0.05


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
