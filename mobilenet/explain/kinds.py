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
"""
from __future__ import annotations

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

# Lower-case substrings, checked in this order: the first that matches decides.
_BY_NAME = (
    # quantize/dequantize first: "Convert (NC, F32, QS8)" and "DequantizeLinear" must not
    # fall through to the patterns below.
    (QDQ, ("quantize_per_tensor", "quantize_per_channel", "dequantize", "quantizelinear",
           "dynamicquantize", "convert (nc", "quantize (")),
    (LAYOUT, ("transpose", "permute", "reorder", "contiguous", "to_mkldnn", "to_dense",
              "copy (nc", "copy (nd", "channels_last")),
    (POOL, ("pool", "mean")),
)
# "add" is also in aten::addmm (a linear layer) and its relatives.
_NOT_ADD = ("addmm", "addcmul", "addcdiv", "addmv", "addbmm")
_LINEAR_NAMES = ("linear", "addmm", "aten::matmul", "aten::mm", "gemm", "matmul", "fully connected",
                 "fullyconnected")


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
    if "dwconv" in lowered:
        return CONV_DW
    if "igemm" in lowered:
        return CONV_FULL
    if "gemm" in lowered or "fully connected" in lowered:
        return CONV_1X1
    return OTHER


def classify_call(names) -> list[str]:
    """The kinds of one inference's operators, given their names in execution order."""
    names = list(names)
    lowered = [n.lower().replace("fully_connected", "fully connected") for n in names]
    by_name = [_name_kind(n) for n in lowered]
    pool_at = next((i for i, k in enumerate(by_name) if k == POOL), len(names))
    # XNNPACK runs 1x1 convolutions as Fully Connected; only the classifier follows the pool.
    conv_like = [i for i, n in enumerate(lowered) if by_name[i] is None
                 and ("conv" in n or ("fully connected" in n and i < pool_at))]
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
