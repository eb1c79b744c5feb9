"""ONNX builders: FP32 with torch.onnx's dynamo exporter, INT8 with ONNX Runtime static QDQ.

Both write one self-contained .onnx file (weights embedded, no external data file): the
artifact's size is then what a device ships, and the caller can rename it into place.
onnx and onnxruntime are imported inside the builders so that importing this module (the
build step resolves builders by name) never needs them.
"""
from __future__ import annotations

import importlib
import logging
import tempfile
from pathlib import Path

from mobilenet.build import target
from mobilenet.logs import output_to_log
from mobilenet.measure.runners import RuntimeUnavailable
from mobilenet.tune import winners

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# The settings that hold on every CPU; what was compared, and why these won, is onnx-int8's `tuning`
# in mobilenet/registry.py. The types and reduce_range come from the target's instruction set
# (int8_settings), recorded with their reasons.
BASE_SETTINGS = {
    "quant_format": "QDQ",
    "per_channel": True,
    "calibrate_method": "Percentile",
    "extra_options": {"CalibPercentile": 99.999},
}


def int8_settings(choices, override: dict | None = None) -> dict:
    """quantize_static's settings for one target's choices (target.onnxruntime), with an override
    (a tune's setting or winner) applied; a key it does not know is refused."""
    settings = {"quant_format": BASE_SETTINGS["quant_format"], "activation_type": choices["activation_type"],
                "weight_type": choices["weight_type"], "per_channel": BASE_SETTINGS["per_channel"],
                "reduce_range": choices["reduce_range"], "calibrate_method": BASE_SETTINGS["calibrate_method"],
                "extra_options": dict(BASE_SETTINGS["extra_options"])}
    return winners.merged(settings, override or {}, "onnx-int8")


def resolved_settings(build_for, override: dict | None = None, variant=None) -> dict:
    """The settings an override gives on a target: what `invoke tune` tells settings apart by."""
    return int8_settings(target.onnxruntime(build_for), override)


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeUnavailable(f"{module} is not installed: {exc}") from exc


def _export(model, example, path: Path, log: logging.Logger) -> dict:
    """Export `model` to a single self-contained ONNX file; return what was used."""
    import torch
    _require("onnxscript")  # the dynamo exporter translates through it
    onnx = _require("onnx")
    with output_to_log(log, "onnx"):
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
    proto = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external or path.with_name(path.name + ".data").exists():
        raise RuntimeError(f"{path.name}: weights were written as external data ({len(external)} tensors)")
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {"exporter": "torch.onnx.export(dynamo=True)", "opset": opset,
            "input": INPUT_NAME, "input_shape": list(example.shape)}


def _fp32_onnx(ctx) -> tuple[bytes, dict]:
    """The FP32 model exported once per step (the FP32 artifact, and what INT8 quantizes):
    the file's bytes and what the export used."""
    def export():
        with tempfile.TemporaryDirectory(prefix="onnx-fp32.") as tmp:
            path = Path(tmp) / "fp32.onnx"
            used = _export(ctx.fp32_model(), ctx.example(), path, ctx.log)
            return path.read_bytes(), used
    return ctx.shared("onnx-fp32", export)


def export_fp32(ctx, out: Path) -> dict:
    """FP32 ONNX of the eager model, fixed input [1, 3, 224, 224]."""
    out = Path(out)
    exported, used = _fp32_onnx(ctx)
    out.write_bytes(exported)
    ctx.log.debug("onnx-fp32: exported %s (%d bytes, opset %d)", out.name, out.stat().st_size, used["opset"])
    return used


def _calibration_reader(photos: list, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class PhotoReader(CalibrationDataReader):
        def __init__(self):
            self._photos = iter(photos)

        def get_next(self):
            photo = next(self._photos, None)
            return None if photo is None else {input_name: photo}

        def __len__(self):
            return len(photos)

    return PhotoReader()


def quantize_fp32_onnx(fp32_path: Path, out: Path, photos: list, settings: dict,
                       log: logging.Logger, work_dir: Path) -> None:
    """Static QDQ quantization of an FP32 .onnx calibrated on `photos` ([1,3,224,224] float32)."""
    ort = _require("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = Path(work_dir) / "prepared.onnx"
    # ORT's C++ warnings (e.g. about calibration sessions) would go straight to stderr.
    ort.set_default_logger_severity(3)
    try:
        with output_to_log(log, "onnx"):
            # Shape inference and graph fusions (Conv+BN and friends) before choosing
            # where Q/DQ pairs go, as ONNX Runtime's quantization guide asks.
            quant_pre_process(str(fp32_path), str(prepared))
            quantize_static(
                str(prepared), str(out), _calibration_reader(photos, INPUT_NAME),
                quant_format=QuantFormat[settings["quant_format"]],
                activation_type=QuantType[settings["activation_type"]],
                weight_type=QuantType[settings["weight_type"]],
                per_channel=settings["per_channel"],
                reduce_range=settings["reduce_range"],
                calibrate_method=CalibrationMethod[settings["calibrate_method"]],
                extra_options=dict(settings.get("extra_options", {})),
                use_external_data_format=False,
            )
    finally:
        ort.set_default_logger_severity(2)


def quantize_int8(ctx, out: Path, override: dict | None = None) -> dict:
    """INT8 QDQ ONNX, calibrated on the build's calibration photos, with the build target's choices
    and the override (winners.applied: a tune's setting, else this target's winner, else none)."""
    import numpy as np
    out = Path(out)
    choices = target.onnxruntime(target.build_target())
    tuned = winners.applied(ctx, override)
    settings = int8_settings(choices, tuned.override)
    photos = [np.ascontiguousarray(p, dtype=np.float32) for p in ctx.calibration()]
    if not photos:
        raise RuntimeError("no calibration photos")
    with tempfile.TemporaryDirectory(prefix="onnx-int8.") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        fp32_onnx, exported = _fp32_onnx(ctx)
        fp32_path.write_bytes(fp32_onnx)
        quantize_fp32_onnx(fp32_path, out, photos, settings, ctx.log, Path(tmp))
    ctx.log.debug("onnx-int8: quantized %s (%d bytes) with %s", out.name, out.stat().st_size, settings)
    return {**settings, "calibration_photos": len(photos), "fp32_opset": exported["opset"],
            "pre_process": "quant_pre_process",
            target.RECORD_KEY: winners.with_overridden_choices(choices.recorded(), tuned.override,
                                                               tuned.record["source"]),
            winners.RECORD_KEY: tuned.record}
