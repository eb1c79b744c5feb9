"""One timing session: every variant in its own fresh worker process, timed in interleaved rounds.

This machine's speed drifts in phases lasting seconds, so variants timed one after another
in blocks are not comparable. Within a session each round gives every variant a short
burst, in an order that rotates from round to round, so a ratio taken inside one round
compares two variants seconds apart. The speed of a process is itself a random draw, which
no interleaving cancels; the bench therefore runs several sessions (bench.py).

The reference every speed-up divides by (eager FP32) runs in several fresh processes per
session (SessionPlan.reference_processes): one process's draw would otherwise scale every
speed-up of its session alike, and eager FP32's draws can be bimodal (on a 2-vCPU Xeon, two
processes in seven ran a fifth slower than the rest). The first process is in every round, as
the reference always was, and pairs with each variant's bursts against the machine's drift;
its peers only need their speed placed against it, which a few rounds do (bench/stats.py:
pooled_reference_rounds), so they leave the rounds after plan.reference_rounds. Every reference
process takes short bursts (plan.reference_burst): with the bench's 5 calls and 4 rounds, the
three take 5 calls a round plus 40 where one process took 10 a round, less from eight rounds
on; starting the peers is the cost that remains.

Imports only numpy and the worker: devices run it too, as
`python -m mobilenet.measure.session PLAN.json OUT.json` (see main()).
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mobilenet.measure.worker import WorkerError, WorkerProcess, WorkerSkipped


@dataclass(frozen=True)
class SessionPlan:
    threads: int
    warmup: int
    burst: int
    min_runs: int  # timed calls per variant in this session, at least
    min_seconds: float  # timed seconds per variant in this session, at least
    eval_npy: str
    log_dir: str
    logits_dir: str | None = None  # set when the session also scores the photos (device runs)
    reference: str | None = None  # the variant every speed-up is paired with: it runs in every round
    reference_processes: int = 1  # fresh processes of the reference per session: the first, and its peers
    reference_burst: int | None = None  # calls per burst of every reference process (None: burst)
    reference_rounds: int = 4  # rounds each peer takes part in, from the first


@dataclass
class Take:
    """One variant's share of one session."""
    variant: str
    ready: dict = field(default_factory=dict)
    rounds: list = field(default_factory=list)  # list of bursts, each a list of ms
    finish: dict = field(default_factory=dict)
    energy_j: float = 0.0
    skipped: str | None = None  # the runtime is not installed or not supported here
    error: str | None = None  # anything else: our bug, reported loudly
    # The reference only: its further processes, timed in its first rounds (SessionPlan.reference_processes).
    peers: list = field(default_factory=list)

    def __post_init__(self):
        self.peers = [p if isinstance(p, Take) else Take(**p) for p in self.peers]  # from a device's JSON

    @property
    def samples(self) -> list[float]:
        return [s for burst in self.rounds for s in burst]

    @property
    def ran(self) -> bool:
        return not (self.skipped or self.error)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else exc.__class__.__name__


PEER = "#"  # a peer's worker id: the reference's id, PEER, and its number (2, 3, ...)


def _start(variant, artifact: Path, plan: SessionPlan, session: int, hold_load: bool, copy: int = 1) -> WorkerProcess:
    """A worker for one variant; copy > 1: a peer of the reference, which scores no photos."""
    logits = (Path(plan.logits_dir) / f"{variant.id}@{plan.threads}t.logits.npy"
              if plan.logits_dir and copy == 1 else None)
    peer = f".p{copy}" if copy > 1 else ""
    log_path = Path(plan.log_dir) / f"bench-{variant.id}@{plan.threads}t.s{session}{peer}.log"
    return WorkerProcess(variant, artifact, plan.threads, Path(plan.eval_npy), logits, plan.warmup,
                         log_path, hold_load=hold_load)


def _collect(worker: WorkerProcess, take: Take, step) -> bool:
    """Take the worker through one step of its start (a WorkerProcess method); False, with the
    take's skipped or error set and the worker closed, when it cannot go on."""
    try:
        step(worker)
        take.ready = worker.ready
        return True
    except WorkerSkipped as exc:
        take.skipped = _first_line(exc)
    except WorkerError as exc:
        take.error = f"{_first_line(exc)} (log: {worker.log_path})"
    worker.close()
    return False


