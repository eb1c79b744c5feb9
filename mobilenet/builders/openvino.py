"""OpenVINO IR builders: FP32 from the exported FP32 model, INT8 with NNCF post-training quantization.

Both convert `torch.export.export` of the FP32 model (OpenVINO's converter would otherwise
trace the nn.Module with the deprecated torch.jit.trace) and write `out` (.xml) plus
`out.with_suffix('.bin')`: both files are the artifact. Weights are kept in FP32
(`save_model` compresses them to FP16 by default, which breaks FP32 parity).

openvino and nncf are imported inside the builders so that importing this module (the build
step resolves builders by name) never needs them.
"""
from __future__ import annotations

import importlib
import time
from importlib import metadata
from pathlib import Path

from mobilenet.build import target
from mobilenet.logs import output_to_log
from mobilenet.measure.runners import RuntimeUnavailable
from mobilenet.tune import winners

INPUT_SHAPE = [1, 3, 224, 224]

# The settings that hold on every CPU (openvino-int8's `tuning` in mobilenet/registry.py says what
# was compared); the overflow fix comes from the target's instruction set (target.nncf).
BASE_SETTINGS = {"preset": "PERFORMANCE", "fast_bias_correction": True}
# Settings a tune may change that the defaults leave out, with the value the builder then uses.
IMPLICIT_SETTINGS = {"bias_correction": True}


def int8_settings(choices, override: dict | None = None) -> dict:
    """NNCF's settings for one target's choices, under the names OverflowFix and the preset take,
    with an override (a tune's setting or winner) applied; a key it does not know is refused."""
    settings = {"preset": BASE_SETTINGS["preset"], "overflow_fix": choices["overflow_fix"],
                "fast_bias_correction": BASE_SETTINGS["fast_bias_correction"]}
    return winners.merged(settings, override or {}, "openvino-int8", IMPLICIT_SETTINGS)


def resolved_settings(build_for, override: dict | None = None, variant=None) -> dict:
    """The settings an override gives on a target: what `invoke tune` tells settings apart by."""
    return int8_settings(target.nncf(build_for), override)


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeUnavailable(f"{module} is not installed: {exc}") from exc


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _convert(ctx):
    """The FP32 model as an openvino.Model with a fixed [1, 3, 224, 224] input: converted
    once per step, a copy for each builder."""
    def convert():
        import torch
        ov = _require("openvino")
        with output_to_log(ctx.log, "openvino convert"):
            exported = torch.export.export(ctx.fp32_model(), (ctx.example(),))
            model = ov.convert_model(exported)
            # The converter leaves the exported program's static shapes dynamic; a fixed shape
            # lets the CPU plugin plan memory once, as for every other runtime here.
            model.reshape(INPUT_SHAPE)
        return model
    return ctx.shared("openvino-fp32-model", convert).clone()


def _save(model, out: Path) -> None:
    ov = _require("openvino")
    ov.save_model(model, str(out), compress_to_fp16=False)
    missing = [p.name for p in (out, out.with_suffix(".bin")) if not p.is_file()]
    if missing:
        raise RuntimeError(f"openvino.save_model({out}) did not write {', '.join(missing)}")


def _settings(out: Path) -> dict:
    return {"converter": "openvino.convert_model(torch.export.export(model))",
            "openvino": _package_version("openvino"), "input_shape": INPUT_SHAPE,
            "compress_to_fp16": False, "files": [out.name, out.with_suffix(".bin").name]}


def convert_fp32(ctx, out: Path) -> dict:
    """FP32 OpenVINO IR of the eager model."""
    out = Path(out)
    _save(_convert(ctx), out)
    return _settings(out)


def quantize_int8(ctx, out: Path, override: dict | None = None) -> dict:
    """INT8 OpenVINO IR: NNCF post-training quantization on the build's calibration photos, with the
    override winners.applied gives (a tune's setting, else this target's winner, else none)."""
    out = Path(out)
    nncf = _require("nncf")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    choices = target.nncf(target.build_target())
    tuned = winners.applied(ctx, override)
    settings = int8_settings(choices, tuned.override)
    model = _convert(ctx)
    photos = list(ctx.calibration())
    if not photos:
        raise ValueError("openvino int8: no calibration photos")
    started = time.perf_counter()
    with output_to_log(ctx.log, "nncf quantize"):
        quantized = nncf.quantize(
            model, nncf.Dataset(photos), subset_size=len(photos),
            preset=nncf.QuantizationPreset[settings["preset"]],
            fast_bias_correction=settings["fast_bias_correction"],
            advanced_parameters=AdvancedQuantizationParameters(
                overflow_fix=OverflowFix[settings["overflow_fix"]],
                disable_bias_correction=not settings.get("bias_correction", IMPLICIT_SETTINGS["bias_correction"])))
    fake_quantize = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    ctx.log.debug("openvino int8: quantized on %d photos in %.1f s, %d FakeQuantize nodes",
                  len(photos), time.perf_counter() - started, fake_quantize)
    if fake_quantize == 0:
        raise RuntimeError("nncf.quantize inserted no FakeQuantize node: the model is still FP32")
    _save(quantized, out)
    return {**_settings(out), **settings, "quantizer": "nncf.quantize",
            "nncf": _package_version("nncf"), "calibration_photos": len(photos),
            "fake_quantize_nodes": fake_quantize,
            target.RECORD_KEY: winners.with_overridden_choices(choices.recorded(), tuned.override,
                                                               tuned.record["source"]),
            winners.RECORD_KEY: tuned.record}
