"""One small protocol for every runtime: load / run / size.

Each runtime is a module in this package exposing `Runner(threads, engine)` and
`versions()`. Modules import their runtime lazily, so a worker process for ONNX Runtime
never pays for importing torch, and a missing runtime is reported, not crashed on.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np


class RuntimeUnavailable(RuntimeError):
    """The runtime's package is not installed or cannot run here: the variant is skipped."""


class Runner(Protocol):
    #: thread count read back from the runtime (recorded next to the request); None where
    #: the runtime cannot tell
    threads_effective: int | None

    def load(self, path: Path) -> None:
        """Load the artifact; everything needed for the first call happens here."""

    def run(self, image: np.ndarray) -> np.ndarray:
        """One image, float32 NCHW [1, 3, 224, 224] normalised -> float32 logits [1, 1000].

        Layout (NHWC) and dtype (int8 inputs) conversions are the runner's business.
        """

    def size_bytes(self) -> int:
        """Bytes on disk of what a device would ship."""


def runner_module(runtime: str):
    try:
        return importlib.import_module(f"mobilenet.runners.{runtime}")
    except ImportError as exc:  # the runtime's own package is missing
        raise RuntimeUnavailable(f"{runtime}: {exc}") from exc


def make_runner(runtime: str, threads: int, engine: str | None = None) -> Runner:
    return runner_module(runtime).Runner(threads=threads, engine=engine)


def runtime_versions(runtime: str) -> dict[str, str]:
    return runner_module(runtime).versions()


def file_size(path: Path) -> int:
    return Path(path).stat().st_size
