"""The runtimes' own benchmark programs, and our runner's call split into its steps.

A Runtime record names its program (registry.NativeBenchmark); PROGRAMS here holds, per
program, how to call it in a mode comparable to our worker (the same file and threads, one
request at a time, no CPU pinning, FP32 inference precision) and how to read its median back.
The bench runs the program between its sessions, so it sees the same machine as our workers.

The program's median beside our p50 says what our harness costs per call, not why. `split`
says why: in one fresh process it times our runner's call and, interleaved with it, the steps
that call is made of (input conversion and copy, the runtime's inference call, output copy and
conversion), replayed on the runner's own loaded objects.

`python -m mobilenet.bench.native SPLIT.json` prints the split as JSON: the bench runs it in a
process of its own, so it imports only the runtime, as a worker does.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("mobilenet.bench.native")

# Enough calls for a median that the noise of one call does not move, few enough to stay quick.
SPLIT_CALLS = 50


class NativeError(RuntimeError):
    """A program ran but its report is not what this module reads."""


@dataclass(frozen=True)
class Program:
    """How the bench calls one benchmark program and reads its answer."""
    # (tool, artifact, threads, runs, warmup, out_dir) -> argv; out_dir is an empty scratch folder.
    command: Callable[[Path, Path, int, int, int, Path], list[str]]
    # (out_dir, stdout) -> {"median_ms": ..., "num_runs": ...}
    parse: Callable[[Path, str], dict]
    # Our runner's work before and after the inference, replayed on its loaded objects:
    # (runner, image) -> {"input": zero-argument call, "output": ...}, either one optional.
    steps: Callable[[object, np.ndarray], dict[str, Callable[[], object]]]
    # Where the runtime's inference call lives on the loaded runner: (object, method name). The
    # split times it alone, and times run() with it swapped for a no-op where there is no clock.
    inference: Callable[[object], tuple[object, str]]
    # The runtime's own clock (ms) around the last inference call, where it keeps one.
    clock: Callable[[object], float] | None = None
    # Where the program drives another API than our runner: its timed call, rebuilt in the split's
    # process from (artifact, threads). Timed there in turn with our runner's inference call, it
    # compares the two APIs on one file, free of the spread between processes.
    program_call: Callable[[Path, int], Callable[[], object]] | None = None


# ---------------------------------------------------------------- LiteRT's litert-benchmark

def _litert_command(tool: Path, artifact: Path, threads: int, runs: int, warmup: int, out_dir: Path) -> list[str]:
    return [str(tool), "--model", str(artifact), "--num_threads", str(threads), "--num_runs", str(runs),
            "--warmup_runs", str(warmup), "--result_json", str(out_dir / "result.json")]


def _litert_parse(out_dir: Path, stdout: str) -> dict:
    report = json.loads((out_dir / "result.json").read_text())
    if report.get("accelerators") != ["CPU"]:  # our runner runs on the CPU (XNNPACK) only
        raise NativeError(f"ran on {report.get('accelerators')}, not the CPU alone")
    latency = report["latency"]
    return {"median_ms": float(latency["median_ms"]), "num_runs": int(latency["num_runs"])}


def _litert_steps(runner, image: np.ndarray) -> dict:
    """Runner.run of mobilenet/measure/runners/litert.py, step by step: stage, invoke, read."""
    return {"input": lambda: runner.stage_input(image), "output": runner.read_output}


def _litert_program_call(artifact: Path, threads: int) -> Callable[[], object]:
    """litert-benchmark's timed call, built as it builds it: a CompiledModel on the CPU accelerator
    with its thread count, buffers filled once with random values, run_by_name on the first signature."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.environment import Environment, EnvironmentOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options
    from ai_edge_litert.tools.benchmark_litert_model import fill_random_input

    model = CompiledModel.from_file(
        str(artifact), environment=Environment.create(options=EnvironmentOptions()),
        options=Options(hardware_accelerators=HardwareAccelerator(HardwareAccelerator.CPU),
                        cpu_options=CpuOptions(num_threads=threads)))
    signature = next(iter(model.get_signature_list()))
    details = model.get_input_tensor_details(signature)
    inputs = {name: model.create_input_buffer_by_name(signature, name) for name in details}
    outputs = {name: model.create_output_buffer_by_name(signature, name)
               for name in model.get_output_tensor_details(signature)}
    for name, buffer in inputs.items():
        fill_random_input(buffer, details[name])
    return lambda: model.run_by_name(signature, inputs, outputs)


# ---------------------------------------------------------------- OpenVINO's benchmark_app

