"""The model as a setting: its spec, its preprocessing, which variants apply, random weights that
can still fail a parity check, and a second model through `invoke export`."""
from __future__ import annotations

import dataclasses
import json
import textwrap

import numpy as np
import pytest
from conftest import REPO, SAMPLE_IMAGES, requires_shared, run_invoke

from mobilenet import accuracy
from mobilenet.build.model import WeightsError, eager_checkpoint, load_model, reestimate_batchnorm
from mobilenet.data import store
from mobilenet.data.images import read_manifest
from mobilenet.data.preprocess import IMAGENET_PREPROCESSING, Preprocessing, load_image
from mobilenet.models import (
    DEFAULT_PREPROCESSING,
    DEFAULT_SPEC,
    ModelError,
    parse_spec,
    preprocessing_of,
    preprocessing_of_entry,
    weights_entry,
)
from mobilenet.registry import VARIANTS, Variant, applies, by_id, not_applicable_reason, registry_problems
from mobilenet.settings import SettingError, Settings

# ---------------------------------------------------------------- the spec


def test_torchvision_specs_are_checked_and_written_canonically():
    assert parse_spec(DEFAULT_SPEC).text == "torchvision:mobilenet_v2"
    assert parse_spec("torchvision:mobilenet_v3_small:DEFAULT").text == "torchvision:mobilenet_v3_small:IMAGENET1K_V1"
    assert parse_spec("torchvision:mobilenet_v2:MobileNet_V2_Weights.IMAGENET1K_V2").weights_entry == "IMAGENET1K_V2"
    python = parse_spec("python:mypackage.models:build")
    assert (python.kind, python.module, python.factory) == ("python", "mypackage.models", "build")


