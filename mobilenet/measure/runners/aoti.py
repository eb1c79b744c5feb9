"""AOTInductor packages (.pt2): the torch.export'ed model compiled ahead of time to a shared library.

The package is a zip holding the compiled model: one .so with its weights inside, which
exports AOTInductor's C interface (AOTInductorModelContainerCreateWithDevice / ...Run) and
calls libtorch's C shim (aoti_torch_*) for tensors and the operators it did not generate.
This runner loads it as a C++ deployment does, through that interface: libtorch's shared
libraries and the .so, over ctypes, with no `import torch`. Importing torch cost about 3 s
of CPU per process, which every bench session paid twice (FP32 and INT8); loading libtorch's
libraries costs about 1 s.

The generated kernels are OpenMP loops without a fixed thread count, and the .so resolves
libgomp to the copy libtorch has loaded, so at::set_num_threads (which sets OpenMP's count)
governs them as it does libtorch's own operators.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mobilenet.measure.runners import BaseRunner, RuntimeUnavailable

# The libraries the .so needs, in dependency order; RTLD_GLOBAL so that its aoti_torch_*
# symbols resolve against them.
_TORCH_LIBRARIES = ("libc10.so", "libtorch_cpu.so", "libtorch.so")
_handle = ctypes.c_void_p


def _torch_library_dir() -> Path:
    spec = importlib.util.find_spec("torch")  # locates the package without importing it
    if spec is None or not spec.origin:
        raise RuntimeUnavailable("torch is not installed: AOTInductor packages need libtorch")
    return Path(spec.origin).parent / "lib"


def _declare(function, argtypes, restype=ctypes.c_int32):
    function.argtypes, function.restype = argtypes, restype
    return function


def _load_libtorch() -> ctypes.CDLL:
    """libtorch_cpu (the C shim and at::*); a process that has imported torch gets the copy
    already loaded."""
    library_dir = _torch_library_dir()
    loaded = None
    for name in _TORCH_LIBRARIES:
        try:
            library = ctypes.CDLL(str(library_dir / name), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise RuntimeUnavailable(f"cannot load {name} from {library_dir}: {exc}") from exc
        if name == "libtorch_cpu.so":
            loaded = library
    return loaded


@functools.cache
def _shim() -> _Shim:
    """libtorch loaded and its calls declared once per process, however many runners it makes
    (explain profiles several AOTInductor packages in one process)."""
    return _Shim(_load_libtorch())


class _Shim:
    """The few libtorch C calls the runner makes, with their C signatures."""

    def __init__(self, libtorch: ctypes.CDLL):
        int64_p = ctypes.POINTER(ctypes.c_int64)
        self.create_tensor_from_blob = _declare(
            libtorch.aoti_torch_create_tensor_from_blob,
            [ctypes.c_void_p, ctypes.c_int64, int64_p, int64_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32,
             ctypes.c_int32, ctypes.POINTER(_handle)])
        self.get_data_ptr = _declare(libtorch.aoti_torch_get_data_ptr,
                                           [_handle, ctypes.POINTER(ctypes.c_void_p)])
        self.get_numel = _declare(libtorch.aoti_torch_get_numel, [_handle, int64_p])
        self.get_dtype = _declare(libtorch.aoti_torch_get_dtype, [_handle, ctypes.POINTER(ctypes.c_int32)])
        self.delete_tensor = _declare(libtorch.aoti_torch_delete_tensor_object, [_handle])
        self.set_grad_enabled = _declare(libtorch.aoti_torch_grad_mode_set_enabled, [ctypes.c_bool],
                                               restype=None)
        self.grad_enabled = _declare(libtorch.aoti_torch_grad_mode_is_enabled, [], restype=ctypes.c_bool)
        for name in ("aoti_torch_dtype_float32", "aoti_torch_device_type_cpu"):
            getattr(libtorch, name).restype = ctypes.c_int32
        self.float32 = libtorch.aoti_torch_dtype_float32()
        self.cpu = libtorch.aoti_torch_device_type_cpu()
        # at::set_num_threads / at::get_num_threads (C++ names; plain int arguments and result).
        self.set_num_threads = _declare(libtorch._ZN2at15set_num_threadsEi, [ctypes.c_int], restype=None)
        self.get_num_threads = _declare(libtorch._ZN2at15get_num_threadsEv, [], restype=ctypes.c_int)

    def check(self, code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"{what} failed (AOTI error {code}; libtorch's message is in the log)")


class Runner(BaseRunner):
    package = "torch"

    def __init__(self, threads: int):
        super().__init__(threads)
        self.shim = _shim()
        self.shim.set_num_threads(int(threads))
        self.threads_effective = self.shim.get_num_threads()
        self.model: ctypes.CDLL | None = None
        self.container = _handle()

    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        with zipfile.ZipFile(self.path) as package, \
                tempfile.TemporaryDirectory(prefix="mobilenet-aoti-") as unpack_dir:
            libraries = [name for name in package.namelist() if name.endswith(".so")]
            if len(libraries) != 1:
                raise ValueError(f"{self.path}: expected one compiled .so in the package, found {libraries}")
            metadata = [name for name in package.namelist() if name.endswith("wrapper_metadata.json")]
            device = json.loads(package.read(metadata[0])).get("AOTI_DEVICE_KEY", "cpu") if metadata else "cpu"
            if device != "cpu":
                raise RuntimeUnavailable(f"{self.path.name} was compiled for {device}, not the CPU")
            # Mapped once loaded: the unpacked file can go (a worker ends with os._exit, which
            # would skip any cleanup left for later).
            self.model = ctypes.CDLL(package.extract(libraries[0], unpack_dir), mode=ctypes.RTLD_LOCAL)
        create = _declare(self.model.AOTInductorModelContainerCreateWithDevice,
                                     [ctypes.POINTER(_handle), ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p])
        self.shim.check(create(ctypes.byref(self.container), 1, b"cpu", None), f"loading {self.path.name}")
        self._run = _declare(self.model.AOTInductorModelContainerRun,
                                        [_handle, ctypes.POINTER(_handle), ctypes.c_size_t, ctypes.POINTER(_handle),
                                         ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p])

    def run(self, image: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(image, dtype=np.float32)
        sizes = (ctypes.c_int64 * data.ndim)(*data.shape)
        strides = (ctypes.c_int64 * data.ndim)(*(s // data.itemsize for s in data.strides))
        inputs, outputs = (_handle * 1)(), (_handle * 1)()
        shim = self.shim
        shim.check(shim.create_tensor_from_blob(data.ctypes.data, data.ndim, sizes, strides, 0, shim.float32,
                                                shim.cpu, 0, inputs), "wrapping the input")
        # Gradients off, as torch.inference_mode had them for the Python loader, and back as they
        # were: a process that also runs torch (explain's profiler, the tests) keeps its mode.
        grad_was_enabled = shim.grad_enabled()
        shim.set_grad_enabled(False)
        try:
            # The container takes ownership of the input handle; the output handle becomes ours.
            code = self._run(self.container, inputs, 1, outputs, 1, None, None)
        finally:
            shim.set_grad_enabled(grad_was_enabled)
        shim.check(code, f"running {self.path.name}")
        try:
            numel, dtype, pointer = ctypes.c_int64(), ctypes.c_int32(), ctypes.c_void_p()
            shim.check(shim.get_numel(outputs[0], ctypes.byref(numel)), "reading the output size")
            shim.check(shim.get_dtype(outputs[0], ctypes.byref(dtype)), "reading the output type")
            if dtype.value != shim.float32:
                raise RuntimeError(f"{self.path.name} returned dtype code {dtype.value}, not float32")
            shim.check(shim.get_data_ptr(outputs[0], ctypes.byref(pointer)), "reading the output")
            logits = np.empty((1, numel.value), dtype=np.float32)
            ctypes.memmove(logits.ctypes.data, pointer.value, logits.nbytes)
            return logits
        finally:
            shim.delete_tensor(outputs[0])
