"""ExecuTorch builders and runner, on the real weights and real photos.

Each export runs once per module, and the two run side by side in child processes: they
take most of the time and are mostly single-threaded Python (graph passes). Every Runner
runs in a child process too: ExecuTorch's thread pool can be sized only once per process,
and another test in this pytest process may already have sized it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_float_from_qnnpack.pth"
PHOTOS = sorted((SHARED / "imagenet-sample" / "images").glob("*.JPEG"))

if not WEIGHTS.exists() or len(PHOTOS) < 16:
    pytest.skip(f"needs the real weights and photos in {SHARED} (../shared beside the repo)",
                allow_module_level=True)
if importlib.util.find_spec("executorch") is None:  # found, not imported: children use it
    pytest.skip("executorch is not installed", allow_module_level=True)

import torch  # noqa: E402

CALIB = PHOTOS[:8]
EVAL = PHOTOS[100:108]  # disjoint from the calibration photos

# Runs Runners in a fresh process: sizes the pool to argv[1] threads, loads each .pte,
# scores the photos, and reports what the runner saw.
CHILD = r"""
import json, sys
import numpy as np
from mobilenet.runners import make_runner, runtime_versions
threads, images_path, out_path, *ptes = sys.argv[1:]
images = np.load(images_path)
report = {"versions": runtime_versions("executorch"), "runs": []}
arrays = {}
for i, pte in enumerate(ptes):
    runner = make_runner("executorch", int(threads))
    runner.load(pte)
    arrays[f"logits{i}"] = np.concatenate([runner.run(image[None]) for image in images])
    report["runs"].append({"threads_effective": runner.threads_effective,
                           "size_bytes": runner.size_bytes()})
other = 1 if int(threads) != 1 else 2
try:
    make_runner("executorch", other)
    report["resize"] = "allowed"
except RuntimeError as exc:
    report["resize"] = f"refused: {exc}"
np.savez(out_path, **arrays)
print(json.dumps(report))
"""


# Builds one .pte with a minimal stand-in for mobilenet.build.BuildContext.
BUILD = r"""
import copy, json, logging, sys, types
import numpy as np, torch, torchvision
from mobilenet import convert_executorch
kind, weights, calib_path, out = sys.argv[1:]
torch.set_num_threads(1)  # the other build runs beside this one
net = torchvision.models.mobilenet_v2(weights=None)
net.load_state_dict(torch.load(weights, weights_only=True))
net.eval()
calib = np.load(calib_path)
ctx = types.SimpleNamespace(
    fp32_model=lambda: copy.deepcopy(net).eval(),
    example=lambda: torch.from_numpy(calib[:1].copy()),
    calibration=lambda: (calib[i:i + 1].copy() for i in range(len(calib))),
    log=logging.getLogger("mobilenet.test.executorch"),
    settings=None,
)
settings = getattr(convert_executorch, f"export_{kind}")(ctx, out)
print(json.dumps(settings))
"""


def _child(script: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, what: str, timeout: float = 600) -> tuple[dict, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what} failed:\n{stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1]), stderr


def run_child(threads: int, images: np.ndarray, ptes: list[Path], tmp: Path):
    images_path, out_path = tmp / f"images{threads}.npy", tmp / f"out{threads}.npz"
    np.save(images_path, images)
    report, stderr = _finish(_child(CHILD, threads, images_path, out_path, *ptes),
                             f"runner child ({threads} threads)", timeout=300)
    with np.load(out_path) as arrays:
        logits = [arrays[f"logits{i}"] for i in range(len(ptes))]
    return report, logits, stderr


@pytest.fixture(scope="module")
def model():
    import torchvision
    net = torchvision.models.mobilenet_v2(weights=None)
    net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return net.eval()


def _photos(paths) -> np.ndarray:
    from mobilenet.preprocess import load_image
    return np.concatenate([load_image(p).numpy() for p in paths]).astype(np.float32)


@pytest.fixture(scope="module")
def calib_images():
    return _photos(CALIB)


@pytest.fixture(scope="module")
def eval_images():
    return _photos(EVAL)


@pytest.fixture(scope="module")
def eager_logits(model, eval_images):
    with torch.no_grad():
        return model(torch.from_numpy(eval_images)).numpy()


@pytest.fixture(scope="module")
def built(calib_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("executorch")
    calib_path = out / "calib.npy"
    np.save(calib_path, calib_images)
    ptes = {"fp32": out / "fp32.pte", "int8": out / "int8.pte"}
    procs = {kind: _child(BUILD, kind, WEIGHTS, calib_path, path) for kind, path in ptes.items()}
    try:
        results = {kind: _finish(proc, f"export_{kind}") for kind, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for kind, (_, stderr) in results.items():
        # The builders keep exporter and lowering chatter in the log, off the console.
        assert not stderr.strip(), f"export_{kind} wrote to the console:\n{stderr[-2000:]}"
    return out, ptes, {kind: settings for kind, (settings, _) in results.items()}


@pytest.fixture(scope="module")
def single_thread(built, eval_images):
    out, ptes, _ = built
    report, (fp32, int8), stderr = run_child(1, eval_images, [ptes["fp32"], ptes["int8"]], out)
    return report, {"fp32": fp32, "int8": int8}, stderr


def test_builders_record_settings_and_lower_everything(built):
    _, ptes, settings = built
    for name in ("fp32", "int8"):
        json.dumps(settings[name])  # recorded in results, so it must serialise
        assert settings[name]["undelegated_ops"] == [], f"{name}: part of the graph left XNNPACK"
        assert ptes[name].read_bytes()[4:8] == b"ET12", f"{name}: not an ExecuTorch program"
    assert settings["int8"]["calibration_photos"] == len(CALIB)
    assert settings["int8"]["weights"] == "int8 per_channel_symmetric"


def test_fp32_matches_eager(single_thread, eager_logits):
    report, logits, _ = single_thread
    got = logits["fp32"]
    assert got.shape == (len(EVAL), 1000) and got.dtype == np.float32
    assert (got.argmax(1) == eager_logits.argmax(1)).all()
    assert np.abs(got - eager_logits).max() <= 1e-3
    assert report["runs"][0]["threads_effective"] == 1


def test_int8_agrees_and_is_smaller(single_thread, eager_logits):
    report, logits, _ = single_thread
    got = logits["int8"]
    assert got.shape == (len(EVAL), 1000) and got.dtype == np.float32
    agreement = (got.argmax(1) == eager_logits.argmax(1)).mean()
    assert agreement >= 0.75, f"int8 top-1 agreement with eager {agreement:.0%}"
    fp32_size, int8_size = (run["size_bytes"] for run in report["runs"])
    assert int8_size < 0.4 * fp32_size, (fp32_size, int8_size)


def test_runner_versions_and_quiet_console(single_thread):
    report, _, stderr = single_thread
    assert report["versions"]["executorch"]
    # cpuinfo probing and threadpool resets print from C++; they belong in the log only.
    assert "cpuinfo" not in stderr and "threadpool" not in stderr.lower(), stderr[-2000:]


def test_thread_pool_sized_once_per_process(single_thread, built, eval_images, eager_logits):
    out, ptes, _ = built
    report, (fp32,), _ = run_child(2, eval_images[:2], [ptes["fp32"]], out)
    assert report["runs"][0]["threads_effective"] == 2
    assert report["resize"].startswith("refused"), report["resize"]
    assert np.abs(fp32 - eager_logits[:2]).max() <= 1e-3
    assert single_thread[0]["resize"].startswith("refused")
