"""The CPU an INT8 artifact is built for, and the quantization settings that follow from its
instruction set, each with the reason it holds there.

Why the instruction set decides anything: x86 CPUs without a VNNI form multiply u8 activations
by s8 weights with vpmaddubsw, which adds each pair of products into a saturating int16. Large
activations times large weights then clip, and the toolkits avoid it by giving up one bit
(ONNX Runtime's and X86InductorQuantizer's reduce_range, NNCF's overflow fix). AVX-512 VNNI,
AVX-VNNI and AMX-INT8 sum u8 x s8 products straight into int32, and ARM's int8 kernels (NEON
widening multiplies, asimddp's udot/sdot, i8mm) accumulate in 32 bits as well: there the lost
bit only costs accuracy.

Flags are read from /proc/cpuinfo (x86's `flags` line, ARM's `Features`), never assumed, so a
profile recorded on another machine (a device's cpuinfo) gives that machine's choices.
Nothing here imports a toolkit: the build's freshness check reads the choices too.

Which CPU a build is for: this machine, unless the build runs for a recorded profile (device
mode builds a device's own INT8 artifacts here). The builders ask build_target() and take no
argument, so the profile reaches them two ways: building_for() while a build runs in this
process, and the MOBILENET_TARGET variable (a profile file) that its child processes inherit.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# The flags the rules read, and those a reader needs beside them to place the CPU, in the order
# a sentence names them. Only these enter the records: an unrelated flag a kernel update adds
# must not make every INT8 artifact stale.
X86_ISA = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_ISA = ("asimd", "asimddp", "i8mm")
# x86 instructions that sum u8 x s8 products into int32, so nothing saturates.
X86_INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")

X86_ARCHES = ("x86_64", "amd64", "i386", "i686", "x86")
ARM_ARCHES = ("aarch64", "arm64", "armv8l", "armv7l", "arm")


@dataclass(frozen=True)
class Target:
    """A CPU as the rules see it: its architecture and the flags its kernel reports."""
    arch: str  # platform.machine()'s spelling: x86_64, aarch64
    flags: frozenset[str]
    source: str = "/proc/cpuinfo"  # where the flags were read

    @property
    def family(self) -> str:
        """"x86", "arm" or "other"."""
        arch = self.arch.lower()
        if arch in X86_ARCHES:
            return "x86"
        if arch in ARM_ARCHES or arch.startswith("armv"):
            return "arm"
        return "other"

    @property
    def isa(self) -> list[str]:
        """The INT8-relevant flags this CPU has, in a fixed order."""
        table = X86_ISA if self.family == "x86" else ARM_ISA if self.family == "arm" else ()
        return [flag for flag in table if flag in self.flags]

    @property
    def int8_dot(self) -> list[str]:
        """The x86 flags that sum u8 x s8 products into int32 (empty on other architectures)."""
        return [flag for flag in X86_INT8_DOT if flag in self.flags] if self.family == "x86" else []

    @property
    def saturates(self) -> bool:
        """Could u8 x s8 pair sums saturate in this CPU's int8 kernels? True where unknown."""
        if self.family == "x86":
            return not self.int8_dot
        return self.family != "arm"

    def describe(self) -> str:
        """'x86_64 with avx2 (no avx512_vnni, avx_vnni or amx_int8)': the CPU a choice was made for."""
        have = ", ".join(self.isa) or "no INT8-relevant flags read"
        if self.family == "x86" and not self.int8_dot:
            return f"{self.arch} with {have} (no {', '.join(X86_INT8_DOT[:-1])} or {X86_INT8_DOT[-1]})"
        return f"{self.arch} with {have}"

    def record(self) -> dict:
        return {"arch": self.arch, "isa_flags": self.isa, "source": self.source}

    @property
    def name(self) -> str:
        """'aarch64-asimd-asimddp': the folder a target's own artifacts live in. Spelt from the
        flags the rules read, so two CPUs that get the same rules share it."""
        spelt = "-".join([self.arch, *self.isa]) if self.isa else f"{self.arch}-no-isa-flags"
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", spelt)

    def same_isa(self, other: Target) -> bool:
        """Do the rules see the same CPU (architecture and the flags they read)?"""
        return (self.arch, self.isa) == (other.arch, other.isa)


