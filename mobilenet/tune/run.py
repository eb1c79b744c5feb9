"""`invoke tune`: build every grid setting, score it on the tuning split, time it, pick, record.

Phases, each timed into the record (phases_s), so the wall time says where it went:
1. data: the calibration photos (the ordinary build's), the tuning split and the evaluation
   photos left after it, preprocessed into build/tune/data/; no tuning photo is an evaluation
   photo (checked by name here, and by the photo selection itself).
2. reference: eager FP32's answers on the tuning and the evaluation photos.
3. builds: each variant's grid in a child process (build.py), MOBILENET_BUILD_JOBS at a time,
   the longest first (by its INT8 variant's last build time).
4. timing: each grid's settings in interleaved sessions of fresh workers (measure/session.py) on
   a tuning photo; the first session also scores every tuning photo.
5. pick (rule.py), then the winner and the shipped setting side by side on the evaluation photos.
Then build/tune/grid.json, this target's winners (winners.py) and the tuning split record
(data/images.py) are written, in that order: an interrupted tune changes nothing the build reads.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mobilenet import accuracy, logs
from mobilenet.build import target as targets
from mobilenet.build.artifacts import artifact_problem
from mobilenet.data import images as photo_sets
from mobilenet.files import hold_build_lock, read_json, write_json
from mobilenet.registry import REFERENCE_ID, by_id
from mobilenet.settings import Settings
from mobilenet.tune import grid as grids
from mobilenet.tune import records, rule, winners

log = logging.getLogger("mobilenet.tune")

# The tuning split when --photos is not given: half the offline mirror's 200 evaluation photos, so
# that the tune and the report each keep 100 (docs/tuning.md says what that costs the report).
DEFAULT_TUNING_PHOTOS = 100
BUILD_CHILD = (sys.executable, "-m", "mobilenet.tune.build")
# What a builder's FP32 starting point is, per runtime: read from the build folder, never rebuilt.
FP32_SOURCES = {"onnxruntime": "onnx-fp32", "openvino": "openvino-fp32"}


class TuneError(RuntimeError):
    """Bad input or a missing build: one line saying what to do."""


@dataclass(frozen=True)
class TimingPlan:
    """Brief timing: a few sessions are enough to refuse a setting that is clearly slower."""
    sessions: int = 3
    warmup: int = 5
    burst: int = 5
    min_runs: int = 20  # per session
    min_seconds: float = 0.6  # per session


@dataclass(frozen=True)
class SettingWorker:
    """What a worker needs of a grid setting: an id, the runtime and the runner's options."""
    id: str
    runtime: str
    runner: dict


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def tuning_photos(photos, settings: Settings) -> int:
    """--photos, else the split the build folder already has, else the default; one-line error if bad."""
    if photos is None:
        return photo_sets.tuning_count(settings) or DEFAULT_TUNING_PHOTOS
    text = str(photos).strip()
    if not text.isdigit() or int(text) < 1:
        raise TuneError(f"--photos={photos!r}: expected a whole number >= 1, e.g. --photos 100")
    return int(text)


# ---------------------------------------------------------------- 1. data

@dataclass(frozen=True)
class TuneData:
    calib_npy: Path
    tune_npy: Path
    eval_npy: Path
    tune_labels: list | None
    eval_labels: list | None
    tune_names: list[str]
    eval_names: list[str]
    calib_photos: int
    image_set: str


def fetch_photos(settings: Settings, count: int) -> None:
    """The manifest's photos of the three sets, downloaded where missing: with fewer evaluation photos
    than the pool holds, the tuning split makes the evaluation set reach further into it."""
    if settings.local_images:
        return
    for split, rows in photo_sets.manifest_rows(settings, tune_count=count).items():
        photo_sets.download(rows, settings.images_dir / photo_sets.split_folder(split), settings.mirror,
                            progress=not settings.quiet)


