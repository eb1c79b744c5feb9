"""Accuracy with its uncertainty in results and the report, and answers at every thread count.
Unit tests on synthetic logits and results: no model is built or run."""
from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO
from test_accuracy import answers as ten_classes
from test_report import make_result, table_row, tables

from mobilenet import accuracy
from mobilenet.bench import rows, step
from mobilenet.files import write_json
from mobilenet.measure.session import SessionPlan, Take
from mobilenet.registry import REFERENCE_ID, VARIANTS, by_id
from mobilenet.report import markdown as report
from mobilenet.results import ResultsError, load_results, write_result
from mobilenet.settings import Settings

FP32_RIGHT = 166  # of 200 photos: 83.0 %, Wilson 77.2–87.6


def answers(*table: int, agreeing_wrong: int = 0):
    """test_accuracy.answers with ImageNet's 1000 classes, as every runner gives them (label 0,
    so top-5 is always right: the other logits tie at 0 and ties go to the lower class)."""
    logits, reference, labels = ten_classes(*table, agreeing_wrong=agreeing_wrong)
    pad = np.zeros((len(labels), 990), np.float32)
    return np.hstack([logits, pad]), np.hstack([reference, pad]), labels


def scored_row(variant: str, table: tuple[int, int, int, int], *, size_mb: float | None = None, threads: int = 1,
               agreeing_wrong: int = 20, **extra):
    """A result row whose accuracy fields are scored from synthetic logits: the paired table
    (a, b, c, d) against FP32 on 200 photos (test_accuracy.answers), and its status from the gate."""
    logits, reference, labels = answers(*table, agreeing_wrong=agreeing_wrong)
    is_reference = variant == REFERENCE_ID
    scores = accuracy.score(reference if is_reference else logits, reference, labels)
    status, reason = ("ok", "reference") if is_reference else accuracy.gate(scores)
    row = make_result(variant, 20.0 if is_reference else 6.0, eager_p50=20.0, status=status, size_mb=size_mb,
                      threads=threads)
    row.status_reason = reason
    row.env.eval_photos, row.env.calib_photos, row.env.calib_classes, row.env.eval_classes = 200, 50, 50, 200
    for name, value in {**rows.accuracy_fields(scores, reference=is_reference), **extra}.items():
        setattr(row, name, value)
    return row


def fp32_row(**extra):
    return scored_row(REFERENCE_ID, (FP32_RIGHT, 0, 0, 200 - FP32_RIGHT), size_mb=14.2, **extra)


def summary_of(text: str) -> str:
    return text[text.index("## Summary"):text.index("## box-a")]


# ---------------------------------------------------------------- counts and intervals

def test_result_fields_carry_counts_intervals_and_the_paired_comparison(tmp_path):
    row = scored_row("onnx-int8", (150, 16, 1, 33), size_mb=4.0)
    assert (row.eval_photos, row.top1_correct, row.agreeing, row.top1_pct) == (200, 151, 170, 75.5)
    assert [round(v, 1) for v in row.top1_ci_pct] == [69.1, 80.9]
    assert (row.fp32_only_right, row.variant_only_right, row.top1_diff_pts) == (16, 1, -7.5)
    assert row.mcnemar_p == pytest.approx(0.000274658203125)
    assert [round(v, 1) for v in row.top1_diff_ci_pts] == [-11.8, -3.5]
    # The reference has no paired comparison with itself; its counts and intervals it has.
    reference = fp32_row()
    assert reference.fp32_only_right is reference.mcnemar_p is reference.top1_diff_ci_pts is None
    assert reference.top1_correct == FP32_RIGHT and reference.agreement_ci_pct[1] == 100.0
    # Written and read back as JSON: the same fields, validated.
    write_result(tmp_path, row)
    assert asdict(load_results(tmp_path)[0]) == asdict(row)
    row.top1_diff_ci_pts = [-3.5, -11.8]  # a hand-edited file: the report would print it backwards
    write_result(tmp_path, row)
    with pytest.raises(ResultsError, match="top1_diff_ci_pts"):
        load_results(tmp_path)


