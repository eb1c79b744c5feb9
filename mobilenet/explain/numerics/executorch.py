"""Per-layer SQNR of the ExecuTorch INT8 program, layer by layer, against FP32.

The shipped .pte delegates the whole graph to XNNPACK: ETDump sees one delegate output and
no layer, and the Inspector's numeric gap compares the runtime with the same quantized
graph, not with FP32, at delegate boundaries only (one, here). ExecuTorch's
intermediate_output_tap can pull layers out through the delegate, but on executorch 1.5.1
lowering a tapped MobileNet-V2 fails in XNNPACK's ChannelsLastTaggedReshapePass. So the
comparison is made one step earlier, on the PT2E program the .pte is lowered from: rebuilt
as mobilenet/builders/executorch.py builds it (XNNPACKQuantizer, the same calibration photos)
and run in PyTorch with its Q/DQ pairs in float, as ONNX Runtime's qdq_loss_debug does. How
far that is from the XNNPACK kernels is measured: the rebuilt program's logits against the
shipped .pte's, recorded as the fidelity. The FP32 side is the exported FP32 graph; PT2E
keeps node names, so layers match by name.
"""
from __future__ import annotations

import logging
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from mobilenet.builders.executorch import pt2e_program_path
from mobilenet.explain import sqnr
from mobilenet.explain.records import OK, QuantizationError
from mobilenet.logs import output_to_log

TOOL = (f"PT2E program before lowering vs the FP32 export, fidelity checked against the .pte "
        f"(executorch {metadata.version('executorch')})")
log = logging.getLogger("mobilenet.explain")

_ACTIVATIONS = ("hardtanh", "relu")


def quantized_program(fp32_model, example, calibration):
    """The PT2E INT8 ExportedProgram, made exactly as the executorch-int8 builder makes it."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(fp32_model, (example,)).module(), quantizer)
    with torch.no_grad():
        for photo in calibration:
            prepared(torch.from_numpy(photo))
    return torch.export.export(convert_pt2e(prepared), (example,))


def _layer_taps(graph) -> list:
    """(dequantize node, compute node it dequantizes) for every layer output: the value the
    next layer reads, once per quantized tensor. A convolution fused with its ReLU6 is
    quantized with the activation's range, so its layer output is the activation's."""
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
        if any(any(a in str(user.target) for a in _ACTIVATIONS) for user in node.users):
            continue
        taps.append((node, source))
    return taps


def _producer(node):
    """The compute node behind a chain of quantize/dequantize nodes."""
    while hasattr(node, "target") and "quantize_per_tensor" in str(node.target):
        node = node.args[0]
    return node


def _op_name(source) -> str:
    """What kinds.classify_call should see: an activation right after a convolution is that
    convolution's output, so convolutions keep their order."""
    target = str(source.target)
    if any(a in target for a in _ACTIVATIONS):
        inner = _producer(source.args[0])
        if hasattr(inner, "target") and "conv" in str(inner.target):
            return str(inner.target)
    return target


def _fp32_layer_output(node):
    """The FP32 node holding the same layer output: PT2E folds batch norm into the
    convolution before quantizing, so an FP32 convolution's output is its batch norm's."""
    while len(node.users) == 1:
        (user,) = node.users
        if "batch_norm" in str(user.target) or (str(user.target) == "<built-in function getitem>"
                                                 and "batch_norm" in str(node.target)):
            node = user
        else:
            break
    return node


def _run_capturing(graph_module, names: set, photo) -> dict:
    """Run a graph module on one photo; return the outputs of the nodes named `names`."""
    import torch

    values = {}

    class Capture(torch.fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            if node.name in names:
                values[node.name] = result.detach().numpy().copy()
            return result

    with torch.no_grad():
        values["__output__"] = Capture(graph_module).run(torch.from_numpy(photo))
    return values


def measure(variant, artifact, inputs) -> QuantizationError:
    import copy

    import torch
    from executorch.runtime import Runtime

    from mobilenet.explain.numerics.torch_ao import fp32_model
    models_dir, photos = inputs.models_dir, inputs.photos
    saved = pt2e_program_path(artifact)
    example = torch.from_numpy(photos[0])
    with output_to_log(log, "executorch int8 program"):
        model = fp32_model(models_dir)
        fp32_graph = torch.export.export(copy.deepcopy(model), (example,)).module()
        started = time.perf_counter()
        if saved.exists():
            int8_graph = torch.export.load(str(saved)).module()
            origin = f"the builder's own PT2E program ({saved.name})"
        else:
            calibration = inputs.calibration()
            if not calibration:
                raise ValueError(f"{inputs.calibration_npy} holds no photos and {saved.name} does not exist: "
                                 "the INT8 program cannot be rebuilt")
            int8_graph = quantized_program(model, example, calibration).module()
            origin = (f"the INT8 program rebuilt as the builder makes it ({len(calibration)} calibration photos; "
                      f"{saved.name} was not kept by the build)")
        log.info("executorch-int8 program from %s in %.1f s", origin, time.perf_counter() - started)
        shipped = Runtime.get().load_program(Path(artifact)).load_method("forward")
    taps = _layer_taps(int8_graph.graph)
    fp32_nodes = {n.name: n for n in fp32_graph.graph.nodes}
    missing = [source.name for _, source in taps if source.name not in fp32_nodes]
    if missing:
        raise ValueError(f"layers {', '.join(missing[:5])} of the INT8 graph have no FP32 node of the same "
                         "name: the two exports no longer line up")
    fp32_of = {source.name: _fp32_layer_output(fp32_nodes[source.name]).name for _, source in taps}
    int8, fp32 = [[] for _ in taps], [[] for _ in taps]
    gap = 0.0
    for photo in photos:
        quantized = _run_capturing(int8_graph, {dq.name for dq, _ in taps}, photo)
        reference = _run_capturing(fp32_graph, set(fp32_of.values()), photo)
        runtime_logits = shipped.execute((torch.from_numpy(np.ascontiguousarray(photo)),))[0]
        gap = max(gap, float((quantized["__output__"][0] - runtime_logits).abs().max()))
        for layer, (dq, source) in enumerate(taps):
            int8[layer].append(quantized[dq.name])
            fp32[layer].append(reference[fp32_of[source.name]])
    pairs = [(source.name, _op_name(source), f, q) for (_, source), f, q in zip(taps, fp32, int8)]
    return QuantizationError(
        variant=variant.id, runtime=variant.runtime, status=OK, reason="", tool=TOOL,
        reference="the exported FP32 graph (same node names), run in PyTorch", photos=len(photos),
        layers=sqnr.layer_errors(pairs),
        fidelity=(f"{origin}, run before lowering (Q/DQ in float), since the shipped .pte delegates the whole "
                  f"graph to XNNPACK and exposes no layer; its logits differ from the shipped .pte's by at most "
                  f"{gap:.2g} on these photos"))