def prepare_data(settings: Settings, count: int, folder: Path) -> TuneData:
    from mobilenet.data.store import write_photos
    fetch_photos(settings, count)
    chosen = photo_sets.image_set(settings, tune_count=count)
    tune_names = [chosen.name_of(p) for p in chosen.tune]
    eval_names = [chosen.name_of(p) for p in chosen.eval]
    shared = set(tune_names) & set(eval_names) | {p for p in chosen.tune} & {p for p in chosen.calib}
    if shared:
        raise TuneError(f"{len(shared)} tuning photo(s) are also calibration or evaluation photos "
                        f"(e.g. {sorted(map(str, shared))[0]}): the photo selection is broken")
    progress = not settings.quiet
    paths = {name: folder / f"{name}.npy" for name in ("calib", "tune", "eval")}
    write_photos(chosen.calib, paths["calib"], "tune: calibration photos", progress)
    write_photos(chosen.tune, paths["tune"], "tune: tuning photos", progress)
    write_photos(chosen.eval, paths["eval"], "tune: evaluation photos", progress)
    return TuneData(paths["calib"], paths["tune"], paths["eval"],
                    None if chosen.tune_labels is None else list(chosen.tune_labels),
                    None if chosen.eval_labels is None else list(chosen.eval_labels),
                    tune_names, eval_names, len(chosen.calib), chosen.name)


# ---------------------------------------------------------------- 2. answers

def answers(entries: list[tuple[object, Path, Path]], npy: Path, logs_dir: Path) -> dict[str, np.ndarray | str]:
    """{id: logits on every photo of `npy`, or the reason it could not run}, all workers at once."""
    from mobilenet.measure.worker import WorkerError, WorkerProcess, WorkerSkipped
    workers = {}
    out: dict[str, np.ndarray | str] = {}
    try:
        for variant, artifact, logits in entries:
            workers[variant.id] = (WorkerProcess(variant, artifact, 1, npy, logits, warmup=0,
                                                 log_path=logs_dir / f"tune-score-{variant.id}.log"), logits)
        for variant_id, (worker, logits) in workers.items():
            try:
                worker.wait_ready()
                worker.finish()
                out[variant_id] = np.load(logits)
            except (WorkerError, WorkerSkipped) as exc:
                out[variant_id] = str(exc).splitlines()[0][:300]
    finally:
        for worker, _ in workers.values():
            worker.close()
    return out


# ---------------------------------------------------------------- 3. builds

def _expected_s(variant_id: str, settings_count: int, settings: Settings) -> float:
    """A grid's build time: its INT8 variant's last build time per setting (a minute if unknown)."""
    try:
        per = float(read_json(by_id(variant_id).meta_path(settings.models_dir))["build_s"])
    except (OSError, ValueError, KeyError, TypeError):
        per = 60.0
    return per * settings_count


