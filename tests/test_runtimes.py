"""Each runtime's runner on the artifacts the tiny chain converted, against eager FP32.

The conversions themselves run once, in the session's `chain` fixture (the same builders
with tiny settings); here each runner loads them, runs real photos and is compared with
eager FP32 computed independently from the shared weights.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, WEIGHTS, requires_shared

from mobilenet.measure.npyimages import NpyImages
from mobilenet.measure.runners import (
    RuntimeUnavailable,
    make_runner,
    runner_module,
    runtime_versions,
)

pytestmark = requires_shared
PHOTOS = 8


@pytest.fixture(scope="module")
def photos(chain) -> np.ndarray:
    build, _ = chain
    images = NpyImages(build / "data" / "eval.npy")
    return np.concatenate([images[i] for i in range(PHOTOS)])


@pytest.fixture(scope="module")
def eager_logits(photos) -> np.ndarray:
    import torch
    import torchvision
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    with torch.no_grad():
        return model.eval()(torch.from_numpy(photos)).numpy()


def artifact(chain, variant: str) -> tuple[Path, dict]:
    build, _ = chain
    meta = json.loads((build / "models" / f"{variant}.meta.json").read_text())
    assert meta["status"] in ("ok", "DEGRADED", "INCONCLUSIVE"), meta  # kept and measured, not FAILED
    return build / "models" / meta["artifact"], meta["options"]


def run_photos(runtime: str, path: Path, photos: np.ndarray, threads: int = 1):
    runner = make_runner(runtime, threads=threads)
    runner.load(path)
    logits = np.concatenate([runner.run(photos[i:i + 1]) for i in range(len(photos))])
    assert logits.shape == (len(photos), 1000) and logits.dtype == np.float32
    return runner, logits


def assert_fp32_parity(logits, reference):
    assert (logits.argmax(1) == reference.argmax(1)).all()
    assert np.abs(logits - reference).max() <= 1e-3


def agreement(logits, reference) -> float:
    return float((logits.argmax(1) == reference.argmax(1)).mean())


# ---- ONNX Runtime

def test_onnx_fp32_is_one_file_matching_eager(chain, photos, eager_logits):
    path, options = artifact(chain, "onnx-fp32")
    assert options["input_shape"] == [1, 3, 224, 224]
    assert not list(path.parent.glob(f"{path.stem}*.data")), "weights must be inside the .onnx"
    runner, logits = run_photos("onnxruntime", path, photos)
    assert_fp32_parity(logits, eager_logits)
    assert runner.size_bytes() == path.stat().st_size


def test_onnx_int8_is_qdq_agrees_and_is_smaller(chain, photos, eager_logits):
    path, options = artifact(chain, "onnx-int8")
    assert options["quant_format"] == "QDQ" and options["reduce_range"] is True
    _, logits = run_photos("onnxruntime", path, photos)
    assert agreement(logits, eager_logits) >= 0.75
    assert path.stat().st_size < 0.5 * artifact(chain, "onnx-fp32")[0].stat().st_size


def test_onnx_threads_reach_the_session(chain):
    runner = make_runner("onnxruntime", threads=2)
    runner.load(artifact(chain, "onnx-fp32")[0])
    assert runner.threads_effective == 2
    assert set(runtime_versions("onnxruntime")) == {"onnxruntime", "onnx"}


def test_missing_onnxruntime_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    monkeypatch.delitem(sys.modules, "mobilenet.measure.runners.onnxruntime", raising=False)
    with pytest.raises(RuntimeUnavailable, match="onnxruntime"):
        runner_module("onnxruntime")


# ---- LiteRT

def test_litert_fp32_matches_eager(chain, photos, eager_logits):
    path, _ = artifact(chain, "litert-fp32")
    runner, logits = run_photos("litert", path, photos)
    assert_fp32_parity(logits, eager_logits)
    assert runner.size_bytes() == path.stat().st_size


def test_litert_int8_is_fully_integer_and_agrees(chain, photos, eager_logits):
    path, options = artifact(chain, "litert-int8")
    # Every compute op, residual adds included, runs in int8: no float fallback.
    assert options["float_compute_ops"] == {} and options["input"].startswith("int8")
    _, logits = run_photos("litert", path, photos)  # float NCHW in, float logits out
    assert agreement(logits, eager_logits) >= 0.75
    assert path.stat().st_size < 0.35 * artifact(chain, "litert-fp32")[0].stat().st_size


def test_litert_threads(chain, photos, eager_logits):
    runner, logits = run_photos("litert", artifact(chain, "litert-fp32")[0], photos[:1], threads=2)
    assert runner.threads == 2
    assert runner.threads_effective is None  # the interpreter cannot report it: unknown, not the request echoed
    assert logits.argmax() == eager_logits[0].argmax()
    assert runtime_versions("litert")["ai-edge-litert"]


# ---- ExecuTorch: runners run in child processes, since its thread pool can be sized
# only once per process.

EXECUTORCH_CHILD = r"""
import json, sys
import numpy as np
from mobilenet.measure.runners import make_runner, runtime_versions
threads, photos_path, out_path, *programs = sys.argv[1:]
photos = np.load(photos_path)
report = {"versions": runtime_versions("executorch"), "runs": []}
arrays = {}
for i, program in enumerate(programs):
    runner = make_runner("executorch", int(threads))
    runner.load(program)
    arrays[f"logits{i}"] = np.concatenate([runner.run(photos[j:j + 1]) for j in range(len(photos))])
    report["runs"].append({"threads_effective": runner.threads_effective, "size_bytes": runner.size_bytes()})
try:
    make_runner("executorch", int(threads) + 1)
    report["resize"] = "allowed"
except RuntimeError as exc:
    report["resize"] = f"refused: {exc}"
np.savez(out_path, **arrays)
print(json.dumps(report))
"""


def run_executorch(threads: int, photos: np.ndarray, programs: list[Path], tmp: Path):
    photos_path, out_path = tmp / f"photos{threads}.npy", tmp / f"logits{threads}.npz"
    np.save(photos_path, photos)
    done = subprocess.run([sys.executable, "-c", EXECUTORCH_CHILD, str(threads), str(photos_path),
                           str(out_path), *map(str, programs)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out_path) as arrays:
        return json.loads(done.stdout.strip().splitlines()[-1]), [arrays[f"logits{i}"] for i in range(len(programs))]


def test_executorch_fp32_and_int8(chain, photos, eager_logits, tmp_path):
    (fp32, fp32_options), (int8, int8_options) = artifact(chain, "executorch-fp32"), artifact(chain, "executorch-int8")
    for options in (fp32_options, int8_options):
        assert options["undelegated_ops"] == [], "part of the graph left XNNPACK"
    assert int8_options["weights"] == "int8 per_channel_symmetric"
    report, (fp32_logits, int8_logits) = run_executorch(1, photos, [fp32, int8], tmp_path)
    assert_fp32_parity(fp32_logits, eager_logits)
    assert agreement(int8_logits, eager_logits) >= 0.75
    fp32_size, int8_size = (run["size_bytes"] for run in report["runs"])
    assert int8_size < 0.4 * fp32_size
    assert [run["threads_effective"] for run in report["runs"]] == [1, 1]
    assert report["versions"]["executorch"]


def test_executorch_thread_pool_is_sized_once(chain, photos, eager_logits, tmp_path):
    report, (logits,) = run_executorch(2, photos[:2], [artifact(chain, "executorch-fp32")[0]], tmp_path)
    assert report["runs"][0]["threads_effective"] == 2
    assert report["resize"].startswith("refused"), report["resize"]
    assert_fp32_parity(logits, eager_logits[:2])
