"""What `invoke tune` writes to build/tune/grid.json, as dataclasses with units in their names;
the report's tune section renders from this file alone."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mobilenet.files import read_json, write_json

GRID_FILE = Path("tune") / "grid.json"
FORMAT = 1


@dataclass
class SettingResult:
    """One setting of one variant's grid, on the tuning split."""
    name: str
    changes: str  # what it changes from the shipped setting, in words
    override: dict
    why: str
    shipped: bool
    status: str  # ok, FAILED (build or run error), skipped (toolkit not installed)
    reason: str = ""
    build_s: float | None = None
    build_cpu_s: float | None = None  # CPU seconds of the build, its compiler processes included
    size_mb: float | None = None
    options: dict = field(default_factory=dict)  # what the builder recorded
    tuning_photos: int = 0
    agreeing: int | None = None  # tuning photos whose top-1 is eager FP32's
    agreement_pct: float | None = None
    agreement_ci_pct: list | None = None  # 95 % Wilson
    top1_pct: float | None = None  # against the labels, when there are labels
    top1_ci_pct: list | None = None
    sessions: int = 0
    p50_ms: float | None = None  # geometric mean of the sessions' medians
    p50_ci_ms: list | None = None  # 95 % within-run interval over sessions
    session_p50_ms: list = field(default_factory=list)
    mcnemar_p_vs_best: float | None = None
    only_best_right: int | None = None
    only_this_right: int | None = None
    winner: bool = False
    verdict: str = ""


@dataclass
class SideBySide:
    """The winner against the shipped setting on the evaluation photos (never tuned on)."""
    eval_photos: int
    shipped_agreeing: int
    shipped_agreement_pct: float
    shipped_agreement_ci_pct: list
    winner_agreeing: int
    winner_agreement_pct: float
    winner_agreement_ci_pct: list
    # Photos only one of the two agrees with FP32 on, and the exact McNemar p of that split.
    only_shipped_right: int
    only_winner_right: int
    mcnemar_p: float
    shipped_top1_pct: float | None = None
    winner_top1_pct: float | None = None
    shipped_top1_ci_pct: list | None = None
    winner_top1_ci_pct: list | None = None


@dataclass
class VariantGrid:
    variant: str
    runtime: str
    knobs: str
    settings: list[SettingResult]
    dropped: list[dict] = field(default_factory=list)  # {"name", "same_as"}: resolved to a listed setting
    winner: str | None = None
    side_by_side: SideBySide | None = None
    build_wall_s: float | None = None
    timing_wall_s: float | None = None

    def __post_init__(self):
        self.settings = [s if isinstance(s, SettingResult) else SettingResult(**s) for s in self.settings]
        if isinstance(self.side_by_side, dict):
            self.side_by_side = SideBySide(**self.side_by_side)


@dataclass
class TuneRun:
    format: int
    tuned_at: str  # UTC
    machine_id: str
    target: dict  # target.Target.record() of the CPU it ran on
    target_key: str
    threads: int
    rule: str
    alpha: float
    calib_photos: int
    tuning_photos: int
    eval_photos: int
    tuning_names: list[str]
    eval_names: list[str]
    image_set: str
    grids: list[VariantGrid]
    wall_s: float = 0.0
    phases_s: dict = field(default_factory=dict)  # where the wall time went: data, builds, timing, ...
    timing: dict = field(default_factory=dict)  # sessions, calls and seconds per setting

    def __post_init__(self):
        self.grids = [g if isinstance(g, VariantGrid) else VariantGrid(**g) for g in self.grids]


def grid_path(build_dir: Path) -> Path:
    return Path(build_dir) / GRID_FILE


def write_run(build_dir: Path, run: TuneRun) -> Path:
    path = grid_path(build_dir)
    write_json(path, asdict(run))
    return path


def read_run(build_dir: Path) -> TuneRun | None:
    """The last tune's record, None when there is none; a file this code cannot read is named."""
    path = grid_path(build_dir)
    if not path.is_file():
        return None
    try:
        data = read_json(path)
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        return TuneRun(**data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a tune record this code reads ({exc}); rerun `invoke tune`") from None
