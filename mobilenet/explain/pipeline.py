"""The explain step: profile every variant, compare every INT8 variant layer by layer, and
draw the verdicts, into <build>/explain/ (JSON) and <build>/plots/ (PNG).

Jobs run in fresh processes (worker.py). The variants one profiler reads (all torch forms;
both ExecuTorch programs) are profiled in one process, one after another: the runtime is
imported once, and the FP32 and INT8 profiles a verdict compares share that process's speed
(one process can run the same model 1.5x faster than another). Profiles run one process at a
time, so no profile shares the CPU with another job. A variant whose outputs are newer than
its inputs (the artifact and its meta.json, the photos, the explain code and the runtime's
runner) and whose settings are unchanged is skipped; `force` redoes everything.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

from mobilenet.builders.executorch import pt2e_program_path
from mobilenet.explain import charts, cpu, records, sqnr, verdict
from mobilenet.explain.records import (
    NOT_AVAILABLE,
    ExplainSummary,
    OperatorProfile,
    QuantizationError,
)
from mobilenet.explain.worker import THREAD_ENV, failed_record
from mobilenet.files import read_json, write_json
from mobilenet.freshness import is_fresh, record_stamp, stamp_path
from mobilenet.registry import runtime_of

log = logging.getLogger("mobilenet.explain")

PROFILE_CALLS = 20  # profiled calls per variant, after warm-up; as many unprofiled around them
SQNR_PHOTOS = 4
JOB_TIMEOUT_S = 600
EXPLAIN_CODE = Path(__file__).resolve().parent


def explain_dir(build_dir: Path) -> Path:
    return Path(build_dir) / "explain"


def profile_path(build_dir: Path, variant_id: str) -> Path:
    return explain_dir(build_dir) / "profile" / f"{variant_id}.json"


def sqnr_path(build_dir: Path, variant_id: str) -> Path:
    return explain_dir(build_dir) / "sqnr" / f"{variant_id}.json"


def verdicts_path(build_dir: Path) -> Path:
    return explain_dir(build_dir) / "verdicts.json"


def summary_path(build_dir: Path) -> Path:
    return explain_dir(build_dir) / "summary.json"


def chart_paths(build_dir: Path) -> dict[str, Path]:
    plots = Path(build_dir) / "plots"
    return {"kinds": plots / "explain-operator-kinds.png", "sqnr": plots / "explain-sqnr-by-depth.png"}


def _code_files(variant) -> list[Path]:
    from mobilenet.freshness import module_files
    return sorted(EXPLAIN_CODE.rglob("*.py")) + module_files(f"mobilenet.measure.runners.{variant.runtime}")


def _inputs(variant, task: str, settings) -> list[Path]:
    from mobilenet.registry import REFERENCE_ID, VARIANTS, by_id
    models = settings.models_dir
    files = [variant.artifact_path(models), variant.meta_path(models), settings.data_dir / "eval.npy"]
    if task == "sqnr":
        files += [v.artifact_path(models) for v in VARIANTS if v.runtime == variant.runtime and v.precision == "fp32"]
        files += [by_id(REFERENCE_ID).artifact_path(models), settings.data_dir / "calib.npy",
                  pt2e_program_path(variant.artifact_path(models))]
    return [*dict.fromkeys(files), *_code_files(variant)]


def _job_settings(task: str) -> dict:
    return {"calls": PROFILE_CALLS} if task == "profile" else {"photos": SQNR_PHOTOS, "cap_db": sqnr.CAP_DB}


def _unavailable_reason(variant, task: str, settings) -> str | None:
    """Why a job cannot even start (no artifact, no tool for this runtime), or None."""
    runtime = runtime_of(variant)
    if (runtime.profiler if task == "profile" else runtime.numerics) is None:
        what = "operator profiler" if task == "profile" else "per-layer comparison"
        return f"no {what} is wired up for the {variant.runtime} runtime"
    if variant.artifact_path(settings.models_dir).exists():
        return None
    meta = variant.meta_path(settings.models_dir)
    if meta.exists() and read_json(meta).get("reason"):  # the build step skipped it, and said why
        return f"the artifact was not built: {read_json(meta)['reason']}"
    return f"{variant.artifact} does not exist (run its build step, `invoke {variant.step}`)"


def _run_job(task: str, variants: list, settings, outs: list[Path], name: str) -> None:
    """One worker process for `variants`, one after another; each gets its record in its out."""
    job = {"task": task, "variants": [v.id for v in variants], "build_dir": str(settings.build_dir),
           "outs": [str(out) for out in outs], **_job_settings(task)}
    log_path = settings.logs_dir / f"explain-{task}-{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **THREAD_ENV, "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning"}
    for out in outs:
        out.unlink(missing_ok=True)
    with open(log_path, "w") as log_file:
        try:
            code = subprocess.run([sys.executable, "-m", "mobilenet.explain.worker", json.dumps(job)],
                                  stdout=log_file, stderr=log_file, env=env, timeout=JOB_TIMEOUT_S,
                                  cwd=Path(__file__).resolve().parents[2]).returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {JOB_TIMEOUT_S} s"
    for variant, out in zip(variants, outs):
        if not out.exists():  # the process died before it could write this variant's record
            records.save(out, failed_record(task, variant, f"the {task} process ended ({code}) without a result; "
                                                           f"see {log_path}"))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_groups(task: str, variants: list) -> dict[str, list]:
    """{name: variants that share one worker process}. Profiles: one process per profiler
    module (torch, executorch, ...); each torch runner sets its own quantized engine when it is
    made, so the engines follow one another safely. Layer comparisons: one process each."""
    groups: dict[str, list] = {}
    for variant in variants:
        name = runtime_of(variant).profiler if task == "profile" else variant.id
        groups.setdefault(name, []).append(variant)
    return groups


class _Job(NamedTuple):
    """One variant's stale record: where it goes, its stamp, what it was made from, and why."""
    variant: object
    out: Path
    stamp: Path
    inputs: list
    reason: str


