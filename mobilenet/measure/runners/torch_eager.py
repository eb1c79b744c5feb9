"""FP32 eager PyTorch: the model's nn.Module with the state_dict artifact loaded.

The artifact is MobileNet-V2's plain state_dict (the default model), or, for any other model,
{"constructor": ..., "state_dict": ...}: the constructor says how to make the module again
(a torchvision builder and its arguments, or the user's python: factory, which imports and
runs the user's code). Both are read with weights_only=True.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torchvision

from mobilenet.measure.runners._torch_common import TorchRunner


def build_module(constructor: dict):
    """A fresh nn.Module from a constructor record (mobilenet.models.ModelRecord.constructor)."""
    if "torchvision" in constructor:
        return torchvision.models.get_model(constructor["torchvision"], weights=None,
                                            **constructor.get("kwargs", {}))
    if "python" in constructor:
        module_name, _, factory = constructor["python"].partition(":")
        target = importlib.import_module(module_name)
        for part in factory.split("."):
            target = getattr(target, part)
        return target()
    raise ValueError(f"unknown model constructor {constructor!r}: expected a 'torchvision' or 'python' entry")


def load_eager(path: Path):
    """The eval-mode nn.Module an eager artifact holds."""
    loaded = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and "constructor" in loaded and "state_dict" in loaded:
        model, state = build_module(loaded["constructor"]), loaded["state_dict"]
    else:
        model, state = torchvision.models.mobilenet_v2(weights=None), loaded
    model.load_state_dict(state)
    return model.eval()


class Runner(TorchRunner):
    def load(self, path: Path) -> None:
        self.path = Path(path)
        self.files = [self.path]
        self.module = load_eager(self.path)
