"""OpenVINO and AOTInductor: each builder makes its artifact, its runner runs it, eager FP32 judges.

The builders are called directly on a small build context (8 calibration photos, 8
evaluation photos), not through the invoke chain, so these tests need nothing built before.
A runtime that is not installed skips its tests.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import REPO, SAMPLE_IMAGES, WEIGHTS, requires_shared
from test_runtimes import agreement, assert_fp32_parity, run_photos

from mobilenet.build import target
from mobilenet.build.model import load_fp32
from mobilenet.build.step import BuildContext
from mobilenet.data.images import read_manifest
from mobilenet.data.preprocess import load_image
from mobilenet.data.store import Prepared
from mobilenet.measure.npyimages import NpyImages
from mobilenet.measure.runners import runner_module
from mobilenet.settings import Settings

pytestmark = requires_shared
PHOTOS = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Prepared:
    """8 calibration and 8 evaluation photos of the manifest, preprocessed as the chain does."""
    folder = tmp_path_factory.mktemp("data")
    rows = read_manifest(REPO / "calib_images" / "manifest.csv")
    chosen = {split: [r for r in rows if r.split == split][:PHOTOS] for split in ("calib", "eval")}
    for split, split_rows in chosen.items():
        arrays = [load_image(SAMPLE_IMAGES / row.filename).numpy() for row in split_rows]
        np.save(folder / f"{split}.npy", np.concatenate(arrays).astype(np.float32))
    return Prepared(calib=NpyImages(folder / "calib.npy"), eval=NpyImages(folder / "eval.npy"),
                    labels=[r.label for r in chosen["eval"]], eval_names=[r.filename for r in chosen["eval"]],
                    image_set="test-sample", preprocess_ms=0.0, fingerprint="test-sample")


@pytest.fixture(scope="module")
def fp32(data):
    model, weights = load_fp32(str(WEIGHTS))
    return model, weights


@pytest.fixture(scope="module")
def ctx(data, fp32) -> BuildContext:
    model, weights = fp32
    # The builders use the model, the photos and the log; no registry entry is needed.
    return BuildContext(Settings(), None, weights, data, model, logging.getLogger("mobilenet.test"))


@pytest.fixture(scope="module")
def photos(data) -> np.ndarray:
    return np.concatenate(list(data.eval))


@pytest.fixture(scope="module")
def eager_logits(fp32, photos) -> np.ndarray:
    import torch
    with torch.no_grad():
        return fp32[0](torch.from_numpy(photos)).numpy()


@pytest.fixture
def torch_threads():
    """Put torch's thread count back: the AOTI runner sets it process-wide."""
    import torch
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)

def fp32_weight_bytes(model) -> int:
    return 4 * sum(p.numel() for p in model.parameters())


# ---- OpenVINO

@pytest.fixture(scope="module")
def openvino_fp32(ctx, tmp_path_factory):
    pytest.importorskip("openvino")
    from mobilenet.builders.openvino import convert_fp32
    out = tmp_path_factory.mktemp("openvino-fp32") / "openvino-fp32.xml"
    return out, convert_fp32(ctx, out)


@pytest.fixture(scope="module")
def openvino_int8(ctx, tmp_path_factory):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mobilenet.builders.openvino import quantize_int8
    out = tmp_path_factory.mktemp("openvino-int8") / "openvino-int8.xml"
    return out, quantize_int8(ctx, out)


def test_openvino_fp32_is_xml_and_bin_matching_eager(openvino_fp32, photos, eager_logits, fp32):
    xml, settings = openvino_fp32
    bin_ = xml.with_suffix(".bin")
    assert settings["files"] == [xml.name, bin_.name]
    # FP32 weights, not save_model's default FP16 compression (which fails parity).
    assert bin_.stat().st_size >= 0.95 * fp32_weight_bytes(fp32[0])
    runner, logits = run_photos("openvino", xml, photos)
    assert_fp32_parity(logits, eager_logits)
    assert runner.size_bytes() == xml.stat().st_size + bin_.stat().st_size
    assert runner.threads_effective == 1


def test_openvino_int8_is_quantized_agrees_and_is_smaller(openvino_int8, openvino_fp32, photos, eager_logits):
    xml, settings = openvino_int8
    assert settings["fake_quantize_nodes"] > 0 and settings["calibration_photos"] == PHOTOS
    # Chosen for this machine's ISA (saturating u8 x s8 sums without VNNI), and recorded.
    assert settings["overflow_fix"] == target.nncf(target.probe())["overflow_fix"]
    runner, logits = run_photos("openvino", xml, photos)
    assert agreement(logits, eager_logits) >= 0.8
    fp32_runner = runner_module("openvino").Runner(threads=1)
    fp32_runner.load(openvino_fp32[0])
    assert runner.size_bytes() < 0.35 * fp32_runner.size_bytes()


