"""Device mode: build here, run there.

This machine (the controller) builds and checks every artifact as for a local bench. A
device gets only what running needs: the artifacts, the first N preprocessed evaluation
photos, the worker with its runners and `mobilenet.measure.session`, and a virtual environment with
the runtimes the chosen variants need, from the per-runtime lists in
mobilenet/measure/requirements/ (ONNX Runtime and LiteRT: numpy and the runtime, no torch).
The device times the variants and scores the photos with `python -m mobilenet.measure.session`; the
controller fetches the raw results (timing samples, logits of every photo) and scores those
logits against its own: the same artifact's answers here (the build check's logits: cross-ISA
agreement) and its eager FP32 reference. The results are ordinary result files in
build/remote/<host>/results, where `invoke report` finds them.

An INT8 artifact whose ISA-dependent settings (mobilenet/build/target.py) come out otherwise
for the device's probed CPU than for this machine's is built again here, for the device, into
build/targets/<arch>-<flags>/models/, and that one is shipped. The FP32 artifacts, and INT8 ones
whose settings hold on both, are this machine's own.

A device is not trusted with this machine: what comes back is fetched file by file over
SFTP, by names chosen here, within size limits.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import shlex
import shutil
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import fabric
import numpy as np

from mobilenet import accuracy, logs
from mobilenet.bench.rows import accuracy_fields, make_result
from mobilenet.build import target
from mobilenet.build.artifacts import artifact_problem, kept_files, reference_logits_path
from mobilenet.files import read_json, sha256_cached, write_json
from mobilenet.measure.session import Take
from mobilenet.registry import REFERENCE_ID, RUNTIMES, STEPS, Variant, by_id, runtime_of, select
from mobilenet.remote import ssh
from mobilenet.remote.ssh import Access, parse_hosts
from mobilenet.results import FAILED, OK, SKIPPED, Result, write_result
from mobilenet.settings import REPO_ROOT, Settings, parse_threads

log = logging.getLogger("mobilenet.remote.device")

# Each runtime's record (mobilenet.registry) names its list here (Runtime.requirements) and,
# for lists a board cannot take by size, why they are installed only when asked (only_when_asked).
REQUIREMENTS_DIR = Path(__file__).resolve().parents[1] / "measure" / "requirements"
# What the device runs: the measure package (worker, runners, session coordinator), numpy only.
DEVICE_CODE = ("mobilenet/__init__.py", "mobilenet/logs.py")
DEVICE_CODE_GLOBS = ("mobilenet/measure/*.py", "mobilenet/measure/runners/*.py", "mobilenet/measure/requirements/*.txt")

# Deleted from every device install: no runner loads them (the worker uses no numpy.random).
PRUNE_ALWAYS = ("numpy/random", "numpy/distutils", "numpy/f2py", "numpy/_core/include", "numpy/_pyinstaller",
                "numpy/_core/_*tests*.so")

DEFAULT_REMOTE_DIR = "mobilenet-device/{host}"
DEFAULT_REMOTE_PYTHON = "python3"
EMULATED_NOTE = "emulated: not a measurement"

# Limits on what a device sends back: logits are N x 1000 float32, the rest is JSON and logs.
MAX_FETCH_FILES = 10_000
MAX_FETCH_BYTES = 256 << 20

# Run on the device before anything is shipped: what it is, and whether qemu-user runs it.
# qemu fakes /proc/self/exe for the process it runs, not for another one: a child's exe, as
# the kernel sees it, is the emulator (the child is emulated before and after its exec).
PROBE = r"""
import json, os, platform, subprocess
child = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
try:
    exe = os.readlink("/proc/%d/exe" % child.pid)
except OSError:
    exe = ""
child.stdin.close()
child.wait()
def read(path):
    try:
        with open(path) as fh:
            return fh.read(1 << 16)
    except OSError:
        return ""
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "cpus": os.cpu_count(), "hostname": platform.node(),
                  "os": "%s %s (%s)" % (platform.system(), platform.release(), platform.machine()),
                  "cpuinfo": read("/proc/cpuinfo"),
                  "governor": read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip() or None,
                  "emulator": exe if "qemu" in os.path.basename(exe) else None}))
