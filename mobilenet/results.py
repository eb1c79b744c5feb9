"""Results as data: one JSON file per variant and thread count, environment included.

The report renders from these files alone, so everything it shows is recorded here,
with units in the field names. Files are validated when read: a hand-edited or corrupt
file is named with the offending field, never half-rendered.
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from mobilenet.files import write_json

# 3: p50_ci_ms and speedup_ci became within-run (confidence) intervals, and the rerun intervals
# became fields of their own; schema-2 files are still read (_from_schema_2).
SCHEMA = 3
OK, DEGRADED, FAILED, SKIPPED = "ok", "DEGRADED", "FAILED", "skipped"
INCONCLUSIVE = "INCONCLUSIVE"  # the photos cannot tell ok from DEGRADED (mobilenet.accuracy)
STATUSES = (OK, DEGRADED, INCONCLUSIVE, FAILED, SKIPPED)


class ResultsError(ValueError):
    """A result file that cannot be trusted: names the file, the field and what is wrong."""


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
    threads_effective: int | None  # read back from the runtime; None where it cannot tell (LiteRT)
    quantized_engine: str | None
    runtime_versions: dict
    weights_source: str
    weights_sha256: str
    weights_random: bool
    image_set: str
    eval_photos: int
    labelled: bool
    energy_source: str  # "RAPL" or "no RAPL"
    data_sha256: str = ""  # the evaluation photos and labels, as preprocessed
    cpu_flags: list = field(default_factory=list)  # the ISA flags that decide INT8 kernels
    cpu_governor: str | None = None
    load_avg_1min: list = field(default_factory=list)  # before and after the run
    steal_pct: float | None = None  # of all CPU time during the run, from /proc/stat
    busy_pct: float | None = None  # the whole machine's non-idle share during the run
    emulated: bool = False  # timed under an emulator (qemu-user): timings are not measurements
    device_of: str | None = None  # device mode: the machine that built the artifacts and scored the answers
    device_install_mb: float | None = None  # device mode: the runtimes' virtual environment on the device
    # What the report states about the photos: calibration count, and classes each set spans (None: unknown).
    calib_photos: int | None = None
    calib_classes: int | None = None
    eval_classes: int | None = None


@dataclass
class Result:
    variant: str
    runtime: str
    precision: str
    status: str  # ok, DEGRADED, INCONCLUSIVE, FAILED, skipped
    status_reason: str
    summary: str
    threads: int
    env: Environment
    runtime_version: str | None = None  # of the package that runs the artifact (its Runner.package)
    size_mb: float | None = None
    load_ms: float | None = None  # first session, where every worker loads alone
    first_inference_ms: float | None = None
    preprocess_ms: float | None = None  # per photo, same for every variant
    sessions: int | None = None  # fresh processes per variant
    runs: int | None = None
    rounds: int | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None  # geometric mean of the per-session medians
    # 95 % within-run interval, [low, high]: a confidence interval for this run's p50 over its sessions
    # (stats.within_run_interval). Variants of one run are compared by it ("fastest", "A beats B").
    p50_ci_ms: list | None = None
    # 95 % rerun interval, [low, high]: where a rerun on this machine lands, the machine's run-to-run
    # spread included (stats.rerun_interval); None until the machine's history knows that spread.
    p50_rerun_ci_ms: list | None = None
    session_p50_ms: list = field(default_factory=list)
    p90_ms: float | None = None  # p90 and p99 pool every timed call
    p99_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    round_cv: float | None = None  # spread of the per-round medians: how much the machine drifted
    speedup_vs_eager: float | None = None  # geometric mean of the per-session speed-ups
    speedup_note: str | None = None  # why there is no speed-up (no eager FP32 on a device)
    speedup_ci: list | None = None  # 95 % within-run interval, [low, high], as p50_ci_ms
    speedup_rerun_ci: list | None = None  # 95 % rerun interval, [low, high], as p50_rerun_ci_ms
    session_speedups: list = field(default_factory=list)  # each: median of that session's round ratios
    reference_processes: int | None = None  # eager FP32 processes per session the speed-ups divide by
    rerun_basis: str | None = None  # what the rerun intervals rest on, or why they are not yet known
    run_level: dict | None = None  # the run-level log variances behind them (bench/history.py), for compare
    peak_rss_mb: float | None = None
    cpu_time_s: float | None = None  # process CPU time during the timed bursts
    cpu_util_pct: float | None = None  # of one core, during the timed bursts
    cpu_affinity: list = field(default_factory=list)  # the CPUs the worker processes were allowed
    energy_mj_per_inference: float | None = None
    top1_pct: float | None = None
    top5_pct: float | None = None
    agreement_pct: float | None = None
    max_abs_dlogit: float | None = None
    # Device mode: the same artifact's answers on the device against those on the controller.
    cross_isa_agreement_pct: float | None = None
    cross_isa_max_abs_dlogit: float | None = None
    tied_top1_rows: int | None = None  # rows whose maximum logit is shared by several classes
    # The counts behind the percentages (photos) and their 95 % Wilson intervals, [low, high] in percent:
    # ~200 photos is a small sample, one photo half a point (mobilenet.accuracy).
    eval_photos: int | None = None  # photos these answers were scored on
    top1_correct: int | None = None
    top5_correct: int | None = None
    agreeing: int | None = None  # photos whose top-1 class is eager FP32's
    top1_ci_pct: list | None = None
    top5_ci_pct: list | None = None
    agreement_ci_pct: list | None = None
    # Top-1 against eager FP32 on the same photos (paired; not on the reference row, nor without labels).
    fp32_only_right: int | None = None  # photos FP32 gets right and this variant wrong (McNemar's b)
    variant_only_right: int | None = None  # photos this variant gets right and FP32 wrong (c)
    mcnemar_p: float | None = None  # exact two-sided McNemar p-value on those b + c photos
    top1_diff_pts: float | None = None  # this variant's top-1 minus FP32's, percentage points
    top1_diff_ci_pts: list | None = None  # its 95 % interval (Newcombe's paired method 10), [low, high]
    # At more than one thread: this row's answers against its own at 1 thread, on the same photos.
    agreement_with_1t_pct: float | None = None  # photos whose top-1 class is the same as at 1 thread
    answers_changed_photos: int | None = None  # photos whose top-1 class differs from 1 thread's
    max_abs_dlogit_vs_1t: float | None = None
    # The runtime's own benchmark program on the same artifact and threads (bench/native.py summary):
    # its median, what its clock covers, whether it drives our runner's API, and our call's split.
    native_benchmark: dict | None = None
    inputs: dict = field(default_factory=dict)  # fingerprints of what shaped this result
    build: dict = field(default_factory=dict)  # how the artifact was made (from its meta.json)
    # The CPU the artifact's ISA-dependent INT8 settings were chosen for ({arch, isa_flags, source},
    # from its meta); None: it makes no such choice (FP32, and INT8 toolkits whose settings hold anywhere).
    built_for: dict | None = None
    # The CPU that ran it, read off that machine ({arch, isa_flags, source}: build.target.Target.record).
    measured_on: dict | None = None
    deprecated: str | None = None
    schema: int = SCHEMA

    @property
    def measured(self) -> bool:
        return self.status in (OK, DEGRADED, INCONCLUSIVE)


def result_path(results_dir: Path, variant: str, threads: int) -> Path:
    return Path(results_dir) / f"{variant}@{threads}t.json"


def write_result(results_dir: Path, result: Result) -> Path:
    path = result_path(results_dir, result.variant, result.threads)
    write_json(path, asdict(result))
    return path


# ---------------------------------------------------------------- reading, validated

def _accepts(annotation, value) -> bool:
    """Does `value` (from JSON) fit the field's annotation?"""
    if isinstance(annotation, str):
        annotation = eval(annotation, {**vars(typing), "Environment": Environment})  # noqa: S307 (own annotations)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _typed(cls, data: dict, where: str) -> dict:
    if not isinstance(data, dict):
        raise ResultsError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ResultsError(f"{where}: field '{f.name}' is missing")
            continue
        if f.name == "env":
            continue
        if not _accepts(hints[f.name], data[f.name]):
            raise ResultsError(f"{where}: field '{f.name}' has {data[f.name]!r}, expected {hints[f.name]}")
        values[f.name] = data[f.name]
    return values


