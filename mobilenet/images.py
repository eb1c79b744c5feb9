"""Labelled real photos: the committed manifest, downloading it, or the user's own folder."""
from __future__ import annotations

import csv
import hashlib
import logging
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from mobilenet.fsutil import atomic_path, sha256_file

log = logging.getLogger("mobilenet.images")

MANIFEST_FIELDS = ("filename", "label", "category", "split", "bytes", "sha256", "url")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MAX_IMAGE_BYTES = 20 * 1024 * 1024


class ManifestError(ValueError):
    pass


class DownloadError(RuntimeError):
    def __init__(self, failures: list[tuple[str, str]], kept: int):
        self.failures = failures
        lines = "\n".join(f"  {url}: {reason}" for url, reason in failures)
        super().__init__(
            f"{len(failures)} image(s) failed to download ({kept} verified files kept):\n{lines}\n"
            "Rerun to retry; use --mirror URL (MOBILENET_MIRROR) to fetch the same files from "
            "another host, or --local-images DIR for a folder of your own.")


@dataclass(frozen=True)
class ManifestRow:
    filename: str
    label: int | None
    category: str
    split: str  # "calib" or "eval"
    bytes: int | None
    sha256: str | None
    url: str


@dataclass(frozen=True)
class ImageSet:
    """What the models are calibrated and scored on."""
    name: str
    calib: tuple[Path, ...]
    eval: tuple[Path, ...]
    eval_labels: tuple[int, ...] | None  # None: unlabelled, only agreement with FP32 is scored

    @property
    def labelled(self) -> bool:
        return self.eval_labels is not None

    def files(self) -> list[Path]:
        return [*self.calib, *self.eval]


def safe_target(folder: Path, filename: str) -> Path:
    """The path of `filename` inside `folder`, refusing names that could escape it."""
    if (not filename or filename != Path(filename).name or filename in {".", ".."}
            or filename.startswith(".") or "\\" in filename or "\x00" in filename):
        raise ManifestError(f"unsafe file name in manifest: {filename!r} (plain file names only)")
    folder = Path(folder).resolve()
    target = (folder / filename).resolve()
    if target.parent != folder:
        raise ManifestError(f"unsafe file name in manifest: {filename!r} escapes {folder}")
    return target


def read_manifest(path: Path) -> list[ManifestRow]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"filename", "split", "url"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}: missing column(s) {sorted(missing)}; expected {MANIFEST_FIELDS}")
        rows = []
        for line_no, raw in enumerate(reader, start=2):
            try:
                split = raw["split"].strip()
                if split not in {"calib", "eval"}:
                    raise ValueError(f"split must be calib or eval, got {split!r}")
                safe_target(Path("."), raw["filename"].strip())
                sha = (raw.get("sha256") or "").strip().lower() or None
                if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
                    raise ValueError(f"sha256 {sha!r} is not 64 hex digits")
                rows.append(ManifestRow(
                    filename=raw["filename"].strip(),
                    label=int(raw["label"]) if (raw.get("label") or "").strip() else None,
                    category=(raw.get("category") or "").strip(),
                    split=split,
                    bytes=int(raw["bytes"]) if (raw.get("bytes") or "").strip() else None,
                    sha256=sha,
                    url=raw["url"].strip(),
                ))
            except (ValueError, ManifestError) as exc:
                raise ManifestError(f"{path}:{line_no}: {exc}") from exc
    names = [r.filename for r in rows]
    if len(set(names)) != len(names):
        raise ManifestError(f"{path}: a file name appears twice")
    return rows


def select_rows(rows: list[ManifestRow], calib_count: int, eval_count: int) -> dict[str, list[ManifestRow]]:
    chosen = {"calib": [r for r in rows if r.split == "calib"][:calib_count],
              "eval": [r for r in rows if r.split == "eval"][:eval_count]}
    for split, count in (("calib", calib_count), ("eval", eval_count)):
        if len(chosen[split]) < count:
            raise ManifestError(f"the manifest has {len(chosen[split])} {split} photos, {count} were asked for")
    return chosen


