"""Device mode: build here, run on an ARM64 host (the emulated one of .ci/arm64-host), score here.

The emulated host needs root (chroot, mounts, binfmt_misc) and Debian's apt; without them
those tests are skipped with the reason. The first `.ci/arm64-host up` builds its root
filesystem (about 6 minutes on an idle machine) and the first device run installs numpy,
onnxruntime and ai-edge-litert there; both are kept in ARM64_HOST_DIR for later runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, requires_shared, run_invoke

from mobilenet.measure.session import Take
from mobilenet.registry import RUNTIMES, by_id
from mobilenet.remote import device
from mobilenet.remote.ssh import HostKeyError
from mobilenet.results import load_results

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


def test_device_install_prune_keeps_what_the_runners_load(tmp_path):
    """The prune that brings onnx + litert under 100 MB, run by sh in a site-packages laid
    out as the aarch64 wheels are: it must leave every file the runners load."""
    import subprocess
    kept = ["onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-aarch64-linux-gnu.so",
            "onnxruntime/capi/libonnxruntime_providers_shared.so", "onnxruntime/__init__.py",
            "ai_edge_litert/libpywrap_litert_common.so", "ai_edge_litert/_pywrap_litert_interpreter_wrapper.so",
            "ai_edge_litert/interpreter.py", "numpy/_core/_multiarray_umath.cpython-311-aarch64-linux-gnu.so",
            "numpy/linalg/_umath_linalg.cpython-311-aarch64-linux-gnu.so", "numpy/__init__.py",
            "numpy.libs/libscipy_openblas64_-7220728c.so", "numpy-2.4.6.dist-info/RECORD"]
    removed = ["onnxruntime/capi/libonnxruntime.so.1.32.0", "onnxruntime/transformers/x.py",
               "ai_edge_litert/libLiteRtWebGpuAccelerator.so", "ai_edge_litert/libLiteRt.so",
               "numpy/_core/tests/test_multiarray.py", "numpy/lib/tests/test_io.py", "numpy/random/mtrand.so",
               "numpy/__init__.pyi", "numpy/_core/_multiarray_tests.cpython-311-aarch64-linux-gnu.so",
               "numpy/f2py/__init__.py"]
    for name in kept + removed:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for name in ("onnxruntime", "litert"):
        subprocess.run(["sh", "-c", device.prune_command(name)], cwd=tmp_path, check=True)
    assert [n for n in kept if not (tmp_path / n).exists()] == []
    assert [n for n in removed if (tmp_path / n).exists()] == []


def _requirements(name: str) -> list[str]:
    lines = (device.REQUIREMENTS_DIR / f"{name}.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_every_requirements_list_exists_and_pins_its_runtime():
    for name in {runtime.requirements for runtime in RUNTIMES if runtime.requirements}:
        requirements = _requirements(name)
        assert any(r.startswith("numpy") for r in requirements), name
        assert any("==" in r for r in requirements), name
    for light in ("onnxruntime", "litert"):  # what a board installs by default: no torch
        assert not [r for r in _requirements(light) if r.startswith("torch")]


def test_all_threads_means_the_device_cores():
    assert device.device_threads("1,all", cpus=4) == [1, 4]
    assert device.device_threads("all", cpus=1) == [1]


def test_device_cpu_is_named_from_its_own_cpuinfo():
    pi5 = ("processor\t: 0\nFeatures\t: fp asimd asimddp lrcpc\nCPU implementer\t: 0x41\n"
           "CPU architecture: 8\nCPU part\t: 0xd0b\n")
    assert device.device_cpu_model(pi5, "aarch64") == "Cortex-A76"
    assert device.device_cpu_model(pi5.replace("0xd0b", "0xfff"), "aarch64") == "ARM core, implementer 0x41 part 0xfff"
    assert device.device_cpu_model("model name\t: AMD EPYC 7B13\n", "x86_64") == "AMD EPYC 7B13"
    assert device.device_cpu_model("", "aarch64") == "aarch64"
    from mobilenet.results import cpu_flags
    assert cpu_flags(pi5) == ["asimd", "asimddp"]


def test_cross_isa_agreement_and_max_dlogit():
    here = np.zeros((4, 1000), np.float32)
    here[np.arange(4), [1, 2, 3, 4]] = 5.0
    there = here.copy()
    there[3, 4], there[3, 9] = 1.0, 2.0  # one photo changes its top-1
    figures = device.cross_isa(there, here)
    assert figures == {"cross_isa_agreement_pct": 75.0, "cross_isa_max_abs_dlogit": 4.0}


def _take(variant: str, session: int, base_ms: float) -> Take:
    rounds = [[base_ms * (1 + 0.01 * ((r * 3 + c + session) % 4)) for c in range(5)] for r in range(3)]
    return Take(variant, ready={"size_bytes": 2_000_000, "load_ms": 10.0 + session, "first_inference_ms": 25.0,
                                "threads_effective": 2, "versions": {"onnxruntime": "1.20.0"},
                                "package": "onnxruntime", "cpu_affinity": [0, 1]},
                rounds=rounds, finish={"peak_rss_mb": 90.0 + session, "cpu_time_s": 1.2, "cpu_util_pct": 97.0})


def test_local_and_device_rows_get_the_same_timing_from_the_same_sessions(tmp_path):
    """The local bench (bench.step) and device mode make their rows with one function,
    rows.make_result: the same sessions give the same timing fields, and only what each
    passes in differs (the build check's verdict here, the device's answers and environment there)."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from mobilenet.bench import rows, step
    from mobilenet.files import write_json
    from mobilenet.settings import Settings

    settings = Settings(build_dir=tmp_path / "build")
    models = settings.models_dir
    models.mkdir(parents=True)
    labels = [3, 1, 4, 1, 5, 9]
    answers = np.zeros((len(labels), 1000), np.float32)
    answers[np.arange(len(labels)), labels] = 10.0
    variant, eager = by_id("onnx-int8"), by_id("fp32-eager")
    meta = {"status": "ok", "artifact_sha256": "ab" * 32, "check": {"status": "ok", "facts": "agreement 100.0%"}}
    for v in (variant, eager):  # the build check's logits: the reference, and this machine's answers
        np.save(models / f"{v.id}.check-logits.npy", answers)
        write_json(v.meta_path(models), meta)
    fetched = tmp_path / "fetched"
    (fetched / "logits").mkdir(parents=True)
    np.save(fetched / "logits" / f"{variant.id}@2t.logits.npy", answers + 0.25)  # the device's answers
    # At 2 threads the local bench's first session scores the photos too; here they match 1 thread's.
    step.answers_dir(settings, 2).mkdir(parents=True)
    np.save(step.answers_dir(settings, 2) / f"{variant.id}@2t.logits.npy", answers)
    sessions = [{eager.id: _take(eager.id, s, 20.0), variant.id: _take(variant.id, s, 5.0)} for s in range(3)]
    env_base = {"machine_id": "box (Test CPU)", "hostname": "box", "cpu_model": "Test CPU", "logical_cores": 8,
                "os": "Linux", "python": "3.11", "torch": "2.9.0", "torchvision": "0.24.0",
                "weights_source": "test", "weights_sha256": "cd" * 32, "weights_random": False,
                "image_set": "sample", "eval_photos": len(labels), "labelled": True, "data_sha256": "ef" * 32,
                "energy_source": "no RAPL"}
    device_env = {**env_base, "machine_id": "pi (Cortex-A76)", "torch": "not on the device",
                  "torchvision": "not on the device", "energy_source": "not measured on a device",
                  "emulated": True, "device_of": "box (Test CPU)", "device_install_mb": 80.0}

    data = SimpleNamespace(labels=labels, preprocess_ms=3.0, fingerprint=env_base["data_sha256"])
    local = step._result(variant, meta, sessions, 2, env_base, data, settings, native=None)
    [there] = device.make_results([variant], 2, [{vid: asdict(t) for vid, t in s.items()} for s in sessions],
                                  fetched, len(labels), settings, labels, device_env, not_run={})

    timing = rows.timing_fields([s[variant.id] for s in sessions], [s[eager.id] for s in sessions])
    assert timing["speedup_vs_eager"] > 1 and timing["sessions"] == 3
    assert {name: getattr(local, name) for name in timing} == timing
    assert {name: getattr(there, name) for name in timing} == timing
    assert (local.runtime_version, local.env.runtime_versions) == (there.runtime_version, there.env.runtime_versions)
    # What only each caller knows: the build check's verdict and this machine; the device's answers.
    assert (local.status, local.status_reason, local.preprocess_ms) == ("ok", "agreement 100.0%", 3.0)
    assert local.cross_isa_agreement_pct is None and not local.env.emulated and local.env.torch == "2.9.0"
    # Judged on the device's answers by the gate: all 6 agree, but 6 photos cannot show ok.
    assert there.status == "INCONCLUSIVE" and "6 photos cannot tell" in there.status_reason
    assert there.preprocess_ms is None and there.speedup_note is None
    assert there.cross_isa_agreement_pct == 100.0 and there.cross_isa_max_abs_dlogit == pytest.approx(0.25)
    assert there.env.emulated and there.env.torch == "not on the device" and there.env.device_install_mb == 80.0


