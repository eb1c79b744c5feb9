"""Operator names of every runtime's profiler -> one common set of kinds.

Each profiler names the same work differently: torch says `aten::conv2d` or
`quantized::conv2d_relu`, ONNX Runtime `FusedConv` / `QLinearConv`, XNNPACK
`Convolution (NHWC, QS8) DWConv` or `Fully Connected (NC, F32) GEMM`. No name says whether
a convolution is 1x1 or depthwise, and the profilers do not record the weights reliably
(quantized and prepacked kernels hide them; torch's record_shapes misreports some inside
TorchScript graphs). But every runtime runs MobileNet-V2's 52 convolutions in the same
order, so a call's convolutions are matched to the architecture's own list, in order.
When a call's count differs, only what the name itself says is used (XNNPACK names its
depthwise kernels DWConv) and the rest is "other": never a guess.

What each runtime's names say is in its record (mobilenet.registry, Runtime.operator_names).
A call is classified with every runtime's names together: no runtime's name says one kind
in one runtime and another in another, and a layer comparison may report another
runtime's names (ExecuTorch's compares aten graph nodes).
"""
from __future__ import annotations

from mobilenet.registry import RUNTIMES

CONV_1X1 = "1x1 conv"
CONV_DW = "depthwise 3x3 conv"
CONV_FULL = "full 3x3 conv"
ADD = "add"
POOL = "pooling"
LINEAR = "linear"
QDQ = "quantize/dequantize"
LAYOUT = "layout conversion"
OTHER = "other"

KINDS = (CONV_1X1, CONV_DW, CONV_FULL, ADD, POOL, LINEAR, QDQ, LAYOUT, OTHER)
CONV_KINDS = (CONV_1X1, CONV_DW, CONV_FULL)

# MobileNet-V2 (Sandler et al. 2018, torchvision's layout): expansion t, channels c,
# repeats n, stride s of each inverted-residual stage.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _mobilenet_v2_convs() -> tuple[str, ...]:
    convs = [CONV_FULL]  # the 3x3 stem
    for expansion, _, repeats, _ in _STAGES:
        for _ in range(repeats):
            if expansion != 1:
                convs.append(CONV_1X1)  # expand
            convs += [CONV_DW, CONV_1X1]  # depthwise, project
    convs.append(CONV_1X1)  # the last 1x1 conv to 1280 channels
    return tuple(convs)


MOBILENET_V2_CONVS = _mobilenet_v2_convs()


def _every_runtime(field: str) -> tuple:
    """One field of every runtime's operator names, in registry order, each pattern once."""
    return tuple(dict.fromkeys(pattern for runtime in RUNTIMES if runtime.operator_names
                               for pattern in getattr(runtime.operator_names, field)))


# Lower-case substrings, checked in this order: the first that matches decides.
_BY_NAME = (
    # quantize/dequantize first: "Convert (NC, F32, QS8)" and "DequantizeLinear" must not
    # fall through to the patterns below.
    (QDQ, _every_runtime("quantize")),
    (LAYOUT, _every_runtime("layout")),
    (POOL, _every_runtime("pool")),
)
_NOT_ADD = _every_runtime("not_add")
_LINEAR_NAMES = _every_runtime("linear")
_CONV_BEFORE_POOL = _every_runtime("conv_before_pool")
_CONV_HINTS = ((CONV_DW, _every_runtime("depthwise")), (CONV_FULL, _every_runtime("full")),
               (CONV_1X1, _every_runtime("pointwise")))
_SPELLINGS = _every_runtime("spellings")


def _name_kind(lowered: str) -> str | None:
    for kind, patterns in _BY_NAME:
        if any(p in lowered for p in patterns):
            return kind
    if "add" in lowered and not any(p in lowered for p in _NOT_ADD):
        return ADD
    return None


def _conv_hint(lowered: str) -> str:
    """What a convolution's name alone says: XNNPACK names its microkernel families
    (DWConv depthwise, IGEMM a spatial window, plain GEMM a 1x1 convolution)."""
    for kind, patterns in _CONV_HINTS:
        if any(p in lowered for p in patterns):
            return kind
    return OTHER


def _lower(name: str) -> str:
    lowered = name.lower()
    for spelling, matched in _SPELLINGS:
        lowered = lowered.replace(spelling, matched)
    return lowered


def classify_call(names) -> list[str]:
    """The kinds of one inference's operators, given their names in execution order."""
    names = list(names)
    lowered = [_lower(n) for n in names]
    by_name = [_name_kind(n) for n in lowered]
    pool_at = next((i for i, k in enumerate(by_name) if k == POOL), len(names))
    # XNNPACK runs 1x1 convolutions as Fully Connected; only the classifier follows the pool.
    conv_like = [i for i, n in enumerate(lowered) if by_name[i] is None
                 and ("conv" in n or (any(p in n for p in _CONV_BEFORE_POOL) and i < pool_at))]
    kinds = []
    for n, kind in zip(lowered, by_name):
        if kind:
            kinds.append(kind)
        elif any(p in n for p in _LINEAR_NAMES) and "conv" not in n:
            kinds.append(LINEAR)
        else:
            kinds.append(OTHER)
    matched = len(conv_like) == len(MOBILENET_V2_CONVS)
    for position, index in enumerate(conv_like):
        kinds[index] = MOBILENET_V2_CONVS[position] if matched else _conv_hint(lowered[index])
    return kinds