def build_manifest(source_csv: Path, out_csv: Path, calib_count: int = 50, only_local: bool = True) -> None:
    """Write our manifest from the facts of ../shared/imagenet-sample/manifest.csv.

    Only the photos the offline mirror holds (local = yes) by default, so that every row
    can be fetched on a machine without internet. Every 5th one is a calibration photo,
    spreading both splits over the classes; the rest are the evaluation set.
    """
    with open(source_csv, newline="") as fh:
        source = [r for r in csv.DictReader(fh) if not only_local or r.get("local") == "yes"]
    step = max(1, len(source) // calib_count)
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for position, row in enumerate(source):
            is_calib = position % step == 0 and position // step < calib_count
            writer.writerow({"filename": row["filename"], "label": row["index"],
                             "category": row["category"], "split": "calib" if is_calib else "eval",
                             "bytes": row["bytes"], "sha256": row["sha256"], "url": row["url"]})


def source_url(row: ManifestRow, mirror: str | None) -> str:
    if not mirror:
        return row.url
    return mirror.rstrip("/") + "/" + urllib.parse.quote(row.filename)


def check_decodes(path: Path) -> None:
    from PIL import Image
    with Image.open(path) as image:
        image.load()


def is_verified(path: Path, row: ManifestRow) -> bool:
    if not path.is_file():
        return False
    if row.sha256:
        return sha256_file(path) == row.sha256
    try:
        check_decodes(path)
        return True
    except Exception:
        return False


# Offline or behind a firewall, every URL would wait out its timeouts and retries; after
# this many files in a row that could not even connect, the rest are reported untried.
UNREACHABLE_LIMIT = 3


class _Retryable(Exception):
    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


def _fetch(session, url: str, target: Path, row: ManifestRow, timeout, max_bytes: int) -> None:
    import requests
    try:
        response = session.get(url, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retryable(f"connection failed: {exc.__class__.__name__}: {exc}", unreachable=True) from exc
    with response:
        if response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code} {response.reason}")
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code} {response.reason}")
        declared = int(response.headers.get("Content-Length") or 0)
        if declared > max_bytes:
            raise RuntimeError(f"{declared} bytes is over the {max_bytes}-byte cap")
        digest = hashlib.sha256()
        received = 0
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                try:
                    for chunk in response.iter_content(64 * 1024):
                        received += len(chunk)
                        if received > max_bytes:
                            raise RuntimeError(f"more than the {max_bytes}-byte cap")
                        digest.update(chunk)
                        fh.write(chunk)
                except (requests.ConnectionError, requests.Timeout) as exc:
                    raise _Retryable(f"transfer interrupted: {exc.__class__.__name__}") from exc
            if row.sha256 and digest.hexdigest() != row.sha256:
                raise RuntimeError(f"sha256 mismatch: got {digest.hexdigest()[:12]}…, "
                                   f"expected {row.sha256[:12]}… ({received} bytes)")
            try:
                check_decodes(tmp)
            except Exception as exc:
                raise RuntimeError(f"not a decodable image: {exc}") from exc


def download(rows: list[ManifestRow], folder: Path, mirror: str | None = None, *,
             timeout=(5.0, 30.0), retries: int = 3, backoff_s: float = 0.5,
             max_bytes: int = MAX_IMAGE_BYTES, progress: bool = True) -> dict[str, int]:
    """Fetch rows into folder; verified files already there are kept and skipped.

    Retries with exponential backoff on connection errors, timeouts and 5xx; never on
    4xx. Raises DownloadError naming every failed URL after trying all of them.
    """
    import requests
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    counts = {"downloaded": 0, "kept": 0}
    unreachable_in_a_row = 0
    with requests.Session() as session, tqdm(rows, desc=f"download {folder.name}", unit="img",
                                             disable=not progress, leave=False) as bar:
        for row in bar:
            target = safe_target(folder, row.filename)
            if is_verified(target, row):
                counts["kept"] += 1
                continue
            url = source_url(row, mirror)
            if unreachable_in_a_row >= UNREACHABLE_LIMIT:
                failures.append((url, "not tried: the previous downloads could not connect at all"))
                continue
            for attempt in range(retries + 1):
                try:
                    _fetch(session, url, target, row, timeout, max_bytes)
                    counts["downloaded"] += 1
                    unreachable_in_a_row = 0
                    break
                except _Retryable as exc:
                    if attempt == retries:
                        failures.append((url, f"{exc} (after {retries + 1} attempts)"))
                        unreachable_in_a_row += 1 if exc.unreachable else 0
                    else:
                        log.debug("retrying %s: %s", url, exc)
                        time.sleep(backoff_s * 2 ** attempt)
                except RuntimeError as exc:
                    failures.append((url, str(exc)))
                    unreachable_in_a_row = 0
                    break
    if failures:
        raise DownloadError(failures, kept=counts["kept"] + counts["downloaded"])
    return counts


