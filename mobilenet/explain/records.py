"""What the explain step measures, as data: one JSON file per variant and analysis.

The report section renders from these files alone, so every number it prints is here,
with its unit in the field name.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mobilenet.files import write_json

SCHEMA = 1
OK = "ok"
NOT_AVAILABLE = "not available"

# Per-kind sums further than this from the unprofiled p50 need a stated reason.
COVERAGE_TOLERANCE = 0.20


@dataclass
class OpTime:
    """One operator name as the profiler reported it, summed over a call."""
    name: str
    kind: str
    count_per_call: int
    ms_per_call: float


@dataclass
class OperatorProfile:
    """Where one variant's time goes, by operator kind, from its runtime's own profiler."""
    variant: str
    runtime: str
    precision: str
    status: str  # OK or NOT_AVAILABLE
    reason: str  # why not available; empty when ok
    profiler: str  # which tool produced the numbers, with its version
    visibility: str  # what the profiler can and cannot see (e.g. inside a delegate)
    threads: int
    profiled_calls: int = 0
    unprofiled_p50_ms: float | None = None  # same process, profiler off
    profiled_p50_ms: float | None = None  # same process, profiler on
    kind_ms: dict = field(default_factory=dict)  # kind -> ms per call
    ops: list = field(default_factory=list)  # OpTime as dicts, largest first
    # Which kernels ran: kind -> {kernel or implementation name: count per call}, as the runtime
    # named them (kernels_source says which record), or from its engine's source rule for the
    # kinds in kernels_inferred.
    kernels: dict = field(default_factory=dict)
    kernels_source: str = ""
    kernels_inferred: list = field(default_factory=list)  # kinds whose names come from a rule, not the runtime
    # What the runtime does not tell about its kernels, and any rule used instead, with its source.
    kernels_note: str = ""
    kernel_isa: dict = field(default_factory=dict)  # kind -> instruction sets the kernels' names show
    # For an engine whose kernels come from a source rule: the instruction sets its micro-kernels
    # are built for in the library this process loaded, read from the file's symbols (QNNPACK).
    library_kernel_isas: list = field(default_factory=list)
    library: str = ""  # that library's path
    schema: int = SCHEMA

    @property
    def kind_sum_ms(self) -> float:
        return sum(self.kind_ms.values())

    @property
    def coverage(self) -> float | None:
        """Per-kind sum over the unprofiled p50: 1.0 means the operators account for all of it."""
        if not self.kind_ms or not self.unprofiled_p50_ms:
            return None
        return self.kind_sum_ms / self.unprofiled_p50_ms

    @property
    def profiler_overhead_pct(self) -> float | None:
        if not self.profiled_p50_ms or not self.unprofiled_p50_ms:
            return None
        return 100 * (self.profiled_p50_ms / self.unprofiled_p50_ms - 1)

    def coverage_note(self) -> str:
        """Why the per-kind sum is further than COVERAGE_TOLERANCE from the unprofiled p50
        (empty when it is within), built from this profile's own numbers."""
        coverage = self.coverage
        if coverage is None or abs(coverage - 1) <= COVERAGE_TOLERANCE:
            return ""
        overhead = self.profiler_overhead_pct or 0.0
        profiled_cover = self.kind_sum_ms / self.profiled_p50_ms if self.profiled_p50_ms else None
        if coverage > 1 and overhead > 100 * COVERAGE_TOLERANCE:
            return (f"the profiler itself slowed each call by {overhead:.0f} % "
                    f"(p50 {self.profiled_p50_ms:.2f} ms profiled vs {self.unprofiled_p50_ms:.2f} ms), "
                    f"and its operator times include that cost")
        if coverage < 1 and profiled_cover is not None and profiled_cover < 1 - COVERAGE_TOLERANCE:
            outside = self.profiled_p50_ms - self.kind_sum_ms
            return (f"{outside:.2f} ms of each profiled call ({100 * (1 - profiled_cover):.0f} %) "
                    f"is spent outside the operators this profiler reports (see what it sees, below)")
        return (f"the operators sum to {self.kind_sum_ms:.2f} ms, "
                f"the profiled calls took {self.profiled_p50_ms:.2f} ms "
                f"(p50; the difference ran outside the reported operators) and the unprofiled ones "
                f"{self.unprofiled_p50_ms:.2f} ms (the difference to the profiled p50 is the profiler's cost and "
                f"the machine's speed changing between the two measurements)")


@dataclass
class LayerError:
    name: str  # the layer as the runtime's tooling names it
    kind: str  # one of kinds.KINDS
    depth: float  # share of the compared layers up to this one: the last is 1
    sqnr_db: float  # capped at sqnr.CAP_DB
    capped: bool  # the INT8 output equals the FP32 one (noise 0): true SQNR infinite


@dataclass
class QuantizationError:
    """Per-layer SQNR of one INT8 variant against its FP32 reference."""
    variant: str
    runtime: str
    status: str
    reason: str
    tool: str  # the ecosystem tool that matched the layers
    reference: str  # what the INT8 outputs are compared with
    photos: int = 0
    layers: list = field(default_factory=list)  # LayerError as dicts, in execution order
    fidelity: str = ""  # how the compared model relates to the shipped artifact
    schema: int = SCHEMA


@dataclass
class Verdict:
    """One or two sentences on why a variant is as fast as it is, and the facts behind them."""
    variant: str
    baseline: str  # the FP32 variant of the same runtime it is compared with
    runtime: str
    text: str
    kind_ratio: dict = field(default_factory=dict)  # kind -> variant ms / baseline ms
    net_ratio: float | None = None  # variant p50 / baseline p50
    net_source: str = ""  # where the p50s come from
    cpu_flags: list = field(default_factory=list)  # the machine's INT8-relevant flags (not named in the text)
    quantization: str = ""
    kernels: dict = field(default_factory=dict)  # kind -> {kernel: count per call} of the variant
    baseline_kernels: dict = field(default_factory=dict)  # the same for its baseline
    isa_named: list = field(default_factory=list)  # the instruction sets the text names: its kernels' only
    schema: int = SCHEMA


@dataclass
class ExplainSummary:
    """The run as a whole: machine facts and what each stage cost."""
    cpu_model: str
    cpu_flags: list
    cpu_flags_absent: list
    stage_seconds: dict  # stage -> wall seconds of the last run (0 when up to date)
    stage_cpu_seconds: dict  # stage -> CPU seconds its worker processes used (what a busy machine cannot inflate)
    redone: list  # analyses recomputed in the last run
    profile_calls: int
    sqnr_photos: int
    sqnr_cap_db: float
    schema: int = SCHEMA


def save(path: Path, record) -> Path:
    write_json(path, asdict(record))
    return Path(path)


def load(path: Path, cls):
    """A record written by `save`, or None if the file is from another schema."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def load_all(folder: Path, cls) -> list:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    loaded = (load(p, cls) for p in sorted(folder.glob("*.json")))
    return [r for r in loaded if r is not None]
