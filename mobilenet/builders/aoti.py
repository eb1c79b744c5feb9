"""AOTInductor builders: torch.export -> torch._inductor.aoti_compile_and_package -> one .pt2.

The package holds a shared library compiled here with the machine's C++ compiler (gcc):
the PyTorch artifact a device runs without Python model code. FP32 compiles the exported
FP32 graph. INT8 is PT2E post-training quantization with X86InductorQuantizer, calibrated
on the real calibration photos; Inductor's freezing passes then fuse each
dequantize -> conv -> quantize pattern into a oneDNN int8 convolution with prepacked weights.

Compiling is most of this step's cost, paid once at build time: g++ compiles AOTInductor's runtime
into every package, and the first package on a machine also fills Inductor's cache in /tmp.
torchao is imported inside the INT8 builder: the FP32 path has no use for it.
"""
from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

from mobilenet.build import target
from mobilenet.builders.pt2e import observer_name, with_activation_observer
from mobilenet.logs import output_to_log
from mobilenet.measure.runners import RuntimeUnavailable
from mobilenet.tune import winners

# FP32 compiles unfrozen (aoti-fp32's `tuning` in mobilenet/registry.py says why); INT8 needs
# freezing: the passes that fuse dequantize -> conv -> quantize into oneDNN int8 convolutions run in it.
FP32_INDUCTOR_CONFIGS: dict = {}
INT8_INDUCTOR_CONFIGS = {"freezing": True}
# Settings a tune may change that the defaults leave out, with the value the builder then uses.
IMPLICIT_SETTINGS = {"activation_observer": "histogram"}


def _compile(exported, out: Path, configs: dict, log) -> dict:
    import torch
    import torch._inductor
    started = time.perf_counter()
    # Inductor freezes only when gradients are off; with them on, `freezing` is ignored.
    with output_to_log(log, "aoti compile"), torch.no_grad():
        written = torch._inductor.aoti_compile_and_package(
            exported, package_path=str(out), inductor_configs=dict(configs))
    if Path(written).resolve() != Path(out).resolve() or not Path(out).is_file():
        raise RuntimeError(f"aoti_compile_and_package wrote {written}, expected {out}")
    compile_s = time.perf_counter() - started
    log.debug("aoti: compiled %s in %.1f s (%d bytes)", Path(out).name, compile_s, Path(out).stat().st_size)
    return {"compiler": "torch._inductor.aoti_compile_and_package", "inductor_configs": configs,
            "torch": torch.__version__, "compile_s": round(compile_s, 1)}


def _convolution_calls(package: Path) -> dict:
    """Convolutions the package's generated C++ calls: oneDNN int8 ones and float ones."""
    with zipfile.ZipFile(package) as archive:
        source = "".join(archive.read(name).decode("utf-8", errors="replace")
                         for name in archive.namelist() if name.endswith("wrapper.cpp"))
    return {"int8_convolutions": len(re.findall(r"\baoti_torch_cpu__qconv\w*\(", source)),
            "float_convolutions": len(re.findall(r"\baoti_torch_cpu_(?:mkldnn_)?_?convolution\w*\(", source))}


def compile_fp32(ctx, out: Path) -> dict:
    """FP32 AOTInductor package of the eager model, fixed input [1, 3, 224, 224]."""
    import torch
    example = ctx.example()
    with output_to_log(ctx.log, "torch.export"):
        exported = torch.export.export(ctx.fp32_model(), (example,))
    return {"export": "torch.export.export", "input_shape": list(example.shape),
            **_compile(exported, Path(out), FP32_INDUCTOR_CONFIGS, ctx.log)}


def _quantizer(reduce_range: bool, activation_observer: str = "histogram"):
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        # Importing the quantizer also registers torchao's x86 int8 fusion passes with Inductor.
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    except ImportError as exc:
        raise RuntimeUnavailable(f"torchao's X86InductorQuantizer: {exc}") from exc
    config = with_activation_observer(get_default_x86_inductor_quantization_config(reduce_range=reduce_range),
                                      activation_observer)
    return X86InductorQuantizer().set_global(config), config, prepare_pt2e, convert_pt2e


def int8_settings(choices, override: dict | None = None) -> dict:
    """The quantizer's settings for one target's choices (target.x86_inductor), with an override (a
    tune's setting or winner) applied; the default observer is aoti-int8's `tuning` in
    mobilenet/registry.py. The quantizer takes per-channel weights only (its int8 fusions expect them)."""
    settings = {"quantizer": "X86InductorQuantizer", "reduce_range": choices["reduce_range"]}
    return winners.merged(settings, override or {}, "aoti-int8", IMPLICIT_SETTINGS)


def resolved_settings(build_for, override: dict | None = None, variant=None) -> dict:
    """The settings an override gives on a target: what `invoke tune` tells settings apart by."""
    return int8_settings(target.x86_inductor(build_for), override)


def compile_int8(ctx, out: Path, override: dict | None = None) -> dict:
    """INT8 AOTInductor package: PT2E static PTQ with X86InductorQuantizer, then AOTInductor; the
    override is what winners.applied gives (a tune's setting, else this target's winner, else none)."""
    import torch
    choices = target.x86_inductor(target.build_target())
    tuned = winners.applied(ctx, override)
    settings = int8_settings(choices, tuned.override)
    quantizer, config, prepare_pt2e, convert_pt2e = _quantizer(
        settings["reduce_range"], settings.get("activation_observer", IMPLICIT_SETTINGS["activation_observer"]))
    example = ctx.example()
    with output_to_log(ctx.log, "pt2e prepare"):
        prepared = prepare_pt2e(torch.export.export(ctx.fp32_model(), (example,)).module(), quantizer)
    photos = ctx.calibrate(prepared)
    if photos == 0:
        raise ValueError("aoti int8: no calibration photos")
    with output_to_log(ctx.log, "pt2e convert + export"):
        exported = torch.export.export(convert_pt2e(prepared), (example,))
    compiled = _compile(exported, Path(out), INT8_INDUCTOR_CONFIGS, ctx.log)
    convolutions = _convolution_calls(Path(out))
    if convolutions["int8_convolutions"] == 0:
        raise RuntimeError(f"{Path(out).name}: Inductor fused no int8 convolution "
                           f"({convolutions['float_convolutions']} float ones): the package would run "
                           "dequantized weights through float kernels")
    return {"export": "torch.export.export", "input_shape": list(example.shape),
            "quantization": "pt2e static PTQ", **settings,
            "activations": f"uint8 [{config.input_activation.quant_min}, {config.input_activation.quant_max}] "
                           f"{config.input_activation.qscheme}".replace("torch.", ""),
            "weights": f"int8 {config.weight.qscheme}".replace("torch.", ""),
            "activation_observer_class": observer_name(config.input_activation),
            "calibration_photos": photos, **convolutions, **compiled,
            target.RECORD_KEY: winners.with_overridden_choices(choices.recorded(), tuned.override,
                                                               tuned.record["source"]),
            winners.RECORD_KEY: tuned.record}
