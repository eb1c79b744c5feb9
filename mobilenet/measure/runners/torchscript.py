"""TorchScript artifacts (.pt), FP32 and quantized, run with torch.jit.load."""
from __future__ import annotations

from pathlib import Path

import torch

from mobilenet.measure.runners._torch_common import TorchRunner


class Runner(TorchRunner):
    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        self.module = torch.jit.load(str(self.path), map_location="cpu").eval()
