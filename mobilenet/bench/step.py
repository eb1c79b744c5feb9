"""The bench step: sessions of interleaved rounds (measure.py), turned into results with intervals.

The speed of a process is a random draw: the same model in two fresh processes can differ
by 1.5x, and interleaving in time cannot cancel that. So every variant runs in several
sessions (fresh processes each), and each figure comes with a 95 % within-run interval over
sessions and, once this machine has a history of runs (history.py), a 95 % rerun interval that
adds its run-to-run spread (stats.py). At 1 thread accuracy is not measured here: the build check already
scored every artifact on the evaluation photos at 1 thread, and its logits are kept beside the
artifact, tied to it by sha256 (build.py). At more than one thread the first session scores
the photos again, and the row's accuracy is that thread count's (_answers_plan).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mobilenet import accuracy, logs
from mobilenet.bench import history
from mobilenet.bench import native as native_programs
from mobilenet.bench.energy import RaplMeter
from mobilenet.bench.rows import accuracy_fields, make_result
from mobilenet.build.artifacts import artifact_problem, check_logits_path, reference_logits_path
from mobilenet.data.store import Prepared, prepare
from mobilenet.files import hold_build_lock, read_json
from mobilenet.freshness import is_fresh, module_files, record_stamp, stamp_path
from mobilenet.measure.session import SessionPlan, Take, run_session
from mobilenet.registry import REFERENCE_ID, Variant, runtime_of, select
from mobilenet.results import (
    FAILED,
    OK,
    SKIPPED,
    MachineLoad,
    Result,
    base_environment,
    load_results,
    machine_id,
    result_path,
    write_result,
)
from mobilenet.settings import Settings

log = logging.getLogger("mobilenet.bench.step")

# Code whose edit changes what a measurement means.
MEASUREMENT_CODE = ("mobilenet.bench.step", "mobilenet.bench.rows", "mobilenet.bench.stats", "mobilenet.bench.native",
                    "mobilenet.bench.history",
                    "mobilenet.measure.session", "mobilenet.measure.worker", "mobilenet.measure.timing",
                    "mobilenet.data.preprocess", "mobilenet.accuracy", "mobilenet.measure.npyimages",
                    "mobilenet.measure.runners")


# Eager FP32 processes per session that every speed-up divides by, their burst, and the rounds
# the further ones take part in: one process's speed is a draw (bimodal for eager FP32 on the
# Xeon), and the speed-ups of a session all inherit it, so the reference is the geometric mean
# of several (measure/session.py). Short bursts, and peers in a few rounds only, keep its timed
# calls near what one process with full bursts in every round took (5 a round plus 40, against
# 10 a round); starting the two peers is the cost that remains. Why the draw is bimodal is
# not known: on a 2-vCPU AMD EPYC, where MKL runs its generic (non-Intel) code path and
# transparent huge pages are madvise-only (0 kB in the workers), 12 fresh eager processes ran
# 48.5–55.9 ms, one mode; on the Xeon, ASLR, huge pages and CPU placement were ruled out
# before (docs/measurements/2026-11-27.md).
REFERENCE_PROCESSES = 3
REFERENCE_BURST = 5
REFERENCE_ROUNDS = 4
# Sessions the runtimes' own benchmark programs run after: the first, the last and those evenly
# between. A program's median moves little from session to session; each run costs seconds of
# start-up (about 10 s a session for the four LiteRT and OpenVINO rows on a 2-vCPU EPYC).
NATIVE_SESSIONS = 3


def native_sessions(sessions: int) -> set[int]:
    """The session indexes after which the native programs run, spread over the bench."""
    count = min(NATIVE_SESSIONS, sessions)
    if count <= 1:
        return {0}
    return {round(k * (sessions - 1) / (count - 1)) for k in range(count)}


class BenchError(RuntimeError):
    pass


def bench_settings(settings: Settings, variants: list[Variant]) -> dict:
    return {"variants": [v.id for v in variants], "threads": list(settings.threads),
            "sessions": settings.sessions, "warmup": settings.warmup, "min_runs": settings.min_runs,
            "min_seconds": settings.min_seconds, "burst": settings.burst, "tag": settings.tag}


def bench_inputs(settings: Settings, variants: list[Variant]) -> list[Path]:
    """Everything that shaped a result: artifacts and their metas and check logits, the photos
    and labels, and the measuring code (each variant's runner included)."""
    models = settings.models_dir
    files = [settings.data_dir / "eval.npy", settings.data_dir / "images.json"]
    for v in variants:
        meta = v.meta_path(models)
        files.append(meta)
        if meta.exists():  # the files the build kept (artifact, companions, check logits)
            files += [models / name for name in read_json(meta).get("files_sha256", {})]
    runners = [f"mobilenet.measure.runners.{v.runtime}" for v in variants]
    return files + module_files(*MEASUREMENT_CODE, *runners)


def session_plan(settings: Settings, threads: int, eval_npy: str, log_dir: str,
                 logits_dir: str | None = None) -> SessionPlan:
    """One session's share of the settings' totals (calls, seconds), here or on a device."""
    return SessionPlan(threads=threads, warmup=settings.warmup, burst=settings.burst,
                       min_runs=math.ceil(settings.min_runs / settings.sessions),
                       min_seconds=settings.min_seconds / settings.sessions,
                       eval_npy=eval_npy, log_dir=log_dir, logits_dir=logits_dir, reference=REFERENCE_ID,
                       reference_processes=REFERENCE_PROCESSES, reference_burst=REFERENCE_BURST,
                       reference_rounds=REFERENCE_ROUNDS)


def _native_benchmark(variant: Variant, artifact: Path, threads: int, settings: Settings) -> dict | None:
    """The runtime's own benchmark program on the same artifact and threads, if its package ships one.

    Run between sessions, so it sees the same machine as the worker; comparing its median
    with ours puts a number on what our harness costs per call. The program is the one the
    runtime's record names (Runtime.native_benchmark); mobilenet/bench/native.py knows how to
    call it and read its median.
    """
    record = runtime_of(variant).native_benchmark
    if record is None:
        return None
    runs = max(50, math.ceil(settings.min_runs / settings.sessions))
    return native_programs.run_program(record.program, artifact, threads, runs, settings.warmup)


def answers_dir(settings: Settings, threads: int) -> Path:
    """Where the first session at `threads` > 1 leaves every variant's logits on the evaluation photos."""
    return settings.build_dir / "bench-logits" / f"{threads}t"


def _answers_plan(plan: SessionPlan, settings: Settings, index: int) -> SessionPlan:
    """Session `index`'s plan. At more than one thread the first session also scores the photos (each
    worker while it loads alone, so no timing sees it): the build check's answers are 1 thread's, and
    a kernel may sum in another order at another thread count. At 1 thread nothing is added."""
    if plan.threads == 1 or index:
        return plan
    folder = answers_dir(settings, plan.threads)
    shutil.rmtree(folder, ignore_errors=True)  # an earlier run's file must not pass for this run's answers
    return dataclasses.replace(plan, logits_dir=str(folder))


def _answers(variant: Variant, settings: Settings, threads: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(the variant's logits at `threads`, its logits at 1 thread, or None when `threads` is 1)."""
    at_1t = np.load(check_logits_path(settings.models_dir, variant))
    if threads == 1:
        return at_1t, None
    path = answers_dir(settings, threads) / f"{variant.id}@{threads}t.logits.npy"
    if not path.exists():
        raise BenchError(f"{variant.id} ran at {threads} threads but left no answers at {path}")
    return np.load(path), at_1t


def _accuracy_fields(variant: Variant, settings: Settings, data: Prepared,
                     threads: int = 1) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """(the row's accuracy fields, its logits, its logits at 1 thread or None), from the answers at
    the row's own thread count, scored against eager FP32 at 1 thread: the build check's
    reference, so that every thread count is judged against the same answers."""
    reference = np.load(reference_logits_path(settings))
    logits, at_1t = _answers(variant, settings, threads)
    fields = accuracy_fields(accuracy.score(logits, reference, data.labels), reference=variant.id == REFERENCE_ID,
                             answers=logits, answers_1t=at_1t)
    return fields, logits, at_1t


def _judged_at(variant: Variant, threads: int, logits: np.ndarray, changed: int, settings: Settings,
               data: Prepared, random_weights: bool) -> tuple[str, str]:
    """The build check's verdict, given again on this thread count's answers: they differ from the
    1-thread answers the build check judged, and a row's status must describe the answers it shows."""
    from mobilenet.build.step import judge
    check = judge(variant, logits, np.load(reference_logits_path(settings)), data, random_weights)
    moved = f"{changed} top-1 answers differ from 1 thread's" if changed else "logits differ from 1 thread's"
    return check["status"], f"judged on the {threads}-thread answers ({moved}): {check['facts']}"


def _status(variant: Variant, meta: dict, env_base: dict) -> tuple[str, str]:
    if variant.id == REFERENCE_ID:
        return OK, "reference"
    if env_base["weights_random"]:
        return OK, "not gated: random weights"
    check = meta.get("check") or {}
    return check.get("status", OK), check.get("facts", "")


def _result(variant: Variant, meta: dict, sessions: list[dict[str, Take]], threads: int, env_base: dict,
            data: Prepared, settings: Settings, native: dict | None,
            run_levels: history.RunLevels | None = None) -> Result:
    """This machine's row: verdict and answers from the build check, the runtime's own benchmark beside ours."""
    built = meta.get("status") in (SKIPPED, FAILED)  # decided at build time: nothing to time

    def score() -> tuple[str, str, dict]:
        status, reason = _status(variant, meta, env_base)
        fields, logits, at_1t = _accuracy_fields(variant, settings, data, threads)
        if at_1t is not None and variant.id != REFERENCE_ID and not np.array_equal(logits, at_1t):
            status, reason = _judged_at(variant, threads, logits, fields["answers_changed_photos"], settings, data,
                                        env_base["weights_random"])
        return status, reason, {"native_benchmark": native, **fields}

    return make_result(variant, meta, sessions, threads, env_base, score,
                       not_run=(meta["status"], meta.get("reason", "")) if built else None,
                       run_levels=run_levels, preprocess_ms=data.preprocess_ms)


def bench_threads(variants: list[Variant], threads: int, settings: Settings, data: Prepared,
                  quiet: bool, run_levels: history.RunLevels | None = None) -> list[Result]:
    """Every variant at `threads`; run_levels: this machine's run-to-run spread, for the rerun intervals."""
    from tqdm import tqdm

    models = settings.models_dir
    metas = {v.id: read_json(v.meta_path(models)) for v in variants}
    runnable = [v for v in variants if metas[v.id].get("status") not in (SKIPPED, FAILED)]
    if REFERENCE_ID not in {v.id for v in runnable}:
        raise BenchError(f"the FP32 eager reference is not built ({metas.get(REFERENCE_ID, {}).get('reason')}): "
                         "run `invoke export`")
    plan = session_plan(settings, threads, str(data.eval.path), str(settings.logs_dir))
    entries = [(v, v.artifact_path(models)) for v in runnable]
    meter, load = RaplMeter(), MachineLoad()
    sessions: list[dict[str, Take]] = []
    natives: dict[str, list[dict]] = {}
    with_native = native_sessions(settings.sessions)
    log.info("bench: %d variant(s) at %d thread(s), %d sessions", len(runnable), threads, settings.sessions)
    with tqdm(total=settings.sessions, desc=f"bench sessions @{threads}t", unit="session", disable=quiet,
              leave=False) as bar:
        for index in range(settings.sessions):
            # At more than one thread, the first session also scores the photos (_answers_plan).
            takes = run_session(entries, _answers_plan(plan, settings, index), index, load_alone=index == 0,
                                meter=meter)
            sessions.append(takes)
            if not takes[REFERENCE_ID].ran:
                reference = takes[REFERENCE_ID]
                raise BenchError(f"the FP32 eager reference could not run: {reference.error or reference.skipped}")
            for v in runnable if index in with_native else ():
                if takes[v.id].ran:
                    native = _native_benchmark(v, v.artifact_path(models), threads, settings)
                    if native:  # with its session, so the report can pair it with that session's median
                        natives.setdefault(v.id, []).append({**native, "session": index})
            bar.update(1)
    env_base = base_environment(settings, metas[REFERENCE_ID]["weights"], data, meter.reason, load.summary())
    results = []
    for v in variants:
        native = None
        if natives.get(v.id):  # our call split into its steps, once, to say where the difference goes
            record = runtime_of(v).native_benchmark
            split = native_programs.run_split(record.program, v.runtime, v.runner, v.artifact_path(models),
                                              threads, data.eval.path, settings.warmup)
            native = native_programs.summary(record, natives[v.id], split)
        results.append(_result(v, metas[v.id], sessions, threads, env_base, data, settings, native, run_levels))
    return results


def _replace_results(results_dir: Path, results: list[Result], full_run: bool) -> None:
    """Write the new results beside the old ones, then swap: an interrupted bench keeps the old set."""
    results_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".results-", dir=results_dir.parent))
    try:
        for result in results:
            write_result(staging, result)
        if full_run:  # a full run replaces every earlier result; a subset only its own
            for old in results_dir.glob("*.json"):
                old.unlink()
        for new in staging.glob("*.json"):
            new.replace(results_dir / new.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(settings: Settings, force: bool = False) -> list[Result]:
    """The bench step; returns this run's results (all written to build/results/)."""
    hold_build_lock(settings.build_dir)
    logger = logs.setup(settings.logs_dir, "bench", settings.quiet)
    variants = select(settings.only)
    data = prepare(settings)
    for v in variants:
        problem = artifact_problem(v, settings.models_dir)
        if problem:
            raise BenchError(f"{v.id}: {problem}; run `invoke {v.step}` (or `invoke bench`, which builds first)")
    outputs = [result_path(settings.results_dir, v.id, t) for v in variants for t in settings.threads]
    inputs = bench_inputs(settings, variants)
    wanted = bench_settings(settings, variants)
    stamp = stamp_path(settings.stamps_dir, "bench")
    fresh, reason = is_fresh(outputs, inputs, wanted, stamp)
    if fresh and not force:
        logger.info("bench: up to date (--force to redo)")
        wanted_keys = {(v.id, t) for v in variants for t in settings.threads}
        return [r for r in load_results(settings.results_dir) if (r.variant, r.threads) in wanted_keys]
    logger.info("bench: %s", "forced" if force else reason)
    # Earlier runs of this machine with the same timing settings give the run-to-run spread the
    # rerun intervals need; this run joins them once it is written.
    machine = machine_id(settings.tag)
    timing = history.timing_settings(dataclasses.asdict(session_plan(settings, 1, "", "")), settings.sessions)
    past = history.history_dir(settings.build_dir)
    levels = history.run_levels(history.earlier_runs(past, machine, timing))
    logger.info("bench: rerun intervals: %s", levels.basis)
    results = []
    for threads in settings.threads:
        for result in bench_threads(variants, threads, settings, data, settings.quiet, levels):
            results.append(result)
            shown = (f"p50 {result.p50_ms:.2f} ms, {result.speedup_vs_eager:.2f}x eager"
                     if result.measured else result.status_reason)
            logger.info("  %-20s %2dt %-8s %s", result.variant, threads, result.status, shown)
    _replace_results(settings.results_dir, results, full_run=not settings.only)
    history.record(past, machine, timing, results)
    record_stamp(stamp, wanted, inputs)
    return results
