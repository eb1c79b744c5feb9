"""Per-layer quantization error of each INT8 variant, with its ecosystem's own tooling.

Each runtime's record (mobilenet.registry, Runtime.numerics) names its module here, if it has
one; each exposes `measure(variant, artifact, inputs: Inputs) -> QuantizationError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Inputs:
    models_dir: Path
    photos: list  # float32 [1, 3, 224, 224] evaluation photos to compare on
    calibration_npy: Path  # the build's calibration photos, for rebuilding a quantized program

    def calibration(self) -> list[np.ndarray]:
        from mobilenet.measure.npyimages import NpyImages
        return list(NpyImages(self.calibration_npy))
