"""Sessions turned into a Result: one function for the local bench's rows and a device's, so that
the two cannot drift apart. What only the caller knows (the machine's environment, how the
answers are scored, why a variant did not run) comes in as arguments.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np

from mobilenet import accuracy
from mobilenet.accuracy import Scores
from mobilenet.bench.history import NOT_YET_KNOWN, RunLevels
from mobilenet.bench.stats import (
    cv,
    median_round_ratio,
    pooled_reference_rounds,
    rerun_interval,
    summarize,
    within_run_interval,
)
from mobilenet.build import target
from mobilenet.measure.session import Take
from mobilenet.registry import REFERENCE_ID, Variant
from mobilenet.results import FAILED, SKIPPED, Environment, Result

# Called for a measured row only: (status, reason, further Result fields such as accuracy).
Score = Callable[[], tuple[str, str, dict]]


def make_result(variant: Variant, meta: dict, sessions: list[dict[str, Take]], threads: int, env_base: dict,
                score: Score, *, not_run: tuple[str, str] | None = None, where: str = "while measuring",
                versions_in_env: tuple[str, ...] = (), no_reference_note: str | None = None,
                run_levels: RunLevels | None = None, measured_on: dict | None = None, **fields) -> Result:
    """One variant's row at `threads` from the sessions it took part in.

    env_base: the Environment fields every row of the run shares (this machine's, or a device's).
    score: see Score; lazy, since a variant that did not run has no answers to score.
    not_run: (status, reason) decided before measuring (at build time, or not installable on a device).
    where: what a worker's error happened during, for the reason ("while measuring", "on the device").
    versions_in_env: Environment fields the worker's reported versions replace (a device's torch
        is the one installed there, not this machine's).
    no_reference_note: the row's speedup_note when the eager reference did not run in these sessions.
    run_levels: this machine's run-to-run spread from its history (history.run_levels), for the
        rerun intervals; None: not known (a device's rows, or no history yet).
    measured_on: the CPU that ran the sessions (target.Target.record()); None: this machine, probed.
    fields: further Result fields for every row (preprocess_ms).
    """
    takes = [s[variant.id] for s in sessions if variant.id in s]
    first = takes[0].ready if takes else {}
    versions = first.get("versions", {})
    env = Environment(**{**env_base, **{k: versions[k] for k in versions_in_env if k in versions}},
                      threads_requested=threads, threads_effective=first.get("threads_effective"),
                      quantized_engine=variant.engine, runtime_versions=versions)
    common = dict(variant=variant.id, runtime=variant.runtime, precision=variant.precision, summary=variant.summary,
                  threads=threads, env=env, build=meta, runtime_version=versions.get(first.get("package", "")),
                  deprecated=variant.deprecated, built_for=built_for(meta),
                  measured_on=measured_on or target.probe().record(),
                  inputs={"artifact_sha256": meta.get("artifact_sha256"), "data_sha256": env.data_sha256}, **fields)
    if not_run:
        return Result(status=not_run[0], status_reason=not_run[1], **common)
    problem = next((t.skipped or t.error for t in takes if not t.ran), None) if takes else "no result"
    if problem:
        skipped = bool(takes) and all(t.skipped for t in takes if not t.ran)
        return Result(status=SKIPPED if skipped else FAILED,
                      status_reason=problem if skipped else f"error {where}: {problem}", **common)

    reference = [s[REFERENCE_ID] for s in sessions if REFERENCE_ID in s]
    reference_ran = bool(reference) and all(t.ran for t in reference)
    timing = timing_fields(takes, reference if reference_ran else None, run_levels)
    energy_j = sum(t.energy_j for t in takes)
    status, reason, scored = score()
    return Result(status=status, status_reason=reason, **common, **timing,
                  speedup_note=None if reference_ran else no_reference_note,
                  energy_mj_per_inference=(energy_j * 1000 / timing["runs"]) if env.energy_source == "RAPL" else None,
                  **scored)


def built_for(meta: dict) -> dict | None:
    """The CPU the artifact's ISA-dependent settings were chosen for, as its build recorded it."""
    options = meta.get("options") if isinstance(meta, dict) else None
    made_for = target.recorded_target(options.get(target.RECORD_KEY) if isinstance(options, dict) else None)
    return made_for.record() if made_for else None


def _interval(bounds) -> list | None:
    return None if bounds is None else [float(bounds[0]), float(bounds[1])]


def accuracy_fields(scores: Scores, *, reference: bool = False, answers: np.ndarray | None = None,
                    answers_1t: np.ndarray | None = None) -> dict:
    """The Result's accuracy fields from scored answers (accuracy.score), local and device rows alike.

    reference: the row is eager FP32 itself, which has no paired comparison with itself.
    answers, answers_1t: this row's logits and the same artifact's at 1 thread on the same photos,
        given for a row measured at more than one thread: how many answers the thread count changed.
    """
    fields = {"top1_pct": scores.top1_pct, "top5_pct": scores.top5_pct, "agreement_pct": scores.agreement_pct,
              "max_abs_dlogit": scores.max_abs_dlogit, "tied_top1_rows": scores.tied_top1_rows,
              "eval_photos": scores.photos, "top1_correct": scores.top1_correct,
              "top5_correct": scores.top5_correct, "agreeing": scores.agreeing,
              "top1_ci_pct": _interval(scores.top1_ci_pct), "top5_ci_pct": _interval(scores.top5_ci_pct),
              "agreement_ci_pct": _interval(scores.agreement_ci_pct)}
    paired = None if reference else scores.paired
    if paired is not None:
        fields.update(fp32_only_right=paired.b, variant_only_right=paired.c, mcnemar_p=paired.p_value,
                      top1_diff_pts=paired.diff_pts, top1_diff_ci_pts=_interval(paired.diff_ci_pts))
    if answers is not None and answers_1t is not None:
        fields.update(thread_fields(answers, answers_1t))
    return fields


def thread_fields(answers: np.ndarray, answers_1t: np.ndarray) -> dict:
    """How far one artifact's answers at this thread count are from its answers at 1 thread.

    A multi-threaded kernel may sum in another order, so its logits, and now and then a top-1
    class, can move with the thread count; each row's accuracy is then its own thread count's."""
    if answers.shape != answers_1t.shape:
        raise ValueError(f"answers of shape {answers.shape} cannot be compared with 1 thread's {answers_1t.shape}")
    same = accuracy.agrees(answers, answers_1t)
    return {"agreement_with_1t_pct": float(same.mean() * 100), "answers_changed_photos": int((~same).sum()),
            "max_abs_dlogit_vs_1t": accuracy.max_abs_dlogit(answers, answers_1t)}


def _cpu_util(takes: list[Take]) -> float | None:
    cpu = sum(t.finish.get("cpu_time_s") or 0 for t in takes)
    wall = sum((t.finish.get("cpu_time_s") or 0) * 100 / t.finish["cpu_util_pct"]
               for t in takes if t.finish.get("cpu_util_pct"))
    return 100 * cpu / wall if wall else None


def _reference_rounds(reference: Take) -> list[list[float]]:
    """The reference's rounds as every speed-up of its session divides by them: its own, or,
    with peers (SessionPlan.reference_processes), scaled to the geometric mean of its processes."""
    peers = [p.rounds for p in reference.peers if p.ran and p.rounds]
    return pooled_reference_rounds(reference.rounds, peers) if peers else reference.rounds


def _bounds(interval) -> list | None:
    return interval.bounds if interval is not None else None


def timing_fields(takes: list[Take], reference: list[Take] | None, run_levels: RunLevels | None = None) -> dict:
    """The Result's timing fields from one variant's sessions: p50 and the speed-up over the
    reference taken in the same sessions, each with its 95 % within-run interval (for comparing
    variants of this run) and its 95 % rerun interval (where a rerun on this machine lands; None
    until run_levels knows the machine's run-to-run spread), and the pooled distribution.
    reference None (a device without eager FP32): no speed-up."""
    first = takes[0].ready
    session_p50 = [statistics.median(t.samples) for t in takes]
    p50 = within_run_interval(session_p50)
    levels = run_levels or RunLevels(None, None, f"{NOT_YET_KNOWN}: no history of this machine's runs")
    samples = [s for t in takes for s in t.samples]
    pooled = summarize(samples)
    fields = dict(
        size_mb=first["size_bytes"] / 1e6, load_ms=first["load_ms"], first_inference_ms=first["first_inference_ms"],
        sessions=len(takes), runs=len(samples), rounds=sum(len(t.rounds) for t in takes),
        mean_ms=pooled.mean_ms, p50_ms=p50.estimate, p50_ci_ms=p50.bounds,
        p50_rerun_ci_ms=_bounds(rerun_interval(session_p50, levels.p50)),
        session_p50_ms=session_p50, p90_ms=pooled.p90_ms, p99_ms=pooled.p99_ms, std_ms=pooled.std_ms, cv=pooled.cv,
        round_cv=cv(statistics.median(r) for t in takes for r in t.rounds if r),
        peak_rss_mb=max(t.finish.get("peak_rss_mb") or 0 for t in takes) or None,
        cpu_time_s=sum(t.finish.get("cpu_time_s") or 0 for t in takes), cpu_util_pct=_cpu_util(takes),
        cpu_affinity=sorted({cpu for t in takes for cpu in t.ready.get("cpu_affinity", [])}),
        rerun_basis=levels.basis, run_level=levels.as_dict())
    if reference is not None:
        # The reference's own row divides by its own rounds: its speed-up is 1 by definition.
        session_speedups = [median_round_ratio(ref.rounds if ref is t else _reference_rounds(ref), t.rounds)
                            for ref, t in zip(reference, takes)]
        speedup = within_run_interval(session_speedups)
        itself = all(ref is t for ref, t in zip(reference, takes))  # 1 in every run, so its rerun too
        fields.update(speedup_vs_eager=speedup.estimate, session_speedups=session_speedups,
                      speedup_ci=speedup.bounds,
                      speedup_rerun_ci=speedup.bounds if itself else _bounds(rerun_interval(session_speedups,
                                                                                             levels.speedup)),
                      reference_processes=min(1 + sum(p.ran for p in ref.peers) for ref in reference))
    return fields
