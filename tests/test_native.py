"""The runtimes' own benchmark programs (bench/native.py): the command lines the bench builds,
the reports it reads (samples recorded from the real programs on MobileNet-V2), the split of our
call, the registry's records and the report's harness lines. No chain: the live tests run the
real program on a tiny IR built here, and skip where OpenVINO is not installed."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_report import make_result

from mobilenet.bench import native
from mobilenet.registry import RUNTIME_BY_NAME, RUNTIMES, NativeBenchmark, registry_problems
from mobilenet.report import markdown as report

# benchmark_app's -json_stats report, recorded once from the real program (OpenVINO 2026.4.1) on
# openvino-fp32.xml at 1 thread, on a loaded machine.
BENCHMARK_APP_REPORT = {
    "cmd_options": {"-m": "/tmp/nb/build/models/openvino-fp32.xml", "-d": "CPU", "-hint": "none", "-nstreams": "1",
                    "-nthreads": "1", "-nireq": "1", "-api": "sync", "-infer_precision": "f32", "-ip": "f32",
                    "-pin": "NO", "-niter": "100", "-report_type": "no_counters", "-report_folder": "rep_none",
                    "-json_stats": "", "-dump_config": "rep_none/config.json"},
    "configuration_setup": {"topology": "Model1", "target device": "CPU", "API": "sync", "inference_only": True,
                            "precision": "UNSPECIFIED", "batch size": "1", "number of iterations": "100",
                            "number of parallel infer requests": "1", "duration (ms)": "0",
                            "number of CPU streams": "1"},
    "execution_results": {"read model time (ms)": "97.39", "compile model time (ms)": "645.50",
                          "first inference time (ms)": "96.76", "total execution time (ms)": "7445.60",
                          "total number of iterations": "100", "latency (ms)": "72.36", "avg latency": "73.38",
                          "min latency": "58.15", "max latency": "160.48", "throughput": "13.43"}}

# litert-benchmark's --result_json, recorded once from the real program (ai-edge-litert 2.3.0) on
# litert-fp32.tflite at 1 thread.
LITERT_REPORT = {
    "model": "build/models/litert-fp32.tflite", "model_size_mb": 13.4, "accelerators": ["CPU"],
    "signature": "serving_default", "fully_accelerated": True, "num_threads": 1,
    "latency": {"init_ms": 19.78, "warmup_first_ms": 58.35, "warmup_avg_ms": 54.36, "num_warmup_runs": 5,
                "avg_ms": 53.73, "min_ms": 49.5, "max_ms": 59.28, "median_ms": 54.44, "std_ms": 2.49,
                "p5_ms": 50.0, "p95_ms": 56.39, "num_runs": 20},
    "throughput_mb_s": 10.69}


def _options(argv: list[str]) -> dict[str, str]:
    """'-flag value' pairs of a command line; a flag without a value maps to ''."""
    options, args = {}, argv[1:]
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            following = args[index + 1] if index + 1 < len(args) else ""
            options[arg] = "" if following.startswith("-") else following
    return options


def test_benchmark_app_runs_in_our_runners_mode(tmp_path):
    argv = native.PROGRAMS["benchmark_app"].command(Path("/bin/benchmark_app"), Path("/m/openvino-fp32.xml"),
                                                   threads=3, runs=60, warmup=10, out_dir=tmp_path)
    options = _options(argv)
    # One request at a time on one stream with the threads asked for, unpinned, in f32, fed f32:
    # what mobilenet/measure/runners/openvino.py compiles.
    assert options == {**options, "-m": "/m/openvino-fp32.xml", "-d": "CPU", "-hint": "none", "-nstreams": "1",
                       "-nthreads": "3", "-api": "sync", "-infer_precision": "f32", "-ip": "f32", "-pin": "NO",
                       "-niter": "60", "-report_type": "no_counters", "-report_folder": str(tmp_path),
                       "-json_stats": ""}
    assert "-t" not in options  # a run count, not a time: every session gets the same number of calls


def test_benchmark_app_report_is_read(tmp_path):
    (tmp_path / "benchmark_report.json").write_text(json.dumps(BENCHMARK_APP_REPORT))
    assert native.PROGRAMS["benchmark_app"].parse(tmp_path, "") == {"median_ms": 72.36, "num_runs": 100}


def test_litert_benchmark_command_and_report(tmp_path):
    spec = native.PROGRAMS["litert-benchmark"]
    argv = spec.command(Path("/bin/litert-benchmark"), Path("/m/litert-fp32.tflite"), threads=2, runs=50,
                        warmup=10, out_dir=tmp_path)
    assert _options(argv) == {"--model": "/m/litert-fp32.tflite", "--num_threads": "2", "--num_runs": "50",
                              "--warmup_runs": "10", "--result_json": str(tmp_path / "result.json")}
    (tmp_path / "result.json").write_text(json.dumps(LITERT_REPORT))
    assert spec.parse(tmp_path, "") == {"median_ms": 54.44, "num_runs": 20}
    (tmp_path / "result.json").write_text(json.dumps({**LITERT_REPORT, "accelerators": ["GPU", "CPU"]}))
    with pytest.raises(native.NativeError, match="GPU"):
        spec.parse(tmp_path, "")


def test_the_shown_command_names_files_not_scratch_paths(tmp_path):
    artifact = Path("/some/build/models/openvino-int8.xml")
    argv = native.PROGRAMS["benchmark_app"].command(Path("/venv/bin/benchmark_app"), artifact, 1, 50, 10, tmp_path)
    shown = native.shown_command(argv, artifact, tmp_path)
    assert shown.startswith("benchmark_app -m openvino-int8.xml -d CPU")
    assert str(tmp_path) not in shown and "-report_folder OUT" in shown


def _tiny_ir(folder: Path, shape: tuple[int, ...], outputs: int) -> Path:
    """An OpenVINO IR of `shape` -> [1, outputs]: a mean over all but the batch axis, then a MatMul."""
    import openvino
    import openvino.opset13 as ops
    x = ops.parameter(list(shape), np.float32, name="x")
    pooled = ops.reduce_mean(x, ops.constant(np.arange(2, len(shape), dtype=np.int64)), keep_dims=False)
    weights = ops.constant(np.linspace(-1, 1, shape[1] * outputs, dtype=np.float32).reshape(shape[1], outputs))
    path = folder / "tiny.xml"
    openvino.save_model(openvino.Model([ops.matmul(pooled, weights, False, False)], [x], "tiny"), str(path),
                        compress_to_fp16=False)
    return path


def test_benchmark_app_really_runs_and_is_read(tmp_path):
    """The installed program, with the bench's command line, on a tiny IR: catches a changed report format."""
    pytest.importorskip("openvino")
    if not native.tool_path("benchmark_app").exists():
        pytest.skip("benchmark_app is not installed beside this Python")
    got = native.run_program("benchmark_app", _tiny_ir(tmp_path, (1, 3, 8, 8), 4), threads=1, runs=7, warmup=0)
    assert got is not None, "benchmark_app failed; the bench log would say why"
    assert got["num_runs"] == 7 and got["median_ms"] >= 0
    assert got["command"].startswith("benchmark_app -m tiny.xml -d CPU -hint none")


