"""Preprocessed images stored as one [N, 3, 224, 224] .npy file, read one at a time.

A leaf module (numpy only): the worker imports it, and the worker also runs on devices
that have nothing but numpy and one runtime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class NpyImages:
    """Images of a [N, 3, 224, 224] .npy file, one at a time.

    Reads with seek + fromfile rather than a memory map, so a worker's peak RSS measures the
    model and runtime, not the whole evaluation set mapped into the process.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            self.offset = fh.tell()
        assert not fortran and len(shape) == 4, f"{path}: expected a C-order [N,3,H,W] array"
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.count = int(np.prod(shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + index * self.count * self.dtype.itemsize)
            flat = np.fromfile(fh, dtype=self.dtype, count=self.count)
        return flat.reshape((1, *self.shape[1:]))

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]
