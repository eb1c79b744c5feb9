"""Per-layer SQNR of the torch.ao INT8 variants with the numeric suite (torch.ao.ns).

The numeric suite matches layers by module name, and a frozen TorchScript artifact has no
modules left. So the quantized nn.Module is rebuilt the way mobilenet/builders/torch_ao.py
builds it (quantizable MobileNet-V2, fused, the engine's qconfig, prepare, convert) and then
given the artifact's own numbers: every packed weight, bias, output scale and zero point is
read from the frozen graph, in execution order. No recalibration (which is slow and, with
histogram observers, not bit-reproducible); the rebuilt module's logits are compared with the
artifact's and the difference is recorded as the rebuild's fidelity.
"""
from __future__ import annotations

import numpy as np
import torch

from mobilenet.explain import sqnr
from mobilenet.explain.records import OK, QuantizationError

TOOL = f"torch.ao.ns._numeric_suite.compare_model_outputs (torch {torch.__version__})"


def fp32_model(models_dir, quantizable: bool = False):
    """MobileNet-V2 in eval mode with the build's FP32 weights (quantizable: torchvision's
    QuantStub-carrying variant that torch.ao quantizes)."""
    import torchvision
    from torchvision.models.quantization import mobilenet_v2 as quantizable_mobilenet_v2

    from mobilenet.registry import REFERENCE_ID, by_id
    model = quantizable_mobilenet_v2(weights=None, quantize=False) if quantizable \
        else torchvision.models.mobilenet_v2(weights=None)
    state = torch.load(by_id(REFERENCE_ID).artifact_path(models_dir), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def _graph_constant(node, index):
    return node.inputsAt(index).toIValue()


def rebuild_static(artifact, models_dir, engine: str, example: torch.Tensor):
    """(fused FP32 module, quantized module carrying the artifact's weights and qparams)."""
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    torch.backends.quantized.engine = engine
    float_model = fp32_model(models_dir, quantizable=True)
    float_model.fuse_model(is_qat=False)
    model = fp32_model(models_dir, quantizable=True)
    model.fuse_model(is_qat=False)
    model.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(model, inplace=True)
    with torch.no_grad():
        model(example)  # observers need one range each before convert builds the modules
    torch.ao.quantization.convert(model, inplace=True)

    graph = torch.jit.load(str(artifact), map_location="cpu").graph
    nodes = {kind: [n for n in graph.nodes() if n.kind() in kinds_]
             for kind, kinds_ in {"quant": ("aten::quantize_per_tensor",),
                                  "conv": ("quantized::conv2d", "quantized::conv2d_relu"),
                                  "add": ("quantized::add",), "linear": ("quantized::linear",)}.items()}
    modules = {"conv": [m for m in model.modules() if type(m) in (nnq.Conv2d, nniq.ConvReLU2d)],
               # every block has a skip_add; only residual blocks call it
               "add": [m.skip_add for m in model.modules() if getattr(m, "use_res_connect", False)],
               "linear": [m for m in model.modules() if type(m) is nnq.Linear]}
    for kind, found in modules.items():
        if len(found) != len(nodes[kind]):
            raise ValueError(f"{artifact}: {len(nodes[kind])} {kind} operators in the graph, "
                             f"{len(found)} in the rebuilt module: not the same network")
    (quant,) = nodes["quant"]
    model.quant.scale = torch.tensor([float(_graph_constant(quant, 1))])
    model.quant.zero_point = torch.tensor([int(_graph_constant(quant, 2))])
    for kind in ("conv", "linear"):
        for module, node in zip(modules[kind], nodes[kind]):
            weight, bias = _graph_constant(node, 1).unpack()
            module.set_weight_bias(weight, bias)
            module.scale, module.zero_point = float(_graph_constant(node, 2)), int(_graph_constant(node, 3))
    for module, node in zip(modules["add"], nodes["add"]):
        module.scale, module.zero_point = float(_graph_constant(node, 2)), int(_graph_constant(node, 3))
    return float_model, model


def rebuild_dynamic(models_dir, engine: str):
    """Dynamic quantization is deterministic (weights only, no calibration): redoing it
    gives the artifact's weights exactly."""
    torch.backends.quantized.engine = engine
    float_model = fp32_model(models_dir, quantizable=False)
    quantized = torch.ao.quantization.quantize_dynamic(fp32_model(models_dir, quantizable=False),
                                                       {torch.nn.Linear}, dtype=torch.qint8)
    return float_model, quantized


def _as_float(value):
    value = value[0] if isinstance(value, (list, tuple)) else value
    return (value.dequantize() if value.is_quantized else value).detach().numpy()


def measure(variant, artifact, inputs) -> QuantizationError:
    from torch.ao.ns._numeric_suite import (
        get_matching_activations,
        prepare_model_outputs,
    )

    models_dir, photos = inputs.models_dir, inputs.photos
    torch.set_num_threads(1)
    tensors = [torch.from_numpy(p) for p in photos]
    allow_list = None  # the numeric suite's default: every quantizable layer
    if variant.options.get("qconfig"):  # static PTQ: rebuilt from the artifact
        float_model, quantized = rebuild_static(artifact, models_dir, variant.engine, tensors[0])
        reference = "the fused FP32 module (same weights, Conv+BN+ReLU fused as before quantization)"
    else:
        float_model, quantized = rebuild_dynamic(models_dir, variant.engine)
        reference = "the FP32 module"
        # Only nn.Linear is quantized; every other layer is the FP32 one, identical.
        allow_list = {torch.nn.Linear, torch.ao.nn.quantized.dynamic.Linear}
    shipped = torch.jit.load(str(artifact), map_location="cpu").eval()
    with torch.no_grad():
        gap = max(float((shipped(x) - quantized(x)).abs().max()) for x in tensors)
    prepare_model_outputs(float_model, quantized, allow_list=allow_list)
    with torch.no_grad():
        for x in tensors:
            float_model(x)
            quantized(x)
    matched = get_matching_activations(float_model, quantized)
    # Logger names are module paths plus ".stats"; module order is forward order here.
    order = {name: i for i, (name, _) in enumerate(quantized.named_modules())}
    names = sorted(matched, key=lambda key: order.get(key.rsplit(".", 1)[0], len(order)))
    pairs = []
    for key in names:
        module_name = key.rsplit(".", 1)[0]
        module = quantized.get_submodule(module_name)
        pairs.append((module_name, _op_name(module),
                      _one_per_photo(key, [_as_float(v) for v in matched[key]["float"]], len(tensors)),
                      _one_per_photo(key, [_as_float(v) for v in matched[key]["quantized"]], len(tensors))))
    return QuantizationError(
        variant=variant.id, runtime=variant.runtime, status=OK, reason="", tool=TOOL, reference=reference,
        photos=len(photos), layers=sqnr.layer_errors(pairs),
        fidelity=(f"quantized nn.Module rebuilt with the artifact's weights and qparams; its logits differ "
                  f"from the shipped artifact's by at most {gap:.2g} on these photos"))


def _one_per_photo(layer: str, values: list, photos: int) -> list:
    """The logger's values, one per photo. On a fused FP32 module (ConvReLU2d) torch 2.14's
    prepare hooks the same OutputLogger twice, so each photo is logged twice, identically."""
    if len(values) == photos:
        return values
    repeat = len(values) // photos
    if repeat * photos == len(values) and all(
            np.array_equal(values[i], values[i - i % repeat]) for i in range(len(values))):
        return values[::repeat]
    raise ValueError(f"numeric suite logged {len(values)} outputs of {layer} for {photos} photos")


def _op_name(module) -> str:
    """A name kinds.classify_call understands: convolutions are told apart by order."""
    name = type(module).__name__.lower()
    if name in ("quantize", "quantstub"):
        return "quantize_per_tensor"
    if "conv" in name:
        return "conv"
    if "functional" in name:
        return "add"
    if "linear" in name:
        return "linear"
    return name
