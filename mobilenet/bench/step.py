"""The bench step: sessions of interleaved rounds (measure.py), turned into results with intervals.

The speed of a process is a random draw: the same model in two fresh processes can differ
by 1.5x, and interleaving in time cannot cancel that. So every variant runs in several
sessions (fresh processes each), and each figure comes with a 95 % rerun interval over sessions
(timing.session_interval). Accuracy is not measured here: the build check already scored
every artifact on the evaluation photos, and its logits are kept beside the artifact, tied
to it by sha256 (build.py).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mobilenet import accuracy, logs
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
    result_path,
    write_result,
)
from mobilenet.settings import Settings

log = logging.getLogger("mobilenet.bench.step")

# Code whose edit changes what a measurement means.
MEASUREMENT_CODE = ("mobilenet.bench.step", "mobilenet.bench.rows", "mobilenet.bench.stats",
                    "mobilenet.measure.session", "mobilenet.measure.worker", "mobilenet.measure.timing",
                    "mobilenet.data.preprocess", "mobilenet.accuracy", "mobilenet.measure.npyimages",
                    "mobilenet.measure.runners")


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
                       eval_npy=eval_npy, log_dir=log_dir, logits_dir=logits_dir, reference=REFERENCE_ID)


def _native_benchmark(variant: Variant, artifact: Path, threads: int, settings: Settings) -> dict | None:
    """The runtime's own benchmark program on the same artifact and threads, if its package ships one.

    Run between sessions, so it sees the same machine as the worker; comparing its median
    with ours puts a number on what our harness costs per call. The program is the one the
    runtime's record names (Runtime.native_benchmark), called with litert-benchmark's options,
    the only program recorded.
    """
    program = runtime_of(variant).native_benchmark
    if program is None:
        return None
    tool = Path(sys.executable).with_name(program)
    if not tool.exists():
        return None
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        runs = max(50, math.ceil(settings.min_runs / settings.sessions))
        command = [str(tool), "--model", str(artifact), "--num_threads", str(threads),
                   "--num_runs", str(runs), "--warmup_runs", str(settings.warmup), "--result_json", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not out.exists():
            log.warning("  %s failed on %s (exit %d); see the bench log", program, variant.id, done.returncode)
            log.debug("%s\n%s", done.stdout[-2000:], done.stderr[-2000:])
            return None
        return json.loads(out.read_text()).get("latency")


def _accuracy_fields(variant: Variant, settings: Settings, data: Prepared) -> dict:
    models = settings.models_dir
    reference = np.load(reference_logits_path(settings))
    logits = reference if variant.id == REFERENCE_ID else np.load(check_logits_path(models, variant))
    return accuracy_fields(accuracy.score(logits, reference, data.labels))


def _status(variant: Variant, meta: dict, env_base: dict) -> tuple[str, str]:
    if variant.id == REFERENCE_ID:
        return OK, "reference"
    if env_base["weights_random"]:
        return OK, "not gated: random weights"
    check = meta.get("check") or {}
    return check.get("status", OK), check.get("facts", "")


def _result(variant: Variant, meta: dict, sessions: list[dict[str, Take]], threads: int, env_base: dict,
            data: Prepared, settings: Settings, native: dict | None) -> Result:
    """This machine's row: verdict and answers from the build check, the runtime's own benchmark beside ours."""
    built = meta.get("status") in (SKIPPED, FAILED)  # decided at build time: nothing to time

    def score() -> tuple[str, str, dict]:
        status, reason = _status(variant, meta, env_base)
        return status, reason, {"native_benchmark": native, **_accuracy_fields(variant, settings, data)}

    return make_result(variant, meta, sessions, threads, env_base, score,
                       not_run=(meta["status"], meta.get("reason", "")) if built else None,
                       preprocess_ms=data.preprocess_ms)


def bench_threads(variants: list[Variant], threads: int, settings: Settings, data: Prepared,
                  quiet: bool) -> list[Result]:
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
    log.info("bench: %d variant(s) at %d thread(s), %d sessions", len(runnable), threads, settings.sessions)
    with tqdm(total=settings.sessions, desc=f"bench sessions @{threads}t", unit="session", disable=quiet,
              leave=False) as bar:
        for index in range(settings.sessions):
            takes = run_session(entries, plan, index, load_alone=index == 0, meter=meter)
            sessions.append(takes)
            if not takes[REFERENCE_ID].ran:
                reference = takes[REFERENCE_ID]
                raise BenchError(f"the FP32 eager reference could not run: {reference.error or reference.skipped}")
            for v in runnable:
                if takes[v.id].ran:
                    native = _native_benchmark(v, v.artifact_path(models), threads, settings)
                    if native:
                        natives.setdefault(v.id, []).append(native)
            bar.update(1)
    env_base = base_environment(settings, metas[REFERENCE_ID]["weights"], data, meter.reason, load.summary())
    results = []
    for v in variants:
        native = None
        if natives.get(v.id):
            runs = [n for n in natives[v.id] if "median_ms" in n]
            native = {"tool": runtime_of(v).native_benchmark, "sessions": len(runs),
                      "calls_per_session": runs[0]["num_runs"],
                      "median_ms": statistics.median(n["median_ms"] for n in runs),
                      "session_median_ms": [n["median_ms"] for n in runs]} if runs else None
        results.append(_result(v, metas[v.id], sessions, threads, env_base, data, settings, native))
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
    results = []
    for threads in settings.threads:
        for result in bench_threads(variants, threads, settings, data, settings.quiet):
            results.append(result)
            shown = (f"p50 {result.p50_ms:.2f} ms, {result.speedup_vs_eager:.2f}x eager"
                     if result.measured else result.status_reason)
            logger.info("  %-20s %2dt %-8s %s", result.variant, threads, result.status, shown)
    _replace_results(settings.results_dir, results, full_run=not settings.only)
    record_stamp(stamp, wanted, inputs)
    return results
