"""torch.profiler for eager modules, TorchScript, the lite interpreter and AOTInductor.

All run through the same dispatcher, so one profiler sees all of them (AOTInductor's own
fused C++ kernels excepted: it sees only the aten operators the compiled code calls). Each call is
wrapped in its own record_function range; an operator counts once, at the outermost level
(aten::conv2d, not also the aten::mkldnn_convolution it calls), with its inclusive time.

Which kernels ran: one more call, after the profiled ones, with oneDNN's verbose mode on, names
every oneDNN primitive (FP32 convolutions, AOTInductor's INT8 ones) with its implementation and
ISA (brg_conv_fwd:avx2). The quantized engines fbgemm and QNNPACK print nothing; their kernels
are inferred from their own sources' dispatch rules (mobilenet.explain.kernels) and marked so.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from mobilenet.explain import cpu, kernels, kinds
from mobilenet.registry import runtime_of

PROFILER_NAME = f"torch.profiler (torch {torch.__version__})"
CALL_RANGE = "explain::call"
ONEDNN_SOURCE = "oneDNN verbose output (torch.backends.mkldnn.verbose) of one call: each primitive's implementation"


def _is_operator(name: str) -> bool:
    return "::" in name and name != CALL_RANGE


def split_calls(events) -> list[list]:
    """Top-level operators of each profiled call, in start order: [(name, ms)].

    `events` are torch's raw Kineto events (name, start_ns, end_ns): building the profiler's
    own event tree costs seconds per thousand operators, and on one thread nesting is just
    interval containment: an operator that starts before the previous top-level one ends is
    its callee.
    """
    spans = sorted(((e.start_ns(), e.end_ns(), e.name(), e.start_thread_id()) for e in events),
                   key=lambda span: (span[0], -span[1]))
    calls, current, call_end, call_thread, operator_end = [], None, -1, None, -1
    for start, end, name, thread in spans:
        if name == CALL_RANGE:
            current, call_end, call_thread, operator_end = [], end, thread, -1
            calls.append(current)
        elif current is not None and _is_operator(name) and thread == call_thread \
                and start <= call_end and start >= operator_end:
            current.append((name, (end - start) / 1e6))
            operator_end = end
    return calls


def onednn_verbose_of(call) -> str:
    """What oneDNN's verbose mode prints during `call()`: it writes to file descriptor 1 from C,
    so that descriptor is pointed at a temporary file for the call."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                call()
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        return sink.read().decode(errors="replace")


def _torch_cpu_library() -> Path:
    return Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"


def aoti_cpu_capabilities(package: Path) -> list[str]:
    """The CPU_CAPABILITY_* macros of the compile commands recorded in an AOTInductor package's C++
    sources (`-D CPU_CAPABILITY_AVX2`): the vector ISA Inductor compiled its fused kernels for."""
    import re
    import zipfile
    found = set()
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if name.endswith(".cpp"):
                source = archive.read(name).decode(errors="replace")
                found.update(re.findall(r"-D\s*(CPU_CAPABILITY_[A-Z0-9_]+)", source))
    return sorted(found)


def engine_kernels(engine: str | None, quantized: Counter, flags: set[str], machine: str) -> dict:
    """What a quantized engine that names nothing ran, from its source rule: {"kernels": {kind:
    {name: count}}, "note": ..., "library_isas": [...]}; kinds with no rule are left out."""
    architecture = kernels.architecture(machine)
    if engine == "qnnpack":
        rule = kernels.qnnpack_rule(architecture) if architecture else None
        if rule is None:
            return {"kernels": {}, "note": f"QNNPACK reports no kernels, and its source has no table here for "
                                           f"{machine}", "library_isas": []}
        library = _torch_cpu_library()
        isas = kernels.qnnpack_kernel_isas(library) if library.is_file() else []
        found = {kind: {rule.kernels[kind]: count} for kind, count in quantized.items() if kind in rule.kernels}
        note = (f"QNNPACK reports no kernels: these are the micro-kernels its source sets on {architecture} "
                f"({rule.source}; conv_utils.h picks dwconv, gemm or conv by the convolution's shape). The q8 "
                f"conv/gemm/dwconv micro-kernels in this torch's {library.name} are built for: "
                f"{', '.join(isas) or 'none found'}")
        return {"kernels": found, "note": note, "library_isas": isas, "library": str(library)}
    if engine == "fbgemm":
        table = kernels.fbgemm_kernels(flags)
        found = {kind: {table[kind]: count} for kind, count in quantized.items() if kind in table}
        isa = kernels.fbgemm_isa(flags)
        note = (f"FBGEMM reports no kernels: inferred from its dispatch rule ({kernels.FBGEMM_DISPATCH_SOURCE}): "
                f"its GEMM kernels are generated for the first of AVX-512 VNNI, AVX-512 (F, BW, DQ, VL) and AVX2 "
                f"that the CPU has ({isa or 'none'} from this machine's /proc/cpuinfo), its depthwise kernels "
                f"for AVX2 only; quantized adds run in ATen's own code, which names no kernel")
        return {"kernels": found, "note": note, "library_isas": []}
    return {"kernels": {}, "note": "", "library_isas": []}


def profile(runner, variant, artifact, image, calls: int, work_dir):
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    from mobilenet.explain.profilers import Capture
    wall = []
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            start = time.perf_counter()
            with record_function(CALL_RANGE):
                runner.run(image)
            wall.append((time.perf_counter() - start) * 1000)
    ops = split_calls(prof.profiler.kineto_results.events())
    capture = Capture(profiler=PROFILER_NAME, visibility=runtime_of(variant).profiler_sees, calls=ops,
                      profiled_ms=wall)
    try:
        verbose = onednn_verbose_of(lambda: runner.run(image))
    except (AssertionError, RuntimeError) as exc:  # a torch built without oneDNN, or verbose refused
        verbose = ""
        capture.kernels_note = f"oneDNN's verbose mode could not be switched on ({exc})"
    capture.kernels = kernels.onednn_by_kind(kernels.parse_onednn_verbose(verbose))
    capture.kernels_source = ONEDNN_SOURCE if capture.kernels else ""
    last = ops[-1] if ops else []
    quantized = Counter(kind for (name, _), kind in zip(last, kinds.classify_call(name for name, _ in last))
                        if name.startswith("quantized::") and kind not in capture.kernels)
    inferred = engine_kernels(getattr(variant, "engine", None), quantized, cpu.read_cpuinfo()[1],
                              platform.machine())
    if inferred["kernels"]:
        capture.kernels.update(inferred["kernels"])
        capture.kernels_inferred = list(inferred["kernels"])
        capture.kernels_source = "; ".join(filter(None, [capture.kernels_source, "the engine's source rule"]))
    capture.kernels_note = "; ".join(filter(None, [capture.kernels_note, inferred["note"]]))
    capture.library_kernel_isas, capture.library = inferred["library_isas"], inferred.get("library", "")
    if not capture.kernels_note:
        elsewhere = "ATen's own code"
        if variant.runtime == "aoti":
            capabilities = aoti_cpu_capabilities(Path(artifact)) if artifact else []
            elsewhere = "ATen's own code or AOTInductor's generated C++ code" + (
                f" (compiled with -D {', '.join(capabilities)}, as the compile command in the package's source says)"
                if capabilities else "")
        capture.kernels_note = (f"torch names only the operators it dispatches; the kernels named here are the "
                                f"oneDNN primitives it ran, and kinds without one ran in {elsewhere}, which "
                                f"names no kernel")
    return capture
