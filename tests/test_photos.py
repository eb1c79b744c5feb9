"""Which photos calibrate and which are scored: spread over the classes, never overlapping, from
the committed manifest (the default 250 or all 1000), a flat folder with labels or an
ImageNet-validation class-folder layout; and the photo store written a photo at a time."""
from __future__ import annotations

import csv
import os
import re
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE_IMAGES, requires_shared

from mobilenet.data import images, store
from mobilenet.files import read_json
from mobilenet.measure.npyimages import NpyImages
from mobilenet.settings import SettingError, Settings

pytestmark = requires_shared
MANIFEST = REPO / "calib_images" / "manifest.csv"
SHARED_MANIFEST = SAMPLE_IMAGES.parent / "manifest.csv"
SYNSETS = sorted(images.imagenet_classes())  # index order: torchvision's classes are the sorted synsets


def _sorted_class_folder(folder: Path, classes: int = 10, per_class: int = 5) -> dict[str, int]:
    """A flat folder whose sorted file names group each class together, and its labels."""
    folder.mkdir()
    labels = {}
    for c in range(classes):
        for i in range(per_class):
            name = f"class{c:02d}_{i}.jpg"
            (folder / name).write_bytes(b"only the names matter here")
            labels[name] = 100 + c
    return labels


def _write_labels(path: Path, labels: dict[str, object]) -> Path:
    path.write_text("filename,label\n" + "".join(f"{name},{label}\n" for name, label in labels.items()))
    return path


# ---- stratified calibration

def test_calibration_of_a_sorted_flat_folder_spans_the_classes(tmp_path):
    labels = _sorted_class_folder(tmp_path / "photos")
    csv_path = _write_labels(tmp_path / "labels.csv", labels)
    chosen = images.local_image_set(tmp_path / "photos", csv_path, calib_count=8, eval_count=20)
    first_eight = sorted(labels)[:8]
    assert len({labels[n] for n in first_eight}) == 2, "the trap: sorted order spans only 2 classes"
    assert chosen.calib_classes == len({labels[p.name] for p in chosen.calib}) == 8
    assert chosen.calib_labels == tuple(labels[p.name] for p in chosen.calib)
    assert chosen.eval_labels == tuple(labels[p.name] for p in chosen.eval)
    assert len(chosen.eval) == 20 and chosen.eval_classes == 10, "evaluation is spread over the classes too"
    assert [p.name for p in chosen.calib] != first_eight


def test_calibration_of_a_synset_class_folder_spans_the_classes(tmp_path):
    root = tmp_path / "val"
    for synset in SYNSETS[:10]:
        (root / synset).mkdir(parents=True)
        for i in range(5):
            (root / synset / f"ILSVRC2012_val_{synset}_{i}.JPEG").write_bytes(b"names only")
    chosen = images.local_image_set(root, None, calib_count=8, eval_count=100)
    assert chosen.calib_classes == 8 and len({p.parent.name for p in chosen.calib}) == 8
    assert chosen.calib_labels == tuple(SYNSETS.index(p.parent.name) for p in chosen.calib)
    assert len(chosen.eval) == 42 and chosen.eval_classes == 10
    assert chosen.eval_labels == tuple(SYNSETS.index(p.parent.name) for p in chosen.eval)


def test_the_choice_is_deterministic_and_takes_one_of_each_class_first():
    labels = [c for c in range(7) for _ in range(3 + c)]  # classes of unequal size, grouped
    order = images.spread_order(labels)
    assert order == images.spread_order(list(labels)), "a fixed seed: the same photos every run"
    assert sorted(order) == list(range(len(labels)))
    assert len({labels[i] for i in order[:7]}) == 7
    assert len({labels[i] for i in order[7:14]}) == 7, "the second round again has one of every class"
    unlabelled = images.spread_order([None] * 20)
    assert unlabelled != list(range(20)) and sorted(unlabelled) == list(range(20))


# ---- the ImageNet-validation layout, made of the shared photos

def _shared_rows() -> list[dict]:
    with open(SHARED_MANIFEST, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["local"] == "yes"]


