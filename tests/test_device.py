"""Device mode: build here, run on an ARM64 host (the emulated one of .ci/arm64-host), score here.

The emulated host needs root (chroot, mounts, binfmt_misc) and Debian's apt; without them
those tests are skipped with the reason. The first `.ci/arm64-host up` builds its root
filesystem (about 6 minutes on an idle machine) and the first device run installs numpy,
onnxruntime and ai-edge-litert there; both are kept in ARM64_HOST_DIR for later runs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paramiko
import pytest

from conftest import REPO, requires_shared
from mobilenet import device
from mobilenet.settings import Settings
from mobilenet.variants import by_id

ARM64_HOST = REPO / ".ci" / "arm64-host"
HOST_DIR = Path(os.environ.get("ARM64_HOST_DIR", "/var/cache/mobilenet-arm64"))
SSH_CONFIG = HOST_DIR / "ssh" / "config"
ALIAS = "arm64-emu"
PHOTOS = 20


# ---- planning, no device needed

def test_light_runtimes_install_and_torch_is_skipped_with_its_size():
    variants = [by_id(v) for v in ("onnx-int8", "litert-fp32", "fp32-eager", "int8-static-qnnpack",
                                   "executorch-int8")]
    lists, skipped = device.plan_installs(variants, install=set(), own_venv=False)
    assert lists == {"onnxruntime", "litert"}
    assert set(skipped) == {"fp32-eager", "int8-static-qnnpack", "executorch-int8"}
    assert "CUDA build, about 3.3 GB" in skipped["fp32-eager"] and "--device-install torch" in skipped["fp32-eager"]
    # Asked for, torch is installed; with the user's own venv nothing is installed or skipped.
    assert device.plan_installs(variants, install={"torch"}, own_venv=False)[0] == {"onnxruntime", "litert", "torch"}
    assert device.plan_installs(variants, install=set(), own_venv=True) == (set(), {})


def _requirements(name: str) -> list[str]:
    lines = (device.REQUIREMENTS_DIR / f"{name}.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_every_requirements_list_exists_and_pins_its_runtime():
    for name in set(device.REQUIREMENTS_OF_RUNTIME.values()):
        requirements = _requirements(name)
        assert any(r.startswith("numpy") for r in requirements), name
        assert any("==" in r for r in requirements), name
    for light in ("onnxruntime", "litert"):  # what a board installs by default: no torch
        assert not [r for r in _requirements(light) if r.startswith("torch")]


def test_all_threads_means_the_device_cores():
    assert device.device_threads("1,all", cpus=4) == [1, 4]
    assert device.device_threads("all", cpus=1) == [1]


def test_cross_isa_agreement_and_max_dlogit():
    here = np.zeros((4, 1000), np.float32)
    here[np.arange(4), [1, 2, 3, 4]] = 5.0
    there = here.copy()
    there[3, 4], there[3, 9] = 1.0, 2.0  # one photo changes its top-1
    figures = device.cross_isa(there, here)
    assert figures == {"cross_isa_agreement_pct": 75.0, "cross_isa_max_abs_dlogit": 4.0}


def test_device_code_is_what_the_worker_imports(tmp_path):
    """The shipped files import nothing beyond numpy and the runtimes (no torch, no fabric)."""
    shipped = tmp_path / "code"
    for name in device.device_code_files():
        (shipped / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, shipped / name)
    probe = ("import sys, mobilenet.measure, mobilenet.worker, mobilenet.runners;"
             "heavy = {'torch', 'fabric', 'invoke', 'mobilenet.settings'} & set(sys.modules);"
             "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", probe], cwd=shipped, check=True, env={"PATH": os.environ["PATH"]})


# ---- the emulated ARM64 host

def _cannot_emulate() -> str | None:
    if os.geteuid() != 0:
        return "the emulated ARM64 host needs root (chroot, mounts, binfmt_misc)"
    if shutil.which("apt-get") is None:
        return "the emulated ARM64 host installs qemu-user-static and mmdebstrap with Debian's apt-get"
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        mounted = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            return f"binfmt_misc cannot be mounted here ({mounted.stderr.strip()}): no qemu-user emulation"
    return None


@pytest.fixture(scope="module")
def arm64_host():
    """`.ci/arm64-host up` (cached rootfs); brought down afterwards only if this test brought it up."""
    reason = _cannot_emulate()
    if reason:
        pytest.skip(reason)
    was_up = subprocess.run([ARM64_HOST, "status"], capture_output=True).returncode == 0
    up = subprocess.run([ARM64_HOST, "up"], capture_output=True, text=True, timeout=2400)
    print(up.stdout, up.stderr)
    if up.returncode != 0:
        pytest.fail(f"{ARM64_HOST} up exited {up.returncode}:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    yield SSH_CONFIG
    if not was_up:
        subprocess.run([ARM64_HOST, "down"], check=True, timeout=300)


def test_emulated_host_refuses_an_unknown_host_key(arm64_host, tmp_path):
    (tmp_path / "known_hosts").write_text("")
    config = tmp_path / "config"
    config.write_text(arm64_host.read_text().replace(str(HOST_DIR / "ssh" / "known_hosts"),
                                                     str(tmp_path / "known_hosts")))
    cxn = device.connect(ALIAS, str(config))
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        cxn.open()
    cxn.close()


@requires_shared
def test_device_mode_on_emulated_arm64(chain, arm64_host):
    build_dir, _ = chain
    settings = Settings(build_dir=build_dir).with_options(
        only="onnx-*,litert-*", min_runs=2, min_seconds=0.01, warmup=1, burst=1, sessions=1)
    # 'all': the device's own cores (qemu-user runs threads in parallel on this machine's).
    outcome = device.run_device(ALIAS, settings, threads="all", ssh_config=str(arm64_host), eval_count=PHOTOS)
    print(outcome)
    assert outcome.ok, outcome.error
    assert outcome.device["machine"] == "aarch64" and "qemu" in outcome.device["emulator"]
    assert outcome.install_mb > 0

    rows = {row["variant"]: row for row in outcome.rows}
    assert set(rows) == {"fp32-eager", "onnx-fp32", "onnx-int8", "litert-fp32", "litert-int8"}
    # No torch on the device: the eager reference is a skipped row that says why.
    assert rows["fp32-eager"]["status"] == "skipped" and "CUDA build" in rows["fp32-eager"]["status_reason"]
    for vid in ("onnx-fp32", "onnx-int8", "litert-fp32", "litert-int8"):
        row = rows[vid]
        # The correctness gate, judged here on the device's answers (tiny calibration: INT8 may be DEGRADED).
        assert row["status"] in (("ok",) if vid.endswith("fp32") else ("ok", "DEGRADED")), row
        assert row["timing_note"] == "emulated: not a measurement" and row["p50_ms"] > 0
        assert row["photos"] == PHOTOS and row["runtime_versions"]
        # Scored here against this machine's own eager FP32 and against the same artifact run here.
        assert row["agreement_pct"] >= 80 and row["top1_pct"] is not None
        assert 0 <= row["cross_isa_max_abs_dlogit"] < 1.0, row
        assert row["threads"] == outcome.device["cpus"]
        logits = np.load(outcome.folder / "logits" / f"{vid}@{row['threads']}t.logits.npy")
        assert logits.shape == (PHOTOS, 1000)
    for vid in ("onnx-fp32", "litert-fp32"):
        # ARM's FP32 kernels round differently from x86's: the same answers, logits a hair
        # apart. Exactly equal logits would mean both sides ran on one machine.
        assert rows[vid]["cross_isa_agreement_pct"] == 100.0
        assert 0 < rows[vid]["cross_isa_max_abs_dlogit"] < 1e-3
    for vid in ("onnx-int8", "litert-int8"):
        assert rows[vid]["cross_isa_agreement_pct"] >= 90.0
    assert (outcome.folder / "device-results.json").is_file()
