"""INT8 with torch.ao.quantization (deprecated in torch 2.14, still the seed's path)."""
from __future__ import annotations

from pathlib import Path

import torch

from mobilenet.build import target
from mobilenet.tune import winners

# Settings a tune may change that the defaults leave out, with the value the builder then uses.
IMPLICIT_SETTINGS = {"activation_observer": "histogram"}


def dynamic(ctx, out: Path) -> dict:
    """Dynamic quantization only covers nn.Linear here: MobileNet-V2's convolutions stay FP32,
    so expect the classifier's weights to shrink and little speed-up."""
    torch.backends.quantized.engine = ctx.variant.engine
    quantized = torch.ao.quantization.quantize_dynamic(ctx.fp32_model(), {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        traced = torch.jit.trace(quantized, ctx.example())
    torch.jit.freeze(traced.eval()).save(str(out))
    return {"layers": "nn.Linear", "dtype": "qint8", "engine": ctx.variant.engine}


def int8_settings(choices, override: dict | None = None) -> dict:
    """The engine's qconfig settings for one target's choices (target.torch_ao), with an override
    (a tune's setting or winner) applied; the default activation observer is the qconfig's histogram."""
    return winners.merged({"reduce_range": choices["reduce_range"]}, override or {},
                          choices.toolkit, IMPLICIT_SETTINGS)


def resolved_settings(build_for, override: dict | None = None, variant=None) -> dict:
    """The settings an override gives on a target: what `invoke tune` tells settings apart by."""
    return int8_settings(target.torch_ao(variant.engine, build_for), override)


def static(ctx, out: Path, override: dict | None = None) -> dict:
    """Post-training static quantization with fused Conv+BN+ReLU, calibrated on real photos; the
    override is what winners.applied gives (a tune's setting, else this target's winner, else none).

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
    tuned = winners.applied(ctx, override)
    settings = int8_settings(choices, tuned.override)
    qconfig = torch.ao.quantization.get_default_qconfig(engine)
    activation = qconfig.activation
    if settings.get("activation_observer", IMPLICIT_SETTINGS["activation_observer"]) == "minmax":
        activation = torch.ao.quantization.MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    # The engine's default qconfig with the target's reduce_range (today's rules keep each default's).
    model.qconfig = qconfig._replace(activation=activation.with_args(reduce_range=settings["reduce_range"]))
    torch.ao.quantization.prepare(model, inplace=True)
    photos = ctx.calibrate(model)
    torch.ao.quantization.convert(model, inplace=True)
    with torch.no_grad():
        traced = torch.jit.trace(model, ctx.example())
    torch.jit.freeze(traced.eval()).save(str(out))
    return {"engine": engine, "qconfig": f"get_default_qconfig({engine!r})", **settings,
            "calibration_photos": photos, "fusion": "Conv+BN+ReLU (fuse_model)",
            target.RECORD_KEY: winners.with_overridden_choices(choices.recorded(), tuned.override,
                                                               tuned.record["source"]),
            winners.RECORD_KEY: tuned.record}