"""


class DeviceError(RuntimeError):
    pass


@dataclass
class DeviceOutcome:
    host: str
    ok: bool
    error: str | None = None  # "<stage>: <reason>"
    device: dict = field(default_factory=dict)  # the probe: machine, python, cpus, emulator
    install_mb: float | None = None  # the device venv on disk (MiB), after the run
    install_breakdown: dict = field(default_factory=dict)  # MB of its largest packages
    results: list[Result] = field(default_factory=list)
    folder: Path | None = None  # build/remote/<host>
    seconds: float = 0.0
    built_for_device: dict = field(default_factory=dict)  # {variant id: models folder it was built into for the device}


# ---- planning (local)

def requirements_list(variant: Variant) -> str | None:
    return runtime_of(variant).requirements


def plan_installs(variants: list[Variant], install: set[str], own_venv: bool) -> tuple[set[str], dict[str, str]]:
    """(lists to install on the device, {variant id: why it is skipped before shipping}).

    With the user's own venv (own_venv) nothing is installed and nothing skipped here: a
    runtime missing there is reported by the worker itself.
    """
    lists, skipped = set(), {}
    if own_venv:
        return lists, skipped
    for variant in variants:
        runtime = runtime_of(variant)
        name = runtime.requirements
        if name is None:
            skipped[variant.id] = (f"no device requirements list for runtime {variant.runtime!r} "
                                   f"(add {REQUIREMENTS_DIR.name}/<name>.txt and name it in the runtime's "
                                   f"record in mobilenet/registry.py)")
        elif runtime.only_when_asked and name not in install:
            skipped[variant.id] = (f"{runtime.only_when_asked}; install it on the device with "
                                   f"--device-install {name}, or use a --remote-venv that has it")
        else:
            lists.add(name)
    return lists, skipped


def build_problem(variant: Variant, models_dir: Path, checked_elsewhere: bool = False) -> tuple[str, str] | None:
    """(status, reason) when the controller has no trustworthy artifact to ship.

    checked_elsewhere: the artifact was built for the device's CPU, so its check here ran it on
    a CPU it was not made for. A failed check (its files kept) then does not stop it: the
    device's own answers are gated when they come back. A build error still does.
    """
    meta_path = variant.meta_path(models_dir)
    if meta_path.exists():
        meta = read_json(meta_path)
        checked = checked_elsewhere and meta.get("status") == FAILED and "files_sha256" in meta
        if meta.get("status") in (SKIPPED, FAILED) and not checked:
            return meta["status"], f"at build: {meta.get('reason', '')}"
    problem = artifact_problem(variant, models_dir)
    return (SKIPPED, f"not shipped: {problem} (run `invoke bench --only {variant.id}` first)") if problem else None


# ---- building for the device's CPU (local)

def _built_values(variant: Variant, models_dir: Path) -> dict | None:
    """The ISA-dependent values this machine's artifact was built with: what its meta recorded,
    else (no record) what the rules give for this build's target."""
    meta_path = variant.meta_path(models_dir)
    options = read_json(meta_path).get("options") if meta_path.exists() else None
    recorded = target.recorded_values(options.get(target.RECORD_KEY) if isinstance(options, dict) else None)
    if recorded is not None:
        return recorded
    here = target.choices_for(variant)
    return here.fingerprint()["values"] if here else None


def own_builds(variants: list[Variant], models_dir: Path, device_target: target.Target) -> dict[str, dict]:
    """{variant id: the values chosen for the device} for the variants whose ISA-dependent
    settings come out otherwise for the device's CPU than those their artifact here was built with.

    The values are compared, not the whole Int8Choices.fingerprint(): that holds the CPU's flags
    too, which differ between any x86 and any ARM, while the artifact depends only on the values
    (qnnpack's reduce_range=False, for one, holds on both)."""
    wanted = {}
    for variant in variants:
        there = target.choices_for(variant, device_target)
        if there is None:
            continue
        values = there.fingerprint()["values"]
        if values != _built_values(variant, models_dir):
            wanted[variant.id] = values
    return wanted


# Builds for devices run one at a time: two hosts of one CPU kind would build into one folder,
# and the builds share this machine's cores anyway.
_TARGET_BUILDS = threading.Lock()


def _copy_if_changed(source: Path, destination: Path) -> None:
    """destination becomes a copy of source unless it already holds the same bytes (a hard link
    where the file system allows: the reference is 14 MB), swapped in whole."""
    if destination.exists() and sha256_cached(destination) == sha256_cached(source):
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, destination)