def _cpuinfo_flags(text: str) -> frozenset[str]:
    """The flags every processor in a /proc/cpuinfo text reports: a kernel may run a thread on
    any core, so a flag only some cores have is no flag to build for."""
    common: set[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags = set(value.split())
            common = flags if common is None else common & flags
    return frozenset(common or ())


def from_flags(arch: str, flags, source: str = "recorded profile") -> Target:
    """A target from a recorded profile: its architecture and its cpuinfo flags (any iterable)."""
    return Target(arch=arch, flags=frozenset(flags), source=source)


def from_cpuinfo(arch: str, text: str, source: str = "recorded /proc/cpuinfo") -> Target:
    """A target from a /proc/cpuinfo text (a device's, as device mode probes it)."""
    return from_flags(arch, _cpuinfo_flags(text), source)


def probe(cpuinfo: Path = CPUINFO) -> Target:
    """This machine: platform.machine() and the flags its /proc/cpuinfo reports (none if unreadable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return from_flags(platform.machine(), (), source=f"{cpuinfo} unreadable")
    return from_cpuinfo(platform.machine(), text, source=str(cpuinfo))


# The variable naming a profile file a build is for; a Settings field (mobilenet/settings.py)
# of the same name, so a build's child processes read it back with the rest of its settings.
TARGET_ENV = "MOBILENET_TARGET"
PROFILE_FILE = "target.json"  # in build/targets/<name>/, beside that target's models/

_building_for: contextvars.ContextVar[Target | None] = contextvars.ContextVar("building_for", default=None)


def load_profile(path) -> Target:
    """A target from a profile file: {"arch", "isa_flags"} as write_profile() and the INT8 metas'
    `isa_choices.target` record it, or a device mode `device.json` (its probe's machine and
    /proc/cpuinfo). ValueError, naming the file, for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable target profile ({exc.__class__.__name__}: {exc})") from None
    probed = data.get("device") if isinstance(data, dict) else None
    if isinstance(probed, dict) and isinstance(probed.get("machine"), str) and isinstance(probed.get("cpuinfo"), str):
        return from_cpuinfo(probed["machine"], probed["cpuinfo"], source=f"{path} (a device's /proc/cpuinfo)")
    if (not isinstance(data, dict) or not isinstance(data.get("arch"), str) or not data["arch"]
            or not isinstance(data.get("isa_flags"), list) or not all(isinstance(f, str) for f in data["isa_flags"])):
        raise ValueError(f"{path}: not a target profile; expected {{\"arch\": \"aarch64\", \"isa_flags\": "
                         f"[\"asimd\", ...]}} or a device mode device.json")
    return from_flags(data["arch"], data["isa_flags"], source=str(data.get("source") or path))


def write_profile(target: Target, path) -> Path:
    """The profile file a build for `target` reads back (load_profile), written whole or not at all."""
    from mobilenet.files import write_json
    path = Path(path)
    write_json(path, target.record())
    return path


@contextlib.contextmanager
def building_for(target: Target | None):
    """build_target() returns `target` inside this block, in this thread (None: no change).
    For builds that run in this process; a child process reads MOBILENET_TARGET instead."""
    if target is None:
        yield
        return
    token = _building_for.set(target)
    try:
        yield
    finally:
        _building_for.reset(token)


def settings_target(settings) -> Target | None:
    """The profile a Settings' build is for (its `target` field), None for this machine."""
    profile = getattr(settings, "target", None)
    return load_profile(profile) if profile else None


def build_target() -> Target:
    """The CPU this build's artifacts are made for: the profile being built for (building_for,
    else MOBILENET_TARGET), else this machine. The builders and the build's freshness both ask
    here, so an artifact is rebuilt when the choices it was made with change."""
    current = _building_for.get()
    if current is not None:
        return current
    profile = os.environ.get(TARGET_ENV)
    return load_profile(profile) if profile else probe()


@dataclass(frozen=True)
class Choice:
    setting: str  # the toolkit's own name for it
    value: object  # JSON-able, as the builder passes it on
    reason: str  # one sentence


@dataclass(frozen=True)
class Int8Choices:
    """One toolkit's ISA-dependent settings for one target."""
    toolkit: str
    target: Target
    choices: tuple[Choice, ...]

    def __getitem__(self, setting: str):
        for choice in self.choices:
            if choice.setting == setting:
                return choice.value
        raise KeyError(f"{self.toolkit} has no ISA-dependent setting {setting!r}")

    def recorded(self) -> dict:
        """What a builder adds to the options it returns (meta.json, results' `build`)."""
        return {"toolkit": self.toolkit, "target": self.target.record(),
                "choices": [{"setting": c.setting, "value": c.value, "reason": c.reason} for c in self.choices]}

    def fingerprint(self) -> dict:
        """What enters the build's freshness: the target's relevant flags and the values chosen
        (not the reasons' wording, whose edit changes no artifact)."""
        return {"arch": self.target.arch, "isa_flags": self.target.isa,
                "values": {c.setting: c.value for c in self.choices}}


# Options key under which builders record their choices.
RECORD_KEY = "isa_choices"


def _with(target: Target) -> str:
    return " and ".join(target.int8_dot)


NO_SATURATION_ARM = "ARM's int8 kernels (NEON widening multiplies, udot/sdot with asimddp) sum products in 32 bits"


def _by_kind(target: Target, *, saturating, vnni, arm, other):
    """The (value, reason) for the target's kind: x86 whose u8 x s8 pair sums saturate (no VNNI
    form), x86 with one, ARM, or an architecture no rule covers."""
    if target.family == "x86":
        return saturating if target.saturates else vnni
    return arm if target.family == "arm" else other


def onnxruntime(target: Target) -> Int8Choices:
    """ONNX Runtime static QDQ (MLAS kernels on the CPU execution provider)."""
    reduce_range = _by_kind(
        target,
        saturating=(True, "without a VNNI form MLAS multiplies u8 activations by s8 weights with vpmaddubsw, "
                          "whose int16 pair sums saturate unless the weights keep 7 bits."),
        vnni=(False, f"with {_with(target)} MLAS sums u8 x s8 products into int32, so nothing "
                     "saturates and 8-bit weights are more accurate (97.0 % against 95.0 % agreement "
                     "with reduce_range on a VNNI Xeon, same speed)."),
        arm=(False, f"{NO_SATURATION_ARM}, so nothing saturates and the weights keep all 8 bits."),
        other=(True, f"no rule covers {target.arch}, and 7-bit weights cannot saturate in any kernel."))
    return Int8Choices("ONNX Runtime", target, (
        Choice("reduce_range", *reduce_range),
        # Not ISA-dependent: kept on every target, and said so, because the pair is what saturates.
        Choice("activation_type", "QUInt8",
               "U8 activations on every target: MLAS's x86 kernels multiply u8 by s8 directly (vpmaddubsw, "
               "vpdpbusd, AMX) and its ARM kernels take u8 too."),
        Choice("weight_type", "QInt8",
               "S8 weights on every target: u8 x s8 is the pair those kernels take natively."),
    ))


def nncf(target: Target) -> Int8Choices:
    """NNCF post-training quantization for OpenVINO's CPU plugin."""
    overflow_fix = _by_kind(
        target,
        saturating=("ENABLE", "without a VNNI form the CPU plugin's u8 x s8 kernels (vpmaddubsw) saturate "
                              "int16 pair sums, so every convolution's and matmul's weights use half the "
                              "8-bit range "
                              "(97.5 % agreement on 200 photos, against 94.5 % fixing the first layer only)."),
        vnni=("DISABLE", f"with {_with(target)} the CPU plugin sums u8 x s8 products into int32, so "
                         "nothing saturates and the weights keep the full 8-bit range."),
        arm=("DISABLE", f"{NO_SATURATION_ARM}, so nothing saturates and the weights keep the full "
                        "8-bit range."),
        other=("ENABLE", f"no rule covers {target.arch}, and half-range weights cannot saturate in "
                         "any kernel."))
    return Int8Choices("NNCF", target, (Choice("overflow_fix", *overflow_fix),))


def x86_inductor(target: Target) -> Int8Choices:
    """PT2E X86InductorQuantizer (oneDNN int8 kernels through Inductor); its reduce_range narrows
    the u8 activations to [0, 127]."""
    reduce_range = _by_kind(
        target,
        saturating=(True, "without a VNNI form oneDNN multiplies u8 activations by s8 weights with "
                          "vpmaddubsw, whose int16 pair sums saturate unless the activations keep 7 bits "
                          "(the quantizer's own advice for CPUs without VNNI)."),
        vnni=(False, f"with {_with(target)} oneDNN sums u8 x s8 products into int32, so nothing "
                     "saturates and the activations keep all 8 bits (the quantizer's default)."),
        arm=(False, f"{NO_SATURATION_ARM}, so nothing saturates and the activations keep all 8 bits."),
        other=(True, f"no rule covers {target.arch}, and 7-bit activations cannot saturate in any kernel."))
    return Int8Choices("X86InductorQuantizer", target, (Choice("reduce_range", *reduce_range),))


def torch_ao(engine: str, target: Target) -> Int8Choices:
    """torch.ao eager-mode static quantization: the engine's default qconfig, whose reduce_range
    narrows the u8 activations to [0, 127]."""
    if engine == "qnnpack":
        reduce_range = (False, "QNNPACK widens u8 activations to 16 bits before multiplying (its NEON and SSE2 "
                               "kernels alike), so no pair sum saturates on any CPU.")
    elif target.family == "x86" and target.saturates:
        reduce_range = (True, "fbgemm's default qconfig: without a VNNI form its u8 x s8 kernels (vpmaddubsw) "
                              "saturate int16 pair sums unless the activations keep 7 bits.")
    elif target.family == "x86":
        reduce_range = (True, f"fbgemm's default qconfig, kept with {_with(target)}: this benchmark has not "
                              "measured fbgemm with 8-bit activations (torch.ao's onednn qconfig is the one "
                              "made for VNNI CPUs).")
    else:
        reduce_range = (True, f"fbgemm's default qconfig: the fbgemm engine runs only on x86, so {target.arch}'s "
                              "kernels never run this artifact.")
    return Int8Choices(f"torch.ao {engine}", target, (Choice("reduce_range", *reduce_range),))


# The builders whose INT8 settings depend on the target, and the rules each takes.
BUILDER_RULES = {
    "mobilenet.builders.onnx:quantize_int8": lambda variant, target: onnxruntime(target),
    "mobilenet.builders.openvino:quantize_int8": lambda variant, target: nncf(target),
    "mobilenet.builders.aoti:compile_int8": lambda variant, target: x86_inductor(target),
    "mobilenet.builders.torch_ao:static": lambda variant, target: torch_ao(variant.engine, target),
}


# The rules by the toolkit name a build recorded (Int8Choices.toolkit), to redo a recorded
# choice for another CPU: what the settings would have been on the machine that measured it.
def _toolkit_rules(toolkit: str):
    if toolkit.startswith("torch.ao "):
        engine = toolkit.removeprefix("torch.ao ")
        return lambda target: torch_ao(engine, target)
    return {"ONNX Runtime": onnxruntime, "NNCF": nncf, "X86InductorQuantizer": x86_inductor}.get(toolkit)


def choices_for(variant, target: Target | None = None) -> Int8Choices | None:
    """The ISA-dependent choices a registry Variant's builder makes for `target` (this build's
    target by default); None when its builder makes none. The build's freshness reads it; the
    builders call the same rule functions directly (they may be given no registry entry)."""
    rules = BUILDER_RULES.get(variant.builder)
    return rules(variant, target or build_target()) if rules else None


def describe_recorded(recorded) -> str | None:
    """The sentence a report shows for one build's recorded choices (a builder's `isa_choices`):
    'ISA-dependent settings, chosen for x86_64 with avx2 (...): reduce_range=True — <reason>'. None
    when nothing usable is recorded (results written before choices were, or a malformed file)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("choices"), list):
        return None
    target = recorded.get("target") if isinstance(recorded.get("target"), dict) else {}
    flags = target.get("isa_flags") if isinstance(target.get("isa_flags"), list) else []
    described = from_flags(str(target.get("arch", "an unknown CPU")), map(str, flags)).describe()
    parts = [f"{choice['setting']}={choice.get('value')} — {choice.get('reason', '')}".strip(" —")
             for choice in recorded["choices"] if isinstance(choice, dict) and "setting" in choice]
    if not parts:
        return None
    return f"ISA-dependent settings, chosen for {described}: " + " ".join(parts)


def recorded_notes(builds) -> str | None:
    """The choices sentence for one variant's results, given (machine, options) pairs: one
    sentence when every build made the same choices, else one per machine that built it."""
    sentences: dict[str, list[str]] = {}
    for machine, options in builds:
        sentence = describe_recorded(options.get(RECORD_KEY) if isinstance(options, dict) else None)
        if sentence:
            machines = sentences.setdefault(sentence, [])
            if machine not in machines:
                machines.append(machine)
    if not sentences:
        return None
    if len(sentences) == 1:
        return next(iter(sentences))
    return " ".join(f"Built on {', '.join(machines)}: {sentence}" for sentence, machines in sentences.items())


def recorded_target(recorded) -> Target | None:
    """The CPU a build's recorded choices (a builder's `isa_choices`) were made for; None when
    none are recorded."""
    target = recorded.get("target") if isinstance(recorded, dict) else None
    if not isinstance(target, dict) or not isinstance(target.get("arch"), str):
        return None
    flags = target.get("isa_flags") if isinstance(target.get("isa_flags"), list) else []
    return from_flags(target["arch"], map(str, flags), str(target.get("source") or "recorded"))


def recorded_values(recorded) -> dict | None:
    """{setting: value} of a build's recorded choices; None when none are recorded."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("choices"), list):
        return None
    return {c["setting"]: c.get("value") for c in recorded["choices"] if isinstance(c, dict) and "setting" in c}


