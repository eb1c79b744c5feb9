"""Manifest parsing, path safety, and downloads from a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_IMAGES, requires_shared

from mobilenet.data import images
from mobilenet.files import sha256_file

pytestmark = requires_shared
FAST = dict(timeout=(1.0, 0.5), retries=2, backoff_s=0.01, progress=False)


def _row(name: str, **changes) -> images.ManifestRow:
    path = SAMPLE_IMAGES / name
    row = images.ManifestRow(name, 0, "x", "eval", path.stat().st_size, sha256_file(path),
                             f"https://example.invalid/{name}")
    return dataclasses.replace(row, **changes)


def _names(count: int) -> list[str]:
    return sorted(p.name for p in SAMPLE_IMAGES.glob("*.JPEG"))[:count]


def test_committed_manifest_is_valid():
    rows = images.read_manifest(REPO / "calib_images" / "manifest.csv")
    chosen = images.select_rows(rows, 50, 200)
    calib = {r.filename for r in chosen["calib"]}
    assert len(calib) == 50 and len(chosen["eval"]) == 200
    assert not calib & {r.filename for r in chosen["eval"]}, "calibration and evaluation must be disjoint"
    assert all(r.sha256 and r.label is not None for r in rows)
    # All 1000 sample photos, one per class; the default 250 first, exactly the ones the mirror holds.
    assert sorted(r.label for r in rows) == list(range(1000))
    assert [r.default for r in rows] == [True] * 250 + [False] * 750
    assert {r.filename for r in rows if r.default} == {p.name for p in SAMPLE_IMAGES.glob("*.JPEG")}


@pytest.mark.parametrize("name", ["../evil.jpg", "/etc/passwd", "a/b.jpg", "..", ".hidden", "a\\b.jpg", ""])
def test_safe_target_rejects_escapes(tmp_path, name):
    with pytest.raises(images.ManifestError):
        images.safe_target(tmp_path, name)


def test_safe_target_accepts_plain_names(tmp_path):
    assert images.safe_target(tmp_path, "n03590841_jack-o'-lantern.JPEG").parent == tmp_path.resolve()


def _write_manifest(path: Path, rows: list[dict]):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=images.MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def test_manifest_errors_name_the_line(tmp_path):
    good = {"filename": "a.jpg", "label": "1", "category": "c", "split": "eval", "bytes": "1",
            "sha256": "0" * 64, "url": "http://x/a.jpg"}
    manifest = tmp_path / "m.csv"
    _write_manifest(manifest, [good, {**good, "filename": "../b.jpg"}])
    with pytest.raises(images.ManifestError, match=r"m.csv:3: unsafe file name"):
        images.read_manifest(manifest)
    _write_manifest(manifest, [{**good, "sha256": "xyz"}])
    with pytest.raises(images.ManifestError, match="64 hex"):
        images.read_manifest(manifest)
    _write_manifest(manifest, [{**good, "split": "train"}])
    with pytest.raises(images.ManifestError, match="calib or eval"):
        images.read_manifest(manifest)


def test_download_success_and_rerun_keeps_verified(image_server, tmp_path):
    rows = [_row(n) for n in _names(3)]
    counts = images.download(rows, tmp_path, image_server.url, **FAST)
    assert counts == {"downloaded": 3, "kept": 0}
    for row in rows:
        assert sha256_file(tmp_path / row.filename) == row.sha256
    image_server.requests.clear()
    assert images.download(rows, tmp_path, image_server.url, **FAST) == {"downloaded": 0, "kept": 3}
    assert image_server.requests == []


def test_404_is_not_retried_and_names_the_url(image_server, tmp_path):
    good, missing = _names(2)
    image_server.behaviour[missing] = "404"
    with pytest.raises(images.DownloadError) as err:
        images.download([_row(good), _row(missing)], tmp_path, image_server.url, **FAST)
    assert f"{image_server.url}/{missing}: HTTP 404" in str(err.value)
    assert image_server.requests.count(missing) == 1
    assert (tmp_path / good).is_file(), "a verified file survives another file's failure"
    assert not (tmp_path / missing).exists()


def test_500_then_success_is_retried(image_server, tmp_path):
    (name,) = _names(1)
    image_server.behaviour[name] = "500-once"
    assert images.download([_row(name)], tmp_path, image_server.url, **FAST)["downloaded"] == 1
    assert image_server.requests.count(name) == 2


def test_persistent_500_gives_up(image_server, tmp_path):
    (name,) = _names(1)
    image_server.behaviour[name] = "500"
    with pytest.raises(images.DownloadError, match=r"HTTP 500.*after 3 attempts"):
        images.download([_row(name)], tmp_path, image_server.url, **FAST)


def test_timeout_is_reported(image_server, tmp_path):
    (name,) = _names(1)
    image_server.behaviour[name] = "slow"
    image_server.slow_s = 1.5
    with pytest.raises(images.DownloadError, match="Timeout"):
        images.download([_row(name)], tmp_path, image_server.url,
                        timeout=(1.0, 0.3), retries=1, backoff_s=0.01, progress=False)
    assert not list(tmp_path.iterdir()), "no partial file is left behind"


@pytest.mark.parametrize("mode, sha_known, message", [
    ("wrong-bytes", True, "sha256 mismatch"),
    ("truncated", True, "sha256 mismatch"),
    ("truncated", False, "not a decodable image"),
    ("not-image", False, "not a decodable image"),
])
def test_bad_bytes_are_rejected(image_server, tmp_path, mode, sha_known, message):
    name = _names(2)[1]
    image_server.behaviour[name] = mode
    row = _row(name) if sha_known else _row(name, sha256=None)
    with pytest.raises(images.DownloadError, match=message):
        images.download([row], tmp_path, image_server.url, **FAST)
    assert not list(tmp_path.iterdir())


def test_size_cap(image_server, tmp_path):
    (name,) = _names(1)
    with pytest.raises(images.DownloadError, match="cap"):
        images.download([_row(name)], tmp_path, image_server.url, max_bytes=1000, **FAST)


def test_local_folder_with_and_without_labels(tmp_path):
    for name in _names(5):
        (tmp_path / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    unlabelled = images.local_image_set(tmp_path, None, calib_count=2, eval_count=10)
    assert len(unlabelled.calib) == 2 and len(unlabelled.eval) == 3 and not unlabelled.labelled
    assert sorted(p.name for p in unlabelled.files()) == _names(5)
    labels = tmp_path / "labels.csv"
    label_of = {n: i for i, n in enumerate(_names(5))}
    labels.write_text("filename,label\n" + "".join(f"{n},{i}\n" for n, i in label_of.items()))
    labelled = images.local_image_set(tmp_path, labels, calib_count=2, eval_count=10)
    assert labelled.eval_labels == tuple(label_of[p.name] for p in labelled.eval)
    assert labelled.calib_labels == tuple(label_of[p.name] for p in labelled.calib)
    assert (labelled.calib_classes, labelled.eval_classes) == (2, 3)


def test_unreachable_host_stops_early(tmp_path):
    import socket
    with socket.socket() as probe:  # a port nobody listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    rows = [_row(n) for n in _names(6)]
    with pytest.raises(images.DownloadError) as err:
        images.download(rows, tmp_path, dead, **FAST)
    reasons = [reason for _, reason in err.value.failures]
    assert len(reasons) == 6
    assert sum("not tried" in r for r in reasons) == 6 - images.UNREACHABLE_LIMIT


# ---- labels and photos a user gives: each error names the file (and line) and the reason

def _local_folder(folder: Path, names=("a.jpg", "b.jpg", "c.jpg")) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"only the names matter here")
    return folder


@pytest.mark.parametrize("lines, message", [
    ("a.jpg,1\nb.jpg,cat\nc.jpg,3\n", r"labels\.csv:3: label 'cat' is not an integer"),
    ("a.jpg,1\nb.jpg,2.5\nc.jpg,3\n", r"labels\.csv:3: label '2\.5' is not an integer"),
    ("a.jpg,1\nb.jpg,1000\nc.jpg,3\n", r"labels\.csv:3: label 1000 is outside 0-999"),
    ("a.jpg,-1\nb.jpg,2\nc.jpg,3\n", r"labels\.csv:2: label -1 is outside 0-999"),
    ("a.jpg,1\nb.jpg,2\nc.jpg,3\nb.jpg,4\n", r"labels\.csv:5: b\.jpg is listed twice \(first on line 3\)"),
    ("a.jpg,1\nb.jpg\nc.jpg,3\n", r"labels\.csv:3: no label"),
    ("a.jpg,1\nb.jpg,\nc.jpg,3\n", r"labels\.csv:3: no label"),
    ("a.jpg,1\n,2\n", r"labels\.csv:3: no file name"),
    ("a.jpg,1\nb.jpg,2\n", r"labels\.csv has no line for 1 photo\(s\) of .*: c\.jpg"),
], ids=["word", "decimal", "1000", "negative", "duplicate", "no-label-field", "empty-label", "no-name",
        "missing-row"])
def test_labels_csv_errors_name_the_file_and_line(tmp_path, lines, message):
    folder = _local_folder(tmp_path / "photos")
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\n" + lines)
    with pytest.raises(images.ManifestError, match=message):
        images.local_image_set(folder, labels, calib_count=1, eval_count=10)


@pytest.mark.parametrize("content, message", [
    (b"name;class\na.jpg;1\n", r"labels\.csv: needs a header line 'filename,label'"),
    ("filename,label\nb.jpg,1\nc.jpg,2\n".encode("utf-16"), r"labels\.csv: not UTF-8 text"),
], ids=["no-header", "utf-16"])
def test_labels_csv_that_is_not_one_is_named(tmp_path, content, message):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    with pytest.raises(images.ManifestError, match=message):
        images.local_image_set(_local_folder(tmp_path / "photos"), labels, calib_count=1, eval_count=10)


def test_labels_csv_from_a_spreadsheet_with_a_bom_is_read(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes("filename,label\na.jpg,3\nb.jpg,7\nc.jpg,999\n".encode("utf-8-sig"))
    chosen = images.local_image_set(_local_folder(tmp_path / "photos"), labels, calib_count=1, eval_count=10)
    assert sorted(chosen.eval_labels + chosen.calib_labels) == [3, 7, 999]


@pytest.mark.parametrize("label, message", [
    ("cat", r"m\.csv:2: label 'cat' is not an integer"),
    ("1000", r"m\.csv:2: label 1000 is outside 0-999"),
    ("-3", r"m\.csv:2: label -3 is outside 0-999"),
])
def test_manifest_labels_are_validated_like_the_labels_csv(tmp_path, label, message):
    manifest = tmp_path / "m.csv"
    _write_manifest(manifest, [{"filename": "a.jpg", "label": label, "category": "c", "split": "eval",
                                "bytes": "1", "sha256": "", "url": "http://x/a.jpg"}])
    with pytest.raises(images.ManifestError, match=message):
        images.read_manifest(manifest)


def test_manifest_duplicate_names_the_lines(tmp_path):
    row = {"filename": "a.jpg", "label": "1", "category": "c", "split": "eval", "bytes": "1", "sha256": "",
           "url": "http://x/a.jpg"}
    manifest = tmp_path / "m.csv"
    _write_manifest(manifest, [row, {**row, "filename": "b.jpg"}, row])
    with pytest.raises(images.ManifestError, match=r"m\.csv:4: a\.jpg is listed twice \(first on line 2\)"):
        images.read_manifest(manifest)


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height pixels: what a decompression bomb looks like."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, content, reason", [
    ("notes.jpg", b"<html>a captive portal, not a photo</html>", "not an image"),
    ("half.jpg", None, "truncated or corrupt"),
    ("bomb.png", _png_header(30000, 30000), "decompression bomb"),  # over twice Pillow's limit: an error
    ("big.png", _png_header(10000, 10000), "decompression bomb"),  # between 1x and 2x: only a warning
], ids=["not-an-image", "truncated", "bomb", "bomb-warning"])
def test_a_bad_file_in_a_local_folder_is_named_with_the_reason(tmp_path, name, content, reason):
    import types
    folder = tmp_path / "photos"
    folder.mkdir()
    for good in _names(3):
        (folder / good).write_bytes((SAMPLE_IMAGES / good).read_bytes())
    whole = (SAMPLE_IMAGES / _names(1)[0]).read_bytes()
    (folder / name).write_bytes(whole[: len(whole) // 2] if content is None else content)
    settings = types.SimpleNamespace(local_images=str(folder), local_labels=None, calib_count=1,
                                     eval_count=10, quiet=True)
    with pytest.raises(images.ManifestError, match=rf"1 file\(s\) in .*photos are not usable photos.*\n"
                                                   rf"  {re.escape(name)}: {reason}"):
        images.download_images(settings)


def test_a_bad_local_photo_is_one_error_line_not_a_traceback(tmp_path):
    """As a user sees it: `invoke download-images --local-images DIR` on a folder with a bomb."""
    import os
    import subprocess
    import sys
    folder = tmp_path / "photos"
    folder.mkdir()
    for good in _names(3):
        (folder / good).write_bytes((SAMPLE_IMAGES / good).read_bytes())
    (folder / "bomb.png").write_bytes(_png_header(30000, 30000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILENET_")}
    env.update(MOBILENET_BUILD_DIR=str(tmp_path / "build"), MOBILENET_CALIB_COUNT="1", MOBILENET_QUIET="1")
    run = subprocess.run([sys.executable, "-m", "invoke", "download-images", "--local-images", str(folder)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert re.search(r"error: 1 file\(s\) in .*photos are not usable photos", run.stderr), run.stderr
    assert "bomb.png: decompression bomb" in run.stderr
