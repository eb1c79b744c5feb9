"""Process setup shared by the three PyTorch runners."""
from __future__ import annotations

import numpy as np
import torch

from mobilenet.logs import quiet_deprecations
from mobilenet.measure.runners import BaseRunner, RuntimeUnavailable


def configure(threads: int, engine: str | None) -> int:
    """Set intra-op threads and the quantized engine; return the effective thread count.

    The quantized engine must be set before a quantized TorchScript module is loaded:
    packed weights are prepacked for whichever engine is current at load time.
    """
    quiet_deprecations()
    torch.set_num_threads(threads)
    if engine:
        if engine not in torch.backends.quantized.supported_engines:
            raise RuntimeUnavailable(f"quantized engine {engine!r} is not in this torch build "
                                     f"({torch.backends.quantized.supported_engines})")
        torch.backends.quantized.engine = engine
    return torch.get_num_threads()


class TorchRunner(BaseRunner):
    """Threads, engine and run for every PyTorch form; subclasses only load."""
    package = "torch"
    extra_packages = ("torchvision",)

    def __init__(self, threads: int, engine: str | None = None):
        super().__init__(threads)
        self.threads_effective = configure(threads, engine)
        self.module = None

    def run(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(image)).numpy()
