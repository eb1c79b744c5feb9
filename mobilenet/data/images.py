"""Labelled real photos: the committed manifest, downloading it, or the user's own folder.

Which photos calibrate and which are scored is decided here, once (choose_photos): round-robin
over the classes in a seeded order, so that a few calibration photos span as many classes as
there are photos, and no photo is ever in both sets. Once `invoke tune` has run, a third set is
taken out of the evaluation pool the same way, the tuning split (build/tune/split.json says how
many): the tune chooses settings on it, and the evaluation photos the report scores exclude it.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import logging
import random
import re
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

from mobilenet.files import atomic_path, sha256_file

log = logging.getLogger("mobilenet.data.images")

MANIFEST_FIELDS = ("filename", "label", "category", "split", "bytes", "sha256", "url", "default")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MAX_IMAGE_BYTES = 20 * 1024 * 1024
NUM_CLASSES = 1000  # labels are ImageNet class indices
# A server that sends a byte now and then never trips the per-read timeout; this bounds
# the whole of one file, retries included.
FILE_DEADLINE_S = 120.0
CHUNK_BYTES = 64 * 1024
# Fixed, so that the same folder and counts always choose the same photos (results stay comparable).
SELECTION_SEED = 0
CLASSES_CSV = Path(__file__).with_name("imagenet_classes.csv")
SYNSET_PATTERN = re.compile(r"n[0-9]{8}")


class ManifestError(ValueError):
    pass


class DownloadError(RuntimeError):
    def __init__(self, failures: list[tuple[str, str]], kept: int, hint: str = ""):
        self.failures = failures
        lines = "\n".join(f"  {url}: {reason}" for url, reason in failures)
        super().__init__(
            f"{len(failures)} image(s) failed to download ({kept} verified files kept):\n{lines}\n"
            "Rerun to retry; use --mirror URL (MOBILENET_MIRROR) to fetch the same files from "
            f"another host, or --local-images DIR for a folder of your own.{hint}")


@dataclass(frozen=True)
class ManifestRow:
    filename: str
    label: int | None
    category: str
    split: str  # "calib" or "eval"
    bytes: int | None
    sha256: str | None
    url: str
    default: bool = True  # one of the photos used without --all-photos (the offline mirror's)


@dataclass(frozen=True)
class ImageSet:
    """What the models are calibrated and scored on."""
    name: str
    calib: tuple[Path, ...]
    eval: tuple[Path, ...]
    eval_labels: tuple[int, ...] | None  # None: unlabelled, only agreement with FP32 is scored
    calib_labels: tuple[int, ...] | None = None
    root: Path | None = None  # photos are named relative to it (a class folder's photos by folder/name)
    # The tuning split (`invoke tune` chooses INT8 settings on it); empty until a tune has run.
    tune: tuple[Path, ...] = ()
    tune_labels: tuple[int, ...] | None = None

    def __post_init__(self):
        for (one, first), (other, second) in ((("calibration", self.calib), ("evaluation", self.eval)),
                                              (("tuning", self.tune), ("evaluation", self.eval)),
                                              (("calibration", self.calib), ("tuning", self.tune))):
            overlap = set(first) & set(second)
            if overlap:  # an invariant of the selection, raised even under python -O
                raise AssertionError(f"{one} and {other} photos share {len(overlap)} photo(s), e.g. {min(overlap)}")

    @property
    def labelled(self) -> bool:
        return self.eval_labels is not None

    @property
    def calib_classes(self) -> int | None:
        """How many classes the calibration photos span (None: their labels are unknown)."""
        return None if self.calib_labels is None else len(set(self.calib_labels))

    @property
    def eval_classes(self) -> int | None:
        return None if self.eval_labels is None else len(set(self.eval_labels))

    @property
    def tune_classes(self) -> int | None:
        return None if self.tune_labels is None or not self.tune else len(set(self.tune_labels))

    def files(self) -> list[Path]:
        return [*self.calib, *self.eval, *self.tune]

    def name_of(self, path: Path) -> str:
        if self.root is not None and path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return path.name


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


def check_http_url(url: str | None, what: str) -> str:
    """`url` if it is http(s)://host/...: checked before anything is fetched, since anything
    else (file://, ftp://, 'host:8000') would only fail later, once per file."""
    parts = urllib.parse.urlsplit(url or "")
    try:
        parts.port  # noqa: B018 (a bad port raises only when read)
        has_host = bool(parts.hostname)
    except ValueError:
        has_host = False
    if parts.scheme.lower() not in {"http", "https"} or not has_host:
        raise ManifestError(f"{what} {url!r} is not an http(s) URL: "
                            "give it as http://HOST[:PORT][/path], e.g. http://10.0.0.5:8765")
    return url


def parse_label(text: str | None) -> int:
    """An ImageNet class index, 0-999."""
    text = (text or "").strip()
    if not text:
        raise ValueError("no label (expected an ImageNet class index 0-999)")
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(f"label {text!r} is not an integer (expected an ImageNet class index 0-999)")
    label = int(text)
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label {label} is outside 0-{NUM_CLASSES - 1} (ImageNet class indices)")
    return label


@functools.cache
def imagenet_classes() -> dict[str, int]:
    """WordNet synset -> ImageNet-1k class index, the labels the manifest uses (torchvision's
    order, which is the synsets sorted), from imagenet_classes.csv beside this module."""
    with open(CLASSES_CSV, newline="", encoding="utf-8") as fh:
        table = {row["synset"]: int(row["index"]) for row in csv.DictReader(fh)}
    assert sorted(table.values()) == list(range(NUM_CLASSES)), f"{CLASSES_CSV} must list {NUM_CLASSES} classes"
    return table


def synset_label(synset: str) -> int:
    """The class index of a synset such as n01440764; ValueError for anything else."""
    label = imagenet_classes().get(synset)
    if label is None:
        raise ValueError(f"{synset!r} is not one of the {NUM_CLASSES} ImageNet-1k synsets "
                         "(WordNet ids such as n01440764)")
    return label


def spread_order(labels, seed: int = SELECTION_SEED) -> list[int]:
    """Positions 0..len(labels)-1 in round-robin order over the classes: one photo of every class,
    then a second of every class that has one, and so on. Classes, and photos within a class,
    are taken in a seeded shuffle, so any prefix spans as many classes as it can and never
    follows the file names (sorted names group a class together). A None label is a class of
    its own, so an unlabelled folder comes out in a seeded random order."""
    rng = random.Random(seed)
    groups: dict[object, list[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(("alone", position) if label is None else label, []).append(position)
    queues = list(groups.values())  # in order of first appearance: deterministic
    rng.shuffle(queues)
    for queue in queues:
        rng.shuffle(queue)
    order, depth = [], 0
    while queues:
        order.extend(queue[depth] for queue in queues)
        depth += 1
        queues = [queue for queue in queues if len(queue) > depth]
    return order


def choose_photos(labels, calib_count: int, eval_count: int | None) -> tuple[list[int], list[int]]:
    """Positions of the calibration and the evaluation photos among candidates with these labels:
    the first calib_count of spread_order, then up to eval_count more (None: all the rest)."""
    order = spread_order(labels)
    calib = order[:calib_count]
    evaluation = order[calib_count:] if eval_count is None else order[calib_count:calib_count + eval_count]
    assert not set(calib) & set(evaluation), "a calibration photo was chosen for evaluation too"
    return calib, evaluation


def split_for_tuning(labels, tune_count: int, eval_count: int | None) -> tuple[list[int], list[int]]:
    """Positions of the tuning and the evaluation photos among an evaluation pool with these labels:
    the first tune_count of spread_order (so the tuning split spans as many classes as it can),
    then up to eval_count of the rest (None: all of them). A pool with no more photos than
    tune_count + eval_count scores what is left: the tuning split is paid for by the report."""
    if tune_count and len(labels) - tune_count < 1:
        raise ManifestError(f"{len(labels)} evaluation photos cannot give {tune_count} to the tuning split and keep "
                            "one to score: ask `invoke tune` for fewer (--photos)")
    order = spread_order(labels)
    tune = order[:tune_count]
    rest = order[tune_count:]
    evaluation = rest if eval_count is None else rest[:eval_count]
    assert not set(tune) & set(evaluation), "a tuning photo was chosen for evaluation too"
    return tune, evaluation


# What `invoke tune` leaves in the build folder: how many photos its tuning split holds. The
# photo selection reads it, so that every later build scores only the photos it did not tune on.
TUNING_SPLIT = Path("tune") / "split.json"


def tuning_split_path(settings) -> Path:
    return Path(settings.build_dir) / TUNING_SPLIT


def tuning_count(settings) -> int:
    """Photos reserved for the tuning split (0 when `invoke tune` never ran in this build folder, or
    the caller names no build folder)."""
    if getattr(settings, "build_dir", None) is None:
        return 0
    path = tuning_split_path(settings)
    if not path.is_file():
        return 0
    try:
        count = json.loads(path.read_text())["tune_photos"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"tune_photos={count!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: not a tuning split record ({exc}); delete it (the evaluation set is then "
                            "the whole pool again) or rerun `invoke tune`") from None
    return count


@contextlib.contextmanager
def _csv_rows(path: Path):
    """A DictReader over `path`; a file that is unreadable, not UTF-8 or not CSV is named."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's BOM
            yield csv.DictReader(fh)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start}); save it as a UTF-8 CSV") from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a valid CSV file ({exc})") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_manifest(path: Path) -> list[ManifestRow]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    with _csv_rows(path) as reader:
        missing = {"filename", "split", "url"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}: missing column(s) {sorted(missing)}; expected {MANIFEST_FIELDS}")
        rows, first_line = [], {}
        for raw in reader:
            line_no = reader.line_num
            try:
                name = (raw["filename"] or "").strip()
                split = (raw["split"] or "").strip()
                if split not in {"calib", "eval"}:
                    raise ValueError(f"split must be calib or eval, got {split!r}")
                safe_target(Path("."), name)
                if name in first_line:
                    raise ValueError(f"{name} is listed twice (first on line {first_line[name]})")
                sha = (raw.get("sha256") or "").strip().lower() or None
                if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
                    raise ValueError(f"sha256 {sha!r} is not 64 hex digits")
                url = (raw["url"] or "").strip()
                check_http_url(url, "url")
                default = (raw.get("default") or "yes").strip().lower()
                if default not in {"yes", "no"}:
                    raise ValueError(f"default must be yes or no, got {default!r}")
                rows.append(ManifestRow(
                    filename=name,
                    label=parse_label(raw["label"]) if (raw.get("label") or "").strip() else None,
                    category=(raw.get("category") or "").strip(),
                    split=split,
                    bytes=int(raw["bytes"]) if (raw.get("bytes") or "").strip() else None,
                    sha256=sha,
                    url=url,
                    default=default == "yes",
                ))
            except (ValueError, ManifestError) as exc:
                raise ManifestError(f"{path}:{line_no}: {exc}") from None
            first_line[name] = line_no
    return rows


def select_rows(rows: list[ManifestRow], calib_count: int, eval_count: int,
                all_photos: bool = False, tune_count: int = 0) -> dict[str, list[ManifestRow]]:
    """The manifest's calibration, evaluation and tuning photos, each in manifest order.

    Without all_photos only the default rows (the ones the offline mirror holds); with it every
    row, and every evaluation row is scored (eval_count does not apply). Fewer photos than a
    split has are chosen spread over the classes (choose_photos), so asking for all of them
    gives the split exactly as the manifest lists it. tune_count photos of the evaluation rows
    form the tuning split (split_for_tuning); they are never scored, so the evaluation photos
    are then eval_count of the others, or as many as are left.
    """
    pool = rows if all_photos else [r for r in rows if r.default]
    splits = {split: [r for r in pool if r.split == split] for split in ("calib", "eval")}
    chosen = {}
    for split, count in (("calib", calib_count), ("eval", None if all_photos else eval_count)):
        candidates = splits[split]
        if count is not None and len(candidates) < count and not (split == "eval" and tune_count):
            more = sum(r.split == split for r in rows) - len(candidates)
            hint = f" ({more} more with --all-photos, MOBILENET_ALL_PHOTOS=1)" if more and not all_photos else ""
            raise ManifestError(f"the manifest has {len(candidates)} {'' if all_photos else 'default '}{split} "
                                f"photos, {count} were asked for{hint}")
        if split == "eval" and tune_count:
            tune, picked = split_for_tuning([r.label for r in candidates], tune_count, count)
            chosen["tune"] = [candidates[i] for i in sorted(tune)]
        else:
            picked, _ = choose_photos([r.label for r in candidates], len(candidates) if count is None else count, 0)
        chosen[split] = [candidates[i] for i in sorted(picked)]
    chosen.setdefault("tune", [])
    for one, other in (("calib", "eval"), ("tune", "eval"), ("calib", "tune")):
        overlap = {r.filename for r in chosen[one]} & {r.filename for r in chosen[other]}
        assert not overlap, f"photo(s) {sorted(overlap)[:3]} would be in the {one} and the {other} set"
    return chosen


def split_folder(split: str) -> str:
    """The folder under images_root a split's photos are kept in: tuning photos are evaluation rows."""
    return "eval" if split == "tune" else split


def build_manifest(source_csv: Path, out_csv: Path, calib_count: int = 50, only_local: bool = False) -> None:
    """Write our manifest from the facts of ../shared/imagenet-sample/manifest.csv.

    First the photos the offline mirror holds (local = yes), default = yes: what every run uses
    unless --all-photos, so that it works on a machine without internet. Every 5th of them is a
    calibration photo (one photo per class, so that spreads calibration evenly over the
    classes); the rest are evaluation photos. Then, unless only_local, every other photo as an
    evaluation photo with default = no: these need internet (--all-photos).
    """
    with open(source_csv, newline="") as fh:
        source = list(csv.DictReader(fh))
    local = [r for r in source if r.get("local") == "yes"]
    others = [] if only_local else [r for r in source if r.get("local") != "yes"]
    step = max(1, len(local) // calib_count)
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for position, row in enumerate([*local, *others]):
            is_local = position < len(local)
            is_calib = is_local and position % step == 0 and position // step < calib_count
            writer.writerow({"filename": row["filename"], "label": row["index"],
                             "category": row["category"], "split": "calib" if is_calib else "eval",
                             "bytes": row["bytes"], "sha256": row["sha256"], "url": row["url"],
                             "default": "yes" if is_local else "no"})


def source_url(row: ManifestRow, mirror: str | None) -> str:
    if mirror is None:
        return row.url
    return mirror.rstrip("/") + "/" + urllib.parse.quote(row.filename)


def image_problem(path: Path) -> str | None:
    """Why `path` is not a usable photo, in a few words, or None if it decodes."""
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit: a photo is never that big.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"decompression bomb: {exc}"
    except UnidentifiedImageError:
        return "not an image (Pillow cannot identify its format)"
    except OSError as exc:
        if exc.errno is not None:
            return f"cannot read it: {exc.strerror}"
        return f"truncated or corrupt: {exc}"
    except Exception as exc:  # Pillow's decoders also raise SyntaxError, ValueError, struct.error...
        return f"truncated or corrupt: {exc.__class__.__name__}: {exc}"
    return None


def is_verified(path: Path, row: ManifestRow) -> bool:
    if not path.is_file():
        return False
    if row.sha256:
        return sha256_file(path) == row.sha256
    return image_problem(path) is None


def remove_partial_downloads(folder: Path) -> None:
    """A killed run leaves its half-written '.<name>.<random>.part<suffix>' files behind:
    atomic_path's cleanup never ran."""
    leftovers = [p for p in Path(folder).glob(".*.part*") if p.is_file()]
    for path in leftovers:
        path.unlink()
    if leftovers:
        log.info("%s: removed %d partial download(s) left by an interrupted run", folder, len(leftovers))


# Offline or behind a firewall, every URL would wait out its timeouts and retries; after
# this many files in a row that could not even connect, the rest are reported untried.
UNREACHABLE_LIMIT = 3


class _Retryable(Exception):
    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


def _body(response, deadline: float, deadline_s: float):
    """The response body in chunks, within the file's deadline.

    read1 returns what one read of the socket brings, so the deadline is checked at least once
    per read timeout; requests' iter_content waits for a full chunk however slowly it comes.
    """
    import urllib3
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not finished within the {deadline_s:g} s allowed per file "
                               "(the server sends too slowly)")
        try:
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as exc:
            # What requests calls ChunkedEncodingError: the connection dropped mid-file.
            raise _Retryable(f"transfer interrupted: {exc}") from exc
        if not chunk:
            return
        yield chunk


def _fetch(session, url: str, target: Path, row: ManifestRow, timeout, max_bytes: int,
           deadline: float, deadline_s: float) -> None:
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
                for chunk in _body(response, deadline, deadline_s):
                    received += len(chunk)
                    if received > max_bytes:
                        raise RuntimeError(f"more than the {max_bytes}-byte cap")
                    digest.update(chunk)
                    fh.write(chunk)
            if row.sha256 and digest.hexdigest() != row.sha256:
                raise RuntimeError(f"sha256 mismatch: got {digest.hexdigest()[:12]}…, "
                                   f"expected {row.sha256[:12]}… ({received} bytes)")
            problem = image_problem(tmp)
            if problem:
                raise RuntimeError(f"not a decodable image: {problem}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:  # this machine's disk, not the server
        return f"cannot write {exc.filename}: {exc.strerror}"
    if isinstance(exc, RuntimeError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def download(rows: list[ManifestRow], folder: Path, mirror: str | None = None, *,
             timeout=(5.0, 30.0), deadline_s: float = FILE_DEADLINE_S, retries: int = 3,
             backoff_s: float = 0.5, max_bytes: int = MAX_IMAGE_BYTES, progress: bool = True) -> dict[str, int]:
    """Fetch rows into folder; verified files already there are kept and skipped.

    Retries with exponential backoff on connection errors, timeouts, a connection dropped
    mid-file and 5xx; never on 4xx. Each file has deadline_s seconds in all, retries included.
    A failure of any kind stays with its file: raises DownloadError naming every failed URL
    after trying all of them.
    """
    import requests
    import urllib3
    from tqdm import tqdm

    if mirror is not None:
        check_http_url(mirror, "mirror URL (--mirror, MOBILENET_MIRROR)")
    urls = [source_url(row, mirror) for row in rows]
    for row, url in zip(rows, urls):
        check_http_url(url, f"URL of {row.filename}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_partial_downloads(folder)
    failures: list[tuple[str, str]] = []
    counts = {"downloaded": 0, "kept": 0}
    unreachable_in_a_row = 0
    with requests.Session() as session, tqdm(rows, desc=f"download {folder.name}", unit="img",
                                             disable=not progress, leave=False) as bar:
        for row, url in zip(bar, urls):
            target = safe_target(folder, row.filename)
            try:
                if is_verified(target, row):
                    counts["kept"] += 1
                    continue
            except OSError as exc:
                failures.append((url, f"cannot read {target}: {exc.strerror or exc}"))
                continue
            if unreachable_in_a_row >= UNREACHABLE_LIMIT:
                failures.append((url, "not tried: the previous downloads could not connect at all"))
                continue
            deadline = time.monotonic() + deadline_s
            for attempt in range(retries + 1):
                try:
                    _fetch(session, url, target, row, timeout, max_bytes, deadline, deadline_s)
                    counts["downloaded"] += 1
                    unreachable_in_a_row = 0
                    break
                except _Retryable as exc:
                    wait = backoff_s * 2 ** attempt
                    if attempt == retries or time.monotonic() + wait > deadline:
                        failures.append((url, f"{exc} (after {attempt + 1} attempts)"))
                        unreachable_in_a_row += 1 if exc.unreachable else 0
                        break
                    log.debug("retrying %s: %s", url, exc)
                    time.sleep(wait)
                # RequestException is an OSError too: a redirect loop or to a non-http URL, a
                # full disk: whatever it is, it is this file's failure, not the run's.
                except (RuntimeError, OSError, urllib3.exceptions.HTTPError) as exc:
                    failures.append((url, _reason(exc)))
                    unreachable_in_a_row = 0
                    break
    if failures:
        raise DownloadError(failures, kept=counts["kept"] + counts["downloaded"])
    return counts


def read_labels(path: Path) -> dict[str, int]:
    """filename -> label from a 'filename,label' CSV (a class index 0-999 or a synset such as
    n01440764); errors name the file and line."""
    labels, first_line = {}, {}
    with _csv_rows(path) as reader:
        if not {"filename", "label"} <= set(reader.fieldnames or ()):
            raise ManifestError(f"{path}: needs a header line 'filename,label', found {reader.fieldnames}")
        for row in reader:
            name = (row["filename"] or "").strip()
            try:
                if not name:
                    raise ValueError("no file name")
                if name in first_line:
                    raise ValueError(f"{name} is listed twice (first on line {first_line[name]})")
                text = (row["label"] or "").strip()
                labels[name] = synset_label(text) if SYNSET_PATTERN.fullmatch(text) else parse_label(text)
            except ValueError as exc:
                raise ManifestError(f"{path}:{reader.line_num}: {exc}") from None
            first_line[name] = reader.line_num
    return labels


def _photos_in(folder: Path) -> list[Path]:
    # Dotfiles are never photos: macOS '._x.jpg' resource forks, an editor's or our own
    # '.x.part.jpg' leftovers.
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _listed(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def class_folder_photos(folder: Path) -> tuple[list[Path], list[int]] | None:
    """Photos and labels of an ImageNet-validation layout, DIR/<synset>/*.JPEG (a photo's label is
    its folder's class index); None when `folder` holds its photos directly (a flat folder)."""
    if _photos_in(folder):
        synset_dirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and SYNSET_PATTERN.fullmatch(p.name))
        if synset_dirs:
            raise ManifestError(f"{folder} holds photos and class folders ({_listed(synset_dirs)}): keep either "
                                "the photos (flat, labels from --local-labels) or one folder per synset")
        return None
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    photos, labels = [], []
    for class_dir in class_dirs:
        try:
            label = synset_label(class_dir.name)
        except ValueError as exc:
            raise ManifestError(f"class folder {class_dir}: {exc}; rename it to its synset or remove it") from None
        found = _photos_in(class_dir)
        if not found:
            raise ManifestError(f"class folder {class_dir} is empty (no {'/'.join(sorted(IMAGE_SUFFIXES))} "
                                "files): add its photos or remove it")
        photos += found
        labels += [label] * len(found)
    return (photos, labels) if class_dirs else None


def local_image_set(folder: Path, labels_csv: Path | None, calib_count: int, eval_count: int,
                    tune_count: int = 0) -> ImageSet:
    """A user's own folder, flat (labels, if any, from labels_csv) or one folder per synset.

    Calibration photos are chosen round-robin over the classes (choose_photos), then tune_count
    others form the tuning split, and up to eval_count of the rest are scored, so no set is the
    first photos in file-name order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"local image folder {folder} does not exist")
    by_class = class_folder_photos(folder)
    if by_class is not None:
        if labels_csv:
            raise ManifestError(f"--local-labels {labels_csv}: {folder} has one folder per synset, which gives "
                                "every photo's label; drop --local-labels")
        files, labels = by_class
    else:
        files, labels = _photos_in(folder), None
    if len(files) < calib_count + 1:
        raise ManifestError(f"{folder} has {len(files)} images; need more than {calib_count} "
                            "(calibration photos plus at least one to evaluate)")
    if labels is None and labels_csv:
        by_name = read_labels(Path(labels_csv))
        unlabelled = [p.name for p in files if p.name not in by_name]
        if unlabelled:
            raise ManifestError(f"{labels_csv} has no line for {len(unlabelled)} photo(s) of {folder}: "
                                f"{_listed(unlabelled)} (add 'filename,label' lines, or drop --local-labels "
                                "to score agreement with FP32 only)")
        labels = [by_name[p.name] for p in files]
    # The pool after calibration is already in spread order: the tuning split is its first photos.
    calib, pool = choose_photos(labels or [None] * len(files), calib_count, None)
    if tune_count and len(pool) - tune_count < 1:
        raise ManifestError(f"{folder} has {len(pool)} photos besides the calibration ones: too few to give "
                            f"{tune_count} to the tuning split and keep one to score; ask `invoke tune` for fewer")
    tune, evaluation = pool[:tune_count], pool[tune_count:tune_count + eval_count]
    name = f"local:{folder.resolve()}" + (f" ({len(tune)} tuning photos reserved)" if tune else "")
    return ImageSet(name, tuple(files[i] for i in calib), tuple(files[i] for i in evaluation),
                    None if labels is None else tuple(labels[i] for i in evaluation),
                    None if labels is None else tuple(labels[i] for i in calib), root=folder,
                    tune=tuple(files[i] for i in tune), tune_labels=None if labels is None else
                    tuple(labels[i] for i in tune))


def _all_photos(settings) -> bool:
    return bool(getattr(settings, "all_photos", False))


def manifest_rows(settings, tune_count: int | None = None) -> dict[str, list[ManifestRow]]:
    """The chosen rows by split; tune_count None: what the build folder's tuning split record says."""
    return select_rows(read_manifest(settings.manifest), settings.calib_count, settings.eval_count,
                       _all_photos(settings), tuning_count(settings) if tune_count is None else tune_count)


def manifest_image_set(settings, tune_count: int | None = None) -> ImageSet:
    chosen = manifest_rows(settings, tune_count)
    paths = {split: tuple(safe_target(settings.images_dir / split_folder(split), r.filename) for r in rows)
             for split, rows in chosen.items()}
    missing = [p for p in paths["calib"] + paths["eval"] + paths["tune"] if not p.is_file()]
    if missing:
        also = " --all-photos" if _all_photos(settings) else ""
        raise ManifestError(f"{len(missing)} photo(s) not downloaded yet (e.g. {missing[0]}): "
                            f"run `invoke download-images{also}`")
    labels = {split: [r.label for r in rows] for split, rows in chosen.items()}
    # Without --all-photos or a tuning split the name is what it always was, so that earlier builds stay fresh.
    which = ", all photos" if _all_photos(settings) else ""
    tuning = f", {len(chosen['tune'])} tune" if chosen["tune"] else ""
    return ImageSet(f"manifest:{settings.manifest.name}{which} ({len(chosen['calib'])} calib, "
                    f"{len(chosen['eval'])} eval{tuning})", paths["calib"], paths["eval"],
                    None if None in labels["eval"] else tuple(labels["eval"]),
                    None if None in labels["calib"] else tuple(labels["calib"]),
                    tune=paths["tune"], tune_labels=None if None in labels["tune"] else tuple(labels["tune"]))


def image_set(settings, tune_count: int | None = None) -> ImageSet:
    """The photos of these settings; tune_count None: with the tuning split the build folder records."""
    tune_count = tuning_count(settings) if tune_count is None else tune_count
    if settings.local_images:
        return local_image_set(Path(settings.local_images), settings.local_labels,
                               settings.calib_count, settings.eval_count, tune_count)
    return manifest_image_set(settings, tune_count)


def download_images(settings) -> dict[str, int]:
    """The download-images step: fetch the manifest's calibration and evaluation photos."""
    if settings.local_images:
        from tqdm import tqdm
        images = image_set(settings)
        checking = tqdm(images.files(), desc="check photos", unit="img", disable=settings.quiet, leave=False)
        bad = [f"  {images.name_of(path)}: {problem}" for path in checking if (problem := image_problem(path))]
        if bad:
            raise ManifestError(f"{len(bad)} file(s) in {settings.local_images} are not usable photos "
                                "(remove or replace them):\n" + "\n".join(bad))
        return {"downloaded": 0, "kept": len(images.files())}
    chosen = manifest_rows(settings)
    totals = {"downloaded": 0, "kept": 0}
    failures: list[tuple[str, str]] = []
    for split, rows in chosen.items():
        try:
            counts = download(rows, settings.images_dir / split_folder(split), settings.mirror,
                              progress=not settings.quiet)
        except DownloadError as exc:  # try the other split too, then report every failure
            failures += exc.failures
            counts = {"downloaded": 0, "kept": len(rows) - len(exc.failures)}
        for key in totals:
            totals[key] += counts[key]
    if failures:
        hint = ""
        if _all_photos(settings) and settings.mirror:
            hint = (f"\nWith --all-photos (MOBILENET_ALL_PHOTOS) all {sum(map(len, chosen.values()))} photos are "
                    "fetched, and a mirror of ../shared/imagenet-sample holds only the default 250: offline, "
                    "leave --all-photos out.")
        raise DownloadError(failures, kept=totals["kept"] + totals["downloaded"], hint=hint)
    return totals
