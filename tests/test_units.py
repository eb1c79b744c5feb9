"""Unit tests for the small pieces: stats, freshness, settings, registry, gate, atomic writes."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from mobilenet import accuracy
from mobilenet import registry as variants
from mobilenet.bench import stats
from mobilenet.files import atomic_path
from mobilenet.measure import timing
from mobilenet.settings import Settings, parse_threads


def test_summarize_percentiles_and_cv():
    latency = stats.summarize(list(range(1, 101)))
    assert latency.runs == 100
    assert latency.p50_ms == pytest.approx(50.5)
    assert latency.p90_ms == pytest.approx(90.1)
    assert latency.p99_ms == pytest.approx(99.01)
    assert latency.mean_ms == pytest.approx(50.5)
    assert latency.cv == pytest.approx(np.std(range(1, 101), ddof=1) / 50.5)


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        stats.summarize([])


def test_speedup_is_median_of_per_round_ratios():
    # The machine slows down 2x in round 2; ratios stay 2.0 in every round.
    reference = [[10, 10, 10], [20, 20, 20], [10, 11, 9]]
    variant = [[5, 5, 5], [10, 10, 10], [5, 6, 4]]
    assert stats.median_round_ratio(reference, variant) == pytest.approx(2.0)
    # A pooled mean would be distorted by the unequal phases; the round median is not.
    assert stats.median_round_ratio([[10], [30], [10]], [[5], [5], [5]]) == pytest.approx(2.0)


def test_time_calls_counts_and_measures():
    samples = timing.time_calls(lambda x: time.sleep(0.002), None, 5)
    assert len(samples) == 5 and all(s >= 2.0 for s in samples)


def test_parse_threads():
    assert parse_threads("1") == (1,)
    assert parse_threads("1,2,1") == (1, 2)
    assert parse_threads("all") == (os.cpu_count(),)
    with pytest.raises(ValueError):
        parse_threads("zero")


def test_settings_env_and_options(monkeypatch, tmp_path):
    monkeypatch.setenv("MOBILENET_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv("MOBILENET_THREADS", "1,2")
    settings = Settings()
    assert settings.build_dir == tmp_path and settings.threads == (1, 2)
    assert settings.with_options(threads="all", only=None).threads == (os.cpu_count(),)
    assert settings.with_options(only=None).only is None


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".onnx" and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "good"
    assert list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_registry_is_consistent():
    ids = [v.id for v in variants.VARIANTS]
    assert len(ids) == len(set(ids))
    assert variants.REFERENCE_ID in ids
    assert {v.step for v in variants.VARIANTS} == set(variants.BUILD_STEPS)
    artifacts = [v.artifact for v in variants.VARIANTS]
    assert len(artifacts) == len(set(artifacts))
    for v in variants.VARIANTS:
        assert v.precision in ("fp32", "int8") and ":" in v.builder


@pytest.mark.parametrize("variant", variants.VARIANTS, ids=lambda v: v.id)
def test_every_registry_entry_resolves(variant):
    """Its builder is a function of an importable module (converters import their toolkits
    lazily), its runner module exists, and its build step's needs are steps."""
    import importlib
    import importlib.util
    module_name, function_name = variant.builder.split(":")
    assert callable(getattr(importlib.import_module(module_name), function_name)), variant.builder
    assert importlib.util.find_spec(f"mobilenet.measure.runners.{variant.runtime}") is not None, variant.runtime
    steps = {s.name: s for s in variants.STEPS}
    assert set(steps[variant.step].needs) <= set(steps), variant.step


def test_select_always_keeps_reference():
    chosen = [v.id for v in variants.select("onnx-*")]
    assert chosen == ["fp32-eager", "onnx-fp32", "onnx-int8"]
    with pytest.raises(ValueError):
        variants.select("no-such-variant")


def _logits(top1_classes, n_classes=10):
    logits = np.zeros((len(top1_classes), n_classes), dtype=np.float32)
    logits[np.arange(len(top1_classes)), top1_classes] = 5.0
    return logits


def test_scores_and_gate():
    reference = _logits([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    labels = [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]  # reference top-1 = 90 %
    same = accuracy.score(reference, reference, labels)
    assert (same.top1_pct, same.agreement_pct) == (90.0, 100.0)
    # Ten identical answers cannot show >= 90 % agreement (Wilson: 72-100 %); 200 can.
    assert accuracy.gate(same)[0] == accuracy.INCONCLUSIVE
    many = np.tile(reference, (20, 1))
    assert accuracy.gate(accuracy.score(many, many, labels * 20))[0] == accuracy.OK
    # 9/10 agree (90 %), top-1 drops 10 points: 10 photos cannot tell; 200 show it is FAILED on the drop
    answers = _logits([9, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    worse = accuracy.score(answers, reference, labels)
    assert worse.agreement_pct == 90.0 and worse.top1_pct == 80.0
    assert accuracy.gate(worse)[0] == accuracy.INCONCLUSIVE
    assert accuracy.gate(accuracy.score(np.tile(answers, (20, 1)), many, labels * 20))[0] == accuracy.FAILED
    # Unlabelled: only agreement counts; at 200 photos 85 % is DEGRADED, 70 % FAILED
    for agreeing, status in ((170, accuracy.DEGRADED), (140, accuracy.FAILED)):
        top1 = [0] * agreeing + [1] * (200 - agreeing)
        assert accuracy.gate(accuracy.score(_logits(top1), _logits([0] * 200), None))[0] == status


def test_fp32_parity_threshold():
    reference = _logits([1, 2, 3]) * 4  # a trained model's scale (20), where the absolute limit binds
    assert accuracy.fp32_parity(reference + 5e-4, reference)[0]
    assert not accuracy.fp32_parity(reference + 2e-3, reference)[0]


def test_task_options_arrive_as_strings_and_are_typed():
    settings = Settings().with_options(min_seconds="4", min_runs="50", random_weights="1", tag="x")
    assert settings.min_seconds == 4.0 and isinstance(settings.min_seconds, float)
    assert settings.min_runs == 50 and settings.random_weights is True and settings.tag == "x"


def test_a_steps_builders_share_what_one_of_them_made_once():
    from mobilenet.build.step import BuildContext
    step_shared, made = {}, []
    contexts = [BuildContext(None, None, None, None, None, _shared=step_shared) for _ in range(2)]
    values = [ctx.shared("converted", lambda: made.append(1) or ["model"]) for ctx in contexts]
    assert made == [1] and values[0] is values[1]
    assert BuildContext(None, None, None, None, None).shared("converted", lambda: "own") == "own"
