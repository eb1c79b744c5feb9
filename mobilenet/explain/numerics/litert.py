"""Per-layer SQNR of the LiteRT INT8 model against the FP32 .tflite, with
experimental_preserve_all_tensors.

Both flatbuffers come from the same torch graph through litert-torch and list the same
operators in the same order (the INT8 one with int8 tensors), so layers are matched by the
position of each compute operator. Intermediate tensors survive only without the XNNPACK
delegate, so both run on TFLite's builtin kernels here; how far that is from the XNNPACK
path the bench runs is recorded as the fidelity.
"""
from __future__ import annotations

import re
from importlib import metadata

import numpy as np

from mobilenet.explain import sqnr
from mobilenet.explain.records import OK, QuantizationError

TOOL = (f"LiteRT Interpreter(experimental_preserve_all_tensors=True) "
        f"(ai-edge-litert {metadata.version('ai-edge-litert')})")
COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED")


def _interpreter(path, preserve: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if preserve else OpResolverType.AUTO
    interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver,
                              experimental_preserve_all_tensors=preserve)
    interpreter.allocate_tensors()
    return interpreter


def _as_float(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if not scale:  # scale 0 marks a float tensor
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _feed(interpreter, photo: np.ndarray) -> None:
    detail = interpreter.get_input_details()[0]
    x = photo if tuple(detail["shape"]) == photo.shape else photo.transpose(0, 2, 3, 1)
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer):
        info = np.iinfo(detail["dtype"])
        x = np.clip(np.round(x / scale) + zero_point, info.min, info.max)
    interpreter.set_tensor(detail["index"], np.ascontiguousarray(x).astype(detail["dtype"]))


def _layer_outputs(path, photos) -> tuple[list, list]:
    """(op names, per layer a list of float outputs, one per photo) of the compute operators."""
    interpreter = _interpreter(path, preserve=True)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] in COMPUTE_OPS]  # no public op list
    outputs = [[] for _ in ops]
    for photo in photos:
        _feed(interpreter, photo)
        interpreter.invoke()
        for layer, op in enumerate(ops):
            detail = tensors[op["outputs"][0]]
            outputs[layer].append(_as_float(interpreter.get_tensor(detail["index"]), detail))
    return [(op["op_name"], tensors[op["outputs"][0]]["name"]) for op in ops], outputs


def _label(tensor_name: str) -> str:
    """'…/InvertedResidual_3/torch.nn.modules.container.Sequential_conv/…Conv2d_1;2' ->
    'InvertedResidual_3/Sequential_conv/Conv2d_1': the module path the converter recorded."""
    last = re.sub(r";\d*$", "", tensor_name.split(";;")[-1])
    parts = [p.rsplit(".", 1)[-1] for p in last.split("/")[1:]]
    return "/".join(p for p in parts if not p.startswith("Sequential_features")) or tensor_name[:60]


def _logits(path, photos) -> list:
    interpreter = _interpreter(path, preserve=False)
    out = interpreter.get_output_details()[0]
    results = []
    for photo in photos:
        _feed(interpreter, photo)
        interpreter.invoke()
        results.append(_as_float(interpreter.get_tensor(out["index"]), out))
    return results


def measure(variant, artifact, inputs) -> QuantizationError:
    from mobilenet.registry import VARIANTS
    models_dir, photos = inputs.models_dir, inputs.photos
    fp32_variant = next(v for v in VARIANTS if v.runtime == variant.runtime and v.precision == "fp32")
    fp32_path = fp32_variant.artifact_path(models_dir)
    if not fp32_path.exists():
        raise FileNotFoundError(f"{fp32_path} is missing: the comparison needs the FP32 .tflite "
                                f"(run `invoke convert-litert`)")
    float_ops, float_outputs = _layer_outputs(fp32_path, photos)
    int8_ops, int8_outputs = _layer_outputs(artifact, photos)
    if [op for op, _ in float_ops] != [op for op, _ in int8_ops]:
        raise ValueError(f"{fp32_path.name} and {artifact.name} do not list the same compute operators "
                         "in the same order: layers cannot be matched")
    pairs = [(_label(name), op, f, q) for (op, name), f, q in zip(int8_ops, float_outputs, int8_outputs)]
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(int8_outputs[-1], _logits(artifact, photos)))
    return QuantizationError(
        variant=variant.id, runtime=variant.runtime, status=OK, reason="", tool=TOOL,
        reference=f"{fp32_path.name}, the same operators in float", photos=len(photos),
        layers=sqnr.layer_errors(pairs),
        fidelity=(f"builtin TFLite kernels (intermediate tensors do not survive the XNNPACK delegate); "
                  f"their logits differ from XNNPACK's by at most {gap:.2g} on these photos"))