def target_settings(settings: Settings, device_target: target.Target, variant_ids) -> Settings:
    """The settings of a build for the device's CPU: its profile written to
    build/targets/<name>/target.json (what the build's child processes read back), the variants
    to build, and the rest as this machine's (photos, weights)."""
    folder = settings.build_dir / "targets" / device_target.name
    profile = target.write_profile(device_target, folder / target.PROFILE_FILE)
    return replace(settings, target=profile, only=",".join(variant_ids))


def build_for_device(settings: Settings, device_target: target.Target, variants: list[Variant]) -> tuple[
        Settings, dict[str, tuple[str, str]]]:
    """Build `variants` here for the device's CPU into build/targets/<name>/models; returns the
    build's settings and {variant id: (FAILED, reason)} for those whose step stopped.

    Only INT8 steps run: the FP32 reference (export) is this machine's, copied in (it is the
    same on every CPU, and every INT8 artifact is checked against it), and so is the photo
    record, so the build reads the very photos this machine's build did."""
    from mobilenet.build.model import WeightsError
    from mobilenet.build.schedule import StepError, build_steps
    from mobilenet.build.step import BuildError
    from mobilenet.freshness import stamp_path
    failed: dict[str, tuple[str, str]] = {}
    with _TARGET_BUILDS:
        there = target_settings(settings, device_target, [v.id for v in variants])
        reference = by_id(REFERENCE_ID)
        for path in [*kept_files(reference, settings.models_dir), reference.meta_path(settings.models_dir)]:
            _copy_if_changed(path, there.models_dir / path.name)
        photos = stamp_path(settings.stamps_dir, "prepare-data")
        if photos.exists():  # else the build preprocesses the photos again, to the same arrays
            _copy_if_changed(photos, stamp_path(there.stamps_dir, "prepare-data"))
        asked = {v.step for v in variants}
        steps = [step.name for step in STEPS if step.name in asked]
        log.info("building %s for %s (%s) into %s", ", ".join(v.id for v in variants), device_target.describe(),
                 device_target.source, there.models_dir)
        try:
            for _, metas in build_steps(steps, there):
                for meta in metas:
                    if meta["status"] == FAILED:
                        log.warning("  %s built for %s: FAILED here (%s)", meta["variant"], device_target.name,
                                    meta.get("reason") or meta.get("check", {}).get("facts"))
        except (StepError, BuildError, WeightsError, ValueError) as exc:
            reason = f"could not be built for {device_target.describe()}: {exc}"
            failed.update({v.id: (FAILED, reason) for v in variants
                           if artifact_problem(v, there.models_dir) is not None})
        finally:  # the steps sent the log to the target's step logs; the rest of the run is remote-bench's
            logs.setup(settings.logs_dir, "remote-bench", settings.quiet)
    return there, failed


def eval_subset(settings: Settings, count: int | None, out: Path) -> tuple[Path, int]:
    """The first `count` preprocessed evaluation photos (all when None) as one .npy."""
    source = settings.data_dir / "eval.npy"
    if not source.exists():
        raise DeviceError(f"{source} is missing: build the chain first (`invoke bench`)")
    photos = np.load(source, mmap_mode="r")
    count = len(photos) if count is None else min(int(count), len(photos))
    np.save(out, np.ascontiguousarray(photos[:count]))
    return out, count


def device_code_files(repo: Path = REPO_ROOT) -> list[str]:
    files = list(DEVICE_CODE)
    for pattern in DEVICE_CODE_GLOBS:
        files += sorted(str(p.relative_to(repo)) for p in repo.glob(pattern))
    return files


