"""Where the FP32 model and its weights come from, and the record of what was loaded.

The model is the spec of mobilenet.models (default torchvision:mobilenet_v2). Weights are a
local state_dict (loaded with weights_only=True), torchvision's download of the spec's weights
entry, the python: factory's own, or random ones when asked for: never a silent fallback.

Random weights. With torchvision's own initialisation every BatchNorm still holds running
mean 0 and variance 1, which the convolutions' real statistics are far from, so the logits
vanish (max |logit| about 1e-9 for MobileNet-V2 on a photo) and a parity check in absolute
units cannot fail. The running statistics are therefore re-estimated on the calibration
photos (BatchNorm layers alone in train mode, no gradients, then eval), which gives logits of
ordinary scale; a model without BatchNorm keeps its initialisation, and its logit scale is
recorded either way.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import asdict, dataclass
from pathlib import Path

from mobilenet.files import sha256_file
from mobilenet.models import (
    DEFAULT_CONSTRUCTOR,
    DEFAULT_SPEC,
    ModelError,
    ModelRecord,
    ModelSpec,
    parse_spec,
    preprocessing_of,
    preprocessing_of_entry,
    quantizable_builder,
    weights_entry,
)

WEIGHTS_HELP = (
    "Use a local state_dict with --weights PATH (or MOBILENET_WEIGHTS=PATH), "
    "or --random-weights (MOBILENET_RANDOM_WEIGHTS=1) for a latency-only run "
    "whose accuracy is meaningless."
)
RANDOM_SEED = 0
# Photos per train-mode batch when re-estimating BatchNorm: a BatchNorm1d after pooling needs
# two or more rows, and a batch of 50 photos would hold every activation of the network at once.
BATCHNORM_BATCH = 10


class WeightsError(RuntimeError):
    pass


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # "torchvision:MobileNet_V2_Weights.IMAGENET1K_V1", a file path, or "random ..."
    sha256: str
    random: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _state_dict_sha256(state_dict) -> str:
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]


def _import_factory(spec: ModelSpec):
    """The python: spec's factory; importing its module runs the user's code."""
    try:
        target = importlib.import_module(spec.module)
    except ImportError as exc:
        raise ModelError(f"model {spec.text}: cannot import {spec.module} ({_first_line(exc)}); it must be "
                         f"importable: installed, or its folder on PYTHONPATH") from None
    except Exception as exc:
        raise ModelError(f"model {spec.text}: importing {spec.module} raised {_first_line(exc)}") from None
    for part in spec.factory.split("."):
        if not hasattr(target, part):
            raise ModelError(f"model {spec.text}: {spec.module} has no {spec.factory!r} "
                             f"(expected python:<package.module>:<factory>)")
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(f"model {spec.text}: {spec.module}.{spec.factory} is a {type(target).__name__}, "
                         f"not a function that returns an nn.Module")
    return target


def _made_by_factory(spec: ModelSpec):
    import torch
    factory = _import_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise ModelError(f"model {spec.text}: {spec.factory}() raised {_first_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model {spec.text}: {spec.factory}() returned a {type(model).__name__}, "
                         f"not a torch.nn.Module")
    return model


def _fresh_module(spec: ModelSpec):
    """The spec's nn.Module with its builder's initialisation (no pretrained weights)."""
    if spec.kind == "python":
        return _made_by_factory(spec)
    import torchvision
    return torchvision.models.get_model(spec.name, weights=None)


def load_state_dict_into(model, path: Path, spec_text: str) -> None:
    """Load a state_dict file into `model`, strictly; a file that does not fit names its first
    missing and unexpected keys (or the first tensor of another shape)."""
    import torch
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist. {WEIGHTS_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a state_dict torch loads with weights_only=True "
                           f"({_first_line(exc)}). {WEIGHTS_HELP}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a checkpoint holding one (the eager reference of a non-default model)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds a {type(state).__name__} that is not a state_dict (names to tensors). "
                           f"{WEIGHTS_HELP}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} is {list(state[k].shape)} in the file, {list(expected[k].shape)} in the model"
                for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            problems.append(f"{len(keys)} {label} keys ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if reshaped:
        problems.append(reshaped[0] + (f" (and {len(reshaped) - 1} more)" if len(reshaped) > 1 else ""))
    if problems:
        raise WeightsError(f"{path} does not fit {spec_text}: {'; '.join(problems)}. {WEIGHTS_HELP}")
    model.load_state_dict(state, strict=True)


def reestimate_batchnorm(model, photos) -> int:
    """Re-estimate every BatchNorm's running statistics on `photos` (float32 [1, 3, H, W] each):
    BatchNorm layers alone in train mode with a cumulative average (momentum None), so dropout
    and stochastic depth stay off; then eval. Returns the photos used (0: the model has none)."""
    import numpy as np
    import torch
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    photos = [np.asarray(p, dtype=np.float32) for p in photos]
    if not norms:
        return 0
    if len(photos) < 2:
        raise ModelError("re-estimating BatchNorm statistics for random weights needs 2 or more calibration photos; "
                         "raise MOBILENET_CALIB_COUNT")
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    starts = list(range(0, len(photos), BATCHNORM_BATCH))
    if len(photos) - starts[-1] < 2 and len(starts) > 1:
        starts.pop()  # a last batch of one photo joins the one before it
    try:
        with torch.no_grad():
            for i, start in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else len(photos)
                model(torch.from_numpy(np.concatenate(photos[start:end])))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return len(photos)


def _logit_scale(model, photos, input_shape) -> tuple[int, float]:
    """(class count, max |logit|) from a forward pass on the photos, else on one zero image."""
    import numpy as np
    import torch
    inputs = [np.asarray(p, dtype=np.float32) for p in photos] or [np.zeros(input_shape, dtype=np.float32)]
    scale, classes = 0.0, None
    with torch.no_grad():
        for image in inputs:
            out = model(torch.from_numpy(image))
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
                shown = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ModelError(f"the model's output for one {list(input_shape)} image is {shown}; "
                                 f"expected logits [1, classes]")
            classes = int(out.shape[1])
            scale = max(scale, float(out.abs().max()))
    return classes, scale


def _constructor(spec: ModelSpec, model) -> dict:
    if spec.kind == "python":
        return {"python": f"{spec.module}:{spec.factory}"}
    # The builder's arguments its weights entry would have set (GoogLeNet and Inception-V3).
    kwargs = {k: bool(getattr(model, k)) for k in ("transform_input", "aux_logits") if hasattr(model, k)}
    return {"torchvision": spec.name, "kwargs": kwargs}


def load_model(spec_text: str = DEFAULT_SPEC, weights: str | None = None, random_weights: bool = False,
               calibration=(), preprocessing=None):
    """Return (eval-mode nn.Module, ModelRecord) for the spec.

    calibration: the calibration photos (float32 [1, 3, H, W]); random weights re-estimate
    BatchNorm on them, and every model's logit scale is read from them.
    preprocessing: what the photos were made with (the store's); default: the spec's own.
    """
    import torch

    if weights and random_weights:
        raise WeightsError("choose either a weights file or random weights, not both")
    spec = parse_spec(spec_text)
    entry = weights_entry(spec) if spec.kind == "torchvision" else None
    own = preprocessing_of(spec.text) if preprocessing is None else preprocessing
    if entry is not None:
        read = preprocessing_of_entry(entry)  # read back from torchvision, whatever the store assumed
        if read.transform_dict() != own.transform_dict():
            raise ModelError(f"the photos were preprocessed as {own.describe()}, but {read.source} says "
                             f"{read.describe()}")
        own = read
    calibration = list(calibration or ())
    if random_weights:
        torch.manual_seed(RANDOM_SEED)
        model = _fresh_module(spec).eval()
        estimated = reestimate_batchnorm(model, calibration) if calibration else 0
        how = (f"BatchNorm statistics re-estimated on {estimated} calibration photos" if estimated else
               "no BatchNorm to re-estimate" if calibration else "BatchNorm statistics as initialised")
        info = WeightsInfo(f"random (seed {RANDOM_SEED}; {how})", _state_dict_sha256(model.state_dict()), True)
    elif weights:
        model = _fresh_module(spec)
        load_state_dict_into(model, Path(weights), spec.text)
        info = WeightsInfo(str(Path(weights).expanduser().resolve()), sha256_file(Path(weights).expanduser()))
    elif spec.kind == "python":
        model = _made_by_factory(spec)
        info = WeightsInfo(f"{spec.text} (the factory's own)", _state_dict_sha256(model.state_dict()))
    else:
        import torchvision
        try:
            model = torchvision.models.get_model(spec.name, weights=entry)
        except Exception as exc:
            raise WeightsError(f"could not download torchvision's weights from {entry.url} ({_first_line(exc)}). "
                               f"{WEIGHTS_HELP}") from exc
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
        sha = sha256_file(cached) if cached.exists() else _state_dict_sha256(model.state_dict())
        info = WeightsInfo(f"torchvision:{type(entry).__name__}.{entry.name}", sha)
    model = model.eval()
    classes, scale = _logit_scale(model, calibration, own.input_shape)
    record = ModelRecord(
        spec=spec.text, kind=spec.kind, name=spec.name if spec.kind == "torchvision" else f"{spec.module}:{spec.factory}",
        weights_entry=f"{type(entry).__name__}.{entry.name}" if entry is not None else None,
        weights=info.as_dict(), preprocessing=own, num_classes=classes, constructor=_constructor(spec, model),
        is_module=isinstance(model, torch.nn.Module),
        linear_layers=sum(isinstance(m, torch.nn.Linear) for m in model.modules()),
        batchnorm_layers=sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()),
        quantizable=quantizable_builder(spec.name) if spec.kind == "torchvision" else None,
        logit_scale=scale)
    return model, record


def load_fp32(weights: str | None = None, random_weights: bool = False):
    """Return (eval-mode MobileNet-V2, WeightsInfo): the default model, as before models were a setting."""
    model, record = load_model(DEFAULT_SPEC, weights, random_weights)
    return model, WeightsInfo(**record.weights)


def eager_checkpoint(record: ModelRecord | None, state_dict):
    """What the eager reference saves: MobileNet-V2's plain state_dict, as ever; for any other
    model the state_dict with the constructor a runner rebuilds the module with."""
    if record is None or record.constructor == DEFAULT_CONSTRUCTOR:
        return state_dict
    return {"constructor": record.constructor, "state_dict": state_dict}


def load_reference(path: Path, meta: dict):
    """(eval-mode FP32 nn.Module, ModelRecord, WeightsInfo) as the export step saved them."""
    from mobilenet.measure.runners.torch_eager import load_eager
    if "model" not in meta:
        raise WeightsError(f"{path.with_suffix('.meta.json').name} records no model: run `invoke export --force`")
    record = ModelRecord.from_dict(meta["model"])
    return load_eager(path), record, WeightsInfo(**meta["weights"])


def weights_input_files(weights: str | None) -> list[Path]:
    """Files whose change must rebuild the models (for freshness checks)."""
    return [Path(weights).expanduser()] if weights else []


def model_input_files(spec_text: str) -> list[Path]:
    """The source file of a python: model's module (editing it makes the export stale); none for
    torchvision's, which the pinned torchvision version fixes. Finding it imports the module's
    parent packages, never the module itself."""
    import importlib.util
    spec = parse_spec(spec_text, check=False)
    if spec.kind != "python":
        return []
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        found = None
    return [Path(found.origin)] if found is not None and found.origin and Path(found.origin).is_file() else []
