"""ExecuTorch programs (.pte, XNNPACK-delegated), run with the ExecuTorch C++ runtime.

ExecuTorch has one process-wide thread pool, shared by every loaded program; the XNNPACK
delegate keeps a pointer to it when a method is loaded. Resetting the pool after that
leaves the delegate with a dangling pool and crashes the process, so the pool is sized
exactly once per process, in the first Runner's constructor, before anything is loaded.
A later Runner asking for a different count is refused rather than allowed to crash.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mobilenet.logs import output_to_log
from mobilenet.measure.runners import BaseRunner

log = logging.getLogger("mobilenet.measure.runners.executorch")

# The native module itself, not executorch.runtime or pybindings.portable_lib: those import
# executorch.exir (the compiler side, with torchao), 12.5 s per process against 4 s for torch
# alone, and run the same C++ runtime. Its import prints cpuinfo probing; keep that out of
# the worker's stdout/stderr. An ImportError still propagates (runner_module turns it into
# RuntimeUnavailable).
with output_to_log(log, "executorch runtime import"):
    import torch
    from executorch.extension.pybindings import _C as portable_lib  # noqa: N811 (the native module's own name)

_pool_threads: int | None = None  # what this process's thread pool was sized to


def _size_threadpool(threads: int) -> int:
    global _pool_threads
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if _pool_threads is None:
        # The first query creates the pool (cpuinfo probing prints to stderr, hence quiet).
        with output_to_log(log, "executorch threadpool"):
            if portable_lib._threadpool_get_thread_count() != threads:
                portable_lib._unsafe_reset_threadpool(threads)
        _pool_threads = threads
    elif _pool_threads != threads:
        raise RuntimeError(
            f"executorch: this process's thread pool is already sized to {_pool_threads} "
            f"threads; it cannot be resized to {threads} once programs may be loaded "
            "(use a new process per thread count)")
    return int(portable_lib._threadpool_get_thread_count())


class Runner(BaseRunner):
    package = "executorch"

    def __init__(self, threads: int):
        super().__init__(threads)
        self.threads_effective = _size_threadpool(threads)
        self.path: Path | None = None
        self.program = None
        self.method = None

    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        with output_to_log(log, f"executorch load {self.path.name}"):
            # Kept on self so the program outlives every call of its method.
            self.program = portable_lib._load_program(str(self.path))
            self.method = self.program.load_method("forward")

    def run(self, image: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        # The call clones outputs out of the planned memory (clone_outputs defaults to True),
        # so the array stays valid after the next call.
        (logits,) = self.method((tensor,))
        return logits.numpy()