@pytest.mark.parametrize("spec, says", [
    ("torchvision:mobilenet_v9", "did you mean mobilenet_v2"),
    ("torchvision:fasterrcnn_resnet50_fpn", "no classification model"),  # a detection model
    ("torchvision:mobilenet_v2:IMAGENET1K_V7", "IMAGENET1K_V1, IMAGENET1K_V2"),
    ("torchvision:mobilenet_v2:ResNet50_Weights.IMAGENET1K_V1", "not mobilenet_v2's weights"),
    ("mobilenet_v3_small", "did you mean torchvision:mobilenet_v3_small"),
    ("python:mypackage.models", "python:<package.module>:<factory>"),
    ("python:1bad:build", "python:<package.module>:<factory>"),
])
def test_a_bad_spec_is_one_line_naming_what_to_write(spec, says):
    with pytest.raises(ModelError) as caught:
        parse_spec(spec)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_settings_refuse_a_bad_model_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MOBILENET_MODEL", "torchvision:nope_net")
    with pytest.raises(SettingError, match=r"^MOBILENET_MODEL='torchvision:nope_net': 'nope_net' is no"):
        Settings()
    monkeypatch.setenv("MOBILENET_MODEL", "torchvision:efficientnet_b0")
    assert Settings().model == "torchvision:efficientnet_b0"
    with pytest.raises(SettingError, match="--resize .* states a python: model's preprocessing"):
        Settings().with_options(resize="300")
    with pytest.raises(SettingError, match="crop 256 px is larger than the resize 240 px"):
        Settings().with_options(model="python:mypackage.models:build", resize="240", crop="256")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's own classifier module, importable as `user_classifier` (7 classes, no BatchNorm
    in one factory and no Linear in another)."""
    (tmp_path / "user_classifier.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        def build():
            return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7))

        def convolutional():
            return nn.Sequential(nn.Conv2d(3, 5, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def not_a_module():
            return "a string"

        def broken():
            raise RuntimeError("the user's bug")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_python_factory_is_the_users_module_with_its_own_classes(user_module):
    model, record = load_model("python:user_classifier:build", preprocessing=preprocessing_of(
        "python:user_classifier:build", crop=64, interpolation="bicubic"))
    assert record.num_classes == 7 and record.input_shape == (1, 3, 64, 64)
    assert record.preprocessing.resize_px == round(64 * 256 / 224) and record.preprocessing.interpolation == "bicubic"
    assert record.constructor == {"python": "user_classifier:build"} and record.quantizable is None
    assert record.linear_layers == 1 and not record.random_weights


@pytest.mark.parametrize("factory, says", [
    ("user_classifier_missing:build", "cannot import user_classifier_missing (ModuleNotFoundError"),
    ("user_classifier:nope", "user_classifier has no 'nope'"),
    ("user_classifier:not_a_module", "returned a str, not a torch.nn.Module"),
    ("user_classifier:broken", "broken() raised RuntimeError: the user's bug"),
])
def test_a_bad_factory_is_one_line(user_module, factory, says):
    with pytest.raises(ModelError) as caught:
        load_model(f"python:{factory}")
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_weights_that_do_not_fit_name_the_file_and_the_first_keys(tmp_path):
    import torch
    import torchvision
    other = tmp_path / "mobilenet_v3_small.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), other)
    with pytest.raises(WeightsError) as caught:
        load_model(DEFAULT_SPEC, weights=str(other))
    message = str(caught.value)
    assert message.startswith(f"{other} does not fit torchvision:mobilenet_v2: ") and "\n" not in message
    assert "missing keys (features.1.conv.0.0.weight" in message
    assert "unexpected keys (features.1.block.0.0.weight" in message
    fewer = tmp_path / "ten_classes.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None, num_classes=10).state_dict(), fewer)
    with pytest.raises(WeightsError, match=r"classifier.1.weight is \[10, 1280\] in the file, \[1000, 1280\] in"):
        load_model(DEFAULT_SPEC, weights=str(fewer))


# ---------------------------------------------------------------- preprocessing


def test_preprocessing_is_read_from_the_weights_entry():
    from torchvision.models import MobileNet_V2_Weights
    efficientnet = preprocessing_of("torchvision:efficientnet_b0")
    assert (efficientnet.resize_px, efficientnet.crop_px, efficientnet.interpolation) == (256, 224, "bicubic")
    assert efficientnet.source == "torchvision EfficientNet_B0_Weights.IMAGENET1K_V1.transforms()"
    assert preprocessing_of("torchvision:mobilenet_v2:IMAGENET1K_V2").resize_px == 232
    # The default model's preprocessing, which processes that never import torchvision assume,
    # is what its weights entry says.
    read = preprocessing_of_entry(MobileNet_V2_Weights.IMAGENET1K_V1)
    assert read.transform_dict() == DEFAULT_PREPROCESSING.transform_dict() == IMAGENET_PREPROCESSING.transform_dict()
    assert weights_entry(parse_spec(DEFAULT_SPEC)) is MobileNet_V2_Weights.IMAGENET1K_V1


def test_models_with_other_transforms_never_share_the_photo_store(tmp_path):
    base = Settings().with_options(build_dir=str(tmp_path))
    assert base.data_dir == tmp_path / "data"
    same = base.with_options(model="torchvision:mobilenet_v3_small")  # 256/224 bilinear, as the default
    assert same.data_dir == base.data_dir
    bicubic = base.with_options(model="torchvision:efficientnet_b0")
    resized = base.with_options(model="torchvision:mobilenet_v2:IMAGENET1K_V2")
    folders = {base.data_dir, bicubic.data_dir, resized.data_dir}
    assert len(folders) == 3 and all(f.parent == tmp_path / "data" for f in folders - {base.data_dir})


def test_the_store_writes_each_transforms_own_arrays(tmp_path):
    from PIL import Image
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    wide = Preprocessing(260, 240, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic")
    store.write_photos([photo], tmp_path / "wide.npy", progress=False, preprocessing=wide)
    store.write_photos([photo], tmp_path / "classic.npy", progress=False)
    arrays = np.load(tmp_path / "wide.npy"), np.load(tmp_path / "classic.npy")
    assert arrays[0].shape == (1, 3, 240, 240) and arrays[1].shape == (1, 3, 224, 224)
    assert np.array_equal(arrays[0], load_image(photo, wide).numpy())
    assert store.store_folder(tmp_path, wide) == tmp_path / wide.digest() != store.store_folder(tmp_path,
                                                                                                   IMAGENET_PREPROCESSING)


# ---------------------------------------------------------------- which variants apply


def test_applies_skips_with_its_reason(user_module):
    _, efficientnet = load_model("torchvision:efficientnet_b0", random_weights=True)
    _, mobilenet = load_model(DEFAULT_SPEC, random_weights=True)
    assert mobilenet.quantizable == "quantized_mobilenet_v2"
    assert all(applies(v, mobilenet) is None for v in VARIANTS)
    static = by_id("int8-static-fbgemm")
    assert not_applicable_reason(static, efficientnet) == (
        "not applicable to torchvision:efficientnet_b0 (torch.ao static INT8 needs a quantizable torchvision "
        "model, and torchvision.models.quantization has none for efficientnet_b0)")
    assert applies(by_id("int8-dynamic"), efficientnet) is None and applies(by_id("onnx-int8"), efficientnet) is None
    _, convolutional = load_model("python:user_classifier:convolutional")
    assert "nn.Linear layers only" in applies(by_id("int8-dynamic"), convolutional)
    assert "has none for user_classifier:convolutional" in applies(static, convolutional)
    not_module = dataclasses.replace(mobilenet, is_module=False)
    assert "trace an nn.Module" in applies(by_id("fp32-torchscript"), not_module)
    typo = dataclasses.replace(static, requires=("quantisable",))
    assert any("requires: 'quantisable' names no Requirement" in p for p in registry_problems(variants=(typo,)))


def test_a_variant_without_requirements_applies_to_anything():
    anything = Variant("x", "onnxruntime", "fp32", "x.onnx", "convert-onnx", "mobilenet.builders.onnx:export_fp32", "")
    assert applies(anything, object()) is None


# ---------------------------------------------------------------- random weights stay honest


def _photos(split: str, count: int, preprocessing) -> list[np.ndarray]:
    rows = [r for r in read_manifest(REPO / "calib_images" / "manifest.csv") if r.split == split][:count]
    return [load_image(SAMPLE_IMAGES / r.filename, preprocessing).numpy() for r in rows]


def _logits(model, photos, swap_channels: bool = False) -> np.ndarray:
    import torch
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(p[:, ::-1].copy() if swap_channels else p)).numpy()
                               for p in photos])


@requires_shared
@pytest.mark.parametrize("spec", [DEFAULT_SPEC, "torchvision:mobilenet_v3_small"])
def test_a_broken_conversion_fails_parity_with_random_weights(spec):
    """Swapped input channels: a conversion bug that torchvision's random initialisation hides
    (its logits vanish, so |Δlogit| is tiny), and that re-estimated BatchNorm plus parity
    relative to the logits' scale catch."""
    import torch
    import torchvision
    preprocessing = preprocessing_of(spec)
    calibration, evaluation = _photos("calib", 12, preprocessing), _photos("eval", 8, preprocessing)
    model, record = load_model(spec, random_weights=True, calibration=calibration)
    assert record.random_weights and "re-estimated on 12 calibration photos" in record.weights["source"]
    assert record.logit_scale > 1e-2, "re-estimated BatchNorm gives logits of ordinary scale"
    reference = _logits(model, evaluation)
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.from_numpy(evaluation[0]))
    assert accuracy.fp32_parity(_logits(traced, evaluation), reference)[0], "a sound conversion passes"
    ok, facts = accuracy.fp32_parity(_logits(model, evaluation, swap_channels=True), reference)
    assert not ok, facts
    # torchvision's own initialisation: logits so small that the absolute limit alone passes the bug.
    torch.manual_seed(0)
    initialised = torchvision.models.get_model(parse_spec(spec).name, weights=None).eval()
    vanishing = _logits(initialised, evaluation)
    broken = _logits(initialised, evaluation, swap_channels=True)
    assert np.abs(vanishing).max() < 1e-3 and accuracy.max_abs_dlogit(broken, vanishing) < accuracy.FP32_MAX_ABS_DLOGIT
    assert not accuracy.fp32_parity(broken, vanishing)[0], "judged relative to the scale, it fails"