ACCURACY_INTERVALS = ("top1_ci_pct", "top5_ci_pct", "agreement_ci_pct", "top1_diff_ci_pts")
TIMING_INTERVALS = ("p50_ci_ms", "p50_rerun_ci_ms", "speedup_ci", "speedup_rerun_ci")


def from_dict(data: dict, where: str = "result") -> Result:
    values = _typed(Result, data, where)
    env = Environment(**_typed(Environment, data.get("env"), f"{where}: env"))
    result = Result(env=env, **values)
    if result.status not in STATUSES:
        raise ResultsError(f"{where}: field 'status' is {result.status!r}, expected one of {', '.join(STATUSES)}")
    for name in (*ACCURACY_INTERVALS, *TIMING_INTERVALS):  # the report reads both ends of each
        bounds = getattr(result, name)
        if bounds is not None and not (len(bounds) == 2 and all(_accepts(float, b) for b in bounds)
                                       and bounds[0] <= bounds[1]):
            raise ResultsError(f"{where}: field '{name}' has {bounds!r}, expected [low, high]")
    if result.measured:
        for name in ("p50_ms", "size_mb", "speedup_vs_eager"):
            value = getattr(result, name)
            if name == "speedup_vs_eager" and value is None and result.speedup_note:
                continue
            if value is None or value <= 0:
                raise ResultsError(f"{where}: field '{name}' is {value!r}, expected a positive number "
                                   f"for a measured ({result.status}) variant")
    return result