def build_grids(plans: dict[str, dict], settings: Settings, work: Path) -> dict[str, dict]:
    """{variant: the child's outcome}, building MOBILENET_BUILD_JOBS grids at a time, longest first."""
    env = {**os.environ, **settings.as_env()}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # two builds share the cores (schedule.py says why)
    order = sorted(plans, key=lambda v: -_expected_s(v, len(plans[v]["settings"]), settings))
    pending, running, done = list(order), {}, {}
    try:
        while pending or running:
            while pending and len(running) < max(1, settings.build_jobs):
                variant = pending.pop(0)
                plan_path, outcome = work / f"{variant}.plan.json", work / f"{variant}.outcome.json"
                write_json(plan_path, plans[variant])
                outcome.unlink(missing_ok=True)
                log_file = open(settings.logs_dir / f"tune-{variant}.console.log", "w")
                proc = subprocess.Popen([*BUILD_CHILD, str(plan_path), str(outcome)], stdin=subprocess.DEVNULL,
                                        stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                        cwd=Path(__file__).resolve().parents[2], start_new_session=True)
                running[variant] = (proc, outcome, log_file, time.perf_counter())
                log.info("tune: building %d settings of %s", len(plans[variant]["settings"]), variant)
            time.sleep(0.5)
            for variant, (proc, outcome, log_file, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                log_file.close()
                del running[variant]
                try:
                    result = read_json(outcome)
                except (OSError, ValueError):
                    result = {"error": f"{variant}: its build process exited with code {proc.returncode} before "
                                       f"it finished (log: build/logs/tune-{variant}.log)"}
                result["wall_s"] = round(time.perf_counter() - started, 1)
                done[variant] = result
                log.info("tune: %s built in %.0f s", variant, result["wall_s"])
    finally:
        for proc, _, log_file, _ in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            log_file.close()
    return done


# ---------------------------------------------------------------- 4. timing

def time_settings(entries: list[tuple[SettingWorker, Path]], data: TuneData, timing: TimingPlan,
                  settings: Settings, logits_dir: Path) -> dict:
    """{id: Take per session}; the first session scores every tuning photo into logits_dir."""
    from mobilenet.measure.session import SessionPlan, run_session
    plan = SessionPlan(threads=1, warmup=timing.warmup, burst=timing.burst, min_runs=timing.min_runs,
                       min_seconds=timing.min_seconds, eval_npy=str(data.tune_npy),
                       log_dir=str(settings.logs_dir / "tune"), logits_dir=None, reference=None)
    sessions = []
    for index in range(timing.sessions):
        session_plan = plan if index else SessionPlan(**{**asdict(plan), "logits_dir": str(logits_dir)})
        sessions.append(run_session(entries, session_plan, index, load_alone=False))
    return {worker.id: [s[worker.id] for s in sessions] for worker, _ in entries}


# ---------------------------------------------------------------- 5. scoring

def _interval(bounds) -> list | None:
    return None if bounds is None else [float(bounds[0]), float(bounds[1])]


def score_setting(result: records.SettingResult, logits: np.ndarray, reference: np.ndarray, labels) -> np.ndarray:
    agrees = accuracy.agrees(logits, reference)
    result.tuning_photos, result.agreeing = len(agrees), int(agrees.sum())
    result.agreement_pct = result.agreeing * 100 / len(agrees)
    result.agreement_ci_pct = _interval(accuracy.wilson_interval(result.agreeing, len(agrees)))
    if labels is not None:
        right = int(accuracy.topk_correct(logits, labels, 1).sum())
        result.top1_pct = right * 100 / len(agrees)
        result.top1_ci_pct = _interval(accuracy.wilson_interval(right, len(agrees)))
    return agrees


def side_by_side(shipped: np.ndarray, winner: np.ndarray, reference: np.ndarray, labels) -> records.SideBySide:
    """The winner and the shipped setting on the evaluation photos, paired by photo."""
    a, b = accuracy.agrees(shipped, reference), accuracy.agrees(winner, reference)
    n = len(a)
    only_shipped, only_winner = int((a & ~b).sum()), int((~a & b).sum())
    fields = {}
    if labels is not None:
        for name, logits in (("shipped", shipped), ("winner", winner)):
            right = int(accuracy.topk_correct(logits, labels, 1).sum())
            fields[f"{name}_top1_pct"] = right * 100 / n
            fields[f"{name}_top1_ci_pct"] = _interval(accuracy.wilson_interval(right, n))
    return records.SideBySide(
        eval_photos=n, shipped_agreeing=int(a.sum()), shipped_agreement_pct=float(a.mean() * 100),
        shipped_agreement_ci_pct=_interval(accuracy.wilson_interval(int(a.sum()), n)),
        winner_agreeing=int(b.sum()), winner_agreement_pct=float(b.mean() * 100),
        winner_agreement_ci_pct=_interval(accuracy.wilson_interval(int(b.sum()), n)),
        only_shipped_right=only_shipped, only_winner_right=only_winner,
        mcnemar_p=accuracy.mcnemar_exact_p(only_shipped, only_winner), **fields)


def _timed(result: records.SettingResult, takes) -> None:
    from mobilenet.bench.stats import within_run_interval
    ran = [t for t in takes if t.ran and t.samples]
    bad = next((t for t in takes if not t.ran), None)
    if bad is not None or not ran:
        result.status = "skipped" if bad is not None and bad.skipped else "FAILED"
        result.reason = f"while timing: {(bad.skipped or bad.error) if bad is not None else 'no timed calls'}"
        return
    medians = [statistics.median(t.samples) for t in ran]
    interval = within_run_interval(medians)
    result.sessions, result.session_p50_ms = len(ran), medians
    result.p50_ms, result.p50_ci_ms = interval.estimate, interval.bounds


# ---------------------------------------------------------------- the whole tune

def run(settings: Settings, photos=None, timing: TimingPlan = TimingPlan()) -> records.TuneRun:
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] = round(now - since, 1)
        return now

    hold_build_lock(settings.build_dir)
    logger = logs.setup(settings.logs_dir, "tune", settings.quiet)
    count = tuning_photos(photos, settings)
    chosen = grids.selected(settings.only)
    if not chosen:
        raise TuneError(f"MOBILENET_ONLY={settings.only!r} names no variant with a tune grid; grids: "
                        f"{', '.join(g.variant for g in grids.GRIDS)}")
    models = settings.models_dir
    needed = {REFERENCE_ID, *(FP32_SOURCES[g.registry_variant.runtime] for g in chosen
                              if g.registry_variant.runtime in FP32_SOURCES)}
    for variant_id in sorted(needed):
        problem = artifact_problem(by_id(variant_id), models)
        if problem:
            raise TuneError(f"{variant_id}: {problem}; the tune starts from the build folder's FP32 models: "
                            f"run `invoke build` first")
    build_for = targets.build_target()
    tune_dir = settings.build_dir / "tune"
    work = tune_dir / "models"
    shutil.rmtree(work, ignore_errors=True)
    (settings.logs_dir / "tune").mkdir(parents=True, exist_ok=True)
    mark = time.perf_counter()

    data = prepare_data(settings, count, tune_dir / "data")
    logger.info("tune: %d calibration, %d tuning, %d evaluation photos (none shared), for %s", data.calib_photos,
                len(data.tune_names), len(data.eval_names), build_for.describe())
    mark = phase("data", mark)

    reference = by_id(REFERENCE_ID)
    logits_dir = tune_dir / "logits"
    shutil.rmtree(logits_dir, ignore_errors=True)
    logits_dir.mkdir(parents=True)
    fp32 = answers([(reference, reference.artifact_path(models), logits_dir / "fp32-eager.tune.npy")],
                   data.tune_npy, settings.logs_dir)
    fp32_eval = answers([(reference, reference.artifact_path(models), logits_dir / "fp32-eager.eval.npy")],
                        data.eval_npy, settings.logs_dir)
    if isinstance(fp32[REFERENCE_ID], str) or isinstance(fp32_eval[REFERENCE_ID], str):
        raise TuneError(f"eager FP32 could not score the photos: {fp32[REFERENCE_ID]}")
    mark = phase("reference", mark)

    expanded = {g.variant: grids.expand(g, build_for) for g in chosen}
    plans = {variant: {"variant": variant, "work_dir": str(work / variant), "calib_npy": str(data.calib_npy),
                       "tune_npy": str(data.tune_npy),
                       "settings": [{"name": s.name, "override": s.override} for s in kept]}
             for variant, (kept, _) in expanded.items()}
    built = build_grids(plans, settings, work)
    mark = phase("builds", mark)

    results = []
    for g in chosen:
        variant = g.registry_variant
        kept, dropped = expanded[g.variant]
        outcome = built.get(g.variant, {"error": "not built"})
        by_name = {o["name"]: o for o in outcome.get("settings", [])}
        grid = records.VariantGrid(g.variant, variant.runtime, g.knobs, [],
                                   dropped=[{"name": s.name, "changes": s.describe(), "same_as": same}
                                            for s, same in dropped],
                                   build_wall_s=outcome.get("wall_s"))
        workers = []
        for s in kept:
            o = by_name.get(s.name, {"status": "FAILED", "reason": outcome.get("error", "not built")})
            result = records.SettingResult(s.name, s.describe(), s.override, s.why, shipped=s.name == grids.SHIPPED,
                                           status=o["status"], reason=o.get("reason", ""), build_s=o.get("build_s"),
                                           build_cpu_s=o.get("cpu_s"),
                                           size_mb=(o["size_bytes"] / 1e6) if o.get("size_bytes") else None,
                                           options=o.get("options", {}))
            grid.settings.append(result)
            if o["status"] == "ok":
                workers.append((SettingWorker(f"{g.variant}~{s.name}", variant.runtime, dict(variant.runner)),
                                Path(o["artifact"])))
        results.append((g, grid, workers))

    for g, grid, workers in results:
        timing_started = time.perf_counter()
        takes = time_settings(workers, data, timing, settings, logits_dir) if workers else {}
        grid.timing_wall_s = round(time.perf_counter() - timing_started, 1)
        candidates = []
        for result in grid.settings:
            worker_id = f"{g.variant}~{result.name}"
            if result.status != "ok":
                continue
            _timed(result, takes[worker_id])
            logits_path = logits_dir / f"{worker_id}@1t.logits.npy"
            if result.status != "ok" or not logits_path.exists():
                result.status = "FAILED" if result.status == "ok" else result.status
                result.reason = result.reason or "scored no tuning photo"
                continue
            agrees = score_setting(result, np.load(logits_path), fp32[REFERENCE_ID], data.tune_labels)
            candidates.append(rule.Candidate(result.name, agrees, result.p50_ms,
                                             tuple(result.p50_ci_ms) if result.p50_ci_ms else None,
                                             shipped=result.shipped))
        if any(c.shipped for c in candidates):
            winner, verdicts = rule.pick(candidates)
            for verdict in verdicts:
                result = next(r for r in grid.settings if r.name == verdict.name)
                result.mcnemar_p_vs_best, result.winner, result.verdict = (verdict.mcnemar_p_vs_best, verdict.winner,
                                                                           verdict.reason)
                result.only_best_right, result.only_this_right = verdict.only_best_right, verdict.only_this_right
            grid.winner = winner
        else:
            for result in grid.settings:
                result.verdict = "not judged: the shipped setting did not build or run, so nothing is compared"
        logger.info("tune: %s: winner %s", g.variant, grid.winner or "none")
    mark = phase("timing and scoring", mark)

    side = []
    for g, grid, workers in results:
        if grid.winner is None:
            continue
        names = {grids.SHIPPED, grid.winner}
        for worker, artifact in workers:
            if worker.id.partition("~")[2] in names:
                side.append((g, worker, artifact))
    scored = answers([(worker, artifact, logits_dir / f"{worker.id}.eval.npy") for _, worker, artifact in side],
                     data.eval_npy, settings.logs_dir)
    for g, grid, _ in results:
        if grid.winner is None:
            continue
        shipped, winner = scored.get(f"{g.variant}~{grids.SHIPPED}"), scored.get(f"{g.variant}~{grid.winner}")
        if isinstance(shipped, np.ndarray) and isinstance(winner, np.ndarray):
            grid.side_by_side = side_by_side(shipped, winner, fp32_eval[REFERENCE_ID], data.eval_labels)
    phase("evaluation side by side", mark)

    tuned_at = _now()
    from mobilenet.results import machine_id
    run_record = records.TuneRun(
        format=records.FORMAT, tuned_at=tuned_at, machine_id=machine_id(settings.tag), target=build_for.record(),
        target_key=winners.target_key(build_for), threads=1,
        rule=rule.__doc__.split("\n\n")[1].strip(), alpha=rule.ALPHA, calib_photos=data.calib_photos,
        tuning_photos=len(data.tune_names), eval_photos=len(data.eval_names), tuning_names=data.tune_names,
        eval_names=data.eval_names, image_set=data.image_set, grids=[grid for _, grid, _ in results],
        timing=asdict(timing), phases_s=phases, wall_s=round(time.perf_counter() - started, 1))
    records.write_run(settings.build_dir, run_record)
    chosen_winners = {grid.variant: (grid.winner, next(r.override for r in grid.settings if r.name == grid.winner))
                      for _, grid, _ in results if grid.winner is not None}
    if chosen_winners:
        winners.record_winners(settings.build_dir, build_for, tuned_at, len(data.tune_names), chosen_winners)
    write_json(photo_sets.tuning_split_path(settings), {"tune_photos": len(data.tune_names), "tuned_at": tuned_at,
                                                        "tuning_names": data.tune_names})
    logger.info("tune: %d grids in %.0f s (%s); build/tune/grid.json; `invoke report` now builds the winners and "
                "scores the %d evaluation photos left", len(results), run_record.wall_s,
                ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()), len(data.eval_names))
    return run_record


