"""The invoke chain, end to end, with tiny settings on the shared weights and photos."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, WEIGHTS, requires_shared
from mobilenet.variants import VARIANTS

pytestmark = requires_shared


def run_invoke(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1500)
    if check and result.returncode != 0:
        pytest.fail(f"invoke {' '.join(args)} exited {result.returncode}\n"
                    f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def image_server_url():
    # A module-scoped server: the chain's download step goes through real HTTP.
    import http.server
    import threading

    from conftest import SAMPLE_IMAGES

    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(SAMPLE_IMAGES), **k)  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory, image_server_url) -> dict:
    root = tmp_path_factory.mktemp("chain")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILENET_")}
    env.update({
        "MOBILENET_BUILD_DIR": str(root / "build"), "MOBILENET_IMAGES_ROOT": str(root / "images"),
        "MOBILENET_MANIFEST": str(REPO / "calib_images" / "manifest.csv"),
        "MOBILENET_WEIGHTS": str(WEIGHTS), "MOBILENET_MIRROR": image_server_url,
        "MOBILENET_CALIB_COUNT": "8", "MOBILENET_EVAL_COUNT": "40",
        "MOBILENET_MIN_RUNS": "10", "MOBILENET_MIN_SECONDS": "0.2", "MOBILENET_WARMUP": "2",
        "MOBILENET_BURST": "5", "MOBILENET_QUIET": "1",
    })
    return env


@pytest.fixture(scope="module")
def chain(tiny_env) -> tuple[Path, subprocess.CompletedProcess]:
    """`invoke report` on an empty build folder runs the whole chain."""
    return Path(tiny_env["MOBILENET_BUILD_DIR"]), run_invoke(["report"], tiny_env)


def test_every_variant_passes_the_gate(chain):
    build, _ = chain
    results = {p.name: json.loads(p.read_text()) for p in (build / "results").glob("*.json")}
    assert sorted(results) == sorted(f"{v.id}@1t.json" for v in VARIANTS)
    for name, result in results.items():
        assert result["status"] in ("ok", "DEGRADED"), f"{name}: {result['status']} {result['status_reason']}"
        assert result["p50_ms"] > 0 and result["size_mb"] > 0 and result["runs"] >= 10
        assert result["env"]["threads_effective"] == 1, name
        assert result["top1_pct"] is not None and result["agreement_pct"] >= 80
    eager = results["fp32-eager@1t.json"]
    assert eager["agreement_pct"] == 100 and eager["max_abs_dlogit"] == 0
    assert eager["env"]["weights_sha256"] == "b25476ee0cc47985ada7a7e8aa5deb05e9a3b3751236837a6c6fb8536feae92c"
    for fp32 in ("fp32-torchscript", "fp32-mobile", "onnx-fp32", "litert-fp32", "executorch-fp32"):
        assert results[f"{fp32}@1t.json"]["max_abs_dlogit"] <= 1e-3, fp32


def test_report_has_a_row_with_numbers_for_each_variant(chain):
    build, _ = chain
    report = (build / "report.md").read_text()
    for variant in VARIANTS:
        row = next(line for line in report.splitlines() if line.startswith(f"| `{variant.id}`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        size, p50 = float(cells[2]), float(cells[4])
        assert size > 0 and p50 > 0, row
    assert "deprecated" in report and "torch.export" in report and "ExecuTorch" in report


def test_console_is_free_of_deprecation_noise(chain):
    _, result = chain
    assert "deprecated" not in (result.stdout + result.stderr).lower()


def test_rerun_skips_up_to_date_steps(chain, tiny_env):
    build, _ = chain
    env = {**tiny_env, "MOBILENET_QUIET": ""}
    before = {p: p.stat().st_mtime for p in (build / "models").iterdir()}
    rerun = run_invoke(["report"], env)
    for step in ("export", "quantize-dynamic", "quantize-static", "convert-onnx", "convert-litert",
                 "convert-executorch", "bench"):
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