def test_device_code_is_what_the_worker_imports(tmp_path):
    """The shipped files import nothing beyond numpy and the runtimes (no torch, no fabric)."""
    shipped = tmp_path / "code"
    for name in device.device_code_files():
        (shipped / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, shipped / name)
    probe = ("import sys, mobilenet.measure.session, mobilenet.measure.worker, mobilenet.measure.runners;"
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
    with pytest.raises(HostKeyError, match=f"unknown host key for {ALIAS} .*ssh-keyscan -p"):
        cxn.open()
    cxn.close()


@requires_shared
def test_remote_bench_device_mode_on_emulated_arm64(chain, tiny_env, arm64_host):
    """`invoke remote-bench` (device mode is the default) on the emulated host, then `invoke report`."""
    build_dir, _ = chain
    env = {**tiny_env, "MOBILENET_BURST": "1"}
    # 'all': the device's own cores (qemu-user runs threads in parallel on this machine's).
    run_invoke(["remote-bench", "--hosts", ALIAS, "--ssh-config", str(arm64_host), "--only", "onnx-*,litert-*",
                "--photos", str(PHOTOS), "--threads", "all", "--sessions", "2", "--min-runs", "2",
                "--min-seconds", "0.01", "--warmup", "1"], env)
    folder = build_dir / "remote" / ALIAS
    device_info = json.loads((folder / "device.json").read_text())
    assert device_info["device"]["machine"] == "aarch64" and "qemu" in device_info["device"]["emulator"]
    # numpy + onnxruntime + ai-edge-litert and no torch (torch alone would be over 3 GB): what a
    # board installs, without pip and pruned (#12: under 100 MB; 186 MB as PyPI ships it).
    installed = device_info["install_breakdown_mb"]
    assert {"onnxruntime", "ai_edge_litert", "numpy"} <= set(installed), installed
    assert not {"torch", "torchvision", "executorch", "pip", "setuptools"} & set(installed), installed
    assert 0 < device_info["install_mb"] * 1.048576 < 100, device_info["install_mb"]  # MiB -> MB

    from mobilenet.build import target
    from mobilenet.report.markdown import isa_flag
    rows = {r.variant: r for r in load_results(folder / "results")}
    assert set(rows) == {"fp32-eager", "onnx-fp32", "onnx-int8", "litert-fp32", "litert-int8"}
    # No torch on the device: the eager reference is a skipped row that says why.
    assert rows["fp32-eager"].status == "skipped" and "CUDA build" in rows["fp32-eager"].status_reason
    cores = device_info["device"]["cpus"]
    for vid in ("onnx-fp32", "onnx-int8", "litert-fp32", "litert-int8"):
        row = rows[vid]
        # The correctness gate, judged here on the device's answers (tiny calibration: INT8 may be DEGRADED;
        # 20 photos cannot show ok on interval bounds, so even an exact FP32 may be INCONCLUSIVE).
        expected = ("ok", "INCONCLUSIVE") if vid.endswith("fp32") else ("ok", "DEGRADED", "INCONCLUSIVE")
        assert row.status in expected, row.status_reason
        assert row.env.emulated and "aarch64" in row.env.os and "asimd" in row.env.cpu_flags
        assert row.p50_ms > 0 and row.speedup_vs_eager is None and "torch" in row.speedup_note
        assert row.env.eval_photos == PHOTOS and row.runtime_version and row.threads == cores
        # Scored here against this machine's eager FP32 and its answers from the same artifact.
        assert row.agreement_pct >= 80 and row.top1_pct is not None
        # onnx-int8 is built for ARM (reduce_range=False); an x86 controller without VNNI running it
        # saturates u8 x s8 pair sums, so its answers there may sit far from the device's.
        here_saturates = vid == "onnx-int8" and target.probe().saturates
        assert 0 <= row.cross_isa_max_abs_dlogit < (np.inf if here_saturates else 1.0), row
        logits = np.load(folder / "logits" / f"{vid}@{cores}t.logits.npy")
        assert logits.shape == (PHOTOS, 1000)
    for vid in ("onnx-fp32", "litert-fp32"):
        # ARM's FP32 kernels round differently from x86's: the same answers, logits a hair
        # apart. Exactly equal logits would mean both sides ran on one machine.
        assert rows[vid].cross_isa_agreement_pct == 100.0
        assert 0 < rows[vid].cross_isa_max_abs_dlogit < 1e-3
    assert rows["litert-int8"].cross_isa_agreement_pct >= 90.0
    assert rows["onnx-int8"].cross_isa_agreement_pct >= (80.0 if target.probe().saturates else 90.0)
    # onnx-int8's reduce_range comes out otherwise on ARM: built here for the device's CPU, into a
    # folder of its own; FP32 and litert-int8 (no ISA-dependent setting) are this machine's.
    arm = target.from_flags(device_info["target"]["arch"], device_info["target"]["isa_flags"])
    assert arm.family == "arm" and set(device_info["built_for_device"]) == {"onnx-int8"}
    own = build_dir / "targets" / arm.name / "models"
    assert (own / "onnx-int8.onnx").exists() and not (own / "onnx-fp32.onnx").exists()
    assert rows["onnx-int8"].build["options"]["reduce_range"] is False
    assert rows["onnx-int8"].built_for["arch"] == "aarch64" and rows["onnx-int8"].measured_on["arch"] == "aarch64"
    assert isa_flag(rows["onnx-int8"]) is None and rows["litert-int8"].built_for is None
    here = json.loads((build_dir / "models" / "onnx-int8.meta.json").read_text())["options"]["reduce_range"]
    assert here == target.onnxruntime(target.probe())["reduce_range"], "this machine's own keeps its choice"

    run_invoke(["report"], tiny_env)
    report = (build_dir / "report.md").read_text()
    start = report.index(f"## {rows['onnx-fp32'].env.machine_id}")
    section = report[start:report.index("\n## Notes", start)]
    assert "emulated: not a measurement" in section and "Same answers on this device" in section
    notes_at = report.index("\n## Notes", start)
    end = report.find("\n## ", notes_at + 1)
    notes = report[notes_at:end if end != -1 else None]
    assert "reduce\\_range=False — ARM's int8 kernels" in notes and "saturate unless" not in notes
    # The summary that opens the report makes no speed claim for an emulated machine.
    summary = report[report.index("## Summary"):report.index("\n## ", report.index("## Summary") + 1)]
    assert "no claim; the timings are emulated" in summary
    # Never charted, while this machine's own rows are.
    assert "![" not in section and "![" in report[:start]


def test_a_narrower_run_keeps_the_other_variants_rows(tmp_path):
    previous, new = tmp_path / "previous", tmp_path / "new"
    for folder, names in ((previous, ("onnx-int8", "litert-int8")), (new, ("onnx-int8",))):
        (folder / "results").mkdir(parents=True)
        (folder / "logits").mkdir()
        for name in names:
            (folder / "results" / f"{name}@2t.json").write_text(f"{folder.name} {name}")
            (folder / "logits" / f"{name}@2t.logits.npy").write_text(f"{folder.name} {name}")
    device._keep_earlier_variants(previous, new, measured={"onnx-int8", "fp32-eager"})
    assert (new / "results" / "onnx-int8@2t.json").read_text() == "new onnx-int8"  # this run's row wins
    assert (new / "results" / "litert-int8@2t.json").read_text() == "previous litert-int8"
    assert (new / "logits" / "litert-int8@2t.logits.npy").exists()
    device._keep_earlier_variants(tmp_path / "none", new, measured=set())  # a first run: nothing to keep


# ---- INT8 artifacts built for the device's CPU

def _emulated_arm64():
    from test_target import emulated_host_cpuinfo

    from mobilenet.build import target
    return target.from_cpuinfo("aarch64", emulated_host_cpuinfo(), source="arm64-emu's /proc/cpuinfo")


def _metas_built_for(models: Path, built_for) -> None:
    """Every variant's meta as a build on `built_for` records it (its ISA-dependent choices)."""
    from mobilenet.build import target
    from mobilenet.files import write_json
    from mobilenet.registry import VARIANTS
    models.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS:
        choices = target.choices_for(variant, built_for)
        write_json(variant.meta_path(models), {"variant": variant.id, "status": "ok", "options": {
            **({target.RECORD_KEY: choices.recorded()} if choices else {})}})


def test_a_device_whose_cpu_takes_other_int8_settings_gets_its_own_builds(tmp_path):
    from test_target import NO_VNNI, SKYLAKE_SP, VNNI

    from mobilenet.registry import VARIANTS
    models = tmp_path / "models"
    _metas_built_for(models, NO_VNNI)
    own = device.own_builds(list(VARIANTS), models, _emulated_arm64())
    # FP32, LiteRT's and ExecuTorch's INT8 and torch.ao's (fbgemm's default qconfig, qnnpack's
    # reduce_range=False) come out the same on ARM: this machine's artifacts are shipped.
    assert own == {"onnx-int8": {"reduce_range": False, "activation_type": "QUInt8", "weight_type": "QInt8"},
                   "openvino-int8": {"overflow_fix": "DISABLE"}, "aoti-int8": {"reduce_range": False}}
    assert set(device.own_builds(list(VARIANTS), models, VNNI)) == {"onnx-int8", "openvino-int8", "aoti-int8"}
    assert device.own_builds(list(VARIANTS), models, SKYLAKE_SP) == {}, "AVX-512 without VNNI saturates too"
    # What the artifact here recorded decides, not this machine's rules: built for VNNI, shipped to ARM as is.
    _metas_built_for(models, VNNI)
    assert device.own_builds(list(VARIANTS), models, _emulated_arm64()) == {}


def test_a_build_for_the_device_copies_the_fp32_reference_and_builds_for_its_cpu(tmp_path, monkeypatch):
    """build_for_device through the real scheduler, the step itself replaced: what it reads and
    where it writes, and that the builders' build_target() is the device's CPU in this process."""
    from mobilenet.build import step, target
    from mobilenet.files import write_json
    from mobilenet.settings import Settings
    monkeypatch.delenv(target.TARGET_ENV, raising=False)
    settings = Settings(build_dir=tmp_path / "build", build_jobs=1)
    reference = by_id("fp32-eager")
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / reference.artifact).write_bytes(b"weights")
    np.save(settings.models_dir / f"{reference.id}.check-logits.npy", np.zeros((2, 1000), np.float32))
    write_json(reference.meta_path(settings.models_dir), {"variant": reference.id, "status": "ok"})
    write_json(settings.stamps_dir / "prepare-data.json", {"settings": {}, "inputs": {}})
    seen = {}

    def run_step(name, there, force=False, **options):
        seen[name] = {"target": target.build_target(), "models": there.models_dir, "only": there.only,
                      "child_env": there.as_env()[target.TARGET_ENV],
                      "reference": (there.models_dir / reference.artifact).read_bytes()}
        return [{"variant": "onnx-int8", "status": "ok"}]

    monkeypatch.setattr(step, "run_step", run_step)
    arm = _emulated_arm64()
    there, failed = device.build_for_device(settings, arm, [by_id("onnx-int8"), by_id("openvino-int8")])
    folder = settings.build_dir / "targets" / "aarch64-asimd-asimddp"
    assert failed == {} and there.models_dir == folder / "models" and set(seen) == {"convert-onnx", "convert-openvino"}
    for built in seen.values():
        assert built["target"].same_isa(arm) and built["models"] == folder / "models"
        assert built["only"] == "onnx-int8,openvino-int8" and built["reference"] == b"weights"
        assert target.load_profile(built["child_env"]).same_isa(arm), "a child process reads the same CPU"
    assert target.build_target().source == "/proc/cpuinfo", "this machine again after the build"
    assert (folder / "stamps" / "prepare-data.json").exists(), "the photos are this machine's, not redone"
    assert not (folder / "models" / "onnx-fp32.onnx").exists()
    # A reference rebuilt here reaches the next device build; an unchanged one is left alone.
    (settings.models_dir / reference.artifact).write_bytes(b"weights, rebuilt")
    device.build_for_device(settings, arm, [by_id("onnx-int8")])
    assert seen["convert-onnx"]["reference"] == b"weights, rebuilt"


