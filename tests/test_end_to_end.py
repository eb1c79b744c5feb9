"""The invoke chain, end to end, with tiny settings on the shared weights and photos.

The chain itself runs once per session (the `chain` fixture in conftest.py).
"""
from __future__ import annotations

import json
import shutil

from conftest import requires_shared, run_invoke

from mobilenet.registry import REFERENCE_ID, STEPS, VARIANTS

pytestmark = requires_shared


def test_every_variant_passes_the_gate(chain):
    build, _ = chain
    results = {p.name: json.loads(p.read_text()) for p in (build / "results").glob("*.json")}
    assert sorted(results) == sorted(f"{v.id}@1t.json" for v in VARIANTS)
    for name, result in results.items():
        measured = ("ok", "DEGRADED", "INCONCLUSIVE")  # 40 photos rarely settle the gate for INT8
        assert result["status"] in measured, f"{name}: {result['status']} {result['status_reason']}"
        assert result["p50_ms"] > 0 and result["size_mb"] > 0 and result["runs"] >= 10
        # Read back from the runtime; LiteRT cannot report it, so it is unknown, not echoed.
        expected_threads = None if result["runtime"] == "litert" else 1
        assert result["env"]["threads_effective"] == expected_threads, name
        assert result["top1_pct"] is not None and result["agreement_pct"] >= 80
        assert result["sessions"] == 2 and len(result["session_p50_ms"]) == 2
        low, high = result["p50_ci_ms"]
        assert low <= result["p50_ms"] <= high
        assert result["speedup_ci"][0] <= result["speedup_vs_eager"] <= result["speedup_ci"][1]
        assert result["cpu_affinity"] and result["env"]["cpu_flags"]
        assert result["inputs"]["artifact_sha256"] == result["build"]["artifact_sha256"]
    eager = results["fp32-eager@1t.json"]
    assert eager["agreement_pct"] == 100 and eager["max_abs_dlogit"] == 0
    # The harness's own cost: LiteRT's benchmark program ran on the same artifacts.
    for litert in ("litert-fp32", "litert-int8"):
        native = results[f"{litert}@1t.json"]["native_benchmark"]
        assert native["tool"] == "litert-benchmark" and native["median_ms"] > 0
    assert eager["env"]["weights_sha256"] == "b25476ee0cc47985ada7a7e8aa5deb05e9a3b3751236837a6c6fb8536feae92c"
    for fp32 in (v.id for v in VARIANTS if v.precision == "fp32" and v.id != REFERENCE_ID):
        assert results[f"{fp32}@1t.json"]["max_abs_dlogit"] <= 1e-3, fp32


def test_report_has_a_row_with_numbers_for_each_variant(chain):
    build, _ = chain
    report = (build / "report.md").read_text()
    lines = report.splitlines()
    # This machine's main table (other machines, e.g. a device test's, may follow it).
    table = next(i for i, line in enumerate(lines) if line.startswith("| variant") and "size MB" in line)
    for variant in VARIANTS:
        row = next(line for line in lines[table:] if line.startswith(f"| `{variant.id}`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        size, p50 = float(cells[1]), float(cells[2].split()[0])
        assert size > 0 and p50 > 0, row
    assert "deprecated" in report and "torch.export" in report and "ExecuTorch" in report
    assert "litert-benchmark" in report and "tied top-1 rows" in report


def test_console_is_free_of_deprecation_noise(chain):
    _, result = chain
    assert "deprecated" not in (result.stdout + result.stderr).lower()


def test_rerun_skips_up_to_date_steps(chain, tiny_env):
    build, _ = chain
    env = {**tiny_env, "MOBILENET_QUIET": ""}
    before = {p: p.stat().st_mtime for p in (build / "models").iterdir()}
    rerun = run_invoke(["report"], env)
    for step in (*(s.name for s in STEPS), "bench"):
        assert f"{step}: up to date" in rerun.stderr, step
    assert before == {p: p.stat().st_mtime for p in (build / "models").iterdir()}


def test_missing_runtime_gives_skipped_row(chain, tiny_env, tmp_path):
    """A runtime that cannot be imported becomes "skipped: <reason>"; the rest goes on."""
    build, _ = chain
    copy = tmp_path / "build"
    shutil.copytree(build, copy)
    fake = tmp_path / "no-onnxruntime" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('onnxruntime is not installed (simulated)')\n")
    env = {**tiny_env, "MOBILENET_BUILD_DIR": str(copy), "PYTHONPATH": str(fake.parent)}
    run_invoke(["bench", "--only", "onnx-*", "--force"], env)
    result = json.loads((copy / "results" / "onnx-fp32@1t.json").read_text())
    assert result["status"] == "skipped" and "simulated" in result["status_reason"]
    assert json.loads((copy / "results" / "fp32-eager@1t.json").read_text())["status"] == "ok"


def test_a_held_worker_imports_first_and_loads_only_when_told(chain, tmp_path):
    """The first session's protocol: every worker imports its runtime at once, then each
    loads in turn (measure.run_session), so a timed load never shares the CPU."""
    from mobilenet.measure.session import SessionPlan, run_session
    from mobilenet.measure.worker import WorkerProcess
    from mobilenet.registry import by_id
    build, _ = chain
    variant = by_id("onnx-fp32")
    artifact, photos = variant.artifact_path(build / "models"), build / "data" / "eval.npy"
    held = WorkerProcess(variant, artifact, 1, photos, None, 0, tmp_path / "held.log", hold_load=True)
    assert held.wait_imported() == {"imported": True} and held.ready == {}
    ready = held.load()
    assert ready["ok"] and ready["load_ms"] > 0 and len(held.burst(2)["samples_ms"]) == 2
    held.finish()
    never_told = WorkerProcess(variant, artifact, 1, photos, None, 0, tmp_path / "idle.log", hold_load=True)
    never_told.wait_imported()
    never_told.close()
    assert never_told.proc.returncode == 0

    plan = SessionPlan(threads=1, warmup=1, burst=2, min_runs=2, min_seconds=0.01, eval_npy=str(photos),
                       log_dir=str(tmp_path), reference="fp32-eager")
    entries = [(by_id(vid), by_id(vid).artifact_path(build / "models")) for vid in ("fp32-eager", "onnx-fp32")]
    takes = run_session(entries, plan, 0, load_alone=True)
    for take in takes.values():
        assert take.ran and take.ready["load_ms"] > 0 and take.samples, take