def summary_lines(run_record: records.TuneRun) -> list[str]:
    """The console's table: each setting's agreement and p50, and the verdict."""
    lines = []
    for grid in run_record.grids:
        lines.append(f"{grid.variant}: winner {grid.winner or 'none'}")
        for r in grid.settings:
            agree = f"{r.agreement_pct:5.1f} %" if r.agreement_pct is not None else "   —   "
            p50 = f"{r.p50_ms:7.2f} ms" if r.p50_ms is not None and math.isfinite(r.p50_ms) else "     —    "
            lines.append(f"  {'*' if r.winner else ' '} {r.name:44s} {agree} {p50}  {r.verdict or r.reason}")
    return lines


def task(photos=None, only=None) -> None:
    """What `invoke tune` runs: one-line errors for bad input, the grid table on the console."""
    from mobilenet.files import BuildFolderBusy, io_errors
    from mobilenet.tasks_support import fail, settings_for
    settings = settings_for(only=only)
    try:
        with io_errors():
            run_record = run(settings, photos)
    except (TuneError, BuildFolderBusy, photo_sets.ManifestError, photo_sets.DownloadError, ValueError) as exc:
        fail(str(exc))
    for line in summary_lines(run_record):
        print(line)
    print(f"tune: {run_record.wall_s:.0f} s; record in {records.grid_path(settings.build_dir)}")