def load_results(results_dir: Path) -> list[Result]:
    """Every result file in the folder; any file that is not a valid result stops with its name."""
    return [result for _, result in load_result_files(results_dir)]


def load_result_files(results_dir: Path) -> list[tuple[Path, Result]]:
    """(path, result) for every result file in the folder, validated."""
    results = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResultsError(f"{path}: not readable JSON ({exc}); delete it or rerun `invoke bench --force`") from exc
        if isinstance(data, dict) and data.get("schema") == 2:
            data = _from_schema_2(data)
        if isinstance(data, dict) and data.get("schema") != SCHEMA:
            raise ResultsError(f"{path}: written by another version of this tool (schema "
                               f"{data.get('schema')!r}, this one reads {SCHEMA}); rerun `invoke bench --force`")
        results.append((path, from_dict(data, str(path))))
    return results


def _from_schema_2(data: dict) -> dict:
    """A schema-2 file as this schema. Its p50_ci_ms and speedup_ci were prediction intervals for
    a rerun's estimate without the run-level term (sqrt(2) wider than a confidence interval, and
    still too narrow for a rerun): they are recomputed as within-run intervals from the session
    values the file holds, and its rerun intervals are unknown."""
    from mobilenet.bench.stats import within_run_interval
    data = dict(data, schema=SCHEMA, p50_rerun_ci_ms=None, speedup_rerun_ci=None,
                rerun_basis="rerun spread not recorded (a schema-2 file, written before rerun intervals)")
    for values, name in (("session_p50_ms", "p50_ci_ms"), ("session_speedups", "speedup_ci")):
        sessions = data.get(values)
        if data.get(name) is not None and isinstance(sessions, list) and sessions:
            try:
                data[name] = within_run_interval(sessions).bounds
            except (TypeError, ValueError):
                pass  # left as it is: from_dict names the bad field
    return data


def group_by(results: list[Result], key) -> dict:
    """Results grouped by key(result), in first-seen order."""
    groups: dict = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    return groups


# ---------------------------------------------------------------- facts about the machine

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Instruction-set flags that decide which INT8/FP32 kernels a runtime can use.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
             "amx_int8", "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The ISA flags of ISA_FLAGS this CPU reports (x86 'flags' or ARM 'Features')."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("flags", "Features"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in ISA_FLAGS if flag in present]
    return []


def cpu_governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def cpu_times() -> list[int] | None:
    """The aggregate 'cpu' line of /proc/stat: user nice system idle iowait irq softirq steal."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None


def load_avg_1min() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass
class MachineLoad:
    """Load average and /proc/stat around a run: how busy the machine was while it measured."""
    load_before: float | None = field(default_factory=load_avg_1min)
    times_before: list | None = field(default_factory=cpu_times)

    def summary(self) -> dict:
        after = cpu_times()
        steal = busy = None
        if self.times_before and after:
            delta = [b - a for a, b in zip(self.times_before, after)]
            total = sum(delta)
            if total > 0:
                steal = 100 * delta[7] / total
                busy = 100 * (total - delta[3] - delta[4]) / total
        loads = [v for v in (self.load_before, load_avg_1min()) if v is not None]
        return {"load_avg_1min": [round(v, 2) for v in loads],
                "steal_pct": None if steal is None else round(steal, 2),
                "busy_pct": None if busy is None else round(busy, 1)}


def machine_id(tag: str | None = None) -> str:
    return tag or f"{socket.gethostname()} ({cpu_model()})"


def base_environment(settings, weights: dict, data, energy_source: str, load: dict) -> dict:
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
        "calib_photos": len(data.calib), "calib_classes": data.calib_classes, "eval_classes": data.eval_classes,
        "data_sha256": data.fingerprint, "energy_source": energy_source,
        "cpu_flags": cpu_flags(), "cpu_governor": cpu_governor(), **load,
    }
