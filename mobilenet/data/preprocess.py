"""The seed's ImageNet transform, shared by every variant."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

IMAGE_SIZE = 224


def imagenet_transform():
    from torchvision import transforms
    return transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(IMAGE_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


_TRANSFORM = None


def load_image(path: Path):
    """Path of a photo -> float32 tensor [1, 3, 224, 224], normalised like ImageNet training."""
    global _TRANSFORM
    if _TRANSFORM is None:
        _TRANSFORM = imagenet_transform()
    with Image.open(path) as image:
        return _TRANSFORM(image.convert("RGB")).unsqueeze(0)