def write_bundle(out: Path, members: dict[str, Path | bytes]) -> Path:
    """A plain tar (artifacts barely compress) of {name in the tar: a file, or its content}."""
    with tarfile.open(out, "w") as tar:
        for name, member in members.items():
            if isinstance(member, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(member)
                tar.addfile(info, io.BytesIO(member))
            else:
                tar.add(member, arcname=name, recursive=False)
    return out


def session_plan_spec(variants: list[Variant], threads: int, settings: Settings, run_dir: str) -> dict:
    """The PLAN.json of `python -m mobilenet.measure.session` for one thread count, paths on the device."""
    from mobilenet.bench.step import session_plan
    plan = session_plan(settings, threads, f"{run_dir}/data/eval.npy", f"{run_dir}/out/logs", f"{run_dir}/out/logits")
    return {"plan": asdict(plan), "sessions": settings.sessions,
            "variants": [{"id": v.id, "runtime": v.runtime, "runner": v.runner,
                          "artifact": f"{run_dir}/models/{v.artifact}"} for v in variants]}


# ---- the connection

def connect(spec: str, ssh_config: str | None = None, identity: str | None = None,
            accept_new_host_keys: bool = False) -> fabric.Connection:
    """The same SSH connection as chain mode's: ~/.ssh/config, ProxyJump, and host keys checked
    as `ssh` checks them (ssh.connect); a longer connect timeout, as sshd under emulation
    answers slowly."""
    access = Access.checked(ssh_config, identity, accept_new_host_keys)
    return ssh.connect(parse_hosts(spec)[0], access, connect_timeout=60)


# ---- the device side, driven from here

def probe(cxn, python: str) -> dict:
    return json.loads(ssh.run(cxn, f"{shlex.quote(python)} -c {shlex.quote(PROBE)}").strip().splitlines()[-1])


def _locked(venv: str, command: str) -> str:
    """`command` under the venv's lock: two runs on one device never pip into it at once."""
    return f"flock {shlex.quote(venv + '.lock')} sh -c {shlex.quote(command)}"


def prune_globs(name: str) -> list[str]:
    """What to delete under site-packages after installing list `name`: every list's own
    `# prune:` lines, then what no runner loads from any package (test suites, type stubs,
    numpy's random and distutils)."""
    own = [glob for line in (REQUIREMENTS_DIR / f"{name}.txt").read_text().splitlines()
           if line.startswith("# prune:") for glob in line.removeprefix("# prune:").split()]
    return own + list(PRUNE_ALWAYS)


def prune_command(name: str) -> str:
    """sh, run inside site-packages: delete what `prune_globs(name)` names."""
    globs = " ".join(prune_globs(name))  # unquoted on purpose: the shell expands them there
    return (f"rm -rf -- {globs} && find . -depth -type d -name tests -exec rm -rf {{}} + "
            f"&& find . -name '*.pyi' -delete")


def ensure_venv(cxn, venv: str, python: str) -> None:
    """Create the device venv, without pip, unless it exists. A venv that has pip is from an
    older version of this tool and is made anew: pip is the installer's, not the runtime's."""
    q = shlex.quote
    hint = ("python -m venv failed on the device; on Debian or Raspberry Pi OS: "
            "sudo apt install python3-venv")
    ssh.run(cxn, _locked(venv, f"{{ test -x {q(venv + '/bin/python')} && ! test -e {q(venv + '/bin/pip')}; }} || "
                               f"{q(python)} -m venv --clear --without-pip {q(venv)} || "
                               f"{{ echo {q(hint)} >&2; exit 1; }}"))


def install_lists(cxn, venv: str, code_dir: str, lists: set[str], python: str) -> dict[str, str]:
    """pip-install each list into the device venv unless that exact list is already in, then
    prune it; returns {list: why it could not be installed}.

    pip runs from a throwaway installer venv beside the device venv (`pip --python`), so the
    device venv holds what the worker loads and nothing else; the installer is deleted after.
    """
    q = shlex.quote
    failed = {}
    installer = f"{venv}-installer"
    site = f"{q(venv)}/lib/python3*/site-packages"  # one Python per venv: the glob matches once
    for name in sorted(lists):
        digest = hashlib.sha256(((REQUIREMENTS_DIR / f"{name}.txt").read_text() + repr(PRUNE_ALWAYS)).encode()
                                ).hexdigest()
        marker = f"{venv}/.mobilenet-device-{name}.sha256"
        requirements = f"{code_dir}/mobilenet/measure/requirements/{name}.txt"
        # --force-reinstall when the list changed: files an earlier prune removed come back.
        command = (f'[ "$(cat {q(marker)} 2>/dev/null)" = {digest} ] || {{ '
                   f"{{ test -x {q(installer + '/bin/pip')} || {q(python)} -m venv --clear {q(installer)}; }} && "
                   f"{q(installer + '/bin/python')} -m pip --python {q(venv + '/bin/python')} install --quiet "
                   f"--disable-pip-version-check --no-cache-dir --no-compile --force-reinstall -r {q(requirements)} && "
                   f"cd {site} && {prune_command(name)} && echo {digest} > {q(marker)}; }}")
        started = time.monotonic()
        try:
            ssh.run(cxn, _locked(venv, command))
            log.info("  %s.txt ready in %.0f s", name, time.monotonic() - started)
        except Exception as exc:  # this list's variants are skipped; the others go on
            failed[name] = f"could not install {name}.txt on the device ({ssh.describe(exc)})"
    ssh.run(cxn, _locked(venv, f"rm -rf {q(installer)}"))
    return failed


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_results(cxn, run_dir: str, staging: Path, threads: list[int], variants: list[Variant],
                  host_name: str = "device") -> None:
    """measure-<t>.json, every logits file and the logs, by names this side expects."""
    sftp = ssh.open_sftp(cxn)
    budget = ssh.FetchBudget(MAX_FETCH_FILES, MAX_FETCH_BYTES)
    for t in threads:
        ssh.fetch_file(sftp, f"{run_dir}/out/measure-{t}t.json", staging / f"measure-{t}t.json", budget)
        for variant in variants:
            name = f"{variant.id}@{t}t.logits.npy"
            try:
                ssh.fetch_file(sftp, f"{run_dir}/out/logits/{name}", staging / "logits" / name, budget)
            except FileNotFoundError:
                pass  # skipped or failed there: its measure entry says why
    try:
        ssh.fetch_folder(sftp, f"{run_dir}/out/logs", staging / "logs", budget, host_name)
    except FileNotFoundError:
        pass  # no worker started there, so no logs


# ---- scoring here

def cross_isa(device_logits: np.ndarray, controller: np.ndarray) -> dict:
    """Top-1 agreement and max |Δlogit| of the device's logits against this machine's."""
    return {"cross_isa_agreement_pct": accuracy.agreement_pct(device_logits, controller),
            "cross_isa_max_abs_dlogit": accuracy.max_abs_dlogit(device_logits, controller)}


def _load_logits(path: Path, photos: int) -> np.ndarray:
    logits = np.load(path, allow_pickle=False)
    if logits.shape != (photos, 1000) or logits.dtype != np.float32:
        raise DeviceError(f"{path}: expected float32 logits of shape ({photos}, 1000), "
                          f"got {logits.dtype} {logits.shape}")
    return logits


# ARM's "CPU part" numbers (implementer 0x41) of the cores boards and phones use.
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd49": "Neoverse-N2",
             "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720"}