def test_the_split_of_our_openvino_call(tmp_path):
    """On the real runner: the runtime's clock is read for the same call, so own_ms holds the input copy."""
    pytest.importorskip("openvino")
    from mobilenet.measure.runners.openvino import Runner
    runner = Runner(1)
    runner.load(_tiny_ir(tmp_path, (1, 3, 224, 224), 1000))
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    split = native.measure_split(native.PROGRAMS["benchmark_app"], runner, image, warmup=2, calls=9)
    assert split["calls"] == 9 and set(split["steps_ms"]) == {"input"}
    assert split["clock_ms"] is not None and 0 < split["clock_ms"] <= split["inference_ms"]
    assert split["own_ms"] > 0 and split["rest_ms"] == pytest.approx(split["own_ms"] - split["steps_ms"]["input"])
    assert np.array_equal(runner.run(image), runner.run(image))  # the runner still works afterwards


class _SlowInterpreter:
    def __init__(self):
        self.given = None

    def set_tensor(self, x):
        self.given = x.copy()

    def invoke(self):
        time.sleep(0.004)

    def get_tensor(self):
        return np.zeros((1, 1000), np.float32)


class _FakeRunner:
    def __init__(self):
        self.interpreter = _SlowInterpreter()

    def run(self, image):
        self.interpreter.set_tensor(image)
        self.interpreter.invoke()
        return self.interpreter.get_tensor()