def test_openvino_threads_are_read_back_from_the_compiled_model(openvino_fp32, photos, eager_logits):
    runner, logits = run_photos("openvino", openvino_fp32[0], photos[:1], threads=2)
    assert runner.threads_effective == 2
    assert logits.argmax() == eager_logits[0].argmax()
    versions = runner_module("openvino").Runner.versions()
    assert versions["openvino"] and versions["nncf"]


def test_openvino_ir_without_its_bin_is_refused_by_name(openvino_fp32, tmp_path):
    lone_xml = tmp_path / "lone.xml"
    shutil.copy(openvino_fp32[0], lone_xml)
    runner = runner_module("openvino").Runner(threads=1)
    with pytest.raises(FileNotFoundError, match="lone.bin"):
        runner.load(lone_xml)


# ---- AOTInductor

@pytest.fixture(scope="module")
def aoti_fp32(ctx, tmp_path_factory):
    from mobilenet.builders.aoti import compile_fp32
    out = tmp_path_factory.mktemp("aoti-fp32") / "aoti-fp32.pt2"
    return out, compile_fp32(ctx, out)


@pytest.fixture(scope="module")
def aoti_int8(ctx, tmp_path_factory):
    pytest.importorskip("torchao")
    from mobilenet.builders.aoti import compile_int8
    out = tmp_path_factory.mktemp("aoti-int8") / "aoti-int8.pt2"
    return out, compile_int8(ctx, out)


def test_aoti_fp32_package_matches_eager(aoti_fp32, photos, eager_logits, torch_threads):
    package, settings = aoti_fp32
    assert zipfile.is_zipfile(package)
    assert settings["input_shape"] == [1, 3, 224, 224]
    runner, logits = run_photos("aoti", package, photos)
    assert_fp32_parity(logits, eager_logits)
    assert runner.size_bytes() == package.stat().st_size
    assert runner.threads_effective == 1


def test_aoti_load_leaves_nothing_in_tmpdir(aoti_fp32, photos, eager_logits, torch_threads, tmp_path, monkeypatch):
    """Workers end with os._exit, so the loader's destructor never deletes the .so it unpacked;
    the runner must not leave it behind (11 MB per load, a bench loads it 7 times per variant)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    runner, logits = run_photos("aoti", aoti_fp32[0], photos[:1])
    assert logits.argmax() == eager_logits[0].argmax()  # still runs with its unpacked files gone
    assert list(tmp_path.iterdir()) == []
    assert os.environ["TMPDIR"] == str(tmp_path)


def test_aoti_threads_are_torchs(aoti_fp32, photos, eager_logits, torch_threads):
    runner, logits = run_photos("aoti", aoti_fp32[0], photos[:1], threads=2)
    assert runner.threads_effective == 2
    assert logits.argmax() == eager_logits[0].argmax()
    assert runner_module("aoti").Runner.versions()["torch"]


def test_aoti_runs_in_a_process_that_never_imports_torch(aoti_fp32, photos, eager_logits):
    """The runner loads the package's .so and libtorch's libraries over ctypes, as a C++
    deployment would: a worker pays for libtorch, not for `import torch` (3 s of CPU)."""
    np.save(photos_path := aoti_fp32[0].with_name("photo.npy"), photos[:1])
    script = ("import sys, numpy as np\n"
              "from mobilenet.measure.runners import make_runner\n"
              "runner = make_runner('aoti', 1)\n"
              f"runner.load({str(aoti_fp32[0])!r})\n"
              f"print(int(runner.run(np.load({str(photos_path)!r})).argmax()), 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(eager_logits[0].argmax()), "False"]


def test_aoti_package_without_a_compiled_library_is_refused_by_name(tmp_path):
    package = tmp_path / "empty.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("empty/archive_format", "pt2")
    runner = runner_module("aoti").Runner(threads=1)
    with pytest.raises(ValueError, match=r"empty\.pt2: expected one compiled \.so"):
        runner.load(package)


def test_aoti_int8_runs_every_convolution_in_int8_and_agrees(aoti_int8, fp32, photos, eager_logits, torch_threads):
    import torch
    package, settings = aoti_int8
    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in fp32[0].modules())
    # Fused into oneDNN int8 convolutions, none left as dequantize -> float convolution.
    assert (settings["int8_convolutions"], settings["float_convolutions"]) == (convolutions, 0)
    assert settings["calibration_photos"] == PHOTOS
    _, logits = run_photos("aoti", package, photos)
    assert agreement(logits, eager_logits) >= 0.8


@pytest.mark.parametrize("runtime", ["openvino", "aoti"])
def test_runners_refuse_options_they_do_not_have(runtime):
    module = pytest.importorskip(f"mobilenet.measure.runners.{runtime}")
    with pytest.raises(TypeError, match="engine"):
        module.Runner(threads=1, engine="x86")