def device_cpu_model(cpuinfo: str, machine: str) -> str:
    """x86's 'model name', a board's 'Model' line, or ARM's implementer/part numbers named."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware"):
        if fields.get(key):
            return fields[key]
    part = fields.get("CPU part", "").lower()
    if part:
        return ARM_PARTS.get(part, f"ARM core, implementer {fields.get('CPU implementer', '?')} part {part}")
    return machine


def device_environment(host_name: str, device: dict, settings: Settings, photos: int, labels,
                       data_sha256: str, install_mb: float | None, load: list[float]) -> dict:
    """The Environment fields shared by a device's results (threads and versions are per result).

    What was run is the controller's (weights, photos); where it ran is read off the device.
    """
    from mobilenet.results import cpu_flags, machine_id
    weights = read_json(by_id(REFERENCE_ID).meta_path(settings.models_dir))["weights"]
    info = read_json(settings.data_dir / "images.json")
    cpu = device_cpu_model(device.get("cpuinfo", ""), device["machine"])
    return {"machine_id": settings.tag.replace("{host}", host_name) if settings.tag else f"{host_name} ({cpu})",
            "hostname": device["hostname"], "cpu_model": cpu, "logical_cores": device["cpus"],
            "os": device.get("os", device["machine"]), "python": device["python"],
            "torch": "not on the device", "torchvision": "not on the device",
            "weights_source": weights["source"], "weights_sha256": weights["sha256"],
            "weights_random": weights.get("random", False), "image_set": info["image_set"],
            "eval_photos": photos, "labelled": labels is not None, "data_sha256": data_sha256,
            "energy_source": "not measured on a device", "cpu_flags": cpu_flags(device.get("cpuinfo", "")),
            "cpu_governor": device.get("governor"), "load_avg_1min": load,
            "emulated": device.get("emulator") is not None, "device_of": machine_id(None),
            "device_install_mb": install_mb, "calib_photos": info.get("calib_photos"),
            "calib_classes": info.get("calib_classes"),
            # The device may score only the first `photos`: the classes are those photos'.
            "eval_classes": len(set(labels)) if labels else None}


def make_results(variants: list[Variant], threads: int, sessions: list[dict], folder: Path, photos: int,
                 settings: Settings, labels, env_base: dict, not_run: dict[str, tuple[str, str]],
                 models_dirs: dict[str, Path] | None = None, measured_on: dict | None = None) -> list[Result]:
    """One result per variant from the device's sessions, its answers scored here: against this
    machine's eager FP32 (accuracy, the gate) and this machine's answers from the same artifact
    (cross-ISA), both the build check's logits of the first `photos` evaluation photos. The rows
    are made as the local bench makes its own (rows.make_result).

    models_dirs: {variant id: the models folder its artifact was shipped from} (built for the
    device); others are this machine's. measured_on: the device's CPU (target.Target.record())."""
    from mobilenet.build.artifacts import check_logits_path
    reference = np.load(reference_logits_path(settings))[:photos]
    by_session = [{vid: Take(**take) for vid, take in session.items()} for session in sessions]
    results = []
    for variant in [*variants, *(by_id(vid) for vid in not_run)]:
        models = (models_dirs or {}).get(variant.id, settings.models_dir)
        meta_path = variant.meta_path(models)
        meta = read_json(meta_path) if meta_path.exists() else {}

        def score(variant: Variant = variant, models: Path = models) -> tuple[str, str, dict]:
            device_logits = _load_logits(folder / "logits" / f"{variant.id}@{threads}t.logits.npy", photos)
            scores = accuracy.score(device_logits, reference, labels)
            status, reason = ((OK, "reference (scored against this controller's eager FP32)")
                              if variant.id == REFERENCE_ID else accuracy.gate(scores))
            here = np.load(check_logits_path(models, variant))[:photos]
            # Measured at 1 thread too in this run: how many answers this thread count changed there.
            one_thread = folder / "logits" / f"{variant.id}@1t.logits.npy"
            at_1t = _load_logits(one_thread, photos) if threads != 1 and one_thread.exists() else None
            return status, reason, {**accuracy_fields(scores, reference=variant.id == REFERENCE_ID,
                                                      answers=device_logits, answers_1t=at_1t),
                                    **cross_isa(device_logits, here)}

        # A device's torch, if it has one, is its own; this machine's is "not on the device".
        results.append(make_result(variant, meta, by_session, threads, env_base, score,
                                   not_run=not_run.get(variant.id), where="on the device",
                                   versions_in_env=("torch", "torchvision"), measured_on=measured_on,
                                   no_reference_note="no eager FP32 on the device (torch not installed there)"))
    return results


# ---- one device

def _unpack(cxn, run_dir: str, bundle: Path) -> None:
    q = shlex.quote
    remote = f"{run_dir}/.bundle.tar"
    ssh.run(cxn, f"mkdir -p {q(run_dir)}")
    cxn.put(str(bundle), remote)
    ssh.run(cxn, f"tar xf {q(remote)} -C {q(run_dir)} && rm {q(remote)}")


def device_threads(threads: str, cpus: int) -> list[int]:
    """'1', '1,2' or 'all', where 'all' means the device's cores, not this machine's."""
    words = [w.strip() for w in str(threads).split(",")]
    return list(parse_threads(",".join(str(cpus) if w.lower() == "all" else w for w in words)))


def run_device(spec: str, settings: Settings, *, threads: str = "1", ssh_config: str | None = None,
               identity: str | None = None, remote_dir: str = DEFAULT_REMOTE_DIR,
               remote_python: str = DEFAULT_REMOTE_PYTHON, remote_venv: str | None = None,
               install: set[str] = frozenset(), eval_count: int | None = None,
               accept_new_host_keys: bool = False) -> DeviceOutcome:
    """Ship, install and measure on the device `spec`; fetch and score here.

    settings: this machine's build folder and the bench settings (only, warmup, burst,
    min_runs, min_seconds, sessions, tag). Results land in build/remote/<host>/results, where
    `invoke report` finds them. The device's trouble becomes the outcome's error; only a
    mistake in the arguments raises.
    """
    host = parse_hosts(spec)[0]
    unknown = set(install) - {runtime.requirements for runtime in RUNTIMES if runtime.requirements}
    if unknown:
        raise ValueError(f"--device-install: no list {', '.join(sorted(unknown))} in {REQUIREMENTS_DIR}")
    started = time.monotonic()
    outcome = DeviceOutcome(host.name, ok=False, folder=settings.build_dir / "remote" / host.name)
    chosen = select(settings.only)
    not_run: dict[str, tuple[str, str]] = {}  # variant id -> (status, reason), decided before measuring
    for variant in chosen:
        problem = build_problem(variant, settings.models_dir)
        if problem:
            not_run[variant.id] = problem
    lists, not_installable = plan_installs([v for v in chosen if v.id not in not_run], set(install),
                                           own_venv=remote_venv is not None)
    not_run.update({vid: (SKIPPED, reason) for vid, reason in not_installable.items()})

    models_dirs = {v.id: settings.models_dir for v in chosen}  # where each shipped artifact comes from
    q = shlex.quote
    stage, cxn, run_dir = "connect", None, None
    tmp_root = settings.build_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"device-{host.name}.", dir=tmp_root))
    try:
        cxn = connect(host.spec, ssh_config, identity, accept_new_host_keys)
        cxn.open()
        cxn.transport.set_keepalive(30)  # measuring under emulation is quiet for many minutes
        home = ssh.run(cxn, "pwd").strip()

        stage = "probe"
        device = outcome.device = probe(cxn, remote_python)
        emulated = device.get("emulator") is not None
        log.info("%s: %s, Python %s, %s CPUs%s", host.name, device["machine"], device["python"], device["cpus"],
                 f", emulated by {device['emulator']}: timings are not a measurement" if emulated else "")
        device_target = target.from_cpuinfo(device["machine"], device.get("cpuinfo", ""),
                                            source=f"{host.name}'s /proc/cpuinfo")

        stage = "build for the device"
        own = own_builds([v for v in chosen if v.id not in not_run], settings.models_dir, device_target)
        if own:
            there, failed = build_for_device(settings, device_target, [by_id(vid) for vid in own])
            for vid in own:
                models_dirs[vid] = there.models_dir
                problem = failed.get(vid) or build_problem(by_id(vid), there.models_dir, checked_elsewhere=True)
                if problem:
                    not_run[vid] = problem
            outcome.built_for_device = {vid: str(there.models_dir) for vid in own}

        folder = posixpath.join(home, ssh.remote_path(remote_dir, host))
        # A folder of its own per run (the code too): two controllers on one device, or a run
        # while another is measuring, never mix their files. Only the venv is shared.
        run_dir = f"{folder}/run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        code_dir = f"{run_dir}/code"

        stage = "install"
        code = write_bundle(staging / "code.tar",
                            {f"code/{name}": REPO_ROOT / name for name in device_code_files()})
        _unpack(cxn, run_dir, code)
        if remote_venv:
            venv = posixpath.join(home, ssh.remote_path(remote_venv, host))
            ssh.require_venv(cxn, venv)
        else:
            venv = f"{folder}/venv"
            ensure_venv(cxn, venv, remote_python)
            for name, reason in install_lists(cxn, venv, code_dir, lists, remote_python).items():
                not_run.update({v.id: (SKIPPED, reason) for v in chosen if requirements_list(v) == name})

        stage = "ship"
        runnable = [v for v in chosen if v.id not in not_run]
        thread_counts = device_threads(threads, device["cpus"])
        eval_npy, photos = eval_subset(settings, eval_count, staging / "eval.npy")
        members: dict[str, Path | bytes] = {"data/eval.npy": eval_npy}
        for variant in runnable:
            members.update({f"models/{p.name}": p for p in variant.artifact_files(models_dirs[variant.id])})
        for t in thread_counts:
            members[f"plans/measure-{t}t.json"] = json.dumps(session_plan_spec(runnable, t, settings, run_dir)).encode()
        bundle = write_bundle(staging / "run.tar", members)
        log.info("%s: shipping %.1f MB: %d variant(s), %d photos", host.name, bundle.stat().st_size / 1e6,
                 len(runnable), photos)
        _unpack(cxn, run_dir, bundle)

        stage = "measure"
        load = [_loadavg(cxn)]
        for t in thread_counts if runnable else []:
            log.info("%s: measuring %d variant(s) at %d thread(s)", host.name, len(runnable), t)
            ssh.run(cxn, f"cd {q(code_dir)} && mkdir -p {q(run_dir + '/out')} && {q(venv + '/bin/python')} "
                         f"-m mobilenet.measure.session {q(f'{run_dir}/plans/measure-{t}t.json')} "
                         f"{q(f'{run_dir}/out/measure-{t}t.json')}")
        load.append(_loadavg(cxn))
        if not remote_venv:  # after the run: with the bytecode the workers' imports wrote
            outcome.install_mb = int(ssh.run(cxn, f"du -sk {q(venv)}").split()[0]) / 1024
            outcome.install_breakdown = _largest_packages(cxn, venv)

        stage = "fetch"
        result_dir = staging / "result"
        result_dir.mkdir()
        if runnable:
            fetch_results(cxn, run_dir, result_dir, thread_counts, runnable, host.name)

        stage = "score"
        labels = _labels(settings, photos)
        env_base = device_environment(host.name, device, settings, photos, labels, _digest(eval_npy),
                                      outcome.install_mb, [v for v in load if v is not None])
        for t in thread_counts:
            sessions = json.loads((result_dir / f"measure-{t}t.json").read_text())["sessions"] if runnable else []
            outcome.results += make_results(runnable, t, sessions, result_dir, photos, settings, labels,
                                            env_base, not_run, models_dirs, device_target.record())
        for result in outcome.results:
            write_result(result_dir / "results", result)
        write_json(result_dir / "device.json", {"host": host.name, "device": device, "photos": photos,
                                                "target": device_target.record(),
                                                "built_for_device": outcome.built_for_device,
                                                "install_mb": outcome.install_mb,
                                                "install_breakdown_mb": outcome.install_breakdown,
                                                "seconds": time.monotonic() - started})
        _keep_earlier_variants(outcome.folder, result_dir, {v.id for v in chosen})
        ssh.swap_in(result_dir, outcome.folder, staging)
        ssh.run(cxn, f"rm -rf {q(run_dir)}")  # everything is here now; a failed run's folder stays for a look
        outcome.ok = True
    except Exception as exc:  # the device's trouble is its outcome
        outcome.error = (f"{stage}: {ssh.describe(exc)}"
                         + (f" (the run's files on the device: {run_dir})" if run_dir else ""))
        log.error("%s: FAILED at %s", host.name, outcome.error)
    finally:
        if cxn is not None:
            ssh.close(cxn)
        shutil.rmtree(staging, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


def _largest_packages(cxn, venv: str, count: int = 8) -> dict[str, float]:
    """MB per top-level entry of the venv's site-packages, the largest first: what the install costs."""
    listing = ssh.run(cxn, f"du -sk {shlex.quote(venv)}/lib/python3*/site-packages/* 2>/dev/null || true")
    sizes = {}
    for line in listing.splitlines():
        kb, _, path = line.partition("\t")
        if kb.strip().isdigit():
            sizes[posixpath.basename(path)] = round(int(kb) / 1024, 1)
    return dict(sorted(sizes.items(), key=lambda item: -item[1])[:count])


