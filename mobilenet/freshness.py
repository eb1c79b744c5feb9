"""Make-style freshness by content: a step's outputs are up to date when the settings and the
sha256 of every input match the record of its last successful run."""
from __future__ import annotations

import json
from pathlib import Path

from mobilenet.files import read_json, sha256_cached, write_json


def module_files(*module_names: str) -> list[Path]:
    """Source files of the named modules (for freshness: editing the code makes outputs stale)."""
    import importlib.util
    specs = [importlib.util.find_spec(name) for name in module_names]
    return sorted({Path(spec.origin) for spec in specs if spec is not None and spec.origin})


def stamp_path(stamps_dir: Path, step: str) -> Path:
    return Path(stamps_dir) / f"{step}.json"


PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _stable_name(path: Path, build_dir: Path) -> str:
    """An input's name that survives copying the checkout or the build folder elsewhere."""
    path = Path(path).resolve()
    for root, label in ((build_dir.resolve(), "build"), (PACKAGE_ROOT, "repo")):
        if path.is_relative_to(root):
            return f"{label}:{path.relative_to(root).as_posix()}"
    return str(path)


def fingerprint(inputs, build_dir: Path) -> dict[str, str]:
    """Content of every input, by a stable name: what a step's outputs were made from."""
    return {_stable_name(p, Path(build_dir)): sha256_cached(p) for p in inputs}


def is_fresh(outputs, inputs, settings: dict, stamp: Path) -> tuple[bool, str]:
    """Fresh when every output exists and the last successful run recorded the same settings
    and the same input contents (sha256, not mtimes: a touched file is not a change, and an
    edit is one even when a clock or a copy made it look older).

    Returns (fresh, reason) so the caller can say why it reruns.
    """
    outputs = [Path(p) for p in outputs]
    missing = [p for p in outputs if not p.exists()]
    if missing:
        return False, f"missing {missing[0].name}"
    if not Path(stamp).exists():
        return False, "no record of a previous run"
    recorded = read_json(stamp)
    if recorded.get("settings") != json.loads(json.dumps(settings, default=str)):
        return False, "settings changed"
    absent = [p for p in inputs if not Path(p).exists()]
    if absent:
        return False, f"input {absent[0]} is missing"
    before = recorded.get("inputs", {})
    for name, digest in fingerprint(inputs, _build_dir_of(stamp)).items():
        if before.get(name) != digest:
            return False, f"{name.split(':')[-1]} changed"
    return True, "up to date"


def _build_dir_of(stamp: Path) -> Path:
    return Path(stamp).resolve().parent.parent  # stamps live in <build>/stamps/


def record_stamp(stamp: Path, settings: dict, inputs=()) -> None:
    write_json(stamp, {"settings": settings, "inputs": fingerprint(inputs, _build_dir_of(stamp))})