def _spelt(record: dict) -> str:
    return " ".join([str(record.get("arch")), *map(str, record.get("isa_flags") or [])]) if record.get(
        "isa_flags") else f"{record.get('arch')} (no INT8-relevant flags)"


def isa_mismatch(built_for: dict | None, measured_on: dict | None, recorded=None) -> str | None:
    """'built for x86_64 avx2, measured on aarch64 asimd asimddp; ...': the flag of a row whose
    artifact's ISA-dependent settings were chosen for another CPU than the one that ran it, with
    what those settings would have been there (from the recorded choices' toolkit). None when
    the two are the same CPU to the rules, or either is unknown (FP32 makes no such choice)."""
    if not isinstance(built_for, dict) or not isinstance(measured_on, dict):
        return None
    built, measured = recorded_target({"target": built_for}), recorded_target({"target": measured_on})
    if built is None or measured is None or built.same_isa(measured):
        return None
    flag = f"built for {_spelt(built_for)}, measured on {_spelt(measured_on)}"
    values = recorded_values(recorded)
    rules = _toolkit_rules(str(recorded.get("toolkit", ""))) if isinstance(recorded, dict) else None
    if values is None or rules is None:
        return flag
    there = {c.setting: c.value for c in rules(measured).choices}
    differ = {k: v for k, v in there.items() if k in values and values[k] != v}
    if not differ:
        return f"{flag}; the same ISA-dependent settings hold there"
    return (f"{flag}; chosen for that CPU, " + ", ".join(f"{k}={v}" for k, v in differ.items())
            + f" (built with {', '.join(f'{k}={values[k]}' for k in differ)})")
