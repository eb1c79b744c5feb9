"""Per-layer SQNR of the ExecuTorch INT8 program, measured inside the XNNPACK runtime.

The shipped .pte delegates the whole graph to XNNPACK, so ETDump (and the Inspector's
numeric gap, which compares against the same quantized graph, not FP32) sees one delegate
output and no layer. ExecuTorch's own numerical debugger,
executorch.devtools.intermediate_output_tap, makes chosen intermediate tensors extra outputs
that survive partitioning: the XNNPACK delegate still runs every operator and hands back
each layer's INT8 output. That needs the quantized program before lowering, which the
.pte no longer holds, so it is rebuilt as mobilenet/convert_executorch.py builds it (PT2E,
XNNPACKQuantizer, the same calibration photos); the rebuilt program's logits are compared
with the shipped .pte's and the difference recorded as the fidelity. The FP32 side is the
exported FP32 graph run in PyTorch, layer for layer (PT2E keeps the node names).
"""
from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import numpy as np

from mobilenet.explain import sqnr
from mobilenet.explain.records import OK, QuantizationError
from mobilenet.logs import output_to_log

TOOL = (f"executorch.devtools.intermediate_output_tap through the XNNPACK delegate "
        f"(executorch {metadata.version('executorch')})")
log = logging.getLogger("mobilenet.explain")

_ACTIVATIONS = ("hardtanh", "relu")


def quantized_program(fp32_model, example, calibration):
    """The PT2E INT8 ExportedProgram, made exactly as the executorch-int8 builder makes it."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(fp32_model, (example,)).module(), quantizer)
    with torch.no_grad():
        for photo in calibration:
            prepared(torch.from_numpy(photo))
    return torch.export.export(convert_pt2e(prepared), (example,))


def _layer_taps(graph) -> list:
    """(dequantize node to tap, compute node it dequantizes) for every layer output: the
    value the next layer reads, once per quantized tensor."""
    taps, seen = [], set()
    for node in graph.nodes:
        if node.op != "call_function" or "dequantize_per_tensor" not in str(node.target):
            continue
        quantize = node.args[0]
        if not (hasattr(quantize, "target") and "quantize_per_tensor" in str(quantize.target)):
            continue
        source = quantize.args[0]
        if getattr(source, "op", None) != "call_function" or quantize in seen:
            continue
        seen.add(quantize)
        taps.append((node, source))
    return taps


def _op_name(source) -> str:
    """What kinds.classify_call should see: an activation right after a convolution is that
    convolution's output, so convolutions keep their order."""
    target = str(source.target)
    if any(a in target for a in _ACTIVATIONS):
        inner = source.args[0]
        if hasattr(inner, "target") and "conv" in str(inner.target):
            return str(inner.target)
    return target


def _fp32_outputs(exported, names: set, photo):
    import torch

    values = {}

    class Capture(torch.fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            if node.name in names:
                values[node.name] = result.detach().numpy().copy()
            return result

    with torch.no_grad():
        Capture(exported.module()).run(torch.from_numpy(photo))
    return values


def measure(variant, artifact, inputs) -> QuantizationError:
    import copy

    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.intermediate_output_tap import FULL_TENSOR, strip_taps_, tap_intermediate_outputs_
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from mobilenet.explain.numerics.torch_ao import fp32_model
    models_dir, photos, calibration = inputs.models_dir, inputs.photos, inputs.calibration()
    if not calibration:
        raise ValueError(f"{inputs.calibration_npy} holds no photos: rebuilding the INT8 program needs "
                         "the build's calibration photos")
    example = torch.from_numpy(calibration[0])
    with output_to_log(log, "executorch int8 rebuild"):
        model = fp32_model(models_dir)
        fp32_exported = torch.export.export(copy.deepcopy(model), (example,))
        exported = quantized_program(model, example, calibration)
        taps = _layer_taps(exported.graph)
        chosen = {dq for dq, _ in taps}
        exported, specs = tap_intermediate_outputs_(exported, [(lambda n: n in chosen, FULL_TENSOR)])
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        strip_taps_(edge)
        buffer = edge.to_executorch().buffer
        runtime = Runtime.get()
        tapped = runtime.load_program(buffer).load_method("forward")
        shipped = runtime.load_program(Path(artifact)).load_method("forward")
    by_dq = {spec.node_name: spec.output_index for spec in specs}
    names = [source.name for _, source in taps]
    int8 = [[] for _ in taps]
    fp32 = [[] for _ in taps]
    gap = 0.0
    for photo in photos:
        x = torch.from_numpy(np.ascontiguousarray(photo, dtype=np.float32))
        outputs = tapped.execute((x,))
        gap = max(gap, float((outputs[0] - shipped.execute((x,))[0]).abs().max()))
        reference = _fp32_outputs(fp32_exported, set(names), photo)
        missing = [name for name in names if name not in reference]
        if missing:
            raise ValueError(f"layers {', '.join(missing[:5])} of the INT8 graph have no FP32 node of the "
                             "same name: the two exports no longer line up")
        for layer, (dq, source) in enumerate(taps):
            int8[layer].append(outputs[by_dq[dq.name]].numpy())
            fp32[layer].append(reference[source.name])
    pairs = [(source.name, _op_name(source), f, q) for (_, source), f, q in zip(taps, fp32, int8)]
    return QuantizationError(
        variant=variant.id, runtime=variant.runtime, status=OK, reason="", tool=TOOL,
        reference="the exported FP32 graph, run in PyTorch (same node names)", photos=len(photos),
        layers=sqnr.layer_errors(pairs),
        fidelity=(f"INT8 program rebuilt with the builder's quantizer and calibration photos, taps added; "
                  f"its logits differ from the shipped .pte's by at most {gap:.2g} on these photos"))
