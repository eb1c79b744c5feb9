"""Photos preprocessed once into arrays that every variant, build check and worker reads."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from mobilenet.data.images import image_set
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

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def _preprocess(paths) -> tuple[np.ndarray, float]:
    from mobilenet.data.preprocess import load_image
    start = time.perf_counter()
    arrays = [load_image(p).numpy() for p in paths]
    per_image_ms = (time.perf_counter() - start) * 1000 / max(1, len(paths))
    return np.concatenate(arrays).astype(np.float32), per_image_ms


def prepare(settings, force: bool = False) -> Prepared:
    """Preprocess the calibration and evaluation photos into build/data (skipped when fresh)."""
    images = image_set(settings)
    data = settings.data_dir
    calib_npy, eval_npy, info_json = data / "calib.npy", data / "eval.npy", data / "images.json"
    labels = list(images.eval_labels) if images.labelled else None
    step_settings = {"image_set": images.name, "files": [str(p) for p in images.files()], "labels": labels}
    # The photos and the code that turns them into arrays: editing either re-preprocesses.
    inputs = [*images.files(), *module_files("mobilenet.data.preprocess", "mobilenet.data.store")]
    stamp = stamp_path(settings.stamps_dir, "prepare-data")
    fresh, _ = is_fresh([calib_npy, eval_npy, info_json], inputs, step_settings, stamp)
    if force or not fresh:
        calib, _ = _preprocess(images.calib)
        evaluation, per_image_ms = _preprocess(images.eval)
        for path, array in ((calib_npy, calib), (eval_npy, evaluation)):
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, array)
        digest = hashlib.sha256(sha256_cached(eval_npy).encode())
        digest.update(json.dumps({"labels": labels, "calib": sha256_cached(calib_npy)}).encode())
        write_json(info_json, {
            "image_set": images.name, "labels": labels, "eval_names": [p.name for p in images.eval],
            "preprocess_ms": per_image_ms, "fingerprint": digest.hexdigest()})
        record_stamp(stamp, step_settings, inputs)
    info = read_json(info_json)
    return Prepared(NpyImages(calib_npy), NpyImages(eval_npy), info["labels"], info["eval_names"],
                    info["image_set"], info["preprocess_ms"], info["fingerprint"])