def test_without_a_runtime_clock_the_split_times_run_with_the_inference_swapped_out():
    spec = native.Program(command=native.PROGRAMS["litert-benchmark"].command, parse=native.PROGRAMS[
        "litert-benchmark"].parse, steps=lambda runner, image: {
            "input": lambda: runner.interpreter.set_tensor(image), "output": runner.interpreter.get_tensor},
        inference=lambda runner: (runner.interpreter, "invoke"))
    runner = _FakeRunner()
    program_calls = []
    split = native.measure_split(spec, runner, np.ones((1, 3, 224, 224), np.float32), warmup=1, calls=5,
                                 program_call=lambda: program_calls.append(time.sleep(0.002)))
    assert split["clock_ms"] is None and len(program_calls) == 1 + 5
    assert split["program_call_ms"] >= 2 and split["api_difference_ms"] > 0  # the fake's 4 ms against 2 ms
    assert split["inference_ms"] >= 4 and split["run_ms"] >= 4
    assert split["own_ms"] < 2  # run() without the 4 ms sleep: the copy and Python alone
    assert "invoke" not in vars(runner.interpreter)  # the swap is undone
    started = time.perf_counter()
    runner.interpreter.invoke()
    assert time.perf_counter() - started >= 0.004


def test_the_summary_says_what_the_program_times_and_whether_it_is_our_api():
    record = RUNTIME_BY_NAME["litert"].native_benchmark
    runs = [{"median_ms": m, "num_runs": 50, "command": "litert-benchmark --model litert-fp32.tflite"}
            for m in (5.0, 5.4, 5.2)]
    summary = native.summary(record, [*runs, None], split=None)
    assert summary["median_ms"] == 5.2 and summary["sessions"] == 3 and summary["calls_per_session"] == 50
    assert summary["same_api"] is False and "CompiledModel" in summary["other_api"]
    assert native.summary(RUNTIME_BY_NAME["openvino"].native_benchmark, runs, None)["same_api"] is True
    assert native.summary(record, [], None) is None


def test_every_recorded_program_has_an_entry_and_a_broken_record_is_reported():
    recorded = [r for r in RUNTIMES if r.native_benchmark]
    assert {r.native_benchmark.program for r in recorded} == {"litert-benchmark", "benchmark_app"}
    assert all(r.native_benchmark.program in native.PROGRAMS for r in recorded)
    openvino = RUNTIME_BY_NAME["openvino"]
    for broken, says in ((replace(openvino.native_benchmark, program="no-such-bench"), "no entry"),
                         (replace(openvino.native_benchmark, times=" "), "times: blank"),
                         ("benchmark_app", "no NativeBenchmark record")):
        runtimes = tuple(replace(r, native_benchmark=broken) if r is openvino else r for r in RUNTIMES)
        problems = registry_problems(runtimes)
        assert any(p.startswith("runtime 'openvino': native_benchmark: ") and says in p for p in problems), problems
    assert isinstance(openvino.native_benchmark, NativeBenchmark)


