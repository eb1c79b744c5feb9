"""One small protocol for every runtime: load / run / size.

Each runtime is a module in this package exposing `Runner(threads, **options)`, a
subclass of BaseRunner; the options come from the variant's `runner` entry in the
registry (a torch quantized engine, for instance), so a typo there fails loudly. Modules
import only numpy and their own runtime, so a worker process for ONNX Runtime never pays
for importing torch, a device needs nothing else, and a missing runtime is reported as
unavailable, not crashed on.
"""
from __future__ import annotations

import importlib
from importlib import metadata
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


class BaseRunner:
    """What every runner shares: the artifact's files and their size, the thread count it
    was asked for, and the versions of the packages that run it.

    A subclass names its runtime's distribution in `package` (the version the report
    shows), implements load() and run(), lists every file it loaded in `self.files` (an
    OpenVINO IR is two), and sets `threads_effective` from what the runtime reports, or
    leaves it None where the runtime cannot tell: never the request echoed back.
    """
    package: str = ""
    extra_packages: tuple[str, ...] = ()  # further distributions worth recording, if installed

    def __init__(self, threads: int):
        self.threads = int(threads)
        self.threads_effective: int | None = None
        self.files: list[Path] = []

    def load(self, path: Path) -> None:
        raise NotImplementedError

    def run(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def size_bytes(self) -> int:
        return sum(Path(p).stat().st_size for p in self.files)

    @classmethod
    def versions(cls) -> dict[str, str]:
        found = {}
        for package in (cls.package, *cls.extra_packages):
            try:
                found[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                pass
        return found


def runner_module(runtime: str):
    try:
        return importlib.import_module(f"mobilenet.measure.runners.{runtime}")
    except ImportError as exc:  # the runtime's own package is missing
        raise RuntimeUnavailable(f"{runtime}: {exc}") from exc


def make_runner(runtime: str, threads: int, options: dict | None = None) -> Runner:
    return runner_module(runtime).Runner(threads, **(options or {}))


def runtime_versions(runtime: str) -> dict[str, str]:
    return runner_module(runtime).Runner.versions()


def runtime_package(runtime: str) -> str:
    return runner_module(runtime).Runner.package
