"""Turning a photo into the model's input: resize, centre crop, scale to [0, 1], normalise.

The numbers come from the model's record (mobilenet.models): a torchvision weights entry's
`transforms()`, or the options of a `python:` model. The default is ImageNet's classic
transform, which MobileNet-V2's IMAGENET1K_V1 weights name (tests/test_models.py checks that).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

# torchvision.transforms.InterpolationMode's values, which is what a weights entry names.
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")


@dataclass(frozen=True)
class Preprocessing:
    resize_px: int  # the shorter side is resized to this
    crop_px: int  # then the centre crop_px x crop_px: the model's input size
    mean: tuple[float, float, float]  # per RGB channel, on [0, 1] values
    std: tuple[float, float, float]
    interpolation: str  # one of INTERPOLATIONS
    source: str = ""  # where the numbers were read from; not part of the digest

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")
        if self.crop_px > self.resize_px:
            raise ValueError(f"crop {self.crop_px} px is larger than the resize {self.resize_px} px")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.crop_px, self.crop_px)

    def transform_dict(self) -> dict:
        """What changes the arrays: everything but where the numbers came from."""
        return {k: v for k, v in asdict(self).items() if k != "source"}

    def digest(self) -> str:
        """Short sha256 of the transform: two models whose photos differ never share a store."""
        return hashlib.sha256(json.dumps(self.transform_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return {**asdict(self), "digest": self.digest()}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(**{k: v for k, v in data.items() if k != "digest"})

    def describe(self) -> str:
        return (f"resize {self.resize_px} ({self.interpolation}), crop {self.crop_px}, "
                f"mean {list(self.mean)}, std {list(self.std)}")


IMAGENET_PREPROCESSING = Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear",
                                       source="ImageNet's classic transform")
IMAGE_SIZE = IMAGENET_PREPROCESSING.crop_px  # the default model's input size


def transform_of(preprocessing: Preprocessing):
    from torchvision import transforms
    return transforms.Compose([
        transforms.Resize(preprocessing.resize_px,
                          interpolation=transforms.InterpolationMode(preprocessing.interpolation)),
        transforms.CenterCrop(preprocessing.crop_px),
        transforms.ToTensor(),
        transforms.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
    ])


def imagenet_transform():
    return transform_of(IMAGENET_PREPROCESSING)


_TRANSFORMS: dict = {}


def load_image(path: Path, preprocessing: Preprocessing = IMAGENET_PREPROCESSING):
    """Path of a photo -> float32 tensor [1, 3, crop, crop], as `preprocessing` says."""
    from PIL import Image
    key = preprocessing.digest()
    if key not in _TRANSFORMS:
        _TRANSFORMS[key] = transform_of(preprocessing)
    with Image.open(path) as image:
        return _TRANSFORMS[key](image.convert("RGB")).unsqueeze(0)
