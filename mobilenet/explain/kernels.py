"""Which kernels ran, per operator kind, and which instruction sets their names show.

A runtime that names its kernels is read back (OpenVINO's exec_type, oneDNN's verbose
implementation names, XNNPACK's operator names in ETDump, ONNX Runtime's op and provider).
Two engines name nothing: for them a kernel is inferred from a rule in their own sources,
held here as data with the file it comes from, and every such name is marked inferred:

- QNNPACK (torch's quantized engine "qnnpack") sets its micro-kernels once in init.c, by
  architecture only; on x86 every branch is an SSE2 one.
- FBGEMM (torch's "fbgemm" engine) picks its GEMM code at run time from cpuinfo
  (fbgemmInstructionSet in src/Utils.cc); its depthwise kernels are AVX2 code only.

An instruction set enters a sentence only when a kernel's name shows it: never the CPU's
whole flag list.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mobilenet.explain import kinds

# Substrings of kernel names (lower case) -> the instruction set they show, most specific first:
# "brgconv_avx512_amx_1x1_I8" shows AMX, not also AVX-512. oneDNN spells its ISAs avx2,
# avx2_vnni, avx512_core, avx512_core_vnni, avx512_core_amx; OpenVINO's exec types drop "core".
ISA_TOKENS: tuple[tuple[str, str], ...] = (
    ("amx", "AMX"),
    ("avx512_core_vnni", "AVX-512 VNNI"), ("avx512_vnni", "AVX-512 VNNI"),
    ("avx2_vnni", "AVX-VNNI"), ("avx_vnni", "AVX-VNNI"),
    ("avx512", "AVX-512"), ("avx10", "AVX10"),
    ("avx2", "AVX2"),
    ("avx", "AVX"),
    ("sse41", "SSE4.1"), ("sse4", "SSE4.1"),
    ("sse2", "SSE2"),
    ("sve", "SVE"), ("neon", "NEON"), ("asimd", "NEON"),
)
# The /proc/cpuinfo flag each of those instruction sets needs (AMX: its tile unit).
ISA_FLAG = {"AMX": "amx_tile", "AVX-512 VNNI": "avx512_vnni", "AVX-VNNI": "avx_vnni", "AVX-512": "avx512f",
            "AVX10": "avx10", "AVX2": "avx2", "AVX": "avx", "SSE4.1": "sse4_1", "SSE2": "sse2", "SVE": "sve",
            "NEON": "asimd"}
# Names of reference (plain C++, no SIMD code) implementations: oneDNN's "ref:any",
# OpenVINO's "ref_any_I8".
REFERENCE = "reference C++ code"
_REFERENCE = re.compile(r"^(ref\b|ref[_:])")


def isa_of(kernel: str) -> str | None:
    """The instruction set a kernel's name shows, or None when it shows none."""
    lowered = kernel.lower()
    if _REFERENCE.match(lowered):
        return REFERENCE
    for token, name in ISA_TOKENS:
        if token in lowered:
            return name
    return None


def isa_shown(names) -> list[str]:
    """The instruction sets a set of kernel names shows, each once, in ISA_TOKENS order."""
    found = {isa_of(name) for name in names} - {None}
    order = [name for _, name in ISA_TOKENS] + [REFERENCE]
    return sorted(found, key=order.index)


def by_kind(op_names: list[str], kernel_names: list[str]) -> dict:
    """{kind: {kernel: count}} of one call, its operators classified as kinds.classify_call does;
    an operator whose runtime named no kernel ("") is left out."""
    counts: dict = {}
    for kind, kernel in zip(kinds.classify_call(op_names), kernel_names):
        if kernel:
            counts.setdefault(kind, Counter())[kernel] += 1
    return {kind: dict(counter.most_common()) for kind, counter in counts.items()}


# ---- oneDNN's verbose output (ONEDNN_VERBOSE=1, or torch.backends.mkldnn.verbose)

@dataclass(frozen=True)
class OnednnExec:
    """One primitive execution as oneDNN's verbose mode prints it."""
    primitive: str  # convolution, inner_product, reorder, ...
    implementation: str  # brg_conv_fwd:avx2, jit_1x1:avx512_core, ref:any
    problem: str  # mb1_ic32oc16_ih112oh112kh1sh1dh0ph0_iw112ow112kw1sw1dw0pw0
    ms: float | None
    kind: str  # kinds.* read from the problem descriptor


_VERBOSE_MARKERS = ("onednn_verbose", "dnnl_verbose", "mkldnn_verbose")
_PRIMITIVE_KINDS = {"inner_product": kinds.LINEAR, "matmul": kinds.LINEAR, "reorder": kinds.LAYOUT,
                    "pooling": kinds.POOL, "reduction": kinds.POOL}


