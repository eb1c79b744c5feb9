"""Per-layer SQNR of the ONNX QDQ model with ONNX Runtime's qdq_loss_debug.

qdq_loss_debug matches activations by tensor name, so the FP32 side must be the graph the
INT8 model was quantized from: onnx-fp32.onnx after the same quant_pre_process the INT8
builder runs (mobilenet/builders/onnx.py), which fuses Conv+BN exactly as it did then.
qdq_loss_debug runs both graphs unoptimised (Q/DQ evaluated in float); how far that is from
the optimised integer kernels the bench runs is recorded as the fidelity.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime

from mobilenet.explain import sqnr
from mobilenet.explain.records import OK, QuantizationError

TOOL = f"onnxruntime.quantization.qdq_loss_debug (onnxruntime {onnxruntime.__version__})"


class _Photos:
    """The CalibrationDataReader protocol qdq_loss_debug iterates."""

    def __init__(self, input_name: str, photos):
        self._feeds = iter([{input_name: np.ascontiguousarray(p, dtype=np.float32)} for p in photos])

    def get_next(self):
        return next(self._feeds, None)

    def __iter__(self):
        return iter(self.get_next, None)


def _session(path: Path, level) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = level
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure(variant, artifact, inputs) -> QuantizationError:
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mobilenet.registry import VARIANTS
    models_dir, photos = inputs.models_dir, inputs.photos
    fp32_variant = next(v for v in VARIANTS if v.runtime == variant.runtime and v.precision == "fp32")
    fp32_path = fp32_variant.artifact_path(models_dir)
    if not fp32_path.exists():
        raise FileNotFoundError(f"{fp32_path} is missing: qdq_loss_debug needs the FP32 model "
                                f"(run `invoke convert-onnx`)")
    input_name = _session(Path(artifact), onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL).get_inputs()[0].name
    onnxruntime.set_default_logger_severity(3)
    with tempfile.TemporaryDirectory(prefix="explain-onnx.") as tmp:
        tmp = Path(tmp)
        prepared, float_aug, qdq_aug = tmp / "fp32-prepared.onnx", tmp / "fp32-aug.onnx", tmp / "int8-aug.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        modify_model_output_intermediate_tensors(str(prepared), str(float_aug))
        modify_model_output_intermediate_tensors(str(artifact), str(qdq_aug))
        float_acts = collect_activations(str(float_aug), _Photos(input_name, photos))
        qdq_acts = collect_activations(str(qdq_aug), _Photos(input_name, photos))
        matched = create_activation_matching(qdq_acts, float_acts)
        producers = _producers(onnx.load(str(prepared)).graph)
    names = sorted((n for n, m in matched.items() if m.get("float") and n in producers),
                   key=lambda n: producers[n][0])
    pairs = [(f"{producers[n][2]} → {n}", producers[n][1], matched[n]["float"], matched[n]["post_qdq"])
             for n in names]
    gap = _optimised_gap(Path(artifact), input_name, photos)
    return QuantizationError(
        variant=variant.id, runtime=variant.runtime, status=OK, reason="", tool=TOOL,
        reference=f"{fp32_path.name} after quant_pre_process (the graph the INT8 model was quantized from)",
        photos=len(photos), layers=sqnr.layer_errors(pairs),
        fidelity=(f"QDQ graph evaluated unoptimised (Q/DQ in float), as qdq_loss_debug does; its logits "
                  f"differ from the optimised integer kernels' by at most {gap:.2g} on these photos"))


def _producers(graph) -> dict:
    """tensor -> (node index, op type, label). A Clip or Relu right after a Conv is that
    convolution's activation (the QDQ model quantizes only its output), so it is labelled
    as the Conv, which lets the convolutions be told apart by order like everywhere else."""
    by_output = {out: node for node in graph.node for out in node.output}
    producers = {}
    for index, node in enumerate(graph.node):
        op, label = node.op_type, node.name
        source = by_output.get(node.input[0]) if node.input else None
        if op in ("Clip", "Relu") and source is not None and source.op_type == "Conv":
            op, label = "Conv", f"{source.name}+{node.op_type}"
        for out in node.output:
            producers[out] = (index, op, label)
    return producers


def _optimised_gap(artifact: Path, input_name: str, photos) -> float:
    plain = _session(artifact, onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)
    optimised = _session(artifact, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL)
    gaps = []
    for photo in photos:
        feed = {input_name: np.ascontiguousarray(photo, dtype=np.float32)}
        gaps.append(float(np.max(np.abs(plain.run(None, feed)[0] - optimised.run(None, feed)[0]))))
    return max(gaps)