def test_report_shows_counts_and_intervals():
    results = [fp32_row(), scored_row("onnx-int8", (164, 2, 4, 30), size_mb=4.0)]
    text = report.render(results)
    section = text[text.index("### 1 thread\n"):]
    # Main table: each percentage with its 95 % Wilson interval, the larger side in whole points.
    main = table_row(section, "### 1 thread", "onnx-int8")
    assert main[4:6] == ["84.0 ±6", "92.0 ±5"], main  # top-1 78.3–88.4, agreement 87.4–95.0
    assert table_row(section, "### 1 thread", REFERENCE_ID)[4:6] == ["83.0 ±6", "100.0 ±2"]
    # Details: counts, both ends, the paired comparison with FP32.
    accuracy_table = next(rows_ for _, headers, rows_ in tables(section) if "McNemar p" in headers)
    assert accuracy_table["onnx-int8"][1:] == ["84.0 (168/200; 78.3–88.4)", "100.0 (200/200; 98.1–100.0)",
                                               "92.0 (184/200; 87.4–95.0)", "+1.0 (-1.8 to +3.9)", "2", "4",
                                               "0.69", "—"]
    assert accuracy_table[REFERENCE_ID][1:4] == ["83.0 (166/200; 77.2–87.6)", "100.0 (200/200; 98.1–100.0)",
                                                 "100.0 (200/200; 98.1–100.0)"]
    assert accuracy_table[REFERENCE_ID][4:8] == ["—"] * 4
    assert "200 evaluation photos, so one photo is 0.5 points" in section
    # The environment block: how many photos each set has, and how many classes each spans.
    assert "50 calibration photos of 50 classes, 200 evaluation photos of 200 classes" in section


def test_main_table_with_intervals_stays_narrow():
    """Every variant, with realistic intervals: the main table still fits a laptop screen."""
    rows_ = [fp32_row() if v.id == REFERENCE_ID else scored_row(v.id, (162, 4, 3, 31), agreeing_wrong=28)
             for v in VARIANTS]
    for r in rows_:  # the gate would call these INCONCLUSIVE; width is the question here
        r.status, r.status_reason = "ok", "agreement"
    text = report.render(rows_)
    section = text[text.index("### 1 thread\n"):]
    at, _, main = tables(section)[0]
    assert "±" in main["onnx-int8"][4] and "±" in main["onnx-int8"][5]
    lines = section[at:].splitlines()[:2 + len(VARIANTS)]
    assert max(map(len, lines)) <= 120, "\n".join(lines)


# ---------------------------------------------------------------- claims the photos support

def test_best_accuracy_per_mb_is_tied_when_the_intervals_overlap():
    # 84.0 vs 81.0 % top-1 at the same size: Wilson intervals overlap, and so do the paired ones
    # (+1.0, -1.8 to +3.9 and -2.0, -5.2 to +1.1).
    results = [fp32_row(), scored_row("onnx-int8", (164, 2, 4, 30), size_mb=4.0),
               scored_row("litert-int8", (160, 6, 2, 32), size_mb=4.0)]
    summary = summary_of(report.render(results))
    assert ("- Best accuracy per MB: tied (within what 200 photos can tell): `onnx-int8` 21.0 (19.6–22.1) %/MB, "
            "`litert-int8` 20.2 (18.7–21.5) %/MB.") in summary
    assert "fp32-eager` 5.8" not in summary, "FP32's 14.2 MB puts it clearly behind: not in the tie"
    assert ("- Top-1 against eager FP32 on the same photos: tied (the paired 95 % interval holds 0): `onnx-int8`, "
            "`litert-int8`.") in summary
    assert "more accurate" not in summary and "less accurate" not in summary