def _number(pattern: str, text: str) -> int | None:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else None


def convolution_kind(problem: str) -> str:
    """A convolution's kind from oneDNN's problem descriptor: groups (g32 with ic32oc32 is
    depthwise), kernel height and width (kh1, kw1)."""
    groups = _number(r"(?:^|_)g(\d+)", problem) or 1
    in_channels, out_channels = _number(r"ic(\d+)", problem), _number(r"oc(\d+)", problem)
    kernel_h, kernel_w = _number(r"kh(\d+)", problem) or 1, _number(r"kw(\d+)", problem) or 1
    if groups > 1 and groups == in_channels == out_channels:
        return kinds.CONV_DW if (kernel_h, kernel_w) == (3, 3) else kinds.OTHER
    if (kernel_h, kernel_w) == (1, 1):
        return kinds.CONV_1X1
    return kinds.CONV_FULL if (kernel_h, kernel_w) == (3, 3) else kinds.OTHER


def parse_onednn_verbose(text: str) -> list[OnednnExec]:
    """The `exec` lines of oneDNN verbose output, in order; every other line is ignored.

    Accepts the formats of oneDNN 2.x (`dnnl_verbose,exec,cpu,...`), 3.0 to 3.3
    (`onednn_verbose,primitive,exec,...`) and 3.4 on (`onednn_verbose,v1,primitive,exec,...`,
    with an optional timestamp field): after `exec` come the engine, the primitive, its
    implementation; the problem descriptor and the time in ms are the last two fields.
    """
    found = []
    for line in text.splitlines():
        fields = line.strip().split(",")
        if not fields or fields[0] not in _VERBOSE_MARKERS or "exec" not in fields[:5]:
            continue
        at = fields.index("exec")
        if len(fields) < at + 6:
            continue
        primitive, implementation, problem = fields[at + 2], fields[at + 3], fields[-2]
        try:
            ms = float(fields[-1])
        except ValueError:
            ms = None
        if primitive == "convolution":
            kind = convolution_kind(problem)
        elif primitive == "binary":
            kind = kinds.ADD if "binary_add" in line else kinds.OTHER
        else:
            kind = _PRIMITIVE_KINDS.get(primitive, kinds.OTHER)
        found.append(OnednnExec(primitive, implementation, problem, ms, kind))
    return found


def onednn_by_kind(executions: list[OnednnExec]) -> dict:
    """{kind: {implementation: count}}, counted over the executions given (one call's)."""
    counts: dict = {}
    for execution in executions:
        counts.setdefault(execution.kind, Counter())[execution.implementation] += 1
    return {kind: dict(counter.most_common()) for kind, counter in counts.items()}


def onednn_isa_line(text: str) -> str:
    """The ISA oneDNN says it may use on this CPU (its `info,cpu,isa:` line), or ""."""
    for line in text.splitlines():
        if line.split(",")[0] in _VERBOSE_MARKERS and "isa:" in line:
            return line.split("isa:", 1)[1].strip()
    return ""


# ---- the engines that name nothing: rules from their sources

@dataclass(frozen=True)
class SourceRule:
    """What an engine's own source says it runs for each kind, where it reports nothing."""
    engine: str  # torch's name for the quantized engine
    name: str  # the engine as its project spells it
    architecture: str  # "x86" or "arm64"
    source: str  # repository and file the table is read from
    kernels: dict  # kind -> kernel name (the micro-kernel's symbol)

    @property
    def source_file(self) -> str:
        """The source file's name alone: 'init.c'."""
        return self.source.split(" (")[0].rsplit("/", 1)[-1]


