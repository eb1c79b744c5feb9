"""Which image classifier the chain takes through every form: its spec and its record.

The spec is a setting (MOBILENET_MODEL, --model), in one of two forms:

- `torchvision:<name>[:<WEIGHTS>]`: a classification model of torchvision.models, checked against
  `list_models(module=torchvision.models)`. WEIGHTS names an entry of the model's weights enum
  (IMAGENET1K_V1, DEFAULT, or MobileNet_V2_Weights.IMAGENET1K_V1); without it, the enum's FIRST
  entry, not torchvision's DEFAULT: MobileNet-V2's first entry is IMAGENET1K_V1, the weights and
  transform this tool has always used, while its DEFAULT (IMAGENET1K_V2) resizes to 232. The entry
  names the preprocessing (its `transforms()`) and is what is downloaded when no weights file is given.
- `python:<package.module>:<factory>`: the user's own nn.Module, made by calling factory() with no
  arguments. That runs the user's code; the module is imported only when a build loads the model.
  Its preprocessing comes from options (resize, crop, mean, std, interpolation).

The record (ModelRecord) is what every stage reads back about the model once it is loaded: its
preprocessing and input size, its class count (from a forward pass), what it is made of (for
registry.applies) and how a runner rebuilds it. The export step writes it into every meta.

Nothing here imports torch at module level: settings are parsed in processes that never load a model.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

from mobilenet.data.preprocess import IMAGENET_PREPROCESSING, INTERPOLATIONS, Preprocessing

DEFAULT_SPEC = "torchvision:mobilenet_v2"
# How a runner rebuilds the default model: a plain state_dict is MobileNet-V2's.
DEFAULT_CONSTRUCTOR = {"torchvision": "mobilenet_v2", "kwargs": {}}
FORMS = "torchvision:<name>[:<WEIGHTS>] or python:<package.module>:<factory>"
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# The options a python: model states its preprocessing with (Settings fields).
PREPROCESSING_OPTIONS = ("resize", "crop", "mean", "std", "interpolation")
# When only the crop is given, the resize keeps ImageNet's classic ratio (224 of 256).
CLASSIC_CROP_RATIO = IMAGENET_PREPROCESSING.crop_px / IMAGENET_PREPROCESSING.resize_px


class ModelError(ValueError):
    """A model spec, factory or output that cannot be used; one line naming it and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "torchvision" or "python"
    name: str  # the torchvision builder's name, or the python module
    weights_entry: str | None = None  # torchvision: the weights enum member, as resolved
    factory: str | None = None  # python: the attribute path of the factory in the module

    @property
    def text(self) -> str:
        if self.kind == "python":
            return f"python:{self.module}:{self.factory}"
        return f"torchvision:{self.name}" + (f":{self.weights_entry}" if self.weights_entry else "")

    @property
    def module(self) -> str:
        return self.name

    @property
    def is_default(self) -> bool:
        return self.text == DEFAULT_SPEC


def _torchvision_models() -> list[str]:
    import torchvision
    return torchvision.models.list_models(module=torchvision.models)


def _close(word: str, choices) -> str:
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(near)}?" if near else ""


def parse_spec(text: str, check: bool = True) -> ModelSpec:
    """The spec as written -> ModelSpec, or ModelError naming the accepted forms.

    check: look the torchvision name and weights entry up (imports torchvision); a python:
    factory is never imported here."""
    text = str(text).strip()
    kind, _, rest = text.partition(":")
    if kind == "torchvision":
        name, _, entry = rest.partition(":")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name or "-"):
            raise ModelError(f"{text!r}: expected torchvision:<name>[:<WEIGHTS>], e.g. torchvision:mobilenet_v3_small")
        if not check:
            return ModelSpec("torchvision", name, entry or None)
        known = _torchvision_models()
        if name not in known:
            raise ModelError(f"{name!r} is no classification model of torchvision.models{_close(name, known)} "
                             f"(torchvision.models.list_models(module=torchvision.models) lists {len(known)})")
        member = weights_entry(ModelSpec("torchvision", name, entry or None)) if entry else None
        return ModelSpec("torchvision", name, member.name if member is not None else None)
    if kind == "python":
        module, _, factory = rest.partition(":")
        if not _DOTTED.match(module) or not _DOTTED.match(factory):
            raise ModelError(f"{text!r}: expected python:<package.module>:<factory>, e.g. python:mymodels.net:build")
        return ModelSpec("python", module, factory=factory)
    hint = f"; did you mean torchvision:{text}?" if re.fullmatch(r"[a-z_][a-z0-9_]*", text) else ""
    raise ModelError(f"{text!r}: expected {FORMS}{hint}")


def weights_entry(spec: ModelSpec):
    """The torchvision weights enum member the spec names, else the enum's first entry."""
    from torchvision.models import get_model_weights
    enum = get_model_weights(spec.name)
    members = list(enum)  # aliases (DEFAULT) are not listed: the first is the oldest entry
    if not spec.weights_entry:
        if not members:
            raise ModelError(f"torchvision:{spec.name} has no weights entry to read its preprocessing from")
        return members[0]
    written = spec.weights_entry
    owner, _, member = written.rpartition(".")
    if owner and owner != enum.__name__:
        raise ModelError(f"torchvision:{spec.name}:{written}: {owner} is not {spec.name}'s weights ({enum.__name__})")
    try:
        return enum[member]
    except KeyError:
        raise ModelError(f"torchvision:{spec.name}:{written}: no such weights entry; "
                         f"{enum.__name__} has {', '.join(m.name for m in members)} (or DEFAULT)") from None


