"""Where a variant's built files live, and whether they can still be trusted."""
from __future__ import annotations

from pathlib import Path

from mobilenet.files import read_json, sha256_cached
from mobilenet.registry import REFERENCE_ID, Variant, by_id
from mobilenet.settings import Settings


def check_logits_path(models_dir: Path, variant: Variant) -> Path:
    """The evaluation photos' logits from the variant's build check (accuracy comes from these)."""
    return Path(models_dir) / f"{variant.id}.check-logits.npy"


def reference_logits_path(settings: Settings) -> Path:
    return check_logits_path(settings.models_dir, by_id(REFERENCE_ID))


def kept_files(variant: Variant, models_dir: Path) -> list[Path]:
    return [*variant.artifact_files(models_dir), check_logits_path(models_dir, variant)]


def artifact_problem(variant: Variant, models_dir: Path) -> str | None:
    """Why the variant's built files cannot be trusted, or None: the meta must exist and every
    file it vouches for must still have the sha256 it recorded."""
    meta_path = variant.meta_path(models_dir)
    if not meta_path.exists():
        return "not built"
    meta = read_json(meta_path)
    if "files_sha256" not in meta:  # skipped, or FAILED by a build error: nothing was kept to check
        return None
    recorded = meta.get("files_sha256") or {}
    for path in kept_files(variant, models_dir):
        if not path.exists():
            return f"{path.name} is missing"
        if recorded.get(path.name) != sha256_cached(path):
            return f"{path.name} is not the file its build recorded (changed or half-written)"
    return None
