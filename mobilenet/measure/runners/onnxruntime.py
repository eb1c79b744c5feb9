"""ONNX (.onnx) artifacts, FP32 and QDQ INT8, run with ONNX Runtime's CPU execution provider."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime  # an ImportError here is reported by runner_module as RuntimeUnavailable

from mobilenet.measure.runners import BaseRunner


class Runner(BaseRunner):
    package = "onnxruntime"
    extra_packages = ("onnx",)  # the exporter's, when installed (a device has only the runtime)

    def __init__(self, threads: int):
        super().__init__(threads)  # threads_effective is read back from the session once it exists
        self.path: Path | None = None
        self.session = None
        self.input_name = None

    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        # One request at a time: no parallelism across graph nodes, so latency at a
        # given thread count is comparable with the other runtimes.
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Warnings from session creation belong in logs, not on the bench's console.
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(self.path), sess_options=options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.threads_effective = int(self.session.get_session_options().intra_op_num_threads)

    def run(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image, dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: image})
        return logits