def test_parity_is_judged_against_the_logits_scale():
    reference = np.array([[20.0, -3.0, 1.0], [0.5, 18.0, 2.0]], dtype=np.float32)
    assert accuracy.fp32_parity(reference + 5e-4, reference)[0]  # 2.5e-5 of the scale, within 1e-3
    assert not accuracy.fp32_parity(reference + 2e-3, reference)[0]  # past the absolute limit
    small = reference * 1e-2  # a scale of 0.2: 1e-4 of it is 2e-5
    assert accuracy.fp32_parity(small + 1e-5, small)[0]
    record = accuracy.parity_record(small + 1e-4, small)
    assert not record["ok"] and record["max_abs_dlogit"] <= accuracy.FP32_MAX_ABS_DLOGIT
    assert record["relative_dlogit"] == pytest.approx(1e-4 / 0.2, rel=1e-3)
    assert record["logit_scale"] == pytest.approx(0.2) and "relative to the logits' scale" in record["judged"]


def test_int8_answers_of_random_weights_are_not_judged():
    answers = np.eye(4, dtype=np.float32)
    wrong = np.roll(answers, 1, axis=1)  # agrees on no photo: the gate would say FAILED
    scores = accuracy.score(wrong, answers, [0, 1, 2, 3])
    assert accuracy.int8_check(scores, random_weights=False)[0] == accuracy.FAILED
    status, reason = accuracy.int8_check(scores, random_weights=True)
    assert status == accuracy.OK and reason.startswith(accuracy.NOT_JUDGED)