def _run_task(task: str, variants, settings, force: bool, redone: list, parallel: int = 1) -> None:
    """Run the task's stale jobs; `parallel` processes at a time (profiles: always one, so no
    profile shares the CPU with another job)."""
    from concurrent.futures import ThreadPoolExecutor
    out_path = profile_path if task == "profile" else sqnr_path
    wanted = _job_settings(task)
    stale, unavailable = {}, []
    for variant in variants:
        out = out_path(settings.build_dir, variant.id)
        stamp = stamp_path(settings.stamps_dir, f"explain-{task}-{variant.id}")
        inputs = [p for p in _inputs(variant, task, settings) if p.exists()]
        fresh, reason = is_fresh([out], inputs, wanted, stamp)
        if fresh and not force:
            continue
        job = _Job(variant, out, stamp, inputs, "forced" if force else reason)
        why_not = _unavailable_reason(variant, task, settings)
        if why_not:
            records.save(out, failed_record(task, variant, why_not))
            unavailable.append(job)
        else:
            stale[variant.id] = job

    def done(jobs: list[_Job], seconds: float, cpu_s: float, name: str) -> None:
        for job in jobs:
            record_stamp(job.stamp, wanted, job.inputs)
            redone.append(f"{task}:{job.variant.id}")
        # CPU seconds of finished child processes: exact per process when they run one at a time.
        reasons = list(dict.fromkeys(job.reason for job in jobs))
        log.info("explain %s %-20s %5.1f s wall, %5.1f s CPU (%s%s)", task, name, seconds, cpu_s, reasons[0],
                 f", +{len(reasons) - 1} more" if len(reasons) > 1 else "")

    if unavailable:
        done(unavailable, 0.0, 0.0, ", ".join(job.variant.id for job in unavailable))

    def one(group):
        name, members = group
        jobs = [stale[v.id] for v in members]
        started, cpu_before = time.perf_counter(), _children_cpu_s()
        _run_job(task, members, settings, [job.out for job in jobs], name)
        done(jobs, time.perf_counter() - started, _children_cpu_s() - cpu_before,
             name if len(members) == 1 else f"{name} ({', '.join(v.id for v in members)})")

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(one, _process_groups(task, [job.variant for job in stale.values()]).items()))


def _verdicts(variants, settings, present: list) -> list:
    from mobilenet.registry import VARIANTS
    profiles = {p.variant: p for p in records.load_all(explain_dir(settings.build_dir) / "profile", OperatorProfile)}
    out = []
    for variant in variants:
        meta_path = variant.meta_path(settings.models_dir)
        meta = read_json(meta_path) if meta_path.exists() else {}
        found = verdict.build(variant, profiles, meta, settings.results_dir, present, VARIANTS)
        if found is not None:
            out.append(asdict(found))
    write_json(verdicts_path(settings.build_dir), out)
    return out


