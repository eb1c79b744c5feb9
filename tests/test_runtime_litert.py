"""LiteRT builders and runner against eager FP32, on real weights and real photos.

Each conversion runs once per module (litert-torch takes tens of seconds per model).
"""
from __future__ import annotations

import copy
import json
import logging
import types
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_float_from_qnnpack.pth"
IMAGES = sorted((SHARED / "imagenet-sample" / "images").glob("*.JPEG"))

if not WEIGHTS.exists() or len(IMAGES) < 16:
    pytest.skip(f"needs the shared weights and photos beside the repo ({SHARED} not found or incomplete)",
                allow_module_level=True)

import torch  # noqa: E402
import torchvision  # noqa: E402

from mobilenet import convert_litert  # noqa: E402
from mobilenet.preprocess import load_image  # noqa: E402
from mobilenet.runners.litert import Runner, versions  # noqa: E402

# Calibration and evaluation photos are disjoint, as in the real build.
EVAL_PHOTOS = IMAGES[:8]
CALIB_PHOTOS = IMAGES[-8:]


@pytest.fixture(scope="module")
def model():
    net = torchvision.models.mobilenet_v2(weights=None)
    net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return net.eval()


@pytest.fixture(scope="module")
def photos():
    return [load_image(p).numpy() for p in EVAL_PHOTOS]


@pytest.fixture(scope="module")
def eager_logits(model, photos):
    with torch.no_grad():
        return [model(torch.from_numpy(x)).numpy() for x in photos]


@pytest.fixture(scope="module")
def ctx(model):
    calib = [load_image(p).numpy() for p in CALIB_PHOTOS]
    return types.SimpleNamespace(
        fp32_model=lambda: copy.deepcopy(model).eval(),
        example=lambda: torch.from_numpy(calib[0].copy()),
        calibration=lambda: iter(calib),
        log=logging.getLogger("mobilenet.test.litert"),
        settings=None,
    )


@pytest.fixture(scope="module")
def fp32(ctx, tmp_path_factory):
    out = tmp_path_factory.mktemp("litert") / "litert-fp32.tflite"
    return out, convert_litert.convert_fp32(ctx, out)


@pytest.fixture(scope="module")
def int8(ctx, tmp_path_factory):
    out = tmp_path_factory.mktemp("litert") / "litert-int8.tflite"
    return out, convert_litert.convert_int8(ctx, out)


def _run_all(path, photos, threads=1):
    runner = Runner(threads=threads, engine=None)
    runner.load(path)
    return runner, [runner.run(x) for x in photos]


def test_fp32_matches_eager(fp32, photos, eager_logits):
    path, settings = fp32
    json.dumps(settings)
    runner, logits = _run_all(path, photos[:4])
    for got, want in zip(logits, eager_logits[:4]):
        assert got.shape == (1, 1000) and got.dtype == np.float32
        assert got.argmax() == want.argmax()
        assert np.abs(got - want).max() <= 1e-3
    assert runner.size_bytes() == path.stat().st_size


def test_int8_agrees_with_eager_and_is_small(int8, fp32, photos, eager_logits):
    path, settings = int8
    json.dumps(settings)
    assert settings["calibration_photos"] == len(CALIB_PHOTOS)
    # Every compute op (residual adds included) must run in int8, not fall back to float.
    assert settings["float_compute_ops"] == {}
    assert settings["input"].startswith("int8")
    runner, logits = _run_all(path, photos)
    assert all(y.shape == (1, 1000) and y.dtype == np.float32 for y in logits)
    agree = np.mean([got.argmax() == want.argmax() for got, want in zip(logits, eager_logits)])
    assert agree >= 0.75, f"top-1 agreement with eager FP32 {agree:.0%}"
    assert runner.size_bytes() < 0.35 * fp32[0].stat().st_size


def test_threads_are_applied(fp32, photos, eager_logits):
    runner, logits = _run_all(fp32[0], photos[:1], threads=2)
    assert runner.threads_effective == 2
    assert logits[0].argmax() == eager_logits[0].argmax()


def test_versions():
    found = versions()
    assert found["ai-edge-litert"]
    assert all(isinstance(v, str) for v in found.values())