def run_session(entries: list[tuple[object, Path]], plan: SessionPlan, session: int, *,
                load_alone: bool = True, meter=None, progress=None) -> dict[str, Take]:
    """Time every (variant, artifact) of `entries` in one session; returns a Take per variant id.

    load_alone: every worker imports its runtime at once (nothing is timed then), and then
    each loads in turn while the others wait, so that load and first-inference times are
    those of one process on an otherwise idle machine. Later sessions only need the timing,
    so they load all workers at once.
    meter: an energy meter (energy.RaplMeter) or None. progress: called as
    progress(rounds_done, rounds_expected).
    """
    takes = {variant.id: Take(variant.id) for variant, _ in entries}
    workers = {variant.id: _start(variant, artifact, plan, session, hold_load=load_alone)
               for variant, artifact in entries}
    for variant, artifact in entries:
        if variant.id == plan.reference:
            for copy in range(2, plan.reference_processes + 1):
                peer = f"{variant.id}{PEER}{copy}"
                takes[peer] = Take(peer)
                workers[peer] = _start(variant, artifact, plan, session, hold_load=load_alone, copy=copy)
    steps = (WorkerProcess.wait_imported, WorkerProcess.load) if load_alone else (WorkerProcess.wait_ready,)
    try:
        for step in steps:
            workers = {vid: w for vid, w in workers.items() if _collect(w, takes[vid], step)}
        _interleave(workers, takes, plan, meter, progress)
        for variant_id, worker in workers.items():
            if takes[variant_id].ran:
                try:
                    takes[variant_id].finish = worker.finish()
                except WorkerError as exc:
                    takes[variant_id].error = f"{_first_line(exc)} (log: {worker.log_path})"
    finally:
        for worker in workers.values():
            worker.close()
    peers = [vid for vid in takes if PEER in vid]
    if plan.reference in takes:
        takes[plan.reference].peers = [takes[vid] for vid in peers]
    for vid in peers:
        del takes[vid]
    return takes


def _round_order(worker_ids: list[str], reference: str | None) -> list[str]:
    """The first round's order: the reference first and its peers spread evenly among the
    other workers, so that the reference's processes together span the round, as the variants
    do (the rotation from round to round keeps the spacing)."""
    peers = [vid for vid in worker_ids if PEER in vid]
    order = sorted((vid for vid in worker_ids if PEER not in vid), key=lambda vid: vid != reference)
    total = len(order) + len(peers)
    slots = {round(k * total / (len(peers) + 1)): peer for k, peer in enumerate(peers, 1)}
    rest = iter(order)
    return [slots[i] if i in slots else next(rest) for i in range(total)]


def _interleave(workers: dict[str, WorkerProcess], takes: dict[str, Take], plan: SessionPlan, meter,
                progress) -> None:
    """Rounds of one burst per active variant, in rotating order, until every variant has its
    calls. A variant leaves the rounds once it has them, so slow variants do not wait for the
    fastest one's count; the reference stays to the end, because each round's speed-up pairs
    a variant's burst with the reference's burst of the same round. The reference's peers take
    part in the first plan.reference_rounds rounds, never holding the others up; every reference
    process takes bursts of plan.reference_burst calls."""
    active = _round_order(list(workers), plan.reference)

    def done(variant_id: str) -> bool:
        take = takes[variant_id]
        if PEER in variant_id:
            return len(take.rounds) >= plan.reference_rounds
        return len(take.samples) >= plan.min_runs and sum(take.samples) / 1000 >= plan.min_seconds

    def rounds_expected() -> int:
        # The fastest variant sets the count: it takes the most bursts to reach min_seconds.
        fastest_ms = min((statistics.median(takes[v].samples) for v in active if PEER not in v), default=math.inf)
        calls = max(plan.min_runs, plan.min_seconds * 1000 / fastest_ms)
        return max(1, -(-int(calls) // plan.burst))

    rounds = 0
    while active and not all(done(v) for v in active if PEER not in v):
        shift = rounds % len(active)
        for variant_id in active[shift:] + active[:shift]:
            before = meter.read() if meter is not None and meter.available else None
            reference = variant_id == plan.reference or PEER in variant_id
            count = (plan.reference_burst or plan.burst) if reference else plan.burst
            try:
                burst = workers[variant_id].burst(count)["samples_ms"]
            except WorkerError as exc:  # a worker died mid-session: its variant is in error, the rest go on
                takes[variant_id].error = f"{_first_line(exc)} (log: {workers[variant_id].log_path})"
                active.remove(variant_id)
                continue
            takes[variant_id].rounds.append(burst)
            if before is not None:
                takes[variant_id].energy_j += meter.joules_between(before, meter.read())
        rounds += 1
        if progress:
            progress(rounds, max(rounds, rounds_expected()))
        active = [v for v in active if v == plan.reference or not done(v)]


# ---------------------------------------------------------------- device entry point

class _Named:
    """The three fields of a registry Variant a worker needs, from a plan file."""

    def __init__(self, data: dict):
        self.id, self.runtime, self.runner = data["id"], data["runtime"], data.get("runner", {})


def main(argv: list[str]) -> int:
    """PLAN.json -> OUT.json: {"sessions": [{variant id: Take as dict}, ...]}.

    PLAN: {"plan": SessionPlan fields, "sessions": N,
           "variants": [{"id", "runtime", "runner" (options), "artifact"}, ...]}
    """
    plan_path, out_path = map(Path, argv)
    spec = json.loads(plan_path.read_text())
    plan = SessionPlan(**spec["plan"])
    entries = [(_Named(v), Path(v["artifact"])) for v in spec["variants"]]
    sessions = []
    for index in range(int(spec.get("sessions", 1))):
        # Photos are scored in the first session only: logits do not change between processes.
        session_plan = plan if index == 0 else SessionPlan(**{**asdict(plan), "logits_dir": None})
        takes = run_session(entries, session_plan, index, load_alone=index == 0)
        sessions.append({vid: asdict(t) for vid, t in takes.items()})
    tmp = out_path.with_suffix(".part")
    tmp.write_text(json.dumps({"sessions": sessions}))
    tmp.replace(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