def test_best_accuracy_per_mb_is_claimed_when_the_paired_test_supports_it():
    best, worse = scored_row("onnx-int8", (164, 2, 4, 30), size_mb=4.0), scored_row("litert-int8", (150, 16, 1, 33),
                                                                                       size_mb=4.0)
    # The two Wilson intervals overlap (78.3–88.4 and 69.1–80.9): alone they cannot tell...
    assert best.top1_ci_pct[0] < worse.top1_ci_pct[1]
    # ...but against FP32 on the same photos +1.0 (-1.8 to +3.9) is clear of -7.5 (-11.8 to -3.5).
    reference = fp32_row()
    assert report.more_per_mb(best, worse, reference) and not report.more_per_mb(worse, best, reference)
    summary = summary_of(report.render([reference, best, worse]))
    assert ("- Best accuracy per MB: `onnx-int8`, 84.0 ±6 % top-1 in 4.00 MB (21.0 (19.6–22.1) %/MB); it clears "
            "the runner-up `litert-int8` (18.9 (17.3–20.2) %/MB).") in summary
    assert ("- Top-1 against eager FP32 on the same photos: less accurate: `litert-int8` -7.5 pts (-11.8 to -3.5, "
            "McNemar p=0.00027); tied (the paired 95 % interval holds 0): `onnx-int8`.") in summary
    # Without FP32's row there is no paired route, and the overlap stands.
    assert not report.more_per_mb(best, worse, None)


def test_inconclusive_is_rendered_and_explained(tmp_path):
    inconclusive = scored_row("onnx-int8", (160, 6, 2, 32), size_mb=4.0)
    assert inconclusive.status == "INCONCLUSIVE"
    build = tmp_path / "build"
    for r in (fp32_row(), inconclusive):
        write_result(build / "results", r)
    out, failed = report.write(report.result_folders(build), build / "report.md")
    assert failed == [], "INCONCLUSIVE does not make `invoke report` exit 1"
    text = out.read_text()
    assert table_row(text, "### 1 thread", "onnx-int8")[-1] == "INCONCLUSIVE"
    summary = summary_of(text)
    assert "- `onnx-int8` is INCONCLUSIVE: agreement 90.0% \\[85.1, 93.4\\], top-1 -2.0 pts" in summary
    assert "200 photos cannot tell, no practical number would at these rates" in summary
    notes = text[text.index("## Notes"):]
    for explained in ("  - ok: the intervals show at least 90 % agreement and at most 2 points of top-1 lost",
                      "  - DEGRADED: agreement surely below 90 %", "exit code 0",
                      "  - INCONCLUSIVE: the photos cannot tell ok from DEGRADED",
                      "it never turns into ok, and the exit code stays 0",
                      "  - FAILED: agreement surely below 80 %", "exit 1", "  - skipped: the runtime is not installed"):
        assert explained in notes, explained


LOSS_CLAIMS = re.compile(r"no (accuracy |top-1 )?loss|lossless|loss-free|without (any )?(accuracy )?loss|"
                         r"no accuracy (drop|cost)|(same|identical) accuracy as", re.IGNORECASE)


def test_nothing_claims_no_accuracy_loss():
    """ok means "within the margins", never "no loss": 200 photos cannot show there is none."""
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "mobilenet").rglob("*.py")]
    claims = [f"{path.relative_to(REPO)}: {match.group(0)}" for path in files
              for match in LOSS_CLAIMS.finditer(Path(path).read_text())]
    assert not claims, claims
    text = report.render([fp32_row(), scored_row("onnx-int8", (166, 0, 0, 34), agreeing_wrong=34)])
    assert not LOSS_CLAIMS.search(text)


# ---------------------------------------------------------------- answers at every thread count