def _loadavg(cxn) -> float | None:
    try:
        return float(ssh.run(cxn, "cat /proc/loadavg").split()[0])
    except Exception:  # a device without /proc/loadavg still measures
        return None


def _labels(settings: Settings, photos: int):
    info_path = settings.data_dir / "images.json"
    labels = read_json(info_path).get("labels") if info_path.exists() else None
    return labels[:photos] if labels else None


def _keep_earlier_variants(previous: Path, new: Path, measured: set[str]) -> None:
    """A run with --only replaces its own variants' rows; earlier rows of other variants stay,
    as a local `invoke bench --only` keeps them (their logits come along)."""
    for kind, pattern in (("results", "*.json"), ("logits", "*.logits.npy")):
        for path in sorted((previous / kind).glob(pattern)) if (previous / kind).is_dir() else []:
            if path.name.split("@")[0] not in measured and not (new / kind / path.name).exists():
                (new / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, new / kind / path.name)


# ---- every device

def run_devices(hosts: str, settings: Settings, **options) -> list[DeviceOutcome]:
    """run_device on every host of `hosts` at once (one thread each); never raises for a host."""
    from concurrent.futures import ThreadPoolExecutor

    parsed = parse_hosts(hosts)
    Access.checked(options.get("ssh_config"), options.get("identity"))  # a missing file fails before any host
    logs.setup(settings.logs_dir, "remote-bench", settings.quiet)
    with ThreadPoolExecutor(max_workers=len(parsed)) as pool:
        outcomes = list(pool.map(lambda host: run_device(host.spec, settings, **options), parsed))
    for outcome in outcomes:
        if outcome.ok:
            measured = sum(r.measured for r in outcome.results)
            log.info("%s: ok in %.0f s, %d of %d row(s) measured -> %s", outcome.host, outcome.seconds, measured,
                     len(outcome.results), outcome.folder / "results")
        else:
            log.error("%s: FAILED after %.0f s, %s", outcome.host, outcome.seconds, outcome.error)
    return outcomes