def preprocessing_of_entry(entry) -> Preprocessing:
    """The preprocessing a torchvision weights entry names, read from its transforms()."""
    preset = entry.transforms()
    try:
        resize, crop = int(preset.resize_size[0]), int(preset.crop_size[0])
        interpolation = preset.interpolation.value
        mean, std = tuple(preset.mean), tuple(preset.std)
    except AttributeError:
        raise ModelError(f"{type(entry).__name__}.{entry.name}.transforms() is {type(preset).__name__}, "
                         f"not torchvision's ImageClassification preset: not an image classifier's weights") from None
    return Preprocessing(resize, crop, mean, std, interpolation,
                         source=f"torchvision {type(entry).__name__}.{entry.name}.transforms()")


# MobileNet-V2's first weights entry (IMAGENET1K_V1) names ImageNet's classic transform;
# tests/test_models.py reads it from torchvision and checks. Processes that only need the
# photo store's key (the bench's coordinator) then need not import torchvision to find it.
DEFAULT_PREPROCESSING = Preprocessing(**{**IMAGENET_PREPROCESSING.transform_dict(),
                                         "source": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1.transforms()"})


def _values(text, name: str, count: int) -> tuple[float, ...]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count:
        raise ValueError(f"expected {count} comma-separated numbers, e.g. 0.485,0.456,0.406 ({name} per RGB channel)")
    return values


def parse_mean(text) -> tuple[float, float, float]:
    return _values(text, "mean", 3)


def parse_std(text) -> tuple[float, float, float]:
    values = _values(text, "std", 3)
    if min(values) <= 0:
        raise ValueError("expected three positive numbers, e.g. 0.229,0.224,0.225")
    return values


def parse_interpolation(text) -> str:
    word = str(text).strip().lower()
    if word not in INTERPOLATIONS:
        raise ValueError(f"expected one of {', '.join(INTERPOLATIONS)}")
    return word


@lru_cache(maxsize=16)
def preprocessing_of(spec_text: str, resize: int | None = None, crop: int | None = None,
                     mean: tuple | None = None, std: tuple | None = None,
                     interpolation: str | None = None) -> Preprocessing:
    """The preprocessing of the model a spec names: its weights entry's, or the options'."""
    spec = parse_spec(spec_text, check=False)
    given = {"resize": resize, "crop": crop, "mean": mean, "std": std, "interpolation": interpolation}
    if spec.kind == "torchvision":
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise ModelError(f"--{named[0]} (MOBILENET_{named[0].upper()}) states a python: model's preprocessing; "
                             f"{spec.text} takes its own from its weights entry (name another with "
                             f"torchvision:<name>:<WEIGHTS>)")
        if spec.is_default:
            return DEFAULT_PREPROCESSING
        return preprocessing_of_entry(weights_entry(spec))
    base = IMAGENET_PREPROCESSING
    crop_px = crop or base.crop_px
    resize_px = resize or (round(crop_px / CLASSIC_CROP_RATIO) if crop else base.resize_px)
    stated = [name for name, value in given.items() if value is not None]
    defaulted = [name for name, value in given.items() if value is None]
    parts = [f"options ({', '.join(stated)})"] if stated else []
    if defaulted:
        parts.append(f"ImageNet's classic transform for {', '.join(defaulted)}")
    source = "; ".join(parts)
    try:
        return Preprocessing(resize_px, crop_px, mean or base.mean, std or base.std,
                             interpolation or base.interpolation, source=source)
    except ValueError as exc:
        raise ModelError(f"the preprocessing of {spec.text}: {exc}") from None


def preprocessing_for(settings) -> Preprocessing:
    """The preprocessing of the settings' model (the photo store is keyed by its digest)."""
    return preprocessing_of(settings.model, settings.resize, settings.crop, settings.mean, settings.std,
                            settings.interpolation)


def quantizable_builder(name: str) -> str | None:
    """torchvision.models.quantization's builder for this torchvision model, or None."""
    import torchvision
    import torchvision.models.quantization
    registered = torchvision.models.list_models(module=torchvision.models.quantization)
    return f"quantized_{name}" if f"quantized_{name}" in registered else None


@dataclass(frozen=True)
class ModelRecord:
    """What the stages read back about the loaded model; JSON in every meta (as_dict)."""
    spec: str  # canonical: torchvision:mobilenet_v2, python:pkg.mod:build
    kind: str  # torchvision or python
    name: str  # mobilenet_v2, or pkg.mod:build
    weights_entry: str | None  # the torchvision entry whose preprocessing (and download) it uses
    weights: dict  # build.model.WeightsInfo: source, sha256, random
    preprocessing: Preprocessing
    num_classes: int  # the model's output width, read from a forward pass
    constructor: dict  # how a runner rebuilds the nn.Module (measure/runners/torch_eager.build_module)
    is_module: bool  # an nn.Module (TorchScript and .ptl trace one)
    linear_layers: int  # nn.Linear modules (all that dynamic INT8 quantizes)
    batchnorm_layers: int
    quantizable: str | None  # torchvision.models.quantization's builder, e.g. quantized_mobilenet_v2
    logit_scale: float  # max |logit| of the FP32 model on the calibration photos (or one zero image)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.preprocessing.input_shape

    @property
    def random_weights(self) -> bool:
        return bool(self.weights.get("random"))

    def as_dict(self) -> dict:
        return {**asdict(self), "preprocessing": self.preprocessing.as_dict(), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelRecord:
        fields = {k: v for k, v in data.items() if k != "input_shape"}
        return cls(**{**fields, "preprocessing": Preprocessing.from_dict(data["preprocessing"])})
