"""Sessions turned into a Result: one function for the local bench's rows and a device's, so that
the two cannot drift apart. What only the caller knows (the machine's environment, how the
answers are scored, why a variant did not run) comes in as arguments.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable

from mobilenet.accuracy import Scores
from mobilenet.bench.stats import cv, median_round_ratio, session_interval, summarize
from mobilenet.measure.session import Take
from mobilenet.registry import REFERENCE_ID, Variant
from mobilenet.results import FAILED, SKIPPED, Environment, Result

# Called for a measured row only: (status, reason, further Result fields such as accuracy).
Score = Callable[[], tuple[str, str, dict]]


def make_result(variant: Variant, meta: dict, sessions: list[dict[str, Take]], threads: int, env_base: dict,
                score: Score, *, not_run: tuple[str, str] | None = None, where: str = "while measuring",
                versions_in_env: tuple[str, ...] = (), no_reference_note: str | None = None,
                **fields) -> Result:
    """One variant's row at `threads` from the sessions it took part in.

    env_base: the Environment fields every row of the run shares (this machine's, or a device's).
    score: see Score; lazy, since a variant that did not run has no answers to score.
    not_run: (status, reason) decided before measuring (at build time, or not installable on a device).
    where: what a worker's error happened during, for the reason ("while measuring", "on the device").
    versions_in_env: Environment fields the worker's reported versions replace (a device's torch
        is the one installed there, not this machine's).
    no_reference_note: the row's speedup_note when the eager reference did not run in these sessions.
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
                  deprecated=variant.deprecated,
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
    timing = timing_fields(takes, reference if reference_ran else None)
    energy_j = sum(t.energy_j for t in takes)
    status, reason, scored = score()
    return Result(status=status, status_reason=reason, **common, **timing,
                  speedup_note=None if reference_ran else no_reference_note,
                  energy_mj_per_inference=(energy_j * 1000 / timing["runs"]) if env.energy_source == "RAPL" else None,
                  **scored)


def accuracy_fields(scores: Scores) -> dict:
    """The Result's accuracy fields from scored answers."""
    return {"top1_pct": scores.top1_pct, "top5_pct": scores.top5_pct, "agreement_pct": scores.agreement_pct,
            "max_abs_dlogit": scores.max_abs_dlogit, "tied_top1_rows": scores.tied_top1_rows}


def _cpu_util(takes: list[Take]) -> float | None:
    cpu = sum(t.finish.get("cpu_time_s") or 0 for t in takes)
    wall = sum((t.finish.get("cpu_time_s") or 0) * 100 / t.finish["cpu_util_pct"]
               for t in takes if t.finish.get("cpu_util_pct"))
    return 100 * cpu / wall if wall else None


def timing_fields(takes: list[Take], reference: list[Take] | None) -> dict:
    """The Result's timing fields from one variant's sessions: p50 and the speed-up over the
    reference taken in the same sessions, each with its 95 % rerun interval over sessions, and the
    pooled distribution. reference None (a device without eager FP32): no speed-up."""
    first = takes[0].ready
    session_p50 = [statistics.median(t.samples) for t in takes]
    p50 = session_interval(session_p50)
    samples = [s for t in takes for s in t.samples]
    pooled = summarize(samples)
    fields = dict(
        size_mb=first["size_bytes"] / 1e6, load_ms=first["load_ms"], first_inference_ms=first["first_inference_ms"],
        sessions=len(takes), runs=len(samples), rounds=sum(len(t.rounds) for t in takes),
        mean_ms=pooled.mean_ms, p50_ms=p50.estimate, p50_ci_ms=[p50.low, p50.high] if p50.low else None,
        session_p50_ms=session_p50, p90_ms=pooled.p90_ms, p99_ms=pooled.p99_ms, std_ms=pooled.std_ms, cv=pooled.cv,
        round_cv=cv(statistics.median(r) for t in takes for r in t.rounds if r),
        peak_rss_mb=max(t.finish.get("peak_rss_mb") or 0 for t in takes) or None,
        cpu_time_s=sum(t.finish.get("cpu_time_s") or 0 for t in takes), cpu_util_pct=_cpu_util(takes),
        cpu_affinity=sorted({cpu for t in takes for cpu in t.ready.get("cpu_affinity", [])}))
    if reference is not None:
        session_speedups = [median_round_ratio(ref.rounds, t.rounds) for ref, t in zip(reference, takes)]
        speedup = session_interval(session_speedups)
        fields.update(speedup_vs_eager=speedup.estimate, session_speedups=session_speedups,
                      speedup_ci=[speedup.low, speedup.high] if speedup.low else None)
    return fields
