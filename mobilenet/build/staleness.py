"""When a build step's variants must be built again: per variant, by the content of what they
are made from (weights or the FP32 model, photos, builders, runners, the build code) and the
settings that shape them."""
from __future__ import annotations

from pathlib import Path

from mobilenet.build import target
from mobilenet.build.artifacts import artifact_problem, reference_logits_path
from mobilenet.build.model import model_input_files, weights_input_files
from mobilenet.data.store import Prepared, prepare
from mobilenet.files import read_json
from mobilenet.freshness import is_fresh, module_files, stamp_path
from mobilenet.models import preprocessing_for
from mobilenet.registry import REFERENCE_ID, Variant, by_id, for_step, select
from mobilenet.results import SKIPPED
from mobilenet.settings import Settings
from mobilenet.tune import winners

# Code whose edit changes what a build step makes or how it is judged (the builder's own
# module and the variant's runner are added per step).
BUILD_CODE = ("mobilenet.build.step", "mobilenet.build.artifacts", "mobilenet.build.staleness", "mobilenet.accuracy",
              "mobilenet.measure.worker", "mobilenet.build.model", "mobilenet.models", "mobilenet.tune.winners",
              "mobilenet.builders.pt2e",
              "mobilenet.data.preprocess", "mobilenet.measure.npyimages", "mobilenet.measure.runners")



def step_inputs(step: str, settings: Settings, variants: list[Variant]) -> list[Path]:
    """Files whose content makes the step stale: weights or FP32 model, photos and labels,
    the builders, the runners that check them, and the build code itself."""
    data = [settings.data_dir / "calib.npy", settings.data_dir / "eval.npy", settings.data_dir / "images.json"]
    if step == "export":
        upstream = [*weights_input_files(settings.weights), *model_input_files(settings.model)]
    else:
        reference = by_id(REFERENCE_ID)
        upstream = [reference.artifact_path(settings.models_dir), reference_logits_path(settings)]
    code = module_files(*BUILD_CODE, *{v.builder.split(":")[0] for v in variants},
                        *{f"mobilenet.measure.runners.{v.runtime}" for v in variants})
    return [*upstream, *data, *code]


def _isa_choices(variant: Variant) -> dict:
    """The build target's relevant flags and the choices made from them: an artifact built for
    other choices (another CPU, changed rules) is rebuilt."""
    choices = target.choices_for(variant)
    return {target.RECORD_KEY: choices.fingerprint()} if choices else {}


def step_settings(step: str, settings: Settings, variants: list[Variant], data: Prepared) -> dict:
    """The settings that shape the step's variants: the model (its spec and the transform its photos
    were made with; its weights are inputs by content), the photos, each variant's build options,
    an INT8 variant's ISA choices and, once `invoke tune` chose one for this target, the winner its
    builder applies (tune.winners)."""
    return {"step": step, "model": settings.model, "preprocessing": preprocessing_for(settings).digest(),
            "weights": settings.weights, "random_weights": settings.random_weights,
            "image_set": data.image_set,
            "variants": {v.id: {"builder": v.builder, "engine": v.engine, **v.options, **_isa_choices(v),
                                **({"requires": list(v.requires)} if v.requires else {}),
                                **(winners.freshness(settings, v) if v.precision == "int8" else {})}
                         for v in variants}}


def selected_variants(step: str, settings: Settings) -> list[Variant]:
    """The step's variants that MOBILENET_ONLY selects (it narrows the builds too)."""
    selected = {v.id for v in select(settings.only)}
    return [v for v in for_step(step) if v.id in selected]


def stale_variants(step: str, settings: Settings, force: bool = False, data: Prepared | None = None) -> dict[str, str]:
    """{variant id: why it must be built} for the step's selected variants; {} when up to date.

    Freshness is per variant: building a subset (MOBILENET_ONLY, device mode) leaves the other
    variants of the step, and their records, as they were.
    """
    variants = selected_variants(step, settings)
    if force or not variants:
        return {v.id: "forced" for v in variants}
    data = data or prepare(settings)
    return {v.id: reason for v in variants if (reason := stale_reason(step, v, settings, data))}


def variant_stamp(step: str, variant: Variant, settings: Settings) -> Path:
    return stamp_path(settings.stamps_dir, f"{step}.{variant.id}")


def stale_reason(step: str, variant: Variant, settings: Settings, data: Prepared) -> str | None:
    """Why this variant must be built again, or None when its artifact is up to date."""
    meta = variant.meta_path(settings.models_dir)
    fresh, reason = is_fresh([meta], step_inputs(step, settings, [variant]),
                             step_settings(step, settings, [variant], data), variant_stamp(step, variant, settings))
    if not fresh:
        return reason
    problem = artifact_problem(variant, settings.models_dir)
    if problem:
        return f"{variant.id}: {problem}"
    recorded = read_json(meta)
    if recorded["status"] == SKIPPED and not recorded.get("not_applicable"):  # not installed: try again
        return f"retrying {variant.id} ({recorded.get('reason')})"
    return None
