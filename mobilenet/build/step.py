"""Running a build step: make each of its variants, check it against eager FP32, keep it.

A builder is a function `builder(ctx: BuildContext, out: Path) -> dict` named in the
registry. It writes the artifact to `out` (a path in a scratch folder, with the final file
name) and any companion files the registry lists beside it (an OpenVINO .bin), and returns
the settings it used; those are recorded in `<variant>.meta.json` and in results.

The meta file is the commit record. It is written last, after the artifact's files and the
check's logits are in place, and it holds their sha256: a step killed half-way leaves files
whose hashes no meta vouches for, and they are rebuilt.

What happens to a variant:
- ok / DEGRADED / INCONCLUSIVE (too few photos to tell ok from DEGRADED): built, checked, kept.
- FAILED: built but its outputs are wrong (the check), or the builder raised an error that
  is not "runtime unavailable": our bug. Kept for inspection, never timed, and the step
  exits non-zero after finishing the other variants.
- skipped: when the runtime is not installed or not supported on this machine, or when the
  variant does not apply to the model (registry.applies), which is decided before it is built.
"""
from __future__ import annotations

import copy
import importlib
import logging
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilenet import accuracy, logs
from mobilenet.build.artifacts import check_logits_path, kept_files, reference_logits_path
from mobilenet.build.model import WeightsInfo, load_model, load_reference
from mobilenet.build.staleness import selected_variants, stale_variants, step_inputs, step_settings, variant_stamp
from mobilenet.data.store import Prepared, prepare
from mobilenet.files import (
    disk_error,
    hold_build_lock,
    read_json,
    sha256_cached,
    write_json,
)
from mobilenet.freshness import record_stamp
from mobilenet.models import ModelRecord, preprocessing_for
from mobilenet.registry import REFERENCE_ID, Variant, by_id, for_step, not_applicable_reason
from mobilenet.results import FAILED, OK, SKIPPED
from mobilenet.settings import Settings

log = logging.getLogger("mobilenet.build.step")

class BuildError(RuntimeError):
    pass


