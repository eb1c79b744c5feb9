"""The registry: the single place a variant exists.

Tasks, bench, tests and report all read VARIANTS. A variant names the runtime that runs
it (a record in RUNTIMES), the artifact it is stored in, the build step (task) that makes
it and the function that builds it. A runtime's record holds what every stage needs to know
about it: its runner, packages, profiler, layer comparison, operator names, device
requirements list and native benchmark program. `registry_problems` checks them all.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE_ID = "fp32-eager"


@dataclass(frozen=True)
class Variant:
    id: str
    runtime: str  # the name of its Runtime record (RUNTIMES)
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
    requires: tuple[str, ...] = ()  # what the model must be for the variant to apply (REQUIREMENTS keys)

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


PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class OperatorNames:
    """Lower-case substrings of the operator names a runtime's profiler and layer comparison
    report, by what they say; mobilenet.explain.kinds turns names into kinds with them.

    "conv" and "add" mean the same in every runtime's names and stay in kinds.py.
    """
    quantize: tuple[str, ...] = ()  # quantize/dequantize; checked first
    layout: tuple[str, ...] = ()  # layout conversions
    pool: tuple[str, ...] = ()
    linear: tuple[str, ...] = ()
    not_add: tuple[str, ...] = ()  # names holding "add" that are no residual add (aten::addmm)
    conv_before_pool: tuple[str, ...] = ()  # matrix products that are 1x1 convolutions until the pool
    depthwise: tuple[str, ...] = ()  # kernel names that say depthwise
    full: tuple[str, ...] = ()  # kernel names that say a full 3x3 window
    pointwise: tuple[str, ...] = ()  # kernel names that say 1x1
    spellings: tuple[tuple[str, str], ...] = ()  # (as reported, as matched), rewritten before matching

    def patterns(self) -> tuple[str, ...]:
        return (*self.quantize, *self.layout, *self.pool, *self.linear, *self.not_add, *self.conv_before_pool,
                *self.depthwise, *self.full, *self.pointwise, *(spelling for spelling, _ in self.spellings))


# torch.profiler's dispatcher names (aten::conv2d, quantized::linear) for every torch form, and
# the aten graph nodes the torch.ao and ExecuTorch layer comparisons report.
TORCH_NAMES = OperatorNames(
    quantize=("quantize_per_tensor", "quantize_per_channel", "dequantize"),
    layout=("transpose", "permute", "contiguous", "to_mkldnn", "to_dense", "channels_last"),
    pool=("pool", "mean"), linear=("linear", "addmm", "aten::matmul", "aten::mm"),
    not_add=("addmm", "addcmul", "addcdiv", "addmv", "addbmm"))
# ONNX Runtime's kernel op types (QLinearConv, DequantizeLinear, ReorderOutput, ReduceMean, QGemm).
ONNXRUNTIME_NAMES = OperatorNames(quantize=("quantizelinear", "dequantize", "dynamicquantize"),
                                  layout=("transpose", "reorder"), pool=("pool", "mean"), linear=("gemm", "matmul"))
# XNNPACK's operator names, as ETDump reports them: "Convolution (NHWC, QC8) DWConv",
# "Fully Connected (NC, F32) GEMM" (XNNPACK runs 1x1 convolutions as Fully Connected).
XNNPACK_NAMES = OperatorNames(quantize=("convert (nc", "quantize ("), layout=("transpose", "copy (nc", "copy (nd"),
                              pool=("pool", "mean"), linear=("fully connected", "gemm"),
                              conv_before_pool=("fully connected",), depthwise=("dwconv",), full=("igemm",),
                              pointwise=("gemm", "fully connected"))
# TFLite's builtin operator names (CONV_2D, MEAN, FULLY_CONNECTED), which the LiteRT layer comparison reports.
LITERT_NAMES = OperatorNames(pool=("mean",), linear=("fully connected",),
                             spellings=(("fully_connected", "fully connected"),))
# The node types of OpenVINO's CPU execution graph (Reorder, Pooling, FullyConnected).
OPENVINO_NAMES = OperatorNames(layout=("reorder", "transpose"), pool=("pool", "mean"), linear=("fullyconnected",))

TORCH_ONLY_WHEN_ASKED = "torch on aarch64 from PyPI is the CUDA build, about 3.3 GB with its nvidia-* wheels"


@dataclass(frozen=True)
class NativeBenchmark:
    """A runtime's own benchmark program, which the bench runs on the same file between its sessions.

    mobilenet/bench/native.py holds how to call it and read its median, keyed by `program`.
    """
    program: str  # its console script, installed beside the Python executable
    times: str  # what its clock covers, for the report
    # What differs from the API our runner drives, for the result and the report; None: the same API.
    other_api: str | None = None


@dataclass(frozen=True)
class Runtime:
    """What every stage needs to know about one runtime; a Variant names one by `name`."""
    # Also the name of its runner module under mobilenet/measure/runners: devices get no
    # registry, so the worker is handed this name and imports the runner by it.
    name: str
    # pip distributions its runner imports, besides numpy; the first is its Runner.package,
    # whose version the results show.
    packages: tuple[str, ...]
    profiler: str | None  # module under mobilenet/explain/profilers
    numerics: str | None  # module under mobilenet/explain/numerics comparing its INT8 layers with FP32
    operator_names: OperatorNames | None  # what its profiler's and layer comparison's names say
    requirements: str | None  # list under mobilenet/measure/requirements for device mode; None: not shipped
    only_when_asked: str | None = None  # why device mode installs that list only with --device-install
    native_benchmark: NativeBenchmark | None = None  # None: its package ships no benchmark program
    # What its profiler can see, where one profiler module serves several runtimes (torch's).
    profiler_sees: str | None = None

    @property
    def runner(self) -> str:
        return f"mobilenet.measure.runners.{self.name}"

    @property
    def runner_file(self) -> Path:
        return PACKAGE_DIR / "measure" / "runners" / f"{self.name}.py"

    @property
    def requirements_file(self) -> Path | None:
        return PACKAGE_DIR / "measure" / "requirements" / f"{self.requirements}.txt" if self.requirements else None

    @property
    def profiler_file(self) -> Path | None:
        return PACKAGE_DIR / "explain" / "profilers" / f"{self.profiler}.py" if self.profiler else None

    @property
    def numerics_file(self) -> Path | None:
        return PACKAGE_DIR / "explain" / "numerics" / f"{self.numerics}.py" if self.numerics else None


RUNTIMES: tuple[Runtime, ...] = (
    # No INT8 variant runs eagerly or on the lite interpreter, so neither has a layer comparison.
    Runtime("torch_eager", ("torch", "torchvision"), profiler="torch", numerics=None, operator_names=TORCH_NAMES,
            requirements="torch", only_when_asked=TORCH_ONLY_WHEN_ASKED,
            profiler_sees="every aten operator eager PyTorch dispatches"),
    Runtime("torchscript", ("torch",), profiler="torch", numerics="torch_ao", operator_names=TORCH_NAMES,
            requirements="torch", only_when_asked=TORCH_ONLY_WHEN_ASKED,
            profiler_sees="every aten/quantized operator the TorchScript interpreter dispatches"),
    Runtime("lite_interpreter", ("torch",), profiler="torch", numerics=None, operator_names=TORCH_NAMES,
            requirements="torch", only_when_asked=TORCH_ONLY_WHEN_ASKED,
            profiler_sees="every aten operator the lite interpreter dispatches"),
    Runtime("onnxruntime", ("onnxruntime",), profiler="onnxruntime", numerics="onnxruntime",
            operator_names=ONNXRUNTIME_NAMES, requirements="onnxruntime"),
    # Its profiler module reports why no per-operator profiler is reachable from Python.
    Runtime("litert", ("ai-edge-litert",), profiler="litert", numerics="litert", operator_names=LITERT_NAMES,
            requirements="litert", native_benchmark=NativeBenchmark(
                "litert-benchmark", times="CompiledModel.run_by_name on input buffers filled once, timed in Python",
                other_api="it drives LiteRT's CompiledModel API (its CPU accelerator, XNNPACK), our runner the "
                          "Interpreter with its default XNNPACK delegate; the program has no option to select the "
                          "Interpreter")),
    Runtime("executorch", ("executorch", "torch"), profiler="executorch", numerics="executorch",
            operator_names=XNNPACK_NAMES, requirements="executorch",
            only_when_asked="ExecuTorch's Python runtime needs torch (on aarch64 PyPI's CUDA build, about 3.3 GB)"),
    # No layer comparison is wired up for its INT8 IR yet, and no device list.
    Runtime("openvino", ("openvino",), profiler="openvino", numerics=None, operator_names=OPENVINO_NAMES,
            requirements=None, native_benchmark=NativeBenchmark(
                "benchmark_app", times="InferRequest.infer() on input tensors filled once, timed by OpenVINO's "
                                       "C++ clock (request.latency)")),
    # No layer comparison is wired up for its INT8 package yet, and no device list.
    Runtime("aoti", ("torch",), profiler="torch", numerics=None, operator_names=TORCH_NAMES, requirements=None,
            profiler_sees="only the aten operators AOTInductor's compiled code calls (its fused C++ kernels, "
                          "which hold the rest, run unseen between them)"),
)
RUNTIME_BY_NAME = {runtime.name: runtime for runtime in RUNTIMES}


def runtime_of(variant: Variant) -> Runtime:
    """The record of the runtime that runs `variant`."""
    try:
        return RUNTIME_BY_NAME[variant.runtime]
    except KeyError:
        raise KeyError(f"variant {variant.id!r} names runtime {variant.runtime!r}, which has no record; "
                       f"known: {', '.join(RUNTIME_BY_NAME)}") from None


@dataclass(frozen=True)
class Requirement:
    """Something a variant needs the model to be, read from its record (mobilenet.models.ModelRecord)."""
    met: object  # ModelRecord -> bool
    unmet: str  # why the variant does not apply when it is not met; {name} is the model's name


REQUIREMENTS: dict[str, Requirement] = {
    "module": Requirement(lambda model: model.is_module,
                          "TorchScript and the lite interpreter trace an nn.Module, and {name} is none"),
    "linear": Requirement(lambda model: model.linear_layers > 0,
                          "dynamic INT8 quantizes nn.Linear layers only, and {name} has none"),
    "quantizable": Requirement(lambda model: model.quantizable is not None,
                               "torch.ao static INT8 needs a quantizable torchvision model, and "
                               "torchvision.models.quantization has none for {name}"),
}


def applies(variant: Variant, model) -> str | None:
    """None when the variant can be built for this model (a ModelRecord), else why not."""
    for key in variant.requires:
        requirement = REQUIREMENTS[key]
        if not requirement.met(model):
            return requirement.unmet.format(name=model.name)
    return None


def not_applicable_reason(variant: Variant, model) -> str | None:
    """The skipped variant's reason, as the meta and the report state it; None when it applies."""
    why = applies(variant, model)
    return None if why is None else f"not applicable to {model.spec} ({why})"


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
            deprecated=TORCHSCRIPT_DEPRECATED, requires=("module",)),
    Variant("fp32-mobile", "lite_interpreter", "fp32", "fp32-mobile.ptl", "export",
            "mobilenet.builders.torch_export:lite_interpreter", "PyTorch Mobile, lite interpreter (.ptl)",
            deprecated=LITE_DEPRECATED, requires=("module",)),
    Variant("int8-dynamic", "torchscript", "int8", "int8-dynamic.pt", "quantize-dynamic",
            "mobilenet.builders.torch_ao:dynamic", "torch.ao dynamic quantization (Linear layers), TorchScript",
            runner={"engine": "x86"}, deprecated=AO_DEPRECATED, requires=("module", "linear"),
            tuning="only nn.Linear is quantized (dynamic quantization has no conv kernels), "
                   "so the convolutions stay FP32: smaller file, little speed-up."),
    Variant("int8-static-fbgemm", "torchscript", "int8", "int8-static-fbgemm.pt", "quantize-static",
            "mobilenet.builders.torch_ao:static", "torch.ao static PTQ, x86 fbgemm engine, TorchScript",
            runner={"engine": "fbgemm"}, options={"qconfig": "fbgemm", "per_channel": True},
            deprecated=AO_DEPRECATED, requires=("module", "quantizable"),
            tuning="Conv+BN+ReLU fused, the engine's default qconfig (per-channel weights, "
                   "histogram activations), 50 calibration photos."),
    Variant("int8-static-qnnpack", "torchscript", "int8", "int8-static-qnnpack.pt", "quantize-static",
            "mobilenet.builders.torch_ao:static", "torch.ao static PTQ, ARM qnnpack engine, TorchScript",
            runner={"engine": "qnnpack"}, options={"qconfig": "qnnpack", "per_channel": False},
            deprecated=AO_DEPRECATED, requires=("module", "quantizable"),
            tuning="Conv+BN+ReLU fused, qnnpack's default qconfig (per-tensor weights), "
                   "50 calibration photos; qnnpack's kernels target ARM, so x86 timings undersell it."),
    Variant("onnx-fp32", "onnxruntime", "fp32", "onnx-fp32.onnx", "convert-onnx",
            "mobilenet.builders.onnx:export_fp32", "torch.onnx.export (dynamo), ONNX Runtime CPU"),
    Variant("onnx-int8", "onnxruntime", "int8", "onnx-int8.onnx", "convert-onnx",
            "mobilenet.builders.onnx:quantize_int8", "ONNX Runtime static QDQ INT8, ONNX Runtime CPU",
            tuning="30 settings compared on 200 photos, on an AVX2 machine without VNNI: Percentile "
                   "99.999 calibration chosen (95 % agreement, MinMax 93.5 %, both with reduce_range); "
                   "S8/S8 not told apart on these photos but slower; U8/U8 97 % but 3.5x slower than FP32."),
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
            tuning="NNCF PERFORMANCE preset (symmetric per-channel weights), fast bias correction."),
    Variant("aoti-fp32", "aoti", "fp32", "aoti-fp32.pt2", "compile-aoti",
            "mobilenet.builders.aoti:compile_fp32", "torch.export -> AOTInductor package (.pt2, compiled .so)",
            tuning="compiled without Inductor freezing: frozen (oneDNN-prepacked) FP32 ran about 3x slower "
                   "at 1 thread on an AVX2 machine without VNNI (AMD EPYC); not measured elsewhere."),
    Variant("aoti-int8", "aoti", "int8", "aoti-int8.pt2", "compile-aoti",
            "mobilenet.builders.aoti:compile_int8", "PT2E X86InductorQuantizer INT8 -> AOTInductor package",
            tuning="X86InductorQuantizer's default config: int8 per-channel symmetric weights, uint8 "
                   "histogram-observed activations; compiled with Inductor freezing so all 52 convolutions "
                   "run as oneDNN int8 (the builder checks). 96.5 % agreement on 200 photos with reduce_range "
                   "on an AVX2 machine without VNNI; a min/max observer agreed 94 % on 100 there."),
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


