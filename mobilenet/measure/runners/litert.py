"""LiteRT flatbuffers (.tflite), FP32 and INT8, run with the LiteRT interpreter (XNNPACK)."""
from __future__ import annotations

import os

# Set before the interpreter's native code loads: it reads these once, at import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from mobilenet.measure.runners import BaseRunner  # noqa: E402

NCHW = (1, 3, 224, 224)
NHWC = (1, 224, 224, 3)


def _quantize_into(values: np.ndarray, detail: dict, scratch: np.ndarray, out: np.ndarray) -> np.ndarray:
    """values quantized as the input tensor's scale and zero point say, written into `out`
    through `scratch` (float32, same shape): no array is allocated per call."""
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    np.divide(values, scale, out=scratch)
    np.rint(scratch, out=scratch)
    scratch += zero_point
    np.clip(scratch, info.min, info.max, out=scratch)
    out[...] = scratch
    return out


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if not scale:  # scale 0 marks an unquantized tensor
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


class Runner(BaseRunner):
    # The interpreter takes num_threads but has no call that reports what it uses, so
    # threads_effective stays None (shown as requested), never the request echoed.
    package = "ai-edge-litert"
    extra_packages = ("litert-torch",)  # the converter, when installed (not on devices)

    def __init__(self, threads: int):
        super().__init__(threads)
        self.path: Path | None = None
        self.interpreter = None

    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        # XNNPACK is applied by default and honours num_threads.
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        self.interpreter.allocate_tensors()
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path}: expected 1 input and 1 output, "
                             f"got {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self._input["shape"])
        if shape not in (NCHW, NHWC):
            raise ValueError(f"{self.path}: unexpected input shape {shape}")
        self._nhwc = shape == NHWC
        self._quantized_input = np.issubdtype(self._input["dtype"], np.integer)
        self._quantized_output = np.issubdtype(self._output["dtype"], np.integer)
        # The input is staged in buffers made once: a fresh NHWC copy and a fresh quantized
        # array per call were most of what this runner added to the interpreter's own call.
        self._staged = np.empty(shape, dtype=np.float32)
        self._quantized = np.empty(shape, dtype=self._input["dtype"]) if self._quantized_input else None

    def stage_input(self, image: np.ndarray) -> None:
        """The photo (NCHW float32) into the interpreter's input tensor, in its layout and type."""
        np.copyto(self._staged, image.transpose(0, 2, 3, 1) if self._nhwc else image, casting="same_kind")
        x = _quantize_into(self._staged, self._input, self._staged, self._quantized) if self._quantized_input \
            else self._staged
        self.interpreter.set_tensor(self._input["index"], x)

    def read_output(self) -> np.ndarray:
        # get_tensor copies, so the result survives the next invoke().
        y = self.interpreter.get_tensor(self._output["index"])
        if self._quantized_output:
            return _dequantize(y, self._output)
        return y.astype(np.float32, copy=False)

    def run(self, image: np.ndarray) -> np.ndarray:
        self.stage_input(image)
        self.interpreter.invoke()
        return self.read_output()