def run(settings, force: bool = False) -> ExplainSummary:
    """Profile, compare and judge every selected variant; return what the run did."""
    from mobilenet import logs
    from mobilenet.files import hold_build_lock
    from mobilenet.registry import select
    hold_build_lock(settings.build_dir)  # artifacts must not change under the profiles
    logs.setup(settings.logs_dir, "explain", settings.quiet)
    variants = select(settings.only)
    # The ExecuTorch comparison recalibrates, the slowest job: it starts first.
    int8 = sorted((v for v in variants if v.precision != "fp32"), key=lambda v: v.runtime != "executorch")
    stage_seconds, stage_cpu_seconds, redone = {}, {}, []
    # Layer comparisons time nothing, so they may share the cores; profiles never do.
    for task, chosen, parallel in (("profile", variants, 1), ("sqnr", int8, os.cpu_count() or 1)):
        started, cpu_before = time.perf_counter(), _children_cpu_s()
        _run_task(task, chosen, settings, force, redone, parallel)
        stage_seconds[task] = round(time.perf_counter() - started, 1)
        stage_cpu_seconds[task] = round(_children_cpu_s() - cpu_before, 1)

    started = time.perf_counter()
    model, flags = cpu.read_cpuinfo()
    present, absent = cpu.relevant(flags)
    paths = chart_paths(settings.build_dir)
    # Verdicts and charts read the jobs' records, the bench results and the metas: redrawn
    # only when one of those changed, so a no-op `invoke report` stays a no-op.
    stamp = stamp_path(settings.stamps_dir, "explain-verdicts")
    inputs = sorted([*explain_dir(settings.build_dir).glob("profile/*.json"),
                     *explain_dir(settings.build_dir).glob("sqnr/*.json"), *settings.results_dir.glob("*.json"),
                     *(v.meta_path(settings.models_dir) for v in variants if v.meta_path(settings.models_dir).exists()),
                     *EXPLAIN_CODE.rglob("*.py")])
    wanted = {"variants": [v.id for v in variants], "cpu_flags": present}
    fresh, _ = is_fresh([verdicts_path(settings.build_dir), *paths.values()], inputs, wanted, stamp)
    if force or not fresh:
        _verdicts(variants, settings, present)
        charts.kinds_chart(ordered(records.load_all(explain_dir(settings.build_dir) / "profile", OperatorProfile)),
                           paths["kinds"])
        charts.sqnr_chart(ordered(records.load_all(explain_dir(settings.build_dir) / "sqnr", QuantizationError)),
                          sqnr.CAP_DB, paths["sqnr"])
        record_stamp(stamp, wanted, inputs)
    stage_seconds["verdicts and charts"] = round(time.perf_counter() - started, 1)
    summary_file = summary_path(settings.build_dir)
    kept = records.load(summary_file, ExplainSummary) if summary_file.exists() else None
    if not redone and not force and kept is not None:
        # Nothing was redone: the file keeps the figures (the cost) of the last run that did the work.
        log.info("explain: up to date (--force to redo)")
        return replace(kept, redone=[], stage_seconds=stage_seconds, stage_cpu_seconds=stage_cpu_seconds)
    summary = ExplainSummary(cpu_model=model, cpu_flags=present, cpu_flags_absent=absent,
                             stage_seconds=stage_seconds, stage_cpu_seconds=stage_cpu_seconds, redone=redone,
                             profile_calls=PROFILE_CALLS,
                             sqnr_photos=SQNR_PHOTOS, sqnr_cap_db=sqnr.CAP_DB)
    records.save(summary_path(settings.build_dir), summary)
    unavailable = [r.variant for r in records.load_all(explain_dir(settings.build_dir) / "profile", OperatorProfile)
                   if r.status == NOT_AVAILABLE]
    log.info("explain: %d jobs redone in %.0f s%s", len(redone), sum(stage_seconds.values()),
             f"; no operator profile for {', '.join(unavailable)}" if unavailable else "")
    return summary


def ordered(items: list) -> list:
    from mobilenet.registry import display_order
    return sorted(items, key=lambda r: display_order(r.variant))
