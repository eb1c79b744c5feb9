"""ONNX builders and the ONNX Runtime runner, on the real weights and real photos in ../shared."""
from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_float_from_qnnpack.pth"
PHOTOS = sorted((SHARED / "imagenet-sample" / "images").glob("*.JPEG"))

if not WEIGHTS.exists() or len(PHOTOS) < 16:
    pytest.skip(f"needs the offline weights and sample photos in {SHARED} (beside the repo clone)",
                allow_module_level=True)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from mobilenet import convert_onnx  # noqa: E402
from mobilenet.preprocess import load_image  # noqa: E402
from mobilenet.runners import RuntimeUnavailable, make_runner, runner_module  # noqa: E402

# Calibration and evaluation photos are disjoint, as in the build.
CALIB = PHOTOS[:8]
EVAL = PHOTOS[8:16]


@pytest.fixture(scope="module")
def model():
    net = torchvision.models.mobilenet_v2(weights=None)
    net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return net.eval()


@pytest.fixture(scope="module")
def photos():
    return {"calib": [load_image(p).numpy() for p in CALIB],
            "eval": [load_image(p).numpy() for p in EVAL]}


@pytest.fixture(scope="module")
def eager_logits(model, photos):
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x)).numpy() for x in photos["eval"]])


@pytest.fixture(scope="module")
def ctx(model, photos, tmp_path_factory):
    return SimpleNamespace(
        fp32_model=lambda: copy.deepcopy(model).eval(),
        example=lambda: torch.from_numpy(photos["calib"][0].copy()),
        calibration=lambda: iter(photos["calib"]),
        log=logging.getLogger("mobilenet.test"),
        settings=SimpleNamespace(models_dir=tmp_path_factory.mktemp("models")),
    )


@pytest.fixture(scope="module")
def fp32_onnx(ctx):
    out = ctx.settings.models_dir / "onnx-fp32.onnx"
    used = convert_onnx.export_fp32(ctx, out)
    return out, used


@pytest.fixture(scope="module")
def int8_onnx(ctx):
    out = ctx.settings.models_dir / "onnx-int8.onnx"
    used = convert_onnx.quantize_int8(ctx, out)
    return out, used


def _logits(path: Path, photos: list, threads: int = 1) -> np.ndarray:
    runner = make_runner("onnxruntime", threads=threads)
    runner.load(path)
    return np.concatenate([runner.run(x) for x in photos])


def test_fp32_matches_eager(fp32_onnx, photos, eager_logits):
    path, used = fp32_onnx
    assert used["input_shape"] == [1, 3, 224, 224]
    # One self-contained file: nothing written beside it.
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.stem)) == [path.name]
    logits = _logits(path, photos["eval"][:4])
    reference = eager_logits[:4]
    assert logits.shape == (4, 1000) and logits.dtype == np.float32
    assert (logits.argmax(1) == reference.argmax(1)).all()
    assert np.abs(logits - reference).max() <= 1e-3


def test_int8_agrees_and_is_smaller(fp32_onnx, int8_onnx, photos, eager_logits):
    path, used = int8_onnx
    assert used["quant_format"] == "QDQ" and used["calibration_photos"] == len(CALIB)
    logits = _logits(path, photos["eval"])
    assert logits.shape == (len(EVAL), 1000) and logits.dtype == np.float32
    agreement = (logits.argmax(1) == eager_logits.argmax(1)).mean()
    assert agreement >= 0.75, f"top-1 agreement with eager FP32 {agreement:.0%}"
    assert path.stat().st_size < 0.5 * fp32_onnx[0].stat().st_size


def test_runner_reports_threads_and_size(fp32_onnx):
    path, _ = fp32_onnx
    runner = make_runner("onnxruntime", threads=2)
    runner.load(path)
    assert runner.threads_effective == 2
    assert runner.size_bytes() == path.stat().st_size
    versions = runner_module("onnxruntime").versions()
    assert set(versions) == {"onnxruntime", "onnx"}


def test_missing_onnxruntime_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    # Forget the already imported runner so its top-level import runs again.
    monkeypatch.delitem(sys.modules, "mobilenet.runners.onnxruntime", raising=False)
    with pytest.raises(RuntimeUnavailable, match="onnxruntime"):
        runner_module("onnxruntime")
