"""AOTInductor packages (.pt2): the torch.export'ed model compiled ahead of time to a shared library.

The package holds the compiled model (a .so with its weights inside). It is loaded with the
C++ loader that torch._inductor.aoti_load_package wraps (torch._C._aoti.AOTIModelPackageLoader,
the same object a C++ deployment uses) and called with boxed_run, as the Python wrapper does
after flattening its arguments. Importing torch._inductor for the wrapper costs about 4 s per
process, which every bench session paid twice; torchvision is not needed either. The generated kernels are
OpenMP loops without a fixed thread count, and the .so resolves libgomp to the copy torch
has already loaded, so torch.set_num_threads governs them as it does torch's own operators.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch  # an ImportError here is reported by runner_module as RuntimeUnavailable

from mobilenet.runners import BaseRunner


class Runner(BaseRunner):
    package = "torch"

    def __init__(self, threads: int):
        super().__init__(threads)
        torch.set_num_threads(int(threads))
        self.threads_effective = torch.get_num_threads()
        self.path: Path | None = None
        self.loader = None

    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        # The loader unpacks the package's .so under $TMPDIR and deletes it only in its
        # destructor, which a worker ending with os._exit never runs: every load would leave
        # 11 MB in /tmp. Unpacked into a folder of our own, removed once the .so is mapped.
        with tempfile.TemporaryDirectory(prefix="mobilenet-aoti-") as unpack_dir:
            previous = os.environ.get("TMPDIR")
            os.environ["TMPDIR"] = unpack_dir
            try:
                self.loader = torch._C._aoti.AOTIModelPackageLoader(str(self.path), "model", False, 1, -1)
            finally:
                if previous is None:
                    del os.environ["TMPDIR"]
                else:
                    os.environ["TMPDIR"] = previous

    def run(self, image: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        with torch.inference_mode():
            # Each call returns a newly allocated output, so the array stays valid.
            (logits,) = self.loader.boxed_run([tensor])
            return logits.numpy()
