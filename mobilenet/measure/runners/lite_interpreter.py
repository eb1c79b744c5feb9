"""PyTorch Mobile: a .ptl saved for the lite interpreter, run the way an app would."""
from __future__ import annotations

from pathlib import Path

from torch.jit.mobile import _load_for_lite_interpreter

from mobilenet.measure.runners._torch_common import TorchRunner


class Runner(TorchRunner):
    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        self.module = _load_for_lite_interpreter(str(self.path))
