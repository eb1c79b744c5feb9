"""INT8 with torch.ao.quantization (deprecated in torch 2.14, still the seed's path)."""
from __future__ import annotations

from pathlib import Path

import torch

from mobilenet.build import target


def dynamic(ctx, out: Path) -> dict:
    """Dynamic quantization only covers nn.Linear here: MobileNet-V2's convolutions stay FP32,
    so expect the classifier's weights to shrink and little speed-up."""
    torch.backends.quantized.engine = ctx.variant.engine
    quantized = torch.ao.quantization.quantize_dynamic(ctx.fp32_model(), {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        traced = torch.jit.trace(quantized, ctx.example())
    torch.jit.freeze(traced.eval()).save(str(out))
    return {"layers": "nn.Linear", "dtype": "qint8", "engine": ctx.variant.engine}


def static(ctx, out: Path) -> dict:
    """Post-training static quantization with fused Conv+BN+ReLU, calibrated on real photos.

    The engine must be set before prepare/convert: observers and packed weights follow it,
    and the artifact only runs correctly under the same engine.
    """
    from torchvision.models.quantization import mobilenet_v2 as quantizable_mobilenet_v2

    engine = ctx.variant.engine
    torch.backends.quantized.engine = engine
    model = quantizable_mobilenet_v2(weights=None, quantize=False)
    model.load_state_dict(ctx.fp32_model().state_dict())
    model.eval()
    model.fuse_model(is_qat=False)
    choices = target.torch_ao(engine, target.build_target())
    qconfig = torch.ao.quantization.get_default_qconfig(engine)
    # The engine's default qconfig with the target's reduce_range (today's rules keep each default's).
    model.qconfig = qconfig._replace(activation=qconfig.activation.with_args(reduce_range=choices["reduce_range"]))
    torch.ao.quantization.prepare(model, inplace=True)
    photos = ctx.calibrate(model)
    torch.ao.quantization.convert(model, inplace=True)
    with torch.no_grad():
        traced = torch.jit.trace(model, ctx.example())
    torch.jit.freeze(traced.eval()).save(str(out))
    return {"engine": engine, "qconfig": f"get_default_qconfig({engine!r})",
            "reduce_range": choices["reduce_range"], "calibration_photos": photos,
            "fusion": "Conv+BN+ReLU (fuse_model)", target.RECORD_KEY: choices.recorded()}