def _distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(requirements_file: Path) -> set[str]:
    """The distributions a requirements list names."""
    names = set()
    for line in requirements_file.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(_distribution(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
    return names


def _shown(path: Path) -> str:
    return str(path.relative_to(PACKAGE_DIR.parent)) if path.is_relative_to(PACKAGE_DIR.parent) else str(path)


def registry_problems(runtimes: tuple[Runtime, ...] = RUNTIMES, variants: tuple[Variant, ...] = VARIANTS,
                      steps: tuple[Step, ...] = STEPS) -> list[str]:
    """What a stage would trip over, one message each, naming the record and its field; empty when sound.

    Reads files only (no runtime is imported), so it runs anywhere the repository is.
    """
    problems = []
    names = [r.name for r in runtimes]
    used = {v.runtime for v in variants}
    int8 = {v.runtime for v in variants if v.precision != "fp32"}
    for runtime in runtimes:
        def problem(field_name: str, what: str, runtime=runtime) -> None:
            problems.append(f"runtime {runtime.name!r}: {field_name}: {what}")
        if names.count(runtime.name) > 1:
            problem("name", f"{names.count(runtime.name)} records have it")
        if runtime.name not in used:
            problem("name", "no variant runs on it")
        if not runtime.runner_file.is_file():
            problem("runner", f"{_shown(runtime.runner_file)} does not exist")
        if not runtime.packages:
            problem("packages", "none named (its runner's own distribution comes first)")
        if runtime.requirements_file is not None:
            if not runtime.requirements_file.is_file():
                problem("requirements", f"{_shown(runtime.requirements_file)} does not exist")
            else:
                pinned = _pinned(runtime.requirements_file)
                for package in runtime.packages:
                    if _distribution(package) not in pinned:
                        problem("requirements", f"{_shown(runtime.requirements_file)} does not list {package}, "
                                                f"which its runner imports")
        elif runtime.only_when_asked:
            problem("only_when_asked", "set, but there is no requirements list to install")
        for other in runtimes:
            if other.requirements == runtime.requirements and runtime.requirements \
                    and other.only_when_asked != runtime.only_when_asked:
                problem("only_when_asked", f"differs from {other.name!r}, which installs the same "
                                           f"{runtime.requirements!r} list")
                break
        for field_name, module, path in (("profiler", runtime.profiler, runtime.profiler_file),
                                         ("numerics", runtime.numerics, runtime.numerics_file)):
            if path is not None and not path.is_file():
                problem(field_name, f"{_shown(path)} does not exist")
            if module and (runtime.operator_names is None or not runtime.operator_names.patterns()):
                problem("operator_names", f"none, but its {field_name} module {module!r} reports operator "
                                          f"names to classify")
        if runtime.profiler == "torch" and not runtime.profiler_sees:
            problem("profiler_sees", "none, but the torch profiler reports what each runtime it serves lets it see")
        if runtime.numerics and runtime.name in used and runtime.name not in int8:
            problem("numerics", f"{runtime.numerics!r} is named, but no INT8 variant runs on it")
        native = runtime.native_benchmark
        if native is not None:
            from mobilenet.bench.native import PROGRAMS  # numpy only: reads no runtime
            if not isinstance(native, NativeBenchmark):
                problem("native_benchmark", f"{native!r} is no NativeBenchmark record; None when the runtime "
                                            f"ships no benchmark program")
            elif native.program not in PROGRAMS:
                problem("native_benchmark", f"mobilenet/bench/native.py has no entry for {native.program!r}")
            elif not native.times.strip():
                problem("native_benchmark", "times: blank; the report says what the program's clock covers")
    step_names = {s.name for s in steps}
    for variant in variants:
        if variant.runtime not in names:
            problems.append(f"variant {variant.id!r}: runtime: {variant.runtime!r} names no Runtime record")
        if variant.step not in step_names:
            problems.append(f"variant {variant.id!r}: step: {variant.step!r} names no Step")
        for key in variant.requires:
            if key not in REQUIREMENTS:
                problems.append(f"variant {variant.id!r}: requires: {key!r} names no Requirement; "
                                f"known: {', '.join(REQUIREMENTS)}")
        module = variant.builder.partition(":")[0]
        builder_file = PACKAGE_DIR.parent.joinpath(*module.split(".")).with_suffix(".py")
        if not module.startswith("mobilenet.") or not builder_file.is_file():
            problems.append(f"variant {variant.id!r}: builder: {module!r} is no module file in mobilenet/")
    for step in steps:
        if not any(v.step == step.name for v in variants):
            problems.append(f"step {step.name!r}: variants: none is built by it")
        for need in step.needs:
            if need not in step_names:
                problems.append(f"step {step.name!r}: needs: {need!r} names no Step")
    return problems
