"""Manifest parsing, path safety, and downloads from a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_IMAGES, requires_shared
from mobilenet import images
from mobilenet.fsutil import sha256_file

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
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\n" + "".join(f"{n},{i}\n" for i, n in enumerate(_names(5))))
    labelled = images.local_image_set(tmp_path, labels, calib_count=2, eval_count=10)
    assert labelled.eval_labels == (2, 3, 4)


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
