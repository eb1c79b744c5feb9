"""The registry: the single place a variant exists.

Tasks, bench, tests and report all read VARIANTS. A variant names the runtime that runs
it (a module in mobilenet/runners), the artifact it is stored in, the build step (task)
that makes it and the function that builds it.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE_ID = "fp32-eager"


@dataclass(frozen=True)
class Variant:
    id: str
    runtime: str  # module name under mobilenet/runners
    precision: str  # "fp32" or "int8"
    artifact: str  # file name under build/models
    step: str  # the task that builds it
    builder: str  # "module:function" called by mobilenet.build.step
    summary: str
    runner: dict = field(default_factory=dict, hash=False)  # keyword options for the runtime's Runner
    options: dict = field(default_factory=dict, hash=False)  # builder settings, recorded in results
    deprecated: str | None = None  # why it is deprecated and what replaces it
    tuning: str | None = None  # for INT8: what was tried and why these settings won
    companions: tuple[str, ...] = ()  # suffixes of files the artifact needs beside it (".bin")

    @property
    def engine(self) -> str | None:
        """The torch quantized engine the artifact needs, for the torch runners (None elsewhere)."""
        return self.runner.get("engine")

    def artifact_path(self, models_dir: Path) -> Path:
        return Path(models_dir) / self.artifact

    def artifact_files(self, models_dir: Path) -> list[Path]:
        """Every file a device ships for this variant: the artifact, then its companions."""
        primary = self.artifact_path(models_dir)
        return [primary, *(primary.with_suffix(suffix) for suffix in self.companions)]

    def meta_path(self, models_dir: Path) -> Path:
        return Path(models_dir) / f"{self.id}.meta.json"


TORCHSCRIPT_DEPRECATED = (
    "TorchScript (torch.jit.trace/script) is deprecated in torch 2.14; "
    "torch.export is its replacement, deployed with ExecuTorch."
)
LITE_DEPRECATED = (
    "PyTorch Mobile's lite interpreter is deprecated; ExecuTorch (.pte) replaces it."
)
AO_DEPRECATED = (
    "torch.ao.quantization (eager-mode/FX quantization) is deprecated; PT2E quantization "
    "(torch.export + torchao's pt2e quantizers, e.g. XNNPACKQuantizer) replaces it."
)

VARIANTS: tuple[Variant, ...] = (
    Variant("fp32-eager", "torch_eager", "fp32", "fp32-eager.pth", "export",
            "mobilenet.builders.torch_export:save_state_dict", "torchvision nn.Module, eager mode (the reference)"),
    Variant("fp32-torchscript", "torchscript", "fp32", "fp32-torchscript.pt", "export",
            "mobilenet.builders.torch_export:torchscript", "torch.jit.trace, frozen",
            deprecated=TORCHSCRIPT_DEPRECATED),
    Variant("fp32-mobile", "lite_interpreter", "fp32", "fp32-mobile.ptl", "export",
            "mobilenet.builders.torch_export:lite_interpreter", "PyTorch Mobile, lite interpreter (.ptl)",
            deprecated=LITE_DEPRECATED),
    Variant("int8-dynamic", "torchscript", "int8", "int8-dynamic.pt", "quantize-dynamic",
            "mobilenet.builders.torch_ao:dynamic", "torch.ao dynamic quantization (Linear layers), TorchScript",
            runner={"engine": "x86"}, deprecated=AO_DEPRECATED,
            tuning="only nn.Linear is quantized (dynamic quantization has no conv kernels), "
                   "so the convolutions stay FP32: smaller file, little speed-up."),
    Variant("int8-static-fbgemm", "torchscript", "int8", "int8-static-fbgemm.pt", "quantize-static",
            "mobilenet.builders.torch_ao:static", "torch.ao static PTQ, x86 fbgemm engine, TorchScript",
            runner={"engine": "fbgemm"}, options={"qconfig": "fbgemm", "per_channel": True},
            deprecated=AO_DEPRECATED,
            tuning="Conv+BN+ReLU fused, the engine's default qconfig (per-channel weights, "
                   "histogram activations, reduce_range for x86), 50 calibration photos."),
    Variant("int8-static-qnnpack", "torchscript", "int8", "int8-static-qnnpack.pt", "quantize-static",
            "mobilenet.builders.torch_ao:static", "torch.ao static PTQ, ARM qnnpack engine, TorchScript",
            runner={"engine": "qnnpack"}, options={"qconfig": "qnnpack", "per_channel": False},
            deprecated=AO_DEPRECATED,
            tuning="Conv+BN+ReLU fused, qnnpack's default qconfig (per-tensor weights), "
                   "50 calibration photos; qnnpack's kernels target ARM, so x86 timings undersell it."),
    Variant("onnx-fp32", "onnxruntime", "fp32", "onnx-fp32.onnx", "convert-onnx",
            "mobilenet.builders.onnx:export_fp32", "torch.onnx.export (dynamo), ONNX Runtime CPU"),
    Variant("onnx-int8", "onnxruntime", "int8", "onnx-int8.onnx", "convert-onnx",
            "mobilenet.builders.onnx:quantize_int8", "ONNX Runtime static QDQ INT8, ONNX Runtime CPU",
            tuning="30 settings compared on 200 photos: U8 activations x S8 per-channel weights "
                   "saturate on AVX2 without VNNI (85 % agreement) unless reduce_range (93.5 % "
                   "MinMax, 95 % Percentile 99.999: chosen); S8/S8 as accurate but slower; U8/U8 "
                   "97 % but 3.5x slower than FP32."),
    Variant("litert-fp32", "litert", "fp32", "litert-fp32.tflite", "convert-litert",
            "mobilenet.builders.litert:convert_fp32", "litert-torch, LiteRT interpreter (XNNPACK)"),
    Variant("litert-int8", "litert", "int8", "litert-int8.tflite", "convert-litert",
            "mobilenet.builders.litert:convert_int8", "litert-torch PT2E INT8, LiteRT interpreter (XNNPACK)",
            tuning="PT2E symmetric per-channel; residual adds annotated explicitly (litert-torch's "
                   "annotator misses them on torch 2.14, leaving 9 adds in float); min/max "
                   "calibration (histogram agreed 192/200 vs 191/200 but builds ~6x slower)."),
    Variant("executorch-fp32", "executorch", "fp32", "executorch-fp32.pte", "convert-executorch",
            "mobilenet.builders.executorch:export_fp32", "torch.export -> ExecuTorch, XNNPACK delegate"),
    Variant("executorch-int8", "executorch", "int8", "executorch-int8.pte", "convert-executorch",
            "mobilenet.builders.executorch:export_int8", "PT2E XNNPACKQuantizer INT8 -> ExecuTorch, XNNPACK",
            tuning="XNNPACKQuantizer symmetric per-channel with its default histogram observer "
                   "(min/max tried: 92 % vs 94 % agreement on 50 photos)."),
    Variant("openvino-fp32", "openvino", "fp32", "openvino-fp32.xml", "convert-openvino",
            "mobilenet.builders.openvino:convert_fp32", "torch.export -> OpenVINO IR (.xml + .bin), CPU plugin",
            companions=(".bin",)),
    Variant("openvino-int8", "openvino", "int8", "openvino-int8.xml", "convert-openvino",
            "mobilenet.builders.openvino:quantize_int8", "NNCF post-training INT8 IR, OpenVINO CPU plugin",
            companions=(".bin",),
            tuning="NNCF PERFORMANCE preset (symmetric per-channel weights), fast bias correction, overflow "
                   "fix on every layer (7-bit weights: without VNNI, u8 x s8 pair sums saturate): 97.5 % "
                   "agreement on 200 photos, against 94.5 % with the default first-layer-only fix."),
    Variant("aoti-fp32", "aoti", "fp32", "aoti-fp32.pt2", "compile-aoti",
            "mobilenet.builders.aoti:compile_fp32", "torch.export -> AOTInductor package (.pt2, compiled .so)",
            tuning="compiled without Inductor freezing: frozen (oneDNN-prepacked) FP32 ran about 3x slower "
                   "at 1 thread on this CPU."),
    Variant("aoti-int8", "aoti", "int8", "aoti-int8.pt2", "compile-aoti",
            "mobilenet.builders.aoti:compile_int8", "PT2E X86InductorQuantizer INT8 -> AOTInductor package",
            tuning="X86InductorQuantizer default config: int8 per-channel symmetric weights, uint8 "
                   "histogram-observed activations with reduce_range (7-bit, for AVX2 without VNNI); compiled "
                   "with Inductor freezing so all 52 convolutions run as oneDNN int8 (the builder checks). "
                   "96.5 % agreement on 200 photos; a min/max observer agreed 94 % on 100."),
)

@dataclass(frozen=True)
class Step:
    """A build step: an invoke task made from this entry (tasks.py), run before bench."""
    name: str
    doc: str
    needs: tuple[str, ...] = ("export",)  # steps whose outputs it reads; export reads the photos
    # Wall seconds of a full build, one step at a time on a 2-core x86 box: which steps the scheduler
    # starts first until the step's own variants have recorded their build times.
    typical_s: float = 60.0


STEPS: tuple[Step, ...] = (
    Step("export", "FP32 eager state_dict, traced TorchScript and PyTorch Mobile (.ptl), each checked against eager.",
         needs=(), typical_s=55),
    Step("quantize-dynamic", "INT8 dynamic quantization (torch.ao), saved as TorchScript.", typical_s=15),
    Step("quantize-static", "INT8 static quantization calibrated on real photos, for the fbgemm (x86) and "
                            "qnnpack (ARM) engines.", typical_s=49),
    Step("convert-onnx", "ONNX (dynamo exporter) FP32, and ONNX Runtime static QDQ INT8.", typical_s=48),
    Step("convert-litert", "LiteRT (TensorFlow Lite) FP32 and INT8 via litert-torch.", typical_s=72),
    Step("convert-executorch", "ExecuTorch .pte, FP32 and PT2E INT8, lowered to XNNPACK.", typical_s=141),
    Step("convert-openvino", "OpenVINO IR, FP32 and NNCF INT8, for the CPU plugin.", typical_s=37),
    Step("compile-aoti", "AOTInductor packages (.pt2) of torch.export'ed FP32 and PT2E INT8 models.",
         typical_s=99),
)
BUILD_STEPS = tuple(step.name for step in STEPS)
STEP_BY_NAME = {step.name: step for step in STEPS}


_POSITION = {v.id: i for i, v in enumerate(VARIANTS)}


def display_order(variant_id: str) -> int:
    """Registry order for tables and charts; unknown ids (older results) go last."""
    return _POSITION.get(variant_id, len(_POSITION))


def by_id(variant_id: str) -> Variant:
    for variant in VARIANTS:
        if variant.id == variant_id:
            return variant
    raise KeyError(f"unknown variant {variant_id!r}; known: {', '.join(v.id for v in VARIANTS)}")


def for_step(step: str) -> list[Variant]:
    return [v for v in VARIANTS if v.step == step]


def select(pattern: str | None) -> list[Variant]:
    """Variants matching a comma-separated list of glob patterns (None = all).

    The FP32 eager reference is always included: agreement and speed-up are measured
    against it.
    """
    if not pattern:
        return list(VARIANTS)
    globs = [p.strip() for p in pattern.split(",") if p.strip()]
    chosen = [v for v in VARIANTS
              if v.id == REFERENCE_ID or any(fnmatch.fnmatch(v.id, g) for g in globs)]
    if len(chosen) == 1 and not any(fnmatch.fnmatch(REFERENCE_ID, g) for g in globs):
        raise ValueError(f"matches no variant; known: "
                         f"{', '.join(v.id for v in VARIANTS)}")
    return chosen