def test_thread_fields_count_the_answers_that_changed():
    at_1t, _, _ = answers(160, 6, 2, 32)
    at_2t = at_1t.copy()
    at_2t[:3] = np.roll(at_2t[:3], 1, axis=1)  # three photos move their top-1 class
    at_2t[10, 0] += 1e-4  # one moves a logit only
    fields = rows.thread_fields(at_2t, at_1t)
    assert (fields["answers_changed_photos"], fields["agreement_with_1t_pct"]) == (3, 98.5)
    assert fields["max_abs_dlogit_vs_1t"] == pytest.approx(5.0)
    assert rows.thread_fields(at_1t, at_1t) == {"agreement_with_1t_pct": 100.0, "answers_changed_photos": 0,
                                                "max_abs_dlogit_vs_1t": 0.0}
    with pytest.raises(ValueError, match="cannot be compared"):
        rows.thread_fields(at_2t[:5], at_1t)


def test_only_the_first_session_above_1_thread_scores_the_photos(tmp_path):
    settings = Settings(build_dir=tmp_path / "build")
    one = SessionPlan(threads=1, warmup=1, burst=5, min_runs=10, min_seconds=0.1, eval_npy="e.npy", log_dir="l")
    assert all(step._answers_plan(one, settings, index) is one for index in range(3)), "1 thread: nothing added"
    two = SessionPlan(threads=2, warmup=1, burst=5, min_runs=10, min_seconds=0.1, eval_npy="e.npy", log_dir="l")
    stale = step.answers_dir(settings, 2) / "onnx-int8@2t.logits.npy"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's answers")
    first = step._answers_plan(two, settings, 0)
    assert first.logits_dir == str(step.answers_dir(settings, 2)) and first.threads == 2
    assert not stale.exists(), "an earlier run's answers cannot pass for this run's"
    assert step._answers_plan(two, settings, 1) is two and two.logits_dir is None


def _take(variant: str, session: int) -> Take:
    base = 20.0 if variant == REFERENCE_ID else 5.0
    return Take(variant, ready={"size_bytes": 4_000_000, "load_ms": 10.0, "first_inference_ms": 25.0,
                                "threads_effective": 2, "versions": {}, "package": "onnxruntime"},
                rounds=[[base * (1 + 0.01 * ((r + c + session) % 3)) for c in range(4)] for r in range(3)],
                finish={"cpu_time_s": 1.0, "cpu_util_pct": 95.0})