def _read_labels(labels_csv: Path) -> dict[str, int]:
    with open(labels_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"filename", "label"} <= set(reader.fieldnames or ()):
            raise ManifestError(f"{labels_csv}: needs columns filename,label")
        return {row["filename"].strip(): int(row["label"]) for row in reader}


def local_image_set(folder: Path, labels_csv: Path | None, calib_count: int, eval_count: int) -> ImageSet:
    """A user's own folder: sorted files, the first calib_count calibrate, the next eval_count score."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"local image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < calib_count + 1:
        raise ManifestError(f"{folder} has {len(files)} images; need more than {calib_count} "
                            "(calibration photos plus at least one to evaluate)")
    calib, evaluation = files[:calib_count], files[calib_count:calib_count + eval_count]
    labels = None
    if labels_csv:
        by_name = _read_labels(Path(labels_csv))
        unlabelled = [p.name for p in evaluation if p.name not in by_name]
        if unlabelled:
            raise ManifestError(f"{labels_csv} has no label for {unlabelled[:5]}")
        labels = tuple(by_name[p.name] for p in evaluation)
    return ImageSet(f"local:{folder.resolve()}", tuple(calib), tuple(evaluation), labels)


def manifest_image_set(settings) -> ImageSet:
    chosen = select_rows(read_manifest(settings.manifest), settings.calib_count, settings.eval_count)
    paths = {split: tuple(safe_target(settings.images_dir / split, r.filename) for r in rows)
             for split, rows in chosen.items()}
    missing = [p for p in paths["calib"] + paths["eval"] if not p.is_file()]
    if missing:
        raise ManifestError(f"{len(missing)} photo(s) not downloaded yet (e.g. {missing[0]}): "
                            "run `invoke download-images`")
    labels = [r.label for r in chosen["eval"]]
    return ImageSet(f"manifest:{settings.manifest.name} ({settings.calib_count} calib, "
                    f"{settings.eval_count} eval)", paths["calib"], paths["eval"],
                    None if None in labels else tuple(labels))


def image_set(settings) -> ImageSet:
    if settings.local_images:
        return local_image_set(Path(settings.local_images), settings.local_labels,
                               settings.calib_count, settings.eval_count)
    return manifest_image_set(settings)


def download_images(settings) -> dict[str, int]:
    """The download-images step: fetch the manifest's calibration and evaluation photos."""
    if settings.local_images:
        images = image_set(settings)
        for path in images.files():
            check_decodes(path)
        return {"downloaded": 0, "kept": len(images.files())}
    chosen = select_rows(read_manifest(settings.manifest), settings.calib_count, settings.eval_count)
    totals = {"downloaded": 0, "kept": 0}
    failures: list[tuple[str, str]] = []
    for split, rows in chosen.items():
        try:
            counts = download(rows, settings.images_dir / split, settings.mirror,
                              progress=not settings.quiet)
        except DownloadError as exc:  # try the other split too, then report every failure
            failures += exc.failures
            counts = {"downloaded": 0, "kept": len(rows) - len(exc.failures)}
        for key in totals:
            totals[key] += counts[key]
    if failures:
        raise DownloadError(failures, kept=totals["kept"] + totals["downloaded"])
    return totals