def _openvino_command(tool: Path, artifact: Path, threads: int, runs: int, warmup: int,
                      out_dir: Path) -> list[str]:
    # -hint none because benchmark_app takes -nstreams/-nthreads/-pin only without a hint; the CPU
    # plugin then defaults to LATENCY, the hint our runner sets. No -nireq: the sync API uses one
    # request anyway, and -nireq would set PERFORMANCE_HINT_NUM_REQUESTS, which our runner leaves
    # at 0; so the compiled model's properties are the runner's, property for property. -ip f32
    # because it would otherwise feed an image-shaped input as u8 and convert it inside the graph.
    # It has no warm-up count (one first inference stays out of its timing), so `warmup` is unused.
    return [str(tool), "-m", str(artifact), "-d", "CPU", "-hint", "none", "-nstreams", "1",
            "-nthreads", str(threads), "-api", "sync", "-infer_precision", "f32", "-ip", "f32", "-pin", "NO",
            "-niter", str(runs), "-report_type", "no_counters", "-report_folder", str(out_dir), "-json_stats"]


def _openvino_parse(out_dir: Path, stdout: str) -> dict:
    results = json.loads((out_dir / "benchmark_report.json").read_text())["execution_results"]
    # "latency (ms)" is the 50th percentile unless -latency_percentile says otherwise.
    return {"median_ms": float(results["latency (ms)"]), "num_runs": int(results["total number of iterations"])}


def _openvino_steps(runner, image: np.ndarray) -> dict:
    """Runner.run of mobilenet/measure/runners/openvino.py, step by step: the photo into the
    request's input tensor, then infer(), whose output view the runner copies (timed with it)."""
    return {"input": lambda: runner.stage_input(image)}


PROGRAMS: dict[str, Program] = {
    "litert-benchmark": Program(_litert_command, _litert_parse, _litert_steps,
                                inference=lambda runner: (runner.interpreter, "invoke"),
                                program_call=_litert_program_call),
    # request.latency is OpenVINO's C++ clock around the inference, what benchmark_app reports.
    "benchmark_app": Program(_openvino_command, _openvino_parse, _openvino_steps,
                             inference=lambda runner: (runner.request, "infer"),
                             clock=lambda runner: runner.request.latency),
}


# ---------------------------------------------------------------- running them

def tool_path(program: str) -> Path:
    """Where a package's console script is: beside the Python executable."""
    return Path(sys.executable).with_name(program)


def _environment(threads: int) -> dict:
    """The worker's environment: the same thread variables, so numpy and OpenMP see what it sees."""
    from mobilenet.measure.worker import THREAD_ENV_VARS
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_ENV_VARS})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning,ignore::FutureWarning"
    return env


def shown_command(argv: list[str], artifact: Path, out_dir: Path) -> str:
    """The command as a reader would retype it: program and artifact by name, the scratch folder as OUT."""
    shown = [Path(argv[0]).name, *(a.replace(str(out_dir), "OUT").replace(str(artifact), artifact.name)
                                   for a in argv[1:])]
    return shlex.join(shown)


def run_program(program: str, artifact: Path, threads: int, runs: int, warmup: int) -> dict | None:
    """One run of `program` on `artifact`: {"median_ms", "num_runs", "command"}, None when it is
    not installed or fails (the bench log says why)."""
    tool = tool_path(program)
    if program not in PROGRAMS or not tool.exists():
        return None
    spec = PROGRAMS[program]
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = Path(scratch)
        argv = spec.command(tool, Path(artifact), threads, runs, warmup, out_dir)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=_environment(threads))
        try:
            if done.returncode != 0:
                raise NativeError(f"exit {done.returncode}")
            parsed = spec.parse(out_dir, done.stdout)
        except (NativeError, OSError, KeyError, ValueError) as exc:
            log.warning("  %s failed on %s (%s); see the bench log", program, Path(artifact).name, exc)
            log.debug("%s\n%s", done.stdout[-2000:], done.stderr[-2000:])
            return None
        return {**parsed, "command": shown_command(argv, Path(artifact), out_dir)}


def summary(record, runs: list[dict], split: dict | None) -> dict | None:
    """The result's native_benchmark: the program's median over the sessions it ran in, what its
    clock covers, and our call's split."""
    runs = [r for r in runs if r and "median_ms" in r]
    if not runs:
        return None
    return {"tool": record.program, "times": record.times, "same_api": record.other_api is None,
            "other_api": record.other_api, "command": runs[-1]["command"], "sessions": len(runs),
            "calls_per_session": runs[0]["num_runs"],
            "median_ms": statistics.median(r["median_ms"] for r in runs),
            "session_median_ms": [r["median_ms"] for r in runs],
            # the bench session each run followed (0-based), where the bench said
            "session_index": [r["session"] for r in runs] if all("session" in r for r in runs) else None,
            "split": split}