def _with_native(variant: str, p50: float, median: float, other_api: str | None, split: dict | None,
                 session_medians: tuple[float, ...] | None = None):
    """make_result's row (5 sessions, each at p50) with the program's runs after sessions 0, 1, ..."""
    result = make_result(variant, p50)
    record = NativeBenchmark("benchmark_app", times="InferRequest.infer()", other_api=other_api)
    runs = [{"median_ms": ms, "num_runs": 50, "command": "benchmark_app -m x.xml", "session": index}
            for index, ms in enumerate(session_medians or (median,))]
    result.native_benchmark = native.summary(record, runs, split)
    return result


def test_the_harness_line_gives_both_figures_the_interval_and_where_the_difference_goes():
    split = {"calls": 200, "run_ms": 10.4, "inference_ms": 10.1, "clock_ms": 10.05, "own_ms": 0.3,
             "steps_ms": {"input": 0.1}, "rest_ms": 0.2}
    [line] = report.harness_lines([_with_native("openvino-fp32", 10.4, 10.0, None, split)])
    assert report.md("benchmark_app") in line and "median 10.00 ms" in line and "our p50 10.40 ms" in line
    assert "within-run interval 10.09–10.71" in line and "median is below it" in line
    assert "+0.40 ms per call (+4.0 %)." in line and "The same API" in line
    assert "Our harness's cost per call, from the split: +0.30 ms (+3.0 %), beyond the 2 % goal." in line
    assert "input conversion and copy 0.100 ms" in line and "Python calls and bindings between them +0.200 ms" in line
    assert "the runtime's own clock for the same call" in line and "10.05 ms on that clock" in line
    assert "That accounts for +0.30 ms (+3.0 %); the other +0.10 ms is the spread between processes" in line
    litert_split = {**split, "clock_ms": None, "steps_ms": {"input": 0.1, "output": 0.05}, "rest_ms": 0.15,
                    "program_call_ms": 10.2, "api_difference_ms": -0.1}
    [paired] = report.harness_lines([_with_native("litert-fp32", 10.4, 10.0, "another API", litert_split)])
    assert "the runtime's inference call timed alone" in paired and "on that clock" not in paired
    assert "rebuilt in that process, 10.20 ms, and our inference call -0.100 ms from it" in paired
    assert "That accounts for +0.20 ms (+2.0 %); the other +0.20 ms" in paired
    assert "from the split: +0.20 ms (+2.0 %), within the 2 % goal" in paired
    [close] = report.harness_lines([_with_native("litert-fp32", 10.1, 10.0, "it drives the CompiledModel API",
                                                 None)])
    assert "from these figures: +0.10 ms (+1.0 %), within the 2 % goal" in close
    assert "**Not the same API**: it drives the CompiledModel API" in close


def test_sessions_are_paired_with_the_program_run_that_followed_them():
    """One slow program run moves the median of the pairs no more than any other single pair."""
    [line] = report.harness_lines([_with_native("openvino-fp32", 10.2, 0, None, None,
                                                session_medians=(10.0, 10.0, 30.0, 10.0))])
    assert "median 10.00 ms" in line
    assert "our median is +2.0 % from the program's (median of 4 pairs)" in line
    result = _with_native("openvino-fp32", 10.2, 0, None, None, session_medians=(10.0, 10.0))
    result.native_benchmark["session_index"] = None  # a result written before runs knew their session
    assert "Session by session" not in report.harness_lines([result])[0]


def test_a_result_written_before_the_split_still_gets_its_line():
    result = make_result("litert-fp32", 5.3)
    result.native_benchmark = {"tool": "litert-benchmark", "sessions": 7, "calls_per_session": 50,
                               "median_ms": 5.0, "session_median_ms": [5.0] * 7}
    [line] = report.harness_lines([result])
    assert "median 5.00 ms" in line and "+0.30 ms per call (+6.0 %)" in line and "API" not in line


def test_native_programs_run_after_sessions_spread_over_the_bench():
    from mobilenet.bench.step import native_sessions
    assert native_sessions(7) == {0, 3, 6}
    assert native_sessions(2) == {0, 1}
    assert native_sessions(1) == {0}
    assert native_sessions(10) == {0, 4, 9}  # round(4.5) is 4: banker's rounding, still spread
