"""Signal-to-quantization-noise ratio of a layer's INT8 output against its FP32 output.

SQNR = 10·log10(Σ fp32² / Σ (fp32 − int8)²) over every element of every photo compared.
Identical outputs have no noise and an infinite SQNR; the report shows CAP_DB for them (and
for anything above it: beyond ~100 dB the difference is float rounding, not quantization),
and marks them capped, so charts and tables stay finite and honest.
"""
from __future__ import annotations

import math

import numpy as np

from mobilenet.explain import kinds
from mobilenet.explain.records import LayerError

CAP_DB = 100.0
WORST_COUNT = 5


def sqnr_db(reference, quantized) -> tuple[float, bool]:
    """(SQNR in dB, capped) of `quantized` against `reference`: arrays, or lists of arrays
    (one per photo) that are compared element by element as one signal."""
    ref = _flat(reference)
    test = _flat(quantized)
    if ref.shape != test.shape:
        raise ValueError(f"cannot compare a layer output of {ref.size} values with one of {test.size}")
    signal = float(np.sum(ref * ref))
    noise = float(np.sum((ref - test) ** 2))
    if noise == 0.0:
        return CAP_DB, True
    if signal == 0.0:
        return -CAP_DB, True
    value = 10 * math.log10(signal / noise)
    if value >= CAP_DB:
        return CAP_DB, True
    return max(value, -CAP_DB), value <= -CAP_DB


def _flat(values) -> np.ndarray:
    if isinstance(values, (list, tuple)):
        return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values])
    return np.asarray(values, dtype=np.float64).ravel()


def layer_errors(pairs) -> list[dict]:
    """LayerError dicts from [(name, op name, fp32 outputs, int8 outputs)] in execution order.

    Kinds come from the op names with kinds.classify_call, so convolutions are told apart the
    same way as in the operator profiles; depth is the share of compared layers up to and
    including this one (the last is 1).
    """
    pairs = list(pairs)
    layer_kinds = kinds.classify_call(op for _, op, _, _ in pairs)
    out = []
    for index, ((name, _, reference, quantized), kind) in enumerate(zip(pairs, layer_kinds)):
        value, capped = sqnr_db(reference, quantized)
        out.append(LayerError(name=name, kind=kind, depth=(index + 1) / len(pairs), sqnr_db=value,
                              capped=capped).__dict__)
    return out


def worst(layers: list[dict], count: int = WORST_COUNT) -> list[dict]:
    return sorted(layers, key=lambda layer: layer["sqnr_db"])[:count]