def test_a_device_row_built_for_it_is_scored_against_that_artifacts_answers_here(tmp_path):
    """make_results with an artifact shipped from the device's own folder: its meta, its built_for
    and its cross-ISA answers are that folder's, and the device's CPU is recorded as measured_on."""
    from dataclasses import asdict

    from test_target import NO_VNNI

    from mobilenet.build import target
    from mobilenet.files import write_json
    from mobilenet.settings import Settings
    settings = Settings(build_dir=tmp_path / "build")
    arm = _emulated_arm64()
    own = tmp_path / "build" / "targets" / arm.name / "models"
    labels = [3, 1, 4, 1]
    answers = np.zeros((len(labels), 1000), np.float32)
    answers[np.arange(len(labels)), labels] = 10.0
    variant, eager = by_id("onnx-int8"), by_id("fp32-eager")
    for models, made_for, logits in ((settings.models_dir, NO_VNNI, answers), (own, arm, answers + 0.5)):
        models.mkdir(parents=True)
        write_json(variant.meta_path(models), {"status": "ok", "artifact_sha256": models.name, "options": {
            target.RECORD_KEY: target.onnxruntime(made_for).recorded()}})
        np.save(models / f"{variant.id}.check-logits.npy", logits)
    np.save(settings.models_dir / f"{eager.id}.check-logits.npy", answers)
    fetched = tmp_path / "fetched"
    (fetched / "logits").mkdir(parents=True)
    np.save(fetched / "logits" / f"{variant.id}@1t.logits.npy", answers + 0.5)
    sessions = [{variant.id: asdict(_take(variant.id, s, 5.0))} for s in range(2)]
    env = {"machine_id": "pi (Cortex-A76)", "hostname": "pi", "cpu_model": "Cortex-A76", "logical_cores": 2,
           "os": "Linux (aarch64)", "python": "3.11", "torch": "not on the device", "torchvision": "-",
           "weights_source": "test", "weights_sha256": "cd" * 32, "weights_random": False, "image_set": "s",
           "eval_photos": len(labels), "labelled": True, "energy_source": "-", "device_of": "box (Test CPU)"}
    [row] = device.make_results([variant], 1, sessions, fetched, len(labels), settings, labels, env, {},
                                {variant.id: own}, arm.record())
    assert row.build["options"][target.RECORD_KEY]["target"]["arch"] == "aarch64"
    assert row.built_for["isa_flags"] == ["asimd", "asimddp"] and row.measured_on == arm.record()
    assert row.cross_isa_max_abs_dlogit == 0.0, "against the device's artifact's answers here, not this machine's"
    from mobilenet.report.markdown import isa_flag
    assert isa_flag(row) is None
    [reused] = device.make_results([variant], 1, sessions, fetched, len(labels), settings, labels, env, {},
                                   None, arm.record())
    assert reused.cross_isa_max_abs_dlogit == pytest.approx(0.5)
    assert isa_flag(reused).startswith("built for x86_64 avx2, measured on aarch64 asimd asimddp; chosen for")