@dataclass
class BuildContext:
    """What a builder may use: the FP32 model, real photos, settings and a logger."""
    settings: Settings
    variant: Variant
    weights: WeightsInfo
    data: Prepared
    _model: object = field(repr=False)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("mobilenet.build.step"))
    _shared: dict = field(default_factory=dict, repr=False)  # one step's builders share it
    record: ModelRecord | None = None  # the model's record: input shape, classes, constructor

    def shared(self, key: str, make):
        """make(), once per step: what two builders of a step start from (OpenVINO's converted
        FP32 model, for its FP32 and INT8 IRs). Each caller must copy it before changing it."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def fp32_model(self):
        """A fresh copy of the FP32 eval-mode nn.Module; builders may modify it."""
        return copy.deepcopy(self._model).eval()

    def example(self):
        """One real photo as a torch tensor [1, 3, crop, crop], for tracing and export."""
        import torch
        return torch.from_numpy(self.data.calib[0].copy())

    def calibration(self):
        """The calibration photos, float32 numpy [1, 3, crop, crop] each, NCHW."""
        return iter(self.data.calib)

    def calibrate(self, model) -> int:
        """Run every calibration photo through `model` (a torch module) without gradients;
        return how many photos it saw. Observers inserted by prepare() record ranges."""
        import torch
        photos = 0
        with torch.no_grad():
            for image in self.calibration():
                model(torch.from_numpy(image))
                photos += 1
        return photos


def _builder(variant: Variant):
    module_name, function_name = variant.builder.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _load_reference(settings: Settings):
    """FP32 model, its record and weights as saved by the export step (the input of every later step)."""
    reference = by_id(REFERENCE_ID)
    meta_path = reference.meta_path(settings.models_dir)
    if not meta_path.exists():
        raise BuildError(f"{meta_path} is missing: run `invoke export` first")
    model, record, weights = load_reference(reference.artifact_path(settings.models_dir), read_json(meta_path))
    if record.spec != settings.model:
        raise BuildError(f"{meta_path} was exported for {record.spec}, not {settings.model}: run `invoke export`")
    return model, record, weights


def judge(variant: Variant, logits: np.ndarray, reference: np.ndarray | None, data: Prepared,
          random_weights: bool) -> dict:
    """The correctness check of a built artifact, from its logits on the evaluation photos.

    FP32 parity is judged with random weights too, relative to the logits' scale (a broken
    conversion fails it); INT8 answers of a random network are not judged (accuracy.int8_check)."""
    if reference is None:  # the reference itself
        return {"status": OK, "facts": "reference", "photos": len(data.eval)}
    scores = accuracy.score(logits, reference, data.labels)
    extra = {}
    if variant.precision == "fp32":
        ok, facts = accuracy.fp32_parity(logits, reference)
        status = OK if ok else FAILED
        extra["parity"] = accuracy.parity_record(logits, reference)
    else:
        status, facts = accuracy.int8_check(scores, random_weights)  # scores hold the paired comparison
    return {"status": status, "facts": facts, "photos": len(data.eval), "agreement_pct": scores.agreement_pct,
            "max_abs_dlogit": scores.max_abs_dlogit, "tied_top1_rows": scores.tied_top1_rows, **extra}


# Checks scored at once, each in a worker of its own, while the step builds the next variant.
# The builder and one scoring worker keep two cores busy; export (alone on the critical path)
# took 47 s with one check at a time.
SCORING_AT_ONCE = 2


@dataclass
class _Built:
    """A variant whose files are in a scratch folder while a worker scores them."""
    variant: Variant
    scratch: Path
    options: dict
    started: float  # time.time(): compared with the check logits' mtime
    worker: object  # worker.WorkerProcess

    @property
    def logits_path(self) -> Path:
        return check_logits_path(self.scratch, self.variant)

    def discard(self) -> None:
        self.worker.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def start_variant(ctx: BuildContext) -> _Built:
    """Build one variant into a scratch folder and start scoring it; the caller finishes it.

    Logits come from the variant's runner in a fresh worker process: it keeps each runtime's
    global state (quantized engine, ExecuTorch's thread pool) from leaking between variants,
    and a crash from killing the step. One thread: logits do not depend on it, and a
    multi-threaded runtime on a busy machine waits for its descheduled threads (seen here:
    10x slower checks at 2 threads, load 10).
    """
    from mobilenet.measure.worker import WorkerProcess
    variant, settings = ctx.variant, ctx.settings
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix=f".{variant.id}.", dir=settings.models_dir))
    try:
        out = scratch / variant.artifact
        with logs.output_to_log(ctx.log, variant.id):
            options = _builder(variant)(ctx, out) or {}
        missing = [p.name for p in variant.artifact_files(scratch) if not p.exists()]
        if missing:
            raise BuildError(f"the builder did not write {', '.join(missing)}")
        worker = WorkerProcess(variant, out, 1, ctx.data.eval.path, check_logits_path(scratch, variant),
                               warmup=0, log_path=settings.logs_dir / f"check-{variant.id}.log")
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _Built(variant, scratch, options, started, worker)


def finish_variant(built: _Built, ctx: BuildContext, reference: np.ndarray | None) -> dict:
    """Wait for the variant's logits, check them, move its files into place; return its meta."""
    variant, models = built.variant, ctx.settings.models_dir
    try:
        built.worker.wait_ready()
        built.worker.finish()
        logits = np.load(built.logits_path)
        # From the start of the build to the end of its check (the worker wrote the logits then),
        # not to when the step got round to reading them: it was building the next variant.
        build_s = max(0.0, built.logits_path.stat().st_mtime - built.started)
        check = judge(variant, logits, reference, ctx.data, ctx.settings.random_weights)
        kept = kept_files(variant, built.scratch)
        # Into place one by one; the meta written after this is what makes them count.
        for path in kept:
            os.replace(path, models / path.name)
    finally:
        built.discard()
    files = {p.name: sha256_cached(models / p.name) for p in kept}
    reason = "" if check["status"] != FAILED else f"failed its check against eager FP32: {check['facts']}"
    return {"variant": variant.id, "status": check["status"], "reason": reason, "artifact": variant.artifact,
            "files_sha256": files, "artifact_sha256": files[variant.artifact],
            "build_s": round(build_s, 2), "options": {**variant.options, **built.options},
            "engine": variant.engine, "weights": ctx.weights.as_dict(), "check": check,
            **({"model": ctx.record.as_dict()} if ctx.record is not None else {})}


def _unavailable(exc: BaseException) -> bool:
    """Is this the one kind of exception that means "skipped": the runtime is not here?"""
    from mobilenet.measure.runners import RuntimeUnavailable
    from mobilenet.measure.worker import WorkerSkipped
    return isinstance(exc, (ImportError, RuntimeUnavailable, WorkerSkipped))


def _first_line(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]


def run_step(step: str, settings: Settings, force: bool = False, data: Prepared | None = None,
             stale: dict[str, str] | None = None) -> list[dict]:
    """Build every variant of `step` unless its outputs are fresh; return their metadata.
    `data` and `stale`: what prepare() and stale_variants() just gave the caller, if it asked.

    Never raises for one variant's failure: the caller reads FAILED from the returned metas
    and exits non-zero after the whole chain has run.
    """
    hold_build_lock(settings.build_dir)
    logger = logs.setup(settings.logs_dir, step, settings.quiet)
    variants = selected_variants(step, settings)
    if not variants:
        logger.info("%s: nothing selected (MOBILENET_ONLY=%s)", step, settings.only)
        return []
    data = data or prepare(settings)
    stale = stale_variants(step, settings, force, data) if stale is None else stale
    if not stale:
        logger.info("%s: up to date (--force to redo)", step)
        return _report_failed(logger, [read_json(v.meta_path(settings.models_dir)) for v in variants])
    logger.info("%s: building %s (%s)", step, ", ".join(stale),
                "; ".join(dict.fromkeys(stale.values())))
    kept = [read_json(v.meta_path(settings.models_dir)) for v in variants if v.id not in stale]
    variants = [v for v in variants if v.id in stale]

    if step == "export":
        model, model_record = load_model(settings.model, settings.weights, settings.random_weights,
                                         calibration=data.calib, preprocessing=preprocessing_for(settings))
        weights = WeightsInfo(**model_record.weights)
        logger.info("model: %s, %d classes, input %s, max |logit| %.3g on the calibration photos",
                    model_record.spec, model_record.num_classes, list(model_record.input_shape),
                    model_record.logit_scale)
        logger.info("weights: %s (sha256 %s)", weights.source, weights.sha256[:16])
        reference = None
    else:
        model, model_record, weights = _load_reference(settings)
    if variants[0].id != REFERENCE_ID:  # the reference is fresh: the others are checked against its logits
        reference = np.load(reference_logits_path(settings))

    results: list[dict] = []
    scoring: list[tuple[_Built, BuildContext]] = []  # started, in build order

    def record(ctx: BuildContext, meta: dict) -> None:
        write_json(ctx.variant.meta_path(settings.models_dir), meta)
        record_stamp(variant_stamp(step, ctx.variant, settings), step_settings(step, settings, [ctx.variant], data),
                     step_inputs(step, settings, [ctx.variant]))
        results.append(meta)

    def failed(ctx: BuildContext, exc: BaseException) -> None:
        variant = ctx.variant
        if variant.id == REFERENCE_ID or disk_error(exc):  # no variant can be kept: stop the step
            raise exc
        if _unavailable(exc):
            status, reason = SKIPPED, _first_line(exc)
            logger.warning("  %-20s skipped: %s", variant.id, reason)
        else:  # anything else is a bug in a builder or runner: loud, with its traceback in the log
            status, reason = FAILED, f"build error: {_first_line(exc)} (traceback in build/logs/{step}.log)"
            logger.error("  %-20s FAILED: %s", variant.id, reason)
        logging.getLogger("mobilenet.build.step").debug("%s", "".join(traceback.format_exception(exc)))
        for path in kept_files(variant, settings.models_dir):
            path.unlink(missing_ok=True)
        record(ctx, {"variant": variant.id, "status": status, "reason": reason, "engine": variant.engine,
                     "weights": weights.as_dict(), "model": model_record.as_dict()})

    def not_applicable(ctx: BuildContext, reason: str) -> None:
        """Skipped before anything is built: the variant does not apply to this model."""
        variant = ctx.variant
        logger.warning("  %-20s skipped: %s", variant.id, reason)
        for path in kept_files(variant, settings.models_dir):
            path.unlink(missing_ok=True)
        record(ctx, {"variant": variant.id, "status": SKIPPED, "reason": reason, "not_applicable": True,
                     "engine": variant.engine, "weights": weights.as_dict(), "model": model_record.as_dict()})

    def finish_oldest() -> None:
        nonlocal reference
        built, ctx = scoring.pop(0)
        try:
            meta = finish_variant(built, ctx, None if built.variant.id == REFERENCE_ID else reference)
        except Exception as exc:
            failed(ctx, exc)
            return
        if built.variant.id == REFERENCE_ID:
            reference = np.load(reference_logits_path(settings))
        logger.info("  %-20s %-8s %s; check: %s", built.variant.id, meta["status"], f"{meta['build_s']:.1f} s",
                    meta["check"]["facts"])
        record(ctx, meta)

    shared: dict = {}
    try:
        for variant in variants:
            ctx = BuildContext(settings, variant, weights, data, model, logging.getLogger(f"mobilenet.{step}"),
                               shared, record=model_record)
            reason = not_applicable_reason(variant, model_record)
            if reason:
                not_applicable(ctx, reason)
                continue
            try:
                scoring.append((start_variant(ctx), ctx))
            except Exception as exc:
                failed(ctx, exc)
            while len(scoring) >= SCORING_AT_ONCE:
                finish_oldest()
        while scoring:
            finish_oldest()
    finally:  # stopped by an error or Ctrl-C: the workers and scratch folders go too
        for built, _ in scoring:
            built.discard()
    order = [v.id for v in for_step(step)]
    return _report_failed(logger, sorted(kept + results, key=lambda meta: order.index(meta["variant"])))


def _report_failed(logger: logging.Logger, metas: list[dict]) -> list[dict]:
    for meta in metas:
        if meta["status"] == FAILED:
            logger.error("%s is FAILED: %s", meta["variant"], meta.get("reason") or meta.get("check", {}).get("facts"))
    return metas
