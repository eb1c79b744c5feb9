"""LiteRT (.tflite) builders: litert-torch conversion of the FP32 model, and PT2E INT8.

litert-torch lowers a torch.export program to a LiteRT flatbuffer; INT8 goes through PT2E
(prepare -> calibrate on real photos -> convert) with litert-torch's own quantizer, and the
converter turns the Q/DQ pairs into integer kernels. Both keep the PyTorch input layout
(NCHW float32 for FP32, NCHW int8 for INT8); the litert runner hides layout and dtype.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from mobilenet.logs import output_to_log
from mobilenet.measure.runners import RuntimeUnavailable
from mobilenet.tune import winners

# Compute ops reported when they run in float: a fully quantized model has none.
_COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN")


def _quiet_converter_env() -> None:
    # Read when TF/LiteRT native code and litert_torch's progress console first need them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def _import_litert_torch():
    _quiet_converter_env()
    try:
        import litert_torch
    except ImportError as exc:
        raise RuntimeUnavailable(f"litert-torch is not installed: {exc}") from exc
    return litert_torch


def _op_summary(path: Path) -> dict:
    """Op counts and the compute ops that still run in float, read back from the file."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise RuntimeUnavailable(f"ai-edge-litert is not installed: {exc}") from exc
    # Reading the graph needs no kernels: skip creating the XNNPACK delegate.
    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # no public API lists ops; used for checking only
    float_ops = Counter(op["op_name"] for op in ops
                        if op["op_name"] in _COMPUTE_OPS and op["outputs"]
                        and tensors[op["outputs"][0]]["dtype"].__name__ == "float32")
    inp = interpreter.get_input_details()[0]
    return {"ops": dict(Counter(op["op_name"] for op in ops)), "float_compute_ops": dict(float_ops),
            "input": f"{inp['dtype'].__name__}{list(int(d) for d in inp['shape'])}"}


def convert_fp32(ctx, out: Path) -> dict:
    import torch

    model, example = ctx.fp32_model(), ctx.example()
    started = time.perf_counter()
    with output_to_log(ctx.log, "litert-torch"):
        litert_torch = _import_litert_torch()
        with torch.no_grad():
            litert_torch.convert(model, (example,)).export(str(out))
    summary = _op_summary(out)
    ctx.log.debug("litert fp32: %.1f s, %s", time.perf_counter() - started, summary)
    return {"converter": "litert_torch.convert", "input_layout": "NCHW", "input": summary["input"]}


def _quantizer(observer: str, per_channel: bool = True):
    """litert-torch's PT2E quantizer, plus annotations for residual adds.

    Its "add" annotator finds adds by the source function recorded by export, which
    torch 2.14's export no longer records for operator.add; unannotated, an add whose
    output feeds the next residual add stays in float in the .tflite (dequantize, float
    ADD, quantize). Annotating aten.add nodes directly keeps every add int8.
    """
    import dataclasses

    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    if observer == "minmax":
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    elif observer != "histogram":
        raise ValueError(f"unknown activation observer {observer!r}")

    class Quantizer(PT2EQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            act = self.global_config.input_activation
            for node in model.graph.nodes:
                if node.target != torch.ops.aten.add.Tensor or "quantization_annotation" in node.meta:
                    continue
                inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
                if len(inputs) == 2:
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={a: act for a in inputs}, output_qspec=act, _annotated=True)
            return model

    return Quantizer().set_global(config)


def int8_settings(variant_options: dict | None = None, override: dict | None = None) -> dict:
    """The quantizer's settings (none depends on the instruction set: XNNPACK's int8 kernels take
    s8 x s8 on every CPU): the variant's options, then an override (a tune's setting or winner)."""
    defaults = {"per_channel": True,
                "activation_observer": (variant_options or {}).get("activation_observer", "minmax")}
    return winners.merged(defaults, override or {}, "litert-int8")


def resolved_settings(build_for, override: dict | None = None, variant=None) -> dict:
    """The settings an override gives (the same on every target): what `invoke tune` tells settings apart by."""
    return int8_settings(getattr(variant, "options", None), override)


def convert_int8(ctx, out: Path, override: dict | None = None, observer: str | None = None) -> dict:
    """PT2E INT8: per-channel symmetric weights, per-tensor activations from calibration; the
    override is what winners.applied gives (a tune's setting, else this target's winner, else none).

    Min/max activation ranges by default: litert-int8's `tuning` in mobilenet/registry.py says why.
    """
    import torch

    tuned = winners.applied(ctx, override)
    chosen = int8_settings(getattr(getattr(ctx, "variant", None), "options", None), tuned.override)
    observer = observer or chosen["activation_observer"]
    example = ctx.example()
    started = time.perf_counter()
    with output_to_log(ctx.log, "litert-torch"):
        litert_torch = _import_litert_torch()
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        quantizer = _quantizer(observer, chosen["per_channel"])
        graph = torch.export.export(ctx.fp32_model(), (example,)).module()
        prepared = prepare_pt2e(graph, quantizer)
    calibration_started = time.perf_counter()
    photos = ctx.calibrate(prepared)
    if not photos:
        raise ValueError("no calibration photos")
    calibration_s = time.perf_counter() - calibration_started
    with torch.no_grad(), output_to_log(ctx.log, "litert-torch"):
        # Weights stay float behind Q/DQ (as in litert-torch's own PT2E tests): the
        # converter folds them into int8 constants when it lowers the Q/DQ pattern.
        quantized = convert_pt2e(prepared, fold_quantize=False)
        litert_torch.convert(quantized, (example,),
                             quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(out))
    summary = _op_summary(out)
    ctx.log.debug("litert int8: calibration %.1f s on %d photos, total %.1f s, %s",
                  calibration_s, photos, time.perf_counter() - started, summary)
    if summary["float_compute_ops"].get("CONV_2D") or summary["float_compute_ops"].get("DEPTHWISE_CONV_2D"):
        raise RuntimeError(f"convolutions were not quantized: {summary}")
    return {"quantizer": "litert_torch PT2EQuantizer", "scheme": "symmetric int8",
            "per_channel": chosen["per_channel"], "activation_observer": observer, "calibration_photos": photos,
            "input_layout": "NCHW", "input": summary["input"],
            "float_compute_ops": summary["float_compute_ops"], winners.RECORD_KEY: tuned.record}