def test_batchnorm_reestimation_needs_photos_and_keeps_dropout_off():
    import torch
    from torch import nn
    # Dropout before the BatchNorm: had it been on while estimating, the variance would be
    # that of mostly zeros and 10x values, and the normalised outputs would be far below unit spread.
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout(0.9), nn.BatchNorm2d(4), nn.Flatten())
    photos = [np.full((1, 3, 2, 2), 5.0, dtype=np.float32) + i for i in range(3)]
    with pytest.raises(ModelError, match="2 or more calibration photos"):
        reestimate_batchnorm(model, photos[:1])
    assert reestimate_batchnorm(model, photos) == 3
    assert not model.training and model[2].momentum == 0.1
    with torch.no_grad():
        out = model(torch.from_numpy(np.concatenate(photos)))
    assert 0.5 < float(out.std()) < 1.5 and float(out.mean().abs()) < 0.5


def test_the_eager_reference_of_another_model_rebuilds_itself(tmp_path, user_module):
    import torch

    from mobilenet.measure.runners.torch_eager import load_eager
    model, record = load_model("python:user_classifier:build", random_weights=True)
    torch.save(eager_checkpoint(record, model.state_dict()), tmp_path / "eager.pth")
    image = torch.zeros(record.input_shape)
    assert torch.equal(load_eager(tmp_path / "eager.pth")(image), model(image))
    _, default = load_model(DEFAULT_SPEC, random_weights=True)
    assert eager_checkpoint(default, {"w": 1}) == {"w": 1}, "MobileNet-V2 keeps its plain state_dict"


# ---------------------------------------------------------------- through the chain


@requires_shared
def test_a_second_model_exports_with_random_weights(tiny_env):
    """torchvision:mobilenet_v3_small with random weights, offline, through `invoke export`."""
    env = {**tiny_env, "MOBILENET_MODEL": "torchvision:mobilenet_v3_small", "MOBILENET_RANDOM_WEIGHTS": "1",
           "MOBILENET_BUILD_DIR": tiny_env["MOBILENET_BUILD_DIR"] + "-mobilenet_v3_small"}
    env.pop("MOBILENET_WEIGHTS")
    run_invoke(["export"], env)
    models = REPO / env["MOBILENET_BUILD_DIR"] / "models"
    metas = {p.name.split(".")[0]: json.loads(p.read_text()) for p in models.glob("*.meta.json")}
    assert sorted(metas) == ["fp32-eager", "fp32-mobile", "fp32-torchscript"]
    for variant, meta in metas.items():
        assert meta["status"] == "ok", (variant, meta.get("reason"), meta["check"]["facts"])
        assert meta["model"]["spec"] == "torchvision:mobilenet_v3_small" and meta["weights"]["random"]
    record = metas["fp32-eager"]["model"]
    assert record["num_classes"] == 1000 and record["logit_scale"] > 1e-2
    assert record["preprocessing"]["source"] == "torchvision MobileNet_V3_Small_Weights.IMAGENET1K_V1.transforms()"
    parity = metas["fp32-torchscript"]["check"]["parity"]
    assert parity["ok"] and parity["relative_dlogit"] <= accuracy.FP32_MAX_REL_DLOGIT