def test_a_row_whose_answers_change_at_2_threads_is_scored_on_them_and_flagged(tmp_path):
    settings = Settings(build_dir=tmp_path / "build")
    models = settings.models_dir
    models.mkdir(parents=True)
    variant, eager = by_id("onnx-int8"), by_id(REFERENCE_ID)
    at_1t, reference, labels = answers(166, 0, 0, 34, agreeing_wrong=34)  # 1 thread: FP32's answers exactly
    at_2t = at_1t.copy()
    at_2t[:12] = np.roll(at_2t[:12], 2, axis=1)  # at 2 threads, 12 photos FP32 gets right go wrong
    np.save(models / f"{variant.id}.check-logits.npy", at_1t)
    np.save(models / f"{eager.id}.check-logits.npy", reference)
    step.answers_dir(settings, 2).mkdir(parents=True)
    np.save(step.answers_dir(settings, 2) / f"{variant.id}@2t.logits.npy", at_2t)
    np.save(step.answers_dir(settings, 2) / f"{eager.id}@2t.logits.npy", reference)
    check = {"status": "INCONCLUSIVE", "facts": "the build check's, at 1 thread"}
    meta = {"status": "ok", "artifact_sha256": "ab" * 32, "check": check}
    for v in (variant, eager):
        write_json(v.meta_path(models), meta)
    sessions = [{v.id: _take(v.id, s) for v in (eager, variant)} for s in range(3)]
    env_base = {"machine_id": "box-a (Test CPU)", "hostname": "box", "cpu_model": "Test CPU", "logical_cores": 2,
                "os": "Linux", "python": "3.11", "torch": "2.14.1", "torchvision": "0.29.1", "weights_source": "w",
                "weights_sha256": "cd" * 32, "weights_random": False, "image_set": "sample", "eval_photos": 200,
                "labelled": True, "data_sha256": "ef" * 32, "energy_source": "no RAPL"}
    data = SimpleNamespace(labels=labels, preprocess_ms=3.0, fingerprint="ef" * 32, eval=range(200))

    at_one = step._result(variant, meta, sessions, 1, env_base, data, settings, native=None)
    assert (at_one.status, at_one.top1_pct, at_one.agreement_with_1t_pct) == ("INCONCLUSIVE", 83.0, None)
    row = step._result(variant, meta, sessions, 2, env_base, data, settings, native=None)
    # Accuracy from the 2-thread answers, against eager FP32 at 1 thread.
    assert (row.top1_correct, row.fp32_only_right, row.agreeing) == (154, 12, 188)
    assert (row.answers_changed_photos, row.agreement_with_1t_pct) == (12, 94.0)
    # Judged again on them: 12 photos lost is surely more than 2 points down.
    assert row.status == "DEGRADED", row.status_reason
    assert row.status_reason.startswith("judged on the 2-thread answers (12 top-1 answers differ from 1 thread's)")
    fp32 = step._result(eager, meta, sessions, 2, env_base, data, settings, native=None)
    assert (fp32.status, fp32.answers_changed_photos, fp32.fp32_only_right) == ("ok", 0, None)

    text = report.render([fp32, row])
    assert ("- Answers change with the thread count: `onnx-int8` (another top-1 than at 1 thread on 12 of 200 "
            "photos); their accuracy here is their 2-thread answers'.") in summary_of(text)
    assert ("- `onnx-int8` answers differently at 2 threads than at 1 thread: another top-1 on 12 of 200 photos "
            "(94.0 % the same)") in text
    accuracy_table = next(rows_ for _, headers, rows_ in tables(text) if "McNemar p" in headers)
    assert accuracy_table["onnx-int8"][-1] == "94.0 (188/200; max abs Δlogit 5)"
    assert accuracy_table[REFERENCE_ID][-1] == "100.0 (200/200; max abs Δlogit 0)"
    assert "Answers change" not in summary_of(report.render([fp32, at_one]))


def test_device_rows_above_1_thread_compare_with_the_devices_own_1_thread_answers(tmp_path):
    from mobilenet.remote import device
    settings = Settings(build_dir=tmp_path / "build")
    models = settings.models_dir
    models.mkdir(parents=True)
    variant, eager = by_id("onnx-int8"), by_id(REFERENCE_ID)
    at_1t, reference, labels = answers(166, 0, 0, 34, agreeing_wrong=34)
    np.save(models / f"{variant.id}.check-logits.npy", at_1t)
    np.save(models / f"{eager.id}.check-logits.npy", reference)
    write_json(variant.meta_path(models), {"status": "ok"})
    fetched = tmp_path / "fetched"
    (fetched / "logits").mkdir(parents=True)
    at_2t = at_1t.copy()
    at_2t[:4] = np.roll(at_2t[:4], 2, axis=1)
    np.save(fetched / "logits" / f"{variant.id}@1t.logits.npy", at_1t)
    np.save(fetched / "logits" / f"{variant.id}@2t.logits.npy", at_2t)
    env = {"machine_id": "pi (Cortex-A76)", "hostname": "pi", "cpu_model": "Cortex-A76", "logical_cores": 4,
           "os": "Linux", "python": "3.11", "torch": "not on the device", "torchvision": "not on the device",
           "weights_source": "w", "weights_sha256": "cd" * 32, "weights_random": False, "image_set": "sample",
           "eval_photos": 200, "labelled": True, "data_sha256": "ef" * 32, "energy_source": "not measured"}
    sessions = [{variant.id: asdict(_take(variant.id, s))} for s in range(2)]
    made = {t: device.make_results([variant], t, sessions, fetched, 200, settings, labels, env, not_run={})[0]
            for t in (1, 2)}
    assert made[1].answers_changed_photos is None, "1 thread: nothing to compare with"
    assert (made[2].answers_changed_photos, made[2].top1_correct, made[2].fp32_only_right) == (4, 162, 4)
