"""Process setup shared by the three PyTorch runners."""
from __future__ import annotations


import numpy as np
import torch
import torchvision

from mobilenet.logs import quiet_deprecations


def configure(threads: int, engine: str | None) -> int:
    """Set intra-op threads and the quantized engine; return the effective thread count.

    The quantized engine must be set before a quantized TorchScript module is loaded:
    packed weights are prepacked for whichever engine is current at load time.
    """
    quiet_deprecations()
    torch.set_num_threads(threads)
    if engine:
        if engine not in torch.backends.quantized.supported_engines:
            from mobilenet.runners import RuntimeUnavailable
            raise RuntimeUnavailable(f"quantized engine {engine!r} is not in this torch build "
                                     f"({torch.backends.quantized.supported_engines})")
        torch.backends.quantized.engine = engine
    return torch.get_num_threads()


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "torchvision": torchvision.__version__}



class TorchRunner:
    """Threads, engine, run and size for every PyTorch form; subclasses only load."""

    def __init__(self, threads: int, engine: str | None = None):
        self.threads_effective = configure(threads, engine)
        self.path = None
        self.module = None

    def run(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(image)).numpy()

    def size_bytes(self) -> int:
        from mobilenet.runners import file_size
        return file_size(self.path)
