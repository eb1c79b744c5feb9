"""ExecuTorch (.pte) builders: torch.export -> edge dialect -> XNNPACK delegate.

FP32 lowers the exported FP32 graph as it is. INT8 is PT2E post-training quantization:
XNNPACKQuantizer (per-channel symmetric int8 weights, per-tensor int8 activations,
histogram-calibrated on the real calibration photos), then the same lowering, so the
XNNPACK delegate runs the quantized operators itself.

executorch is imported inside the builders: importing it pulls in torchao and the
pybindings, which the other build steps have no use for.
"""
from __future__ import annotations

import logging
import time
from importlib import metadata
from pathlib import Path

from mobilenet.builders.pt2e import observer_name, with_activation_observer
from mobilenet.files import atomic_path
from mobilenet.logs import output_to_log
from mobilenet.measure.runners import RuntimeUnavailable
from mobilenet.tune import winners

# The XNNPACK delegate is expected to take the whole network; a call_function left in the
# lowered graph other than these means part of it runs on ExecuTorch's portable kernels.
_DELEGATE_GLUE = ("executorch_call_delegate", "getitem")


def _executorch_version() -> str:
    try:
        return metadata.version("executorch")
    except metadata.PackageNotFoundError:
        return "unknown"


def _import_lowering(log: logging.Logger):
    try:
        with output_to_log(log, "executorch import"):
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
                XnnpackPartitioner,
            )
            from executorch.exir import to_edge_transform_and_lower
    except ImportError as exc:
        raise RuntimeUnavailable(f"executorch: {exc}") from exc
    return to_edge_transform_and_lower, XnnpackPartitioner


def _lower_and_write(exported, out: Path, log: logging.Logger) -> dict:
    """Lower an ExportedProgram to XNNPACK, write the .pte; report what was not delegated."""
    to_edge_transform_and_lower, xnnpack_partitioner = _import_lowering(log)
    with output_to_log(log, "executorch lowering"):
        edge = to_edge_transform_and_lower(exported, partitioner=[xnnpack_partitioner()])
        program = edge.to_executorch()
    graph = edge.exported_program().graph
    delegates = sum(1 for n in graph.nodes if n.op == "call_function"
                    and getattr(n.target, "__name__", "") == "executorch_call_delegate")
    undelegated = sorted({str(n.target) for n in graph.nodes if n.op == "call_function"
                          and not any(g in str(n.target) for g in _DELEGATE_GLUE)})
    if undelegated:
        log.warning("executorch: not delegated to XNNPACK (runs on portable kernels): %s",
                    ", ".join(undelegated))
    Path(out).write_bytes(program.buffer)
    return {"executorch": _executorch_version(), "delegate": "xnnpack",
            "partitioner": "XnnpackPartitioner", "xnnpack_subgraphs": delegates,
            "undelegated_ops": undelegated}


def int8_settings(override: dict | None = None) -> dict:
    """XNNPACKQuantizer's settings (none depends on the instruction set: XNNPACK's int8 kernels take
    s8 x s8 on every CPU), with an override (a tune's setting or winner) applied."""
    return winners.merged({"per_channel": True, "activation_observer": "histogram"}, override or {},
                          "executorch-int8")


def resolved_settings(build_for, override: dict | None = None, variant=None) -> dict:
    """The settings an override gives (the same on every target): what `invoke tune` tells settings apart by."""
    return int8_settings(override)


def export_fp32(ctx, out: Path) -> dict:
    import torch
    _import_lowering(ctx.log)  # fail as unavailable before spending time on the export
    model, example = ctx.fp32_model(), ctx.example()
    with output_to_log(ctx.log, "torch.export"):
        exported = torch.export.export(model, (example,))
    return {"export": "torch.export.export", **_lower_and_write(exported, out, ctx.log)}


def export_int8(ctx, out: Path, override: dict | None = None) -> dict:
    """PT2E INT8 lowered to XNNPACK; the override is what winners.applied gives (a tune's setting,
    else this target's winner, else none)."""
    import torch
    _import_lowering(ctx.log)
    try:
        with output_to_log(ctx.log, "quantizer import"):
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import (
                convert_pt2e,
                prepare_pt2e,
            )
    except ImportError as exc:
        raise RuntimeUnavailable(f"executorch/torchao quantizer: {exc}") from exc

    model, example = ctx.fp32_model(), ctx.example()
    tuned = winners.applied(ctx, override)
    chosen = int8_settings(tuned.override)
    config = with_activation_observer(get_symmetric_quantization_config(is_per_channel=chosen["per_channel"]),
                                      chosen["activation_observer"])
    quantizer = XNNPACKQuantizer().set_global(config)
    with output_to_log(ctx.log, "pt2e prepare"):
        prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)

    started = time.perf_counter()
    photos = ctx.calibrate(prepared)
    if photos == 0:
        raise ValueError("executorch int8: no calibration photos")
    ctx.log.debug("executorch int8: calibrated on %d photos in %.1f s", photos,
                  time.perf_counter() - started)

    with output_to_log(ctx.log, "pt2e convert + export"):
        quantized = convert_pt2e(prepared)
        exported = torch.export.export(quantized, (example,))
    settings = {
        "export": "torch.export.export", "quantization": "pt2e static PTQ",
        "quantizer": "XNNPACKQuantizer",
        "config": f"get_symmetric_quantization_config(is_per_channel={chosen['per_channel']})",
        "per_channel": chosen["per_channel"],
        "weights": f"int8 {config.weight.qscheme}".replace("torch.", ""),
        "activations": f"int8 {config.input_activation.qscheme}".replace("torch.", ""),
        "weight_observer": observer_name(config.weight),
        "activation_observer": observer_name(config.input_activation),
        "calibration_photos": photos, winners.RECORD_KEY: tuned.record,
    }
    written = _lower_and_write(exported, out, ctx.log)
    # Kept for `invoke explain`, whose layer-by-layer comparison needs the program before
    # lowering: without it, explain rebuilds and recalibrates it. Not an artifact: a
    # device never gets it, and the variant's size is the .pte's alone. A tune's grid setting
    # (an override handed in) is never explained, so it keeps none.
    if override is None:
        with atomic_path(pt2e_program_path(ctx.variant.artifact_path(ctx.settings.models_dir))) as program:
            torch.export.save(exported, str(program))
    return {**settings, **written}


def pt2e_program_path(artifact: Path) -> Path:
    """Where the executorch-int8 builder keeps its PT2E program, beside the .pte
    (executorch-int8.quantized.pt2)."""
    return Path(artifact).with_suffix(".quantized.pt2")