@pytest.fixture
def synset_folder(tmp_path) -> Path:
    """DIR/<synset>/<photo>: the 250 shared photos symlinked, one class folder each."""
    root = tmp_path / "val"
    for row in _shared_rows():
        (root / row["synset"]).mkdir(parents=True)
        os.symlink(SAMPLE_IMAGES / row["filename"], root / row["synset"] / row["filename"])
    return root


def test_a_synset_folder_of_the_shared_photos_is_accepted(synset_folder):
    index_of = {r["filename"]: int(r["index"]) for r in _shared_rows()}
    settings = types.SimpleNamespace(local_images=str(synset_folder), local_labels=None, calib_count=50,
                                     eval_count=200, quiet=True)
    chosen = images.image_set(settings)
    assert len(chosen.calib) == 50 and len(chosen.eval) == 200
    assert chosen.calib_classes >= 40
    # Labels are class indices as in the manifest (the shared manifest's `index`).
    assert chosen.calib_labels == tuple(index_of[p.name] for p in chosen.calib)
    assert chosen.eval_labels == tuple(index_of[p.name] for p in chosen.eval)
    assert not set(chosen.calib) & set(chosen.eval)
    assert images.download_images(settings) == {"downloaded": 0, "kept": 250}, "every photo decodes"


def test_a_synset_folder_is_prepared_with_its_counts_and_classes(synset_folder, tmp_path):
    settings = Settings(build_dir=tmp_path / "build", local_images=str(synset_folder), local_labels=None,
                        calib_count=4, eval_count=6, quiet=True, all_photos=False)
    data = store.prepare(settings)
    info = read_json(settings.data_dir / "images.json")
    assert (info["calib_photos"], info["calib_classes"], info["eval_photos"], info["eval_classes"]) == (4, 4, 6, 6)
    assert (len(data.calib), data.calib_classes, len(data.eval), data.eval_classes) == (4, 4, 6, 6)
    assert all(re.fullmatch(r"n\d{8}/n\d{8}_.+\.JPEG", name) for name in info["eval_names"] + info["calib_names"])
    assert not set(info["calib_names"]) & set(info["eval_names"])
    assert data.labels == [SYNSETS.index(name.split("/")[0]) for name in info["eval_names"]]


# ---- no calibration photo is ever an evaluation photo

@pytest.mark.parametrize("calib, evaluation, all_photos", [
    (50, 200, False), (8, 40, False), (1, 1, False), (50, 200, True), (13, 1, True)])
def test_the_manifest_never_scores_a_calibration_photo(calib, evaluation, all_photos):
    chosen = images.select_rows(images.read_manifest(MANIFEST), calib, evaluation, all_photos)
    calib_names = {r.filename for r in chosen["calib"]}
    assert len(calib_names) == calib
    assert not calib_names & {r.filename for r in chosen["eval"]}
    assert len({r.label for r in chosen["calib"]}) == calib, "one photo per class: every one a new class"
    assert len(chosen["eval"]) == (1000 - 50 if all_photos else evaluation)


@pytest.mark.parametrize("calib, evaluation", [(1, 1), (8, 42), (8, 100), (49, 1), (25, 25)])
def test_a_local_folder_never_scores_a_calibration_photo(tmp_path, calib, evaluation):
    labels = _sorted_class_folder(tmp_path / "photos")
    for labels_csv in (None, _write_labels(tmp_path / "labels.csv", labels)):
        chosen = images.local_image_set(tmp_path / "photos", labels_csv, calib, evaluation)
        assert len(chosen.calib) == calib and len(chosen.eval) == min(evaluation, 50 - calib)
        assert not set(chosen.calib) & set(chosen.eval)


def test_an_image_set_refuses_a_shared_photo():
    with pytest.raises(AssertionError, match="share 1 photo"):
        images.ImageSet("x", (Path("a.jpg"), Path("b.jpg")), (Path("b.jpg"),), None)


# ---- the default stays the offline 250; --all-photos is the other 750 too

