"""The coordinator: every variant loaded in its own idle process, timed in interleaved rounds.

This machine's speed drifts in phases lasting seconds, so variants timed one after another
in blocks are not comparable. Each round gives every variant a short burst, in an order
that rotates from round to round; percentiles pool all rounds, and speed-ups are the
median of per-round ratios against eager FP32 measured seconds apart.
"""
from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from mobilenet import accuracy, logs
from mobilenet.dataset import Prepared, prepare
from mobilenet.energy import RaplMeter
from mobilenet.fsutil import is_fresh, read_json, record_stamp, stamp_path
from mobilenet.results import (Environment, Result, base_environment, load_results, result_path,
                               write_result)
from mobilenet.settings import Settings
from mobilenet.timing import cv, median_round_ratio, summarize
from mobilenet.variants import REFERENCE_ID, Variant, select
from mobilenet.worker import WorkerError, WorkerProcess, WorkerSkipped

log = logging.getLogger("mobilenet.bench")


@dataclass
class Contestant:
    variant: Variant
    meta: dict
    worker: WorkerProcess | None = None
    ready: dict = field(default_factory=dict)
    rounds: list[list[float]] = field(default_factory=list)
    energy_j: float = 0.0
    finish: dict = field(default_factory=dict)
    skip_reason: str | None = None

    @property
    def samples(self) -> list[float]:
        return [s for burst in self.rounds for s in burst]


def _logits_path(settings: Settings, variant_id: str, threads: int):
    """Where a worker leaves its evaluation logits for the coordinator to score."""
    return settings.build_dir / "tmp" / f"{variant_id}@{threads}t.logits.npy"


def bench_settings(settings: Settings, variants: list[Variant]) -> dict:
    return {"variants": [v.id for v in variants], "threads": list(settings.threads),
            "warmup": settings.warmup, "min_runs": settings.min_runs,
            "min_seconds": settings.min_seconds, "burst": settings.burst, "tag": settings.tag}


def _start(contestant: Contestant, settings: Settings, data: Prepared, threads: int) -> None:
    variant = contestant.variant
    if contestant.meta.get("status") != "ok":
        contestant.skip_reason = contestant.meta.get("reason", f"not built: run `invoke {variant.step}`")
        return
    try:
        contestant.worker = WorkerProcess(
            variant, variant.artifact_path(settings.models_dir), threads, data.eval.path,
            _logits_path(settings, variant.id, threads), settings.warmup,
            settings.logs_dir / f"bench-{variant.id}@{threads}t.log")
        contestant.ready = contestant.worker.ready
    except (WorkerSkipped, WorkerError) as exc:
        contestant.skip_reason = str(exc).splitlines()[0][:300]
        log.warning("  %s skipped: %s", variant.id, contestant.skip_reason)


def _interleave(active: list[Contestant], settings: Settings, meter: RaplMeter) -> int:
    """Rounds of bursts in rotating order until every variant has enough runs and time."""
    from tqdm import tqdm

    def done(c: Contestant) -> bool:
        return len(c.samples) >= settings.min_runs and sum(c.samples) / 1000 >= settings.min_seconds

    def rounds_needed() -> int:
        # The fastest variant sets the count: it takes the most bursts to reach min_seconds.
        fastest_ms = min(statistics.median(c.samples) for c in active)
        calls = max(settings.min_runs, settings.min_seconds * 1000 / fastest_ms)
        return max(1, math.ceil(calls / settings.burst))

    rounds = 0
    with tqdm(total=math.ceil(settings.min_runs / settings.burst), desc="bench rounds",
              unit="round", disable=settings.quiet, leave=False) as bar:
        while not all(done(c) for c in active):
            order = active[rounds % len(active):] + active[:rounds % len(active)]
            for contestant in order:
                before = meter.read() if meter.available else None
                contestant.rounds.append(contestant.worker.burst(settings.burst)["samples_ms"])
                if before is not None:
                    contestant.energy_j += meter.joules_between(before, meter.read())
            rounds += 1
            bar.total = max(rounds_needed(), rounds)
            bar.update(1)
    return rounds


