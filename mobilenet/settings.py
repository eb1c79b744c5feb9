"""One place that turns environment variables and task options into settings.

Invoke calls pre-tasks without arguments, so options that must reach the whole chain
(weights, mirror, image counts, build folder) are read from MOBILENET_* environment
variables; an option given to a task overrides them for that task.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default=None):
    value = os.environ.get(f"MOBILENET_{name}")
    return default if value in (None, "") else value


def _env_bool(name: str) -> bool:
    return str(_env(name, "")).lower() in {"1", "true", "yes", "on"}


def parse_threads(spec: str | int) -> tuple[int, ...]:
    """'1', '1,2' or 'all' (every logical core) -> (1,), (1, 2), (os.cpu_count(),)."""
    text = str(spec).strip().lower()
    counts = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            counts.append(os.cpu_count() or 1)
        elif part.isdigit() and int(part) > 0:
            counts.append(int(part))
        else:
            raise ValueError(f"threads: expected '1', '1,2' or 'all', got {spec!r}")
    return tuple(dict.fromkeys(counts))


@dataclass(frozen=True)
class Settings:
    build_dir: Path = field(default_factory=lambda: Path(_env("BUILD_DIR", REPO_ROOT / "build")))
    images_dir: Path = field(default_factory=lambda: Path(_env("IMAGES_ROOT", REPO_ROOT / "calib_images")))
    manifest: Path | None = field(default_factory=lambda: _env("MANIFEST"))
    # Where the model comes from: torchvision's download (default), a local state_dict, or random.
    weights: str | None = field(default_factory=lambda: _env("WEIGHTS"))
    random_weights: bool = field(default_factory=lambda: _env_bool("RANDOM_WEIGHTS"))
    # Images: a mirror base URL for the manifest's files, or the user's own folder.
    mirror: str | None = field(default_factory=lambda: _env("MIRROR"))
    local_images: str | None = field(default_factory=lambda: _env("LOCAL_IMAGES"))
    local_labels: str | None = field(default_factory=lambda: _env("LOCAL_LABELS"))
    calib_count: int = field(default_factory=lambda: int(_env("CALIB_COUNT", 50)))
    eval_count: int = field(default_factory=lambda: int(_env("EVAL_COUNT", 200)))
    # Bench
    threads: tuple[int, ...] = field(default_factory=lambda: parse_threads(_env("THREADS", "1")))
    only: str | None = field(default_factory=lambda: _env("ONLY"))
    sessions: int = field(default_factory=lambda: int(_env("SESSIONS", 5)))
    warmup: int = field(default_factory=lambda: int(_env("WARMUP", 10)))
    min_runs: int = field(default_factory=lambda: int(_env("MIN_RUNS", 200)))
    min_seconds: float = field(default_factory=lambda: float(_env("MIN_SECONDS", 10)))
    burst: int = field(default_factory=lambda: int(_env("BURST", 10)))
    tag: str | None = field(default_factory=lambda: _env("TAG"))
    quiet: bool = field(default_factory=lambda: _env_bool("QUIET"))

    def __post_init__(self):
        if self.manifest is None:
            object.__setattr__(self, "manifest", self.images_dir / "manifest.csv")
        for name in ("build_dir", "images_dir", "manifest"):
            object.__setattr__(self, name, Path(getattr(self, name)))

    def with_options(self, **options) -> "Settings":
        """Apply task options; None means 'not given on the command line'."""
        known = {f.name for f in fields(self)}
        given = {k: v for k, v in options.items() if v is not None and k in known}
        for name, value in given.items():
            # Invoke passes options without a typed default as strings.
            current = getattr(self, name)
            if isinstance(current, bool) and isinstance(value, str):
                given[name] = value.lower() in {"1", "true", "yes", "on"}
            elif isinstance(current, (int, float)) and not isinstance(current, bool):
                given[name] = type(current)(value)
        if "threads" in given:
            given["threads"] = parse_threads(given["threads"])
        for name in ("build_dir", "images_dir", "manifest"):
            if name in given:
                given[name] = Path(given[name])
        return replace(self, **given)

    @property
    def models_dir(self) -> Path:
        return self.build_dir / "models"

    @property
    def results_dir(self) -> Path:
        return self.build_dir / "results"

    @property
    def data_dir(self) -> Path:
        return self.build_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.build_dir / "logs"

    @property
    def stamps_dir(self) -> Path:
        return self.build_dir / "stamps"
