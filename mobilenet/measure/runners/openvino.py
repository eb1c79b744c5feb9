"""OpenVINO IR artifacts (.xml graph + .bin weights beside it), FP32 and NNCF INT8, CPU plugin.

The artifact is two files: `size_bytes` counts both, as a device ships both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino  # an ImportError here is reported by runner_module as RuntimeUnavailable
import openvino.properties as props
import openvino.properties.hint as hints

from mobilenet.measure.runners import BaseRunner

DEVICE = "CPU"


def ir_files(xml_path: Path) -> list[Path]:
    """The files of an IR: the graph and the weights OpenVINO reads from beside it."""
    xml_path = Path(xml_path)
    return [xml_path, xml_path.with_suffix(".bin")]


class Runner(BaseRunner):
    package = "openvino"
    extra_packages = ("nncf",)  # the INT8 builder's quantizer, when installed (not on devices)

    def __init__(self, threads: int):
        super().__init__(threads)  # threads_effective is read back from the compiled model
        self.path: Path | None = None
        self.request = None

    def load(self, path: Path) -> None:
        self.path = Path(path)
        missing = [str(p) for p in ir_files(self.path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"OpenVINO IR incomplete, missing: {', '.join(missing)}")
        self.files = ir_files(self.path)
        config = {
            # One request at a time on one stream: latency at a given thread count, as for
            # the other runtimes (the THROUGHPUT hint would split the threads into streams).
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.num_streams: 1,
            props.inference_num_threads: self.threads,
            # CPUs with AVX-512 BF16 or AMX default to bf16 execution; FP32 rows must run in
            # FP32 (and INT8 rows keep their non-quantized layers in FP32, as elsewhere).
            hints.inference_precision: openvino.Type.f32,
            # Pinning binds the threads to fixed cores; no other runtime here pins, and on a
            # shared machine a pinned thread cannot move off a core another process loads.
            hints.enable_cpu_pinning: False,
        }
        compiled = openvino.Core().compile_model(str(self.path), DEVICE, config)
        self.threads_effective = int(compiled.get_property(props.inference_num_threads))
        self.request = compiled.create_infer_request()
        # The photo is copied straight into the request's own input tensor and the answer out of
        # its output tensor: infer({0: image}) goes through a data dispatcher and allocates a
        # fresh output array each call, which roughly doubled what this runner adds to the
        # inference on a 2-vCPU EPYC.
        self._input = self.request.get_input_tensor(0).data

    def stage_input(self, image: np.ndarray) -> None:
        np.copyto(self._input, image, casting="same_kind")

    def run(self, image: np.ndarray) -> np.ndarray:
        self.stage_input(image)
        # share_outputs: a view of the request's output tensor, copied before the next call can overwrite it.
        return self.request.infer(share_outputs=True)[0].copy()