def _result(c: Contestant, reference: Contestant | None, ref_logits, ref_top1, data: Prepared,
            threads: int, env_base: dict, rounds: int, settings: Settings,
            energy_source: str) -> Result:
    variant = c.variant
    versions = c.ready.get("versions", {})
    env = Environment(**env_base, threads_requested=threads,
                      threads_effective=c.ready.get("threads_effective"),
                      quantized_engine=variant.engine, runtime_versions=versions)
    common = dict(variant=variant.id, runtime=variant.runtime, precision=variant.precision,
                  summary=variant.summary, threads=threads, env=env, build=c.meta,
                  deprecated=variant.deprecated, preprocess_ms=data.preprocess_ms)
    if c.skip_reason:
        return Result(status=accuracy.SKIPPED, status_reason=c.skip_reason, **common)

    logits = np.load(_logits_path(settings, variant.id, threads))
    scores = accuracy.score(logits, ref_logits, data.labels)
    if variant.id == REFERENCE_ID:
        status, reason = accuracy.OK, "reference"
    elif env_base["weights_random"]:
        status, reason = accuracy.OK, "not gated: random weights"
    else:
        status, reason = accuracy.gate(scores, ref_top1)
    stats = summarize(c.samples)
    size_mb = c.ready["size_bytes"] / 1e6
    runs = len(c.samples)
    return Result(
        status=status, status_reason=reason, **common,
        size_mb=size_mb, load_ms=c.ready["load_ms"], first_inference_ms=c.ready["first_inference_ms"],
        runs=runs, rounds=rounds, mean_ms=stats.mean_ms, p50_ms=stats.p50_ms, p90_ms=stats.p90_ms,
        p99_ms=stats.p99_ms, std_ms=stats.std_ms, cv=stats.cv,
        round_cv=cv(statistics.median(r) for r in c.rounds if r),
        speedup_vs_eager=median_round_ratio(reference.rounds, c.rounds) if reference else None,
        peak_rss_mb=c.finish.get("peak_rss_mb"), cpu_time_s=c.finish.get("cpu_time_s"),
        cpu_util_pct=c.finish.get("cpu_util_pct"),
        energy_mj_per_inference=(c.energy_j * 1000 / runs) if energy_source == "RAPL" else None,
        top1_pct=scores.top1_pct, top5_pct=scores.top5_pct,
        agreement_pct=scores.agreement_pct, max_abs_dlogit=scores.max_abs_dlogit)


def bench_threads(variants: list[Variant], threads: int, settings: Settings, data: Prepared) -> list[Result]:
    log.info("bench: %d variant(s) at %d thread(s)", len(variants), threads)
    contestants = []
    for variant in variants:
        meta_path = variant.meta_path(settings.models_dir)
        meta = read_json(meta_path) if meta_path.exists() else {}
        contestant = Contestant(variant, meta)
        # Start one at a time so each load is timed on an otherwise idle machine.
        _start(contestant, settings, data, threads)
        contestants.append(contestant)
    active = [c for c in contestants if c.worker]
    reference = next((c for c in active if c.variant.id == REFERENCE_ID), None)
    if reference is None:
        for c in active:
            c.worker.close()
        raise RuntimeError("the FP32 eager reference could not run; see build/logs/bench-fp32-eager*.log")
    meter = RaplMeter()
    try:
        rounds = _interleave(active, settings, meter)
        for c in active:
            c.finish = c.worker.finish()
    finally:
        for c in active:
            c.worker.close()

    ref_logits = np.load(_logits_path(settings, REFERENCE_ID, threads))
    ref_top1 = accuracy.topk_pct(ref_logits, data.labels, 1) if data.labelled else None
    env_base = base_environment(settings, reference.meta["weights"], data, meter.reason)
    return [_result(c, reference, ref_logits, ref_top1, data, threads, env_base, rounds,
                    settings, meter.reason) for c in contestants]


def run(settings: Settings, force: bool = False) -> list[Result]:
    """The bench step; returns this run's results (all written to build/results/)."""
    logger = logs.setup(settings.logs_dir, "bench", settings.quiet)
    variants = select(settings.only)
    data = prepare(settings)
    outputs = [result_path(settings.results_dir, v.id, t) for v in variants for t in settings.threads]
    inputs = [v.meta_path(settings.models_dir) for v in variants] + [data.eval.path]
    wanted = bench_settings(settings, variants)
    stamp = stamp_path(settings.stamps_dir, "bench")
    fresh, reason = is_fresh(outputs, inputs, wanted, stamp)
    if fresh and not force:
        logger.info("bench: up to date (--force to redo)")
        wanted_keys = {(v.id, t) for v in variants for t in settings.threads}
        return [r for r in load_results(settings.results_dir) if (r.variant, r.threads) in wanted_keys]
    logger.info("bench: %s", "forced" if force else reason)
    if not settings.only:  # a full run replaces every earlier result; a subset only its own
        for old in settings.results_dir.glob("*.json"):
            old.unlink()
    results = []
    for threads in settings.threads:
        for result in bench_threads(variants, threads, settings, data):
            write_result(settings.results_dir, result)
            results.append(result)
            logger.info("  %-20s %2dt %-8s %s", result.variant, threads, result.status,
                        f"p50 {result.p50_ms:.2f} ms" if result.p50_ms is not None else result.status_reason)
    record_stamp(stamp, wanted)
    return results
