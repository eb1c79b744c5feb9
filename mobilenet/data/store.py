"""Photos preprocessed once into arrays that every variant, build check and worker reads.

Each set is one [N, 3, crop, crop] float32 .npy written a photo at a time (header first, then
each photo's bytes), so preprocessing 50 000 photos holds one of them in memory, not all;
readers take one at a time too (NpyImages). It is 0.6 MB of disk per photo at 224 px.

The store is keyed by the model's transform (mobilenet.models.preprocessing_for): its digest is
in the freshness record, and a transform other than ImageNet's classic one (the default
model's) keeps its arrays in a folder of its own, build/data/<digest>/ (Settings.data_dir), so
two models whose photos differ never share them.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilenet.data.images import ManifestError, image_set
from mobilenet.data.preprocess import IMAGENET_PREPROCESSING, Preprocessing
from mobilenet.files import atomic_path, read_json, sha256_cached, write_json
from mobilenet.freshness import is_fresh, module_files, record_stamp, stamp_path
from mobilenet.measure.npyimages import NpyImages


@dataclass(frozen=True)
class Prepared:
    calib: NpyImages
    eval: NpyImages
    labels: list[int] | None
    eval_names: list[str]
    image_set: str
    preprocess_ms: float  # mean per photo: decode + resize + crop + normalise
    fingerprint: str  # sha256 of the preprocessed photos and their labels: what results were scored on
    # How many classes each set spans (None: labels unknown); the counts are len(calib), len(eval).
    calib_classes: int | None = None
    eval_classes: int | None = None
    preprocessing: dict | None = None  # the transform the photos were made with (Preprocessing.as_dict)

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def write_photos(paths, out: Path, desc: str = "preprocess", progress: bool = True,
                 preprocessing: Preprocessing = IMAGENET_PREPROCESSING) -> float:
    """Preprocess `paths` into one [N, 3, crop, crop] float32 .npy at `out`, a photo at a time;
    returns the mean milliseconds per photo of the preprocessing alone.

    The header is written first and each photo's bytes after it, which is exactly what
    np.save writes for the whole array, without ever holding more than one photo.
    """
    from tqdm import tqdm

    from mobilenet.data.preprocess import load_image
    paths = list(paths)
    shape = preprocessing.input_shape[1:]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (len(paths), *shape)}
    spent = 0.0
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for path in tqdm(paths, desc=desc, unit="img", disable=not progress, leave=False):
            start = time.perf_counter()
            try:
                photo = load_image(path, preprocessing).numpy()
            except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for a bad file
                raise ManifestError(f"{path}: cannot preprocess it ({exc.__class__.__name__}: {exc}); "
                                    "remove or replace it") from None
            spent += time.perf_counter() - start
            if photo.shape != (1, *shape):
                raise ManifestError(f"{path}: preprocessed to shape {photo.shape}, expected (1, {shape})")
            fh.write(np.ascontiguousarray(photo, dtype=np.float32).data)  # its bytes, not a copy
    return spent * 1000 / max(1, len(paths))


def prepare(settings, force: bool = False) -> Prepared:
    """Preprocess the calibration and evaluation photos into build/data (skipped when fresh)."""
    from mobilenet.models import preprocessing_for
    images = image_set(settings)
    preprocessing = preprocessing_for(settings)
    data = settings.data_dir
    calib_npy, eval_npy, info_json = data / "calib.npy", data / "eval.npy", data / "images.json"
    labels = list(images.eval_labels) if images.labelled else None
    step_settings = {"image_set": images.name, "files": [str(p) for p in images.files()], "labels": labels,
                     "preprocessing": preprocessing.transform_dict()}
    # The photos and the code that turns them into arrays: editing either re-preprocesses.
    inputs = [*images.files(), *module_files("mobilenet.data.preprocess", "mobilenet.data.store")]
    stamp = stamp_path(settings.stamps_dir, store_stamp_name(preprocessing))
    fresh, _ = is_fresh([calib_npy, eval_npy, info_json], inputs, step_settings, stamp)
    if force or not fresh:
        progress = not settings.quiet
        write_photos(images.calib, calib_npy, "preprocess calibration photos", progress, preprocessing)
        per_image_ms = write_photos(images.eval, eval_npy, "preprocess evaluation photos", progress, preprocessing)
        digest = hashlib.sha256(sha256_cached(eval_npy).encode())
        digest.update(json.dumps({"labels": labels, "calib": sha256_cached(calib_npy)}).encode())
        write_json(info_json, {
            "image_set": images.name, "labels": labels, "eval_names": [images.name_of(p) for p in images.eval],
            "calib_names": [images.name_of(p) for p in images.calib],
            # What the report states about the photos: how many, and how many classes each set spans.
            "calib_photos": len(images.calib), "calib_classes": images.calib_classes,
            "eval_photos": len(images.eval), "eval_classes": images.eval_classes,
            "preprocess_ms": per_image_ms, "fingerprint": digest.hexdigest(),
            "preprocessing": preprocessing.as_dict()})
        record_stamp(stamp, step_settings, inputs)
    info = read_json(info_json)
    return Prepared(NpyImages(calib_npy), NpyImages(eval_npy), info["labels"], info["eval_names"],
                    info["image_set"], info["preprocess_ms"], info["fingerprint"],
                    info.get("calib_classes"), info.get("eval_classes"), info.get("preprocessing"))


def is_default_store(preprocessing: Preprocessing) -> bool:
    """Does this transform keep its arrays in build/data itself (ImageNet's classic one does)?"""
    return preprocessing.digest() == IMAGENET_PREPROCESSING.digest()


def store_folder(data_root: Path, preprocessing: Preprocessing) -> Path:
    """Where the photos preprocessed with this transform live, under build/data."""
    return Path(data_root) if is_default_store(preprocessing) else Path(data_root) / preprocessing.digest()


def store_stamp_name(preprocessing: Preprocessing) -> str:
    return "prepare-data" if is_default_store(preprocessing) else f"prepare-data.{preprocessing.digest()}"
