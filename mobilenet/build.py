"""Running a build step: make each of its variants, check it against eager FP32, keep it.

A builder is a function `builder(ctx: BuildContext, out: Path) -> dict` named in the
registry. It writes the artifact to `out` (a temp path with the final extension) and
returns the settings it used; those are recorded in `<variant>.meta.json` and in results.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilenet import accuracy, logs
from mobilenet.dataset import Prepared, prepare
from mobilenet.fsutil import atomic_path, is_fresh, read_json, record_stamp, stamp_path, write_json
from mobilenet.model import WeightsInfo, load_fp32, weights_input_files
from mobilenet.settings import Settings
from mobilenet.variants import REFERENCE_ID, Variant, by_id, for_step, select

log = logging.getLogger("mobilenet.build")


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
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("mobilenet.build"))

    def fp32_model(self):
        """A fresh copy of the FP32 eval-mode nn.Module; builders may modify it."""
        return copy.deepcopy(self._model).eval()

    def example(self):
        """One real photo as a torch tensor [1, 3, 224, 224], for tracing and export."""
        import torch
        return torch.from_numpy(self.data.calib[0].copy())

    def calibration(self):
        """The calibration photos, float32 numpy [1, 3, 224, 224] each, NCHW."""
        return iter(self.data.calib)


def _builder(variant: Variant):
    module_name, function_name = variant.builder.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _load_reference(settings: Settings):
    """FP32 model and weights as saved by the export step (the input of every later step)."""
    reference = by_id(REFERENCE_ID)
    meta_path = reference.meta_path(settings.models_dir)
    if not meta_path.exists():
        raise BuildError(f"{meta_path} is missing: run `invoke export` first")
    import torch
    import torchvision
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(torch.load(reference.artifact_path(settings.models_dir), weights_only=True))
    return model.eval(), WeightsInfo(**read_json(meta_path)["weights"])


def step_inputs(step: str, settings: Settings, variants: list[Variant]) -> list[Path]:
    """Files whose change makes the step stale: weights or FP32 model, photos, builder code."""
    data = [settings.data_dir / "calib.npy", settings.data_dir / "eval.npy"]
    if step == "export":
        upstream = weights_input_files(settings.weights)
    else:
        upstream = [by_id(REFERENCE_ID).artifact_path(settings.models_dir)]
    specs = [importlib.util.find_spec(v.builder.split(":")[0]) for v in variants]
    code = {Path(spec.origin) for spec in specs if spec is not None}
    return [*upstream, *data, *sorted(code)]


def step_settings(step: str, settings: Settings, variants: list[Variant], data: Prepared) -> dict:
    return {"step": step, "weights": settings.weights, "random_weights": settings.random_weights,
            "image_set": data.image_set,
            "variants": {v.id: {"builder": v.builder, "engine": v.engine, **v.options} for v in variants}}


def check_artifact(variant: Variant, path: Path, settings: Settings, data: Prepared,
                   reference_logits: np.ndarray) -> dict:
    """Score the artifact in a fresh worker process; raise BuildError if it is not fit to keep."""
    from mobilenet.worker import score_artifact
    logits = score_artifact(variant, path, settings, data)
    scores = accuracy.score(logits, reference_logits, data.labels)
    if variant.precision == "fp32":
        ok, facts = accuracy.fp32_parity(logits, reference_logits)
        status = accuracy.OK if ok else accuracy.FAILED
    else:
        reference_top1 = accuracy.topk_pct(reference_logits, data.labels, 1) if data.labelled else None
        status, facts = accuracy.gate(scores, reference_top1)
    check = {"status": status, "facts": facts, "photos": len(data.eval),
             "agreement_pct": scores.agreement_pct, "max_abs_dlogit": scores.max_abs_dlogit}
    if status == accuracy.FAILED and not settings.random_weights:
        raise BuildError(f"{variant.id} failed its check against eager FP32: {facts}")
    return check


def reference_logits(settings: Settings, data: Prepared) -> np.ndarray:
    """Eager FP32 logits of the evaluation photos, cached until the model or photos change."""
    from mobilenet.worker import score_artifact
    reference = by_id(REFERENCE_ID)
    model_path = reference.artifact_path(settings.models_dir)
    cached = settings.data_dir / "reference-logits.npy"
    if cached.exists() and all(cached.stat().st_mtime >= p.stat().st_mtime for p in (model_path, data.eval.path)):
        return np.load(cached)
    logits = score_artifact(reference, model_path, settings, data)
    with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
        np.save(fh, logits)
    return logits


def build_variant(ctx: BuildContext, ref_logits: np.ndarray | None) -> dict:
    variant, settings = ctx.variant, ctx.settings
    final = variant.artifact_path(settings.models_dir)
    started = time.perf_counter()
    with atomic_path(final) as tmp:
        with logs.output_to_log(ctx.log, variant.id):
            options = _builder(variant)(ctx, tmp) or {}
        check = None
        if ref_logits is not None:
            check = check_artifact(variant, tmp, settings, ctx.data, ref_logits)
    return {"variant": variant.id, "status": "ok", "artifact": final.name,
            "build_s": round(time.perf_counter() - started, 2), "options": {**variant.options, **options},
            "engine": variant.engine, "weights": ctx.weights.as_dict(), "check": check}


def run_step(step: str, settings: Settings, force: bool = False) -> list[dict]:
    """Build every variant of `step` unless its outputs are fresh; return their metadata."""
    logger = logs.setup(settings.logs_dir, step, settings.quiet)
    selected = {v.id for v in select(settings.only)}  # MOBILENET_ONLY narrows the builds too
    variants = [v for v in for_step(step) if v.id in selected]
    if not variants:
        logger.info("%s: nothing selected (MOBILENET_ONLY=%s)", step, settings.only)
        return []
    data = prepare(settings)
    metas = [v.meta_path(settings.models_dir) for v in variants]
    wanted = step_settings(step, settings, variants, data)
    stamp = stamp_path(settings.stamps_dir, step)
    fresh, reason = is_fresh(metas, step_inputs(step, settings, variants), wanted, stamp)
    if fresh and not force:
        skipped_before = [read_json(m) for m in metas if read_json(m)["status"] != "ok"]
        if not skipped_before:
            logger.info("%s: up to date (--force to redo)", step)
            return [read_json(m) for m in metas]
        reason = f"retrying {skipped_before[0]['variant']} ({skipped_before[0]['reason']})"
    logger.info("%s: building %s (%s)", step, ", ".join(v.id for v in variants), "forced" if force else reason)

    if step == "export":
        model, weights = load_fp32(settings.weights, settings.random_weights)
        logger.info("weights: %s (sha256 %s)", weights.source, weights.sha256[:16])
    else:
        model, weights = _load_reference(settings)
    ref_logits = None if step == "export" else reference_logits(settings, data)

    results = []
    for variant in variants:
        ctx = BuildContext(settings, variant, weights, data, model, logging.getLogger(f"mobilenet.{step}"))
        try:
            meta = build_variant(ctx, None if variant.id == REFERENCE_ID else ref_logits)
            if variant.id == REFERENCE_ID:
                ref_logits = reference_logits(settings, data)
            check = meta["check"]
            logger.info("  %-20s ok   %s%s", variant.id, f"{meta['build_s']:.1f} s",
                        f"; check: {check['facts']}" if check else "")
        except Exception as exc:  # a runtime missing or a conversion failing skips one variant
            if variant.id == REFERENCE_ID:
                raise
            reason = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]
            logger.warning("  %-20s skipped: %s (details in build/logs/%s.log)", variant.id, reason, step)
            logging.getLogger("mobilenet.build").debug("%s", traceback.format_exc())
            meta = {"variant": variant.id, "status": "skipped", "reason": reason,
                    "engine": variant.engine, "weights": weights.as_dict()}
            variant.artifact_path(settings.models_dir).unlink(missing_ok=True)
        write_json(variant.meta_path(settings.models_dir), meta)
        results.append(meta)
    record_stamp(stamp, wanted)
    return results