def test_the_default_is_todays_250_photos_in_todays_order():
    rows = images.read_manifest(MANIFEST)
    chosen = images.select_rows(rows, 50, 200)
    shared = _shared_rows()
    assert {r.filename for split in chosen.values() for r in split} == {r["filename"] for r in shared}
    assert [r.label for r in chosen["calib"]] == list(range(0, 1000, 20)), "every 5th of the 250, as before"
    assert [r.label for r in chosen["eval"]] == [i for i in range(0, 1000, 4) if i % 20]


def test_all_photos_calibrates_alike_and_scores_the_other_950():
    rows = images.read_manifest(MANIFEST)
    default, every = images.select_rows(rows, 50, 200), images.select_rows(rows, 50, 200, all_photos=True)
    assert every["calib"] == default["calib"], "the INT8 variants are calibrated on the same photos"
    assert {r.label for r in every["eval"]} == set(range(1000)) - {r.label for r in every["calib"]}
    with pytest.raises(images.ManifestError, match=r"has 200 default eval photos, 201 were asked for "
                                                   r"\(750 more with --all-photos"):
        images.select_rows(rows, 50, 201)


def test_the_option_is_in_the_schema(monkeypatch):
    monkeypatch.setenv("MOBILENET_ALL_PHOTOS", "1")
    assert Settings().all_photos is True
    monkeypatch.setenv("MOBILENET_ALL_PHOTOS", "maybe")
    with pytest.raises(SettingError, match="MOBILENET_ALL_PHOTOS='maybe'"):
        Settings()
    monkeypatch.delenv("MOBILENET_ALL_PHOTOS")
    assert Settings().all_photos is False and Settings().with_options(all_photos=True).all_photos is True


def _settings(tmp_path, mirror, all_photos) -> types.SimpleNamespace:
    return types.SimpleNamespace(local_images=None, manifest=MANIFEST, images_dir=tmp_path / "images", mirror=mirror,
                                 calib_count=50, eval_count=200, quiet=True, all_photos=all_photos)


def test_offline_the_default_downloads_only_what_the_mirror_holds(image_server, tmp_path):
    assert images.download_images(_settings(tmp_path, image_server.url, False)) == {"downloaded": 250, "kept": 0}
    assert sorted(image_server.requests) == sorted(r["filename"] for r in _shared_rows())
    image_server.requests.clear()
    with pytest.raises(images.DownloadError) as err:
        images.download_images(_settings(tmp_path, image_server.url, True))
    assert len(err.value.failures) == 750 and all("HTTP 404" in reason for _, reason in err.value.failures)
    assert "With --all-photos (MOBILENET_ALL_PHOTOS) all 1000 photos are fetched" in str(err.value)
    assert len(image_server.requests) == 750, "the 250 verified ones are kept, not fetched again"


# ---- bad input: one line naming the file and what to do

@pytest.mark.parametrize("make, message", [
    (lambda root: (root / SYNSETS[0]).mkdir(), rf"class folder .*{SYNSETS[0]} is empty .*add its photos or remove it"),
    (lambda root: (root / "cats").mkdir(), r"class folder .*cats: 'cats' is not one of the 1000 ImageNet-1k synsets"
                                           r".*rename it to its synset or remove it"),
    (lambda root: (root / "n99999999").mkdir(), r"class folder .*n99999999: 'n99999999' is not one of the 1000"),
    (lambda root: (root / "loose.jpg").write_bytes(b"x"), r"holds photos and class folders \(n\d{8}, n\d{8}\)"),
], ids=["empty-class-folder", "not-a-synset", "unknown-synset", "mixed-layout"])
def test_a_bad_class_folder_is_named(tmp_path, make, message):
    root = tmp_path / "val"
    for synset in SYNSETS[1:3]:
        (root / synset).mkdir(parents=True)
        (root / synset / "a.JPEG").write_bytes(b"x")
    make(root)
    with pytest.raises(images.ManifestError, match=message) as err:
        images.local_image_set(root, None, calib_count=1, eval_count=10)
    assert "\n" not in str(err.value)


