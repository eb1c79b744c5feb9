"""Nothing stale, failures loud: the invoke chain on a copy of the checkout, narrowed to the
export step's variants so that each rerun is cheap, then broken on purpose in copies of it."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, requires_shared

pytestmark = requires_shared


def invoke(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)


def copy_checkout(target: Path) -> Path:
    for name in ("mobilenet", "calib_images/manifest.csv", "tasks.py", "invoke.yaml", "pyproject.toml"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def mini(tmp_path_factory, tiny_env):
    """A checkout copy and a build of eager + TorchScript through bench."""
    root = tmp_path_factory.mktemp("mini")
    repo = copy_checkout(root / "repo")
    env = {**tiny_env, "MOBILENET_BUILD_DIR": str(root / "build"), "MOBILENET_IMAGES_ROOT": str(root / "images"),
           "MOBILENET_MANIFEST": str(repo / "calib_images" / "manifest.csv"), "MOBILENET_ONLY": "fp32-torchscript",
           "MOBILENET_SESSIONS": "2", "MOBILENET_QUIET": ""}
    done = invoke(repo, env, "bench")
    assert done.returncode == 0, done.stderr[-3000:]
    return root, repo, env


@pytest.fixture
def copy(mini, tmp_path):
    """A private copy of the mini checkout and build (photos stay shared: they are inputs)."""
    root, repo, env = mini
    new_repo = copy_checkout(tmp_path / "repo")
    shutil.copy2(repo / "calib_images" / "manifest.csv", new_repo / "calib_images" / "manifest.csv")
    shutil.copytree(root / "build", tmp_path / "build")
    env = {**env, "MOBILENET_BUILD_DIR": str(tmp_path / "build"),
           "MOBILENET_MANIFEST": str(new_repo / "calib_images" / "manifest.csv")}
    return tmp_path / "build", new_repo, env


def result(build: Path, variant: str = "fp32-torchscript") -> dict:
    return json.loads((build / "results" / f"{variant}@1t.json").read_text())


def test_an_untouched_copy_is_up_to_date(copy):
    build, repo, env = copy
    done = invoke(repo, env, "bench")
    assert done.returncode == 0, done.stderr
    assert "export: up to date" in done.stderr and "bench: up to date" in done.stderr


def test_changed_labels_make_results_stale(copy):
    build, repo, env = copy
    before = result(build)
    manifest = repo / "calib_images" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    for row in rows:  # every evaluation photo relabelled: top-1 must collapse
        if row["split"] == "eval":
            row["label"] = str((int(row["label"]) + 1) % 1000)
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = invoke(repo, env, "bench")
    assert done.returncode == 0, done.stderr
    assert "bench: up to date" not in done.stderr
    after = result(build)
    assert after["env"]["data_sha256"] != before["env"]["data_sha256"]
    assert after["top1_pct"] < before["top1_pct"]  # scored against the new labels


def test_an_edited_preprocessing_module_makes_results_stale(copy):
    build, repo, env = copy
    before = result(build)
    with (repo / "mobilenet" / "data" / "preprocess.py").open("a") as fh:
        fh.write("\n# an edit\n")
    done = invoke(repo, env, "bench")
    assert done.returncode == 0, done.stderr
    assert "export: building" in done.stderr and "bench: up to date" not in done.stderr
    assert result(build)["session_p50_ms"] != before["session_p50_ms"]  # measured again


def test_an_artifact_without_its_meta_is_rebuilt(copy):
    """A step killed after moving a new artifact into place, before writing its meta."""
    build, repo, env = copy
    artifact = build / "models" / "fp32-torchscript.pt"
    artifact.write_bytes(artifact.read_bytes()[:1000])  # a half-written file under the final name
    done = invoke(repo, env, "bench")
    assert done.returncode == 0, done.stderr
    assert "fp32-torchscript.pt is not the file its build recorded" in done.stderr
    assert artifact.stat().st_size > 1_000_000 and result(build)["status"] == "ok"


def test_a_second_concurrent_run_is_refused(copy):
    build, repo, env = copy
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mobilenet.files import hold_build_lock; "
         "hold_build_lock(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(build)],
        cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = invoke(repo, env, "bench")
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1
    assert f"another run (pid {holder.pid}) is using {build}" in done.stderr
    assert "Traceback" not in done.stderr


def test_wrong_outputs_are_failed_at_build_and_the_report_is_still_written(copy):
    build, repo, env = copy
    exports = repo / "mobilenet" / "builders" / "torch_export.py"
    # A converter bug: the traced model's logits come out 1 % too large.
    exports.write_text(exports.read_text().replace(
        "traced = torch.jit.trace(ctx.fp32_model(), ctx.example())\n    torch.jit.freeze",
        "model = ctx.fp32_model()\n        model.classifier[1].weight.mul_(1.01)\n"
        "        traced = torch.jit.trace(model, ctx.example())\n    torch.jit.freeze", 1))
    done = invoke(repo, env, "report")
    assert done.returncode == 1, done.stderr
    assert "FAILED fp32-torchscript" in done.stderr and "Traceback" not in done.stderr
    meta = json.loads((build / "models" / "fp32-torchscript.meta.json").read_text())
    assert meta["status"] == "FAILED" and "max |Δlogit|" in meta["reason"]
    assert result(build)["status"] == "FAILED" and result(build)["p50_ms"] is None
    row = next(line for line in (build / "report.md").read_text().splitlines()
               if line.startswith("| `fp32-torchscript`"))
    assert "**FAILED**" in row
    assert result(build, "fp32-eager")["status"] == "ok"  # the rest of the run went on


def test_a_check_that_crashes_fails_its_variant_and_the_next_variant_is_still_checked(copy):
    """Checks run while the step builds its next variant: one check's crash must not take the
    variant built after it down, nor leave its scratch folder behind."""
    build, repo, env = copy
    runner = repo / "mobilenet" / "measure" / "runners" / "torchscript.py"
    runner.write_text(runner.read_text().replace(
        "        self.module = torch.jit.load(", "        raise OSError('simulated crash in the runner')\n"
        "        self.module = torch.jit.load(", 1))
    env = {**env, "MOBILENET_ONLY": "fp32-torchscript,fp32-mobile"}
    done = invoke(repo, env, "export")
    assert done.returncode == 1, done.stderr
    assert "simulated crash in the runner" in done.stderr and "Traceback" not in done.stderr
    meta = json.loads((build / "models" / "fp32-torchscript.meta.json").read_text())
    assert meta["status"] == "FAILED" and "simulated crash" in meta["reason"]
    assert not (build / "models" / "fp32-torchscript.pt").exists()
    mobile = json.loads((build / "models" / "fp32-mobile.meta.json").read_text())
    assert mobile["status"] == "ok" and mobile["check"]["agreement_pct"] == 100.0
    assert not list((build / "models").glob(".*")), "a scratch folder was left behind"
