"""FP32 eager PyTorch: torchvision's nn.Module with the state_dict artifact loaded."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from mobilenet.measure.runners._torch_common import TorchRunner


class Runner(TorchRunner):
    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        model = torchvision.models.mobilenet_v2(weights=None)
        model.load_state_dict(torch.load(self.path, weights_only=True))
        self.module = model.eval()