def test_labels_for_a_class_folder_layout_are_refused(tmp_path):
    root = tmp_path / "val"
    (root / SYNSETS[5]).mkdir(parents=True)
    (root / SYNSETS[5] / "a.JPEG").write_bytes(b"x")
    (root / SYNSETS[5] / "b.JPEG").write_bytes(b"x")
    labels = _write_labels(tmp_path / "labels.csv", {"a.JPEG": 1, "b.JPEG": 2})
    with pytest.raises(images.ManifestError, match=r"--local-labels .*labels\.csv: .* one folder per synset.*"
                                                   r"drop --local-labels"):
        images.local_image_set(root, labels, calib_count=1, eval_count=10)


def test_a_labels_csv_that_does_not_match_the_folder_is_named(tmp_path):
    labels = _sorted_class_folder(tmp_path / "photos")
    other = _write_labels(tmp_path / "labels.csv", {f"other{i}.jpg": 1 for i in range(50)})
    with pytest.raises(images.ManifestError, match=r"labels\.csv has no line for 50 photo\(s\) of .*photos: "
                                                   r"class00_0\.jpg, .* and 45 more \(add 'filename,label' lines"):
        images.local_image_set(tmp_path / "photos", other, calib_count=8, eval_count=10)
    by_synset = _write_labels(tmp_path / "synsets.csv", {n: SYNSETS[label] for n, label in labels.items()})
    chosen = images.local_image_set(tmp_path / "photos", by_synset, calib_count=8, eval_count=10)
    assert chosen.calib_labels == tuple(labels[p.name] for p in chosen.calib), "a synset is a label too"
    _write_labels(by_synset, {"class00_0.jpg": "n99999999"})
    with pytest.raises(images.ManifestError, match=r"synsets\.csv:2: 'n99999999' is not one of the 1000"):
        images.local_image_set(tmp_path / "photos", by_synset, calib_count=8, eval_count=10)


# ---- the store: written a photo at a time, read a photo at a time

PHOTO_BYTES = 3 * 224 * 224 * 4


def _fake_load_image(path, preprocessing=None):
    import torch
    value = float(Path(path).stem.split("_")[-1])
    return torch.from_numpy(np.full((1, 3, 224, 224), value, dtype=np.float32))


def test_the_store_is_written_one_photo_at_a_time(tmp_path, monkeypatch):
    import mobilenet.data.preprocess as preprocess
    count = 64  # 38 MB as one array
    paths = [tmp_path / f"photo_{i}.jpg" for i in range(count)]
    monkeypatch.setattr(preprocess, "load_image", _fake_load_image)

    def whole_array(*args, **kwargs):
        raise AssertionError("the writer built an array of all the photos")
    monkeypatch.setattr(np, "concatenate", whole_array)
    monkeypatch.setattr(np, "stack", whole_array)
    monkeypatch.setattr(np, "save", whole_array)
    tracemalloc.start()
    try:
        store.write_photos(paths, tmp_path / "eval.npy", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * PHOTO_BYTES, f"peak {peak / 1e6:.1f} MB while writing {count} photos"
    monkeypatch.undo()

    mapped = np.load(tmp_path / "eval.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap) and mapped.shape == (count, 3, 224, 224) and mapped.dtype == np.float32
    assert [float(mapped[i, 0, 0, 0]) for i in range(count)] == list(map(float, range(count)))
    one_at_a_time = NpyImages(tmp_path / "eval.npy")
    assert len(one_at_a_time) == count and float(one_at_a_time[count - 1].max()) == count - 1
    import io
    reference = io.BytesIO()
    np.save(reference, np.concatenate([_fake_load_image(p).numpy() for p in paths]))
    assert (tmp_path / "eval.npy").read_bytes() == reference.getvalue(), "the bytes np.save writes"


def test_a_photo_that_cannot_be_preprocessed_is_named_and_leaves_no_store(tmp_path):
    bad = tmp_path / "photos" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(images.ManifestError, match=r"broken\.jpg: cannot preprocess it .*remove or replace it"):
        store.write_photos([bad], tmp_path / "out" / "eval.npy", progress=False)
    assert list((tmp_path / "out").iterdir()) == []