def run_split(program: str, runtime: str, options: dict, artifact: Path, threads: int, eval_npy: Path,
              warmup: int, calls: int = SPLIT_CALLS) -> dict | None:
    """`split` in a fresh process (python -m mobilenet.bench.native); None when it fails."""
    if program not in PROGRAMS:
        return None
    plan = {"program": program, "runtime": runtime, "options": options, "artifact": str(artifact),
            "threads": threads, "eval_npy": str(eval_npy), "warmup": warmup, "calls": calls}
    with tempfile.TemporaryDirectory() as scratch:
        plan_path = Path(scratch) / "split.json"
        plan_path.write_text(json.dumps(plan))
        done = subprocess.run([sys.executable, "-m", "mobilenet.bench.native", str(plan_path)],
                              capture_output=True, text=True, timeout=600, env=_environment(threads),
                              cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        log.warning("  the split of our call failed on %s (exit %d); see the bench log",
                    Path(artifact).name, done.returncode)
        log.debug("%s", done.stderr[-2000:])
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def split(program: str, runtime: str, options: dict, artifact: Path, threads: int, eval_npy: Path,
          warmup: int, calls: int = SPLIT_CALLS) -> dict:
    """Our runner's call and its parts, timed in turn `calls` times in this process.

    Medians in ms: `run_ms` (runner.run, as the worker times it); `inference_ms` (the runtime's
    inference call alone, timed in Python) and `clock_ms` (the same call on the runtime's own
    clock, where it keeps one); `own_ms` (our runner's work around the inference in one run()
    call: run() less the runtime's clock for the same call where there is one, otherwise run()
    with the inference call swapped for a no-op); `steps_ms` (each of those steps alone) and
    `rest_ms` (own_ms less the steps: the Python calls between them). Where the program drives
    another API: `program_call_ms` (its timed call, in this process) and `api_difference_ms`
    (median of our inference call less the program's, paired call by call).
    """
    from mobilenet.measure.npyimages import NpyImages
    from mobilenet.measure.runners import make_runner

    runner = make_runner(runtime, threads, options)
    runner.load(Path(artifact))
    spec = PROGRAMS[program]
    program_call = spec.program_call(Path(artifact), threads) if spec.program_call else None
    return measure_split(spec, runner, NpyImages(Path(eval_npy))[0], warmup, calls, program_call)


def measure_split(spec: Program, runner, image: np.ndarray, warmup: int, calls: int,
                  program_call: Callable[[], object] | None = None) -> dict:
    """split on a loaded runner; the worker's photo (the first) is `image`."""
    steps = spec.steps(runner, image)
    owner, name = spec.inference(runner)
    inference = getattr(owner, name)
    for _ in range(warmup):
        runner.run(image)
        if program_call is not None:
            program_call()
    clock = time.perf_counter
    samples: dict[str, list[float]] = {key: [] for key in ("run", "inference", "own", "program", *steps)}
    runtime_clock: list[float] = []

    def timed(key: str, call: Callable[[], object]) -> float:
        start = clock()
        call()
        samples[key].append(elapsed := (clock() - start) * 1000.0)
        return elapsed

    for _ in range(calls):
        run_ms = timed("run", lambda: runner.run(image))
        if spec.clock is not None:  # the same call on both clocks: exact, whatever the machine does
            samples["own"].append(run_ms - float(spec.clock(runner)))
        if "input" in steps:  # in run()'s order, so each step finds what the one before left
            timed("input", steps["input"])
        timed("inference", inference)
        if spec.clock is not None:
            runtime_clock.append(float(spec.clock(runner)))
        if "output" in steps:
            timed("output", steps["output"])
        if program_call is not None:  # right after our inference call, so the pair sees one machine
            timed("program", program_call)
        if spec.clock is None:  # run() without the inference: our work alone
            with _swapped(owner, name, _no_op):
                timed("own", lambda: runner.run(image))
    median = statistics.median
    steps_ms = {key: median(samples[key]) for key in steps}
    own = median(samples["own"])
    paired = (median(i - p for i, p in zip(samples["inference"], samples["program"], strict=True))
              if program_call is not None else None)
    return {"calls": calls, "run_ms": median(samples["run"]), "inference_ms": median(samples["inference"]),
            "clock_ms": median(runtime_clock) if runtime_clock else None, "own_ms": own, "steps_ms": steps_ms,
            "rest_ms": own - sum(steps_ms.values()),
            "program_call_ms": median(samples["program"]) if program_call is not None else None,
            "api_difference_ms": paired}


def _no_op(*args, **kwargs) -> None:
    return None


@contextmanager
def _swapped(owner: object, name: str, value: object):
    """`owner.name` is `value` inside the block, and what it was after."""
    own = vars(owner)
    had, before = name in own, own.get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if had:
            setattr(owner, name, before)
        else:
            delattr(owner, name)


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    # Whatever the runtime prints goes to stderr: stdout carries the answer alone.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    result = split(plan["program"], plan["runtime"], plan["options"], Path(plan["artifact"]), plan["threads"],
                   Path(plan["eval_npy"]), plan["warmup"], plan["calls"])
    answer.write(json.dumps(result) + "\n")
    answer.flush()


if __name__ == "__main__":
    main()