_QNNPACK_INIT = "pytorch/pytorch aten/src/ATen/native/quantized/cpu/qnnpack/src/init.c"
# init.c's `init()`: one branch per architecture, no run-time choice inside a branch beyond
# "SSE2 present" (x86) or "NEON present" (ARM). Which micro-kernel a convolution gets is
# decided by its shape (qnnpack/include/conv_utils.h, conv_param_t): depthwise 3x3 -> dwconv
# (up8x9), 1x1 with stride 1 and no padding -> gemm, any other -> the indirect conv one. Linear
# layers run on the gemm micro-kernel, quantized adds on q8vadd.
QNNPACK_RULES = (
    SourceRule("qnnpack", "QNNPACK", "x86", f"{_QNNPACK_INIT} (CPUINFO_ARCH_X86 || CPUINFO_ARCH_X86_64 branch)", {
        kinds.CONV_1X1: "pytorch_q8gemm_ukernel_4x4c2__sse2",
        kinds.CONV_FULL: "pytorch_q8conv_ukernel_4x4c2__sse2",
        kinds.CONV_DW: "pytorch_q8dwconv_ukernel_up8x9__sse2",
        kinds.ADD: "pytorch_q8vadd_ukernel__sse2",
        kinds.LINEAR: "pytorch_q8gemm_ukernel_4x4c2__sse2",
    }),
    SourceRule("qnnpack", "QNNPACK", "arm64", f"{_QNNPACK_INIT} (CPUINFO_ARCH_ARM64 branch)", {
        kinds.CONV_1X1: "pytorch_q8gemm_ukernel_8x8__aarch64_neon",
        kinds.CONV_FULL: "pytorch_q8conv_ukernel_8x8__aarch64_neon",
        kinds.CONV_DW: "pytorch_q8dwconv_ukernel_up8x9__neon",
        kinds.ADD: "pytorch_q8vadd_ukernel__neon",
        kinds.LINEAR: "pytorch_q8gemm_ukernel_8x8__aarch64_neon",
    }),
)

FBGEMM_DISPATCH_SOURCE = ("pytorch/FBGEMM src/Utils.cc (fbgemmInstructionSet), src/FbgemmConv.cc (ConvFastPath), "
                          "src/GenerateI8Depthwise.cc (AVX2 registers only)")
# fbgemmInstructionSet's cpuinfo tests, in its order: the first that holds is the GEMM's ISA.
_FBGEMM_ISAS = (("avx512_vnni", ("avx512_vnni",)), ("avx512", ("avx512f", "avx512bw", "avx512dq", "avx512vl")),
                ("avx2", ("avx2",)))
# FBGEMM_ENABLE_INSTRUCTIONS values and what each detected ISA lets them force (isaSupportMap).
_FBGEMM_FORCED = {"AVX2": "avx2", "AVX512": "avx512", "AVX512_E1": "avx512_vnni"}
_FBGEMM_ALLOWED = {"avx2": {"avx2"}, "avx512": {"avx512", "avx2"}, "avx512_vnni": {"avx512_vnni", "avx512", "avx2"}}


def fbgemm_isa(flags: set[str], environ=None) -> str | None:
    """The ISA FBGEMM's GEMM kernels are generated for on a CPU with these /proc/cpuinfo flags
    (fbgemmInstructionSet), honouring FBGEMM_ENABLE_INSTRUCTIONS as it does; None: none of its
    x86 kernels (it then runs reference code)."""
    environ = os.environ if environ is None else environ
    detected = next((isa for isa, needs in _FBGEMM_ISAS if all(flag in flags for flag in needs)), None)
    forced = _FBGEMM_FORCED.get(str(environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "")).upper())
    if detected and forced in _FBGEMM_ALLOWED[detected]:
        return forced
    return detected


def fbgemm_kernels(flags: set[str], environ=None) -> dict:
    """{kind: kernel} FBGEMM runs for torch's quantized convolutions and linears on these flags."""
    isa = fbgemm_isa(flags, environ)
    if isa is None:
        return {}
    gemm = f"fbgemm u8s8s32acc32 GEMM JIT kernel for {isa}"
    out = {kinds.CONV_1X1: f"{gemm} (pointwise path)", kinds.CONV_FULL: f"{gemm} (im2col path)",
           kinds.LINEAR: gemm}
    if "avx2" in flags:  # the depthwise generator emits AVX2 code whatever else the CPU has
        out[kinds.CONV_DW] = "fbgemm depthwise 3x3 JIT kernel for avx2"
    return out


_QNNPACK_SYMBOL = re.compile(rb"pytorch_q8(?:conv|gemm|dwconv)\w*?_ukernel_\w+?__(\w+)")


def qnnpack_kernel_isas(library: Path) -> list[str]:
    """The ISA suffixes (sse2, aarch64_neon, ...) of the q8 conv/gemm/dwconv micro-kernel
    symbols in a torch library: what this build of QNNPACK holds, read from the file."""
    import mmap
    found = set()
    with open(library, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        position = data.find(b"pytorch_q8")
        while position != -1:
            match = _QNNPACK_SYMBOL.match(data, position, position + 200)
            if match:
                found.add(match.group(1).decode())
            position = data.find(b"pytorch_q8", position + 10)
    return sorted(found)


def qnnpack_rule(architecture: str) -> SourceRule | None:
    return next((rule for rule in QNNPACK_RULES if rule.architecture == architecture), None)


def architecture(machine: str) -> str | None:
    """'x86' or 'arm64' from platform.machine(), None otherwise."""
    machine = machine.lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    return None
