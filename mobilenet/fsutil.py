"""Atomic writes, checksums and Make-style freshness checks."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temp path beside `final`; rename it into place only if the block succeeds.

    An interrupted or failed write never leaves a half-written file under the final name,
    and never destroys the previous good file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Keep the extension last: some exporters choose a format by it.
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}",
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stamp_path(stamps_dir: Path, step: str) -> Path:
    return Path(stamps_dir) / f"{step}.json"


def is_fresh(outputs, inputs, settings: dict, stamp: Path) -> tuple[bool, str]:
    """Make's rule plus settings: fresh when every output exists, none is older than any
    input, and the settings recorded by the last successful run equal the current ones.

    Returns (fresh, reason) so the caller can say why it reruns.
    """
    outputs = [Path(p) for p in outputs]
    inputs = [Path(p) for p in inputs]
    missing = [p for p in outputs if not p.exists()]
    if missing:
        return False, f"missing {missing[0].name}"
    if not Path(stamp).exists():
        return False, "no record of a previous run"
    if read_json(stamp).get("settings") != json.loads(json.dumps(settings, default=str)):
        return False, "settings changed"
    absent_inputs = [p for p in inputs if not p.exists()]
    if absent_inputs:
        return False, f"input {absent_inputs[0]} is missing"
    if inputs and outputs:
        newest_input = max(inputs, key=lambda p: p.stat().st_mtime)
        oldest_output = min(outputs, key=lambda p: p.stat().st_mtime)
        if newest_input.stat().st_mtime > oldest_output.stat().st_mtime:
            return False, f"{newest_input.name} is newer than {oldest_output.name}"
    return True, "up to date"


def record_stamp(stamp: Path, settings: dict) -> None:
    write_json(stamp, {"settings": settings})
