"""Results as data: one JSON file per variant and thread count, environment included.

The report renders from these files alone, so everything it shows is recorded here,
with units in the field names.
"""
from __future__ import annotations

import json
import os
import platform
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mobilenet.fsutil import write_json

SCHEMA = 1


@dataclass
class Environment:
    machine_id: str  # hostname + CPU model, or the user's --tag
    hostname: str
    cpu_model: str
    logical_cores: int
    os: str
    python: str
    torch: str
    torchvision: str
    threads_requested: int
    threads_effective: int | None
    quantized_engine: str | None
    runtime_versions: dict
    weights_source: str
    weights_sha256: str
    weights_random: bool
    image_set: str
    eval_photos: int
    labelled: bool
    energy_source: str  # "RAPL" or "no RAPL"


@dataclass
class Result:
    variant: str
    runtime: str
    precision: str
    status: str  # ok, DEGRADED, FAILED, skipped
    status_reason: str
    summary: str
    threads: int
    env: Environment
    size_mb: float | None = None
    load_ms: float | None = None
    first_inference_ms: float | None = None
    preprocess_ms: float | None = None  # per photo, same for every variant
    runs: int | None = None
    rounds: int | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    round_cv: float | None = None  # spread of the per-round medians: how much the machine drifted
    speedup_vs_eager: float | None = None  # median of per-round ratios
    peak_rss_mb: float | None = None
    cpu_time_s: float | None = None  # process CPU time during the timed bursts
    cpu_util_pct: float | None = None  # of one core, during the timed bursts
    energy_mj_per_inference: float | None = None
    top1_pct: float | None = None
    top5_pct: float | None = None
    agreement_pct: float | None = None
    max_abs_dlogit: float | None = None
    build: dict = field(default_factory=dict)  # how the artifact was made (from its meta.json)
    deprecated: str | None = None
    schema: int = SCHEMA

    @property
    def measured(self) -> bool:
        return self.status in ("ok", "DEGRADED")


def result_path(results_dir: Path, variant: str, threads: int) -> Path:
    return Path(results_dir) / f"{variant}@{threads}t.json"


def write_result(results_dir: Path, result: Result) -> Path:
    path = result_path(results_dir, result.variant, result.threads)
    write_json(path, asdict(result))
    return path


def from_dict(data: dict) -> Result:
    env = Environment(**{f.name: data["env"].get(f.name) for f in fields(Environment)})
    known = {f.name for f in fields(Result)} - {"env"}
    return Result(env=env, **{k: v for k, v in data.items() if k in known})


def load_results(results_dir: Path) -> list[Result]:
    results = []
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("schema") == SCHEMA and "variant" in data:
            results.append(from_dict(data))
    return results


def group_by(results: list[Result], key) -> dict:
    """Results grouped by key(result), in first-seen order."""
    groups: dict = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    return groups


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_id(tag: str | None = None) -> str:
    return tag or f"{socket.gethostname()} ({cpu_model()})"


def base_environment(settings, weights: dict, data, energy_source: str) -> dict:
    """The part of Environment shared by every variant of a run."""
    import torch
    import torchvision
    return {
        "machine_id": machine_id(settings.tag), "hostname": socket.gethostname(),
        "cpu_model": cpu_model(), "logical_cores": os.cpu_count() or 1,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "weights_source": weights["source"], "weights_sha256": weights["sha256"],
        "weights_random": weights.get("random", False),
        "image_set": data.image_set, "eval_photos": len(data.eval), "labelled": data.labelled,
        "energy_source": energy_source,
    }
