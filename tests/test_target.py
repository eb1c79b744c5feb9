"""INT8 settings from the target CPU's instruction set: the rules per toolkit on recorded
profiles, the probe of this machine, the choices reaching a builder's options and the build's
freshness, and the report's notes written from what a build recorded. Fast: no conversion runs."""
from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_report import make_result

from mobilenet.build import staleness
from mobilenet.build import target as isa
from mobilenet.registry import REFERENCE_ID, VARIANTS, by_id
from mobilenet.report import markdown as report
from mobilenet.settings import Settings

NO_VNNI = isa.from_flags("x86_64", {"fpu", "sse4_2", "fma", "avx2"})  # an AMD EPYC of the Zen 2 kind
SKYLAKE_SP = isa.from_flags("x86_64", {"avx2", "avx512f", "avx512bw"})  # AVX-512 without VNNI
VNNI = isa.from_flags("x86_64", {"avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8"})
AVX_VNNI = isa.from_flags("x86_64", {"avx2", "avx_vnni"})  # Alder Lake: VNNI without AVX-512
ARM = isa.from_flags("aarch64", {"fp", "asimd", "asimddp"})

# What the builders used before their settings came from the target (tuned on AVX2 without VNNI):
# on such a machine they must stay exactly this, so its artifacts and accuracy do not change.
ONNX_SETTINGS_BEFORE = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                        "per_channel": True, "reduce_range": True, "calibrate_method": "Percentile",
                        "extra_options": {"CalibPercentile": 99.999}}
OPENVINO_SETTINGS_BEFORE = {"preset": "PERFORMANCE", "overflow_fix": "ENABLE", "fast_bias_correction": True}
AOTI_SETTINGS_BEFORE = {"quantizer": "X86InductorQuantizer", "reduce_range": True}


def values(choices: isa.Int8Choices) -> dict:
    return {c.setting: c.value for c in choices.choices}


def reasons(choices: isa.Int8Choices) -> list[str]:
    return [c.reason for c in choices.choices]


@pytest.mark.parametrize("profile", [NO_VNNI, SKYLAKE_SP], ids=["avx2", "avx512-without-vnni"])
def test_x86_without_vnni_gives_up_a_bit_where_pair_sums_saturate(profile):
    assert profile.family == "x86" and profile.saturates and profile.int8_dot == []
    assert values(isa.onnxruntime(profile)) == {"reduce_range": True, "activation_type": "QUInt8",
                                                "weight_type": "QInt8"}
    assert values(isa.nncf(profile)) == {"overflow_fix": "ENABLE"}
    assert values(isa.x86_inductor(profile)) == {"reduce_range": True}
    assert values(isa.torch_ao("fbgemm", profile)) == {"reduce_range": True}
    assert values(isa.torch_ao("qnnpack", profile)) == {"reduce_range": False}
    for choices in (isa.onnxruntime(profile), isa.nncf(profile), isa.x86_inductor(profile)):
        assert "vpmaddubsw" in choices.choices[0].reason and "saturate" in choices.choices[0].reason


@pytest.mark.parametrize("profile, named", [(VNNI, "avx512_vnni and amx_int8"), (AVX_VNNI, "avx_vnni")],
                         ids=["avx512-vnni-amx", "avx-vnni"])
def test_x86_with_a_vnni_form_keeps_every_bit(profile, named):
    assert not profile.saturates
    assert values(isa.onnxruntime(profile))["reduce_range"] is False
    assert values(isa.nncf(profile)) == {"overflow_fix": "DISABLE"}
    assert values(isa.x86_inductor(profile)) == {"reduce_range": False}
    # The u8/s8 types are not ISA-dependent: kept, and the reason says so.
    onnx = isa.onnxruntime(profile)
    assert (onnx["activation_type"], onnx["weight_type"]) == ("QUInt8", "QInt8")
    assert all("every target" in reason for reason in reasons(onnx)[1:])
    for choices in (isa.onnxruntime(profile), isa.nncf(profile), isa.x86_inductor(profile)):
        assert f"with {named}" in choices.choices[0].reason and "int32" in choices.choices[0].reason


def test_arm_never_saturates():
    assert ARM.family == "arm" and not ARM.saturates and ARM.isa == ["asimd", "asimddp"]
    assert values(isa.onnxruntime(ARM))["reduce_range"] is False
    assert values(isa.nncf(ARM)) == {"overflow_fix": "DISABLE"}
    assert values(isa.x86_inductor(ARM)) == {"reduce_range": False}
    assert all("32 bits" in choices.choices[0].reason
               for choices in (isa.onnxruntime(ARM), isa.nncf(ARM), isa.x86_inductor(ARM)))
    # A device's cpuinfo, as device mode records it: ARM's flags are on the Features line.
    pi5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm asimddp i8mm\nCPU implementer\t: 0x41\n"
    assert isa.from_cpuinfo("aarch64", pi5).isa == ["asimd", "asimddp", "i8mm"]


def test_unknown_cpus_get_the_setting_that_cannot_saturate(tmp_path):
    unreadable = isa.probe(tmp_path / "no-cpuinfo")
    assert unreadable.flags == frozenset() and "unreadable" in unreadable.source
    if unreadable.family == "x86":
        assert isa.onnxruntime(unreadable)["reduce_range"] is True
    riscv = isa.from_flags("riscv64", {"rv64imafdc"})
    assert isa.onnxruntime(riscv)["reduce_range"] is True and isa.nncf(riscv)["overflow_fix"] == "ENABLE"


def test_probe_reads_this_machines_cpuinfo(tmp_path):
    machine = isa.probe()
    assert machine.arch == platform.machine() and machine.source == "/proc/cpuinfo"
    text = Path("/proc/cpuinfo").read_text()
    listed = {flag for line in text.splitlines() if re.match(r"(flags|Features)\s*:", line)
              for flag in line.split(":", 1)[1].split()}
    assert machine.flags and machine.flags <= listed
    # A flag only some processors report is none to build for.
    two = tmp_path / "cpuinfo"
    two.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert isa.probe(two).flags == {"fpu", "avx2"}


def test_this_machine_without_vnni_keeps_todays_choices():
    text = Path("/proc/cpuinfo").read_text()
    if platform.machine() != "x86_64" or re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", text):
        pytest.skip("this machine has a VNNI form (or is no x86): today's choices were made for one without")
    from mobilenet.builders import aoti, onnx, openvino
    here = isa.build_target()
    assert onnx.int8_settings(isa.onnxruntime(here)) == ONNX_SETTINGS_BEFORE
    assert openvino.int8_settings(isa.nncf(here)) == OPENVINO_SETTINGS_BEFORE
    assert aoti.int8_settings(isa.x86_inductor(here)) == AOTI_SETTINGS_BEFORE
    assert isa.torch_ao("fbgemm", here)["reduce_range"] is True  # fbgemm's default qconfig


def test_the_builders_settings_follow_the_target():
    from mobilenet.builders import aoti, onnx, openvino
    assert onnx.int8_settings(isa.onnxruntime(VNNI)) == {**ONNX_SETTINGS_BEFORE, "reduce_range": False}
    assert openvino.int8_settings(isa.nncf(ARM)) == {**OPENVINO_SETTINGS_BEFORE, "overflow_fix": "DISABLE"}
    assert aoti.int8_settings(isa.x86_inductor(VNNI)) == {**AOTI_SETTINGS_BEFORE, "reduce_range": False}


def stubbed_onnx_int8(monkeypatch, target, ctx, out: Path, override=None) -> tuple[dict, dict]:
    """onnx.quantize_int8 for `target`, its two slow calls (export, quantize_static) replaced:
    (the settings quantize_static was given, the options the builder returned)."""
    from mobilenet.builders import onnx
    used = {}

    def quantize(fp32_path, out, photos, settings, log, work_dir):
        used.update(settings)
        Path(out).write_bytes(b"onnx")

    monkeypatch.setattr(isa, "build_target", lambda: target)
    monkeypatch.setattr(onnx, "_fp32_onnx", lambda ctx: (b"fp32", {"opset": 18}))
    monkeypatch.setattr(onnx, "quantize_fp32_onnx", quantize)
    return used, onnx.quantize_int8(ctx, out, override=override)


def test_the_recorded_choice_lands_in_the_onnx_builders_options(monkeypatch, tmp_path):
    ctx = SimpleNamespace(calibration=lambda: iter([np.zeros((1, 3, 224, 224), np.float32)]),
                          log=SimpleNamespace(debug=lambda *args: None))
    used, options = stubbed_onnx_int8(monkeypatch, VNNI, ctx, tmp_path / "onnx-int8.onnx")
    assert used["reduce_range"] is False and options["reduce_range"] is False
    recorded = options[isa.RECORD_KEY]
    assert recorded["target"]["isa_flags"] == ["avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"]
    assert recorded["choices"][0] == {"setting": "reduce_range", "value": False,
                                      "reason": isa.onnxruntime(VNNI).choices[0].reason}


def test_every_isa_dependent_builder_is_a_registry_builder_and_its_tuning_claims_no_isa():
    builders = {v.builder for v in VARIANTS}
    assert set(isa.BUILDER_RULES) <= builders
    for variant in VARIANTS:
        if isa.choices_for(variant, NO_VNNI) is not None:
            assert variant.precision == "int8"
            # The reasons are generated per target; the registry's text keeps the history only.
            assert not re.search(r"saturat|for x86|for AVX2", variant.tuning or ""), variant.id
    assert isa.choices_for(by_id("int8-static-qnnpack"), VNNI).toolkit == "torch.ao qnnpack"
    assert isa.choices_for(by_id("onnx-fp32"), VNNI) is None


def test_the_targets_choices_enter_the_builds_freshness(monkeypatch):
    data = SimpleNamespace(image_set="test")
    onnx_int8, onnx_fp32 = by_id("onnx-int8"), by_id("onnx-fp32")

    def settings_for(profile):
        monkeypatch.setattr(isa, "build_target", lambda: profile)
        return staleness.step_settings("convert-onnx", Settings(), [onnx_fp32, onnx_int8], data)["variants"]

    before, after = settings_for(NO_VNNI), settings_for(VNNI)
    assert before[onnx_int8.id][isa.RECORD_KEY] == {
        "arch": "x86_64", "isa_flags": ["avx2"],
        "values": {"reduce_range": True, "activation_type": "QUInt8", "weight_type": "QInt8"}}
    assert after[onnx_int8.id][isa.RECORD_KEY]["values"]["reduce_range"] is False
    assert before[onnx_int8.id] != after[onnx_int8.id], "built for other choices: rebuilt"
    assert before[onnx_fp32.id] == after[onnx_fp32.id], "FP32 makes no ISA-dependent choice"


def _int8_row(machine: str, profile: isa.Target):
    row = make_result("onnx-int8", 6.0, machine=machine, eager_p50=20.0)
    row.build = {"status": "ok", "options": {"reduce_range": isa.onnxruntime(profile)["reduce_range"],
                                             isa.RECORD_KEY: isa.onnxruntime(profile).recorded()}}
    return row


def test_report_notes_say_what_this_runs_build_chose_and_why():
    eager = make_result(REFERENCE_ID, 20.0, machine="xeon (Test CPU)")
    text = report.render([eager, _int8_row("xeon (Test CPU)", VNNI)])
    note = next(line for line in text.splitlines() if line.startswith("  - `onnx-int8`:"))
    assert by_id("onnx-int8").tuning in note
    assert ("ISA-dependent settings, chosen for x86\\_64 with avx2, avx512f, avx512bw, avx512\\_vnni, amx\\_int8: "
            "reduce\\_range=False — with avx512\\_vnni and amx\\_int8 MLAS sums u8 x s8 products into int32") in note
    assert "activation\\_type=QUInt8 — U8 activations on every target" in note
    assert "vpmaddubsw, whose int16 pair sums saturate" not in note, "no AVX2 claim on a VNNI machine's report"


def test_each_machines_notes_say_its_own_choices_and_mixed_builds_name_their_machines():
    rows = [make_result(REFERENCE_ID, 20.0, machine="epyc (Test CPU)"), _int8_row("epyc (Test CPU)", NO_VNNI),
            make_result(REFERENCE_ID, 20.0, machine="xeon (Test CPU)"), _int8_row("xeon (Test CPU)", VNNI)]
    text = report.render(rows)
    epyc, xeon = (text[text.index(f"## {name} (Test CPU)\n"):] for name in ("epyc", "xeon"))
    epyc = epyc[:epyc.index("## xeon (Test CPU)\n")]
    assert "reduce\\_range=True — without a VNNI form" in epyc and "reduce\\_range=False" not in epyc
    assert "reduce\\_range=False — with avx512\\_vnni" in xeon and "reduce\\_range=True" not in xeon
    # One group holding builds that chose differently (merged folders) says which machine made which.
    note = next(line for line in report.notes(rows) if line.startswith("  - `onnx-int8`:"))
    assert "Built on epyc (Test CPU): ISA-dependent settings, chosen for x86\\_64 with avx2 (no " in note
    assert "reduce\\_range=True — without a VNNI form" in note
    assert "Built on xeon (Test CPU): ISA-dependent settings" in note and "reduce\\_range=False" in note


def test_report_notes_without_recorded_choices_keep_the_history_only():
    eager = make_result(REFERENCE_ID, 20.0)
    row = make_result("onnx-int8", 6.0, eager_p50=20.0)
    row.build = {"status": "ok", "options": {isa.RECORD_KEY: {"choices": "garbled"}}}
    note = next(line for line in report.render([eager, row]).splitlines() if line.startswith("  - `onnx-int8`:"))
    assert note.endswith(by_id("onnx-int8").tuning) and "ISA-dependent" not in note


# ---- profiles of other CPUs: the emulated ARM64 host, and builds made for a profile

ARM64_HOST_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "arm64-host"


def emulated_host_cpuinfo(core: str = "cortex-a76", cpus: int = 2) -> str:
    """The /proc/cpuinfo .ci/arm64-host gives its emulated board (its Features line for `core`)."""
    features = re.search(rf"{core}\)[^\n]*\n\s*FEATURES=\"([^\"]+)\"", ARM64_HOST_SCRIPT.read_text()).group(1)
    return "".join(f"processor\t: {cpu}\nFeatures\t: {features}\nCPU implementer\t: 0x41\n\n" for cpu in range(cpus))


def every_rule(profile: isa.Target) -> dict:
    return {choices.toolkit: values(choices) for choices in (
        isa.onnxruntime(profile), isa.nncf(profile), isa.x86_inductor(profile),
        isa.torch_ao("fbgemm", profile), isa.torch_ao("qnnpack", profile))}


TYPES = {"activation_type": "QUInt8", "weight_type": "QInt8"}


@pytest.mark.parametrize("profile, chosen", [
    (NO_VNNI, {"ONNX Runtime": {"reduce_range": True, **TYPES}, "NNCF": {"overflow_fix": "ENABLE"},
               "X86InductorQuantizer": {"reduce_range": True}, "torch.ao fbgemm": {"reduce_range": True},
               "torch.ao qnnpack": {"reduce_range": False}}),
    (VNNI, {"ONNX Runtime": {"reduce_range": False, **TYPES}, "NNCF": {"overflow_fix": "DISABLE"},
            "X86InductorQuantizer": {"reduce_range": False}, "torch.ao fbgemm": {"reduce_range": True},
            "torch.ao qnnpack": {"reduce_range": False}}),
    (isa.from_cpuinfo("aarch64", emulated_host_cpuinfo("cortex-a76")),
     {"ONNX Runtime": {"reduce_range": False, **TYPES}, "NNCF": {"overflow_fix": "DISABLE"},
      "X86InductorQuantizer": {"reduce_range": False}, "torch.ao fbgemm": {"reduce_range": True},
      "torch.ao qnnpack": {"reduce_range": False}}),
], ids=["x86-without-vnni", "x86-with-vnni", "emulated-arm64-host"])
def test_the_settings_chosen_for_each_kind_of_cpu(profile, chosen):
    """Every toolkit's ISA-dependent settings for a no-VNNI x86, a VNNI x86 and the emulated
    ARM64 host's own /proc/cpuinfo (from .ci/arm64-host), side by side."""
    assert every_rule(profile) == chosen


def test_the_emulated_hosts_cores_are_both_arm_that_never_saturates():
    a76 = isa.from_cpuinfo("aarch64", emulated_host_cpuinfo("cortex-a76"))
    a72 = isa.from_cpuinfo("aarch64", emulated_host_cpuinfo("cortex-a72"))  # a Pi 4: no asimddp
    assert a76.isa == ["asimd", "asimddp"] and a72.isa == ["asimd"]
    assert a76.name == "aarch64-asimd-asimddp" and a72.name == "aarch64-asimd"
    assert every_rule(a76) == every_rule(a72), "the same rules, though not the same folder"
    assert not a72.same_isa(a76) and a76.same_isa(isa.from_flags("aarch64", {"asimd", "asimddp", "sha2"}))


def test_a_build_for_a_profile_asks_for_that_cpu_in_this_process_and_in_its_children(tmp_path, monkeypatch):
    monkeypatch.delenv(isa.TARGET_ENV, raising=False)
    here = isa.build_target()
    assert here.source == "/proc/cpuinfo"
    profile = isa.write_profile(ARM, tmp_path / "target.json")
    assert isa.load_profile(profile).same_isa(ARM) and isa.load_profile(profile).name == "aarch64-asimd-asimddp"
    with isa.building_for(ARM):  # a build run in this process
        assert isa.build_target() is ARM
        assert isa.onnxruntime(isa.build_target())["reduce_range"] is False
    assert isa.build_target().same_isa(here), "after the block: this machine again"
    monkeypatch.setenv(isa.TARGET_ENV, str(profile))  # what a build's child process inherits
    assert isa.build_target().same_isa(ARM)
    # The freshness of an INT8 artifact built for it records that CPU's values.
    data = SimpleNamespace(image_set="test")
    recorded = staleness.step_settings("convert-onnx", Settings(), [by_id("onnx-int8")], data)["variants"]
    assert recorded["onnx-int8"][isa.RECORD_KEY]["arch"] == "aarch64"
    assert recorded["onnx-int8"][isa.RECORD_KEY]["values"]["reduce_range"] is False


def test_a_targets_build_has_folders_of_its_own_and_its_children_read_them_back(tmp_path, monkeypatch):
    monkeypatch.delenv(isa.TARGET_ENV, raising=False)
    build = tmp_path / "build"
    profile = isa.write_profile(ARM, build / "targets" / "aarch64-asimd-asimddp" / isa.PROFILE_FILE)
    here, there = Settings(build_dir=build), Settings(build_dir=build, target=profile)
    assert here.models_dir == build / "models" and here.target_dir is None
    folder = build / "targets" / "aarch64-asimd-asimddp"
    assert (there.models_dir, there.stamps_dir, there.logs_dir) == (folder / "models", folder / "stamps",
                                                                    folder / "logs")
    # The photos and results are shared: only what is built for that CPU moves.
    assert (there.data_dir, there.results_dir) == (here.data_dir, here.results_dir)
    for name, value in there.as_env().items():  # a build step's child process
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.models_dir == there.models_dir and isa.settings_target(child).same_isa(ARM)
    assert isa.build_target().same_isa(ARM)
    monkeypatch.setenv(isa.TARGET_ENV, "")  # a build for this machine passes the variable empty
    assert Settings().target is None and Settings().models_dir == Settings().build_dir / "models"


def test_a_bad_profile_is_refused_naming_the_file(tmp_path, monkeypatch):
    from mobilenet.settings import SettingError
    bad = tmp_path / "pi.json"
    bad.write_text('{"arch": "aarch64"}')
    monkeypatch.setenv(isa.TARGET_ENV, str(bad))
    with pytest.raises(SettingError, match=r"MOBILENET_TARGET=.*pi\.json.*not a target profile; expected"):
        Settings()
    monkeypatch.setenv(isa.TARGET_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(SettingError, match=r"missing\.json: not a readable target profile"):
        Settings()
    # A device mode device.json is a profile too: its probe's machine and /proc/cpuinfo.
    probed = tmp_path / "device.json"
    probed.write_text(json.dumps({"device": {"machine": "aarch64", "cpuinfo": emulated_host_cpuinfo()}}))
    monkeypatch.setenv(isa.TARGET_ENV, str(probed))
    assert isa.settings_target(Settings()).isa == ["asimd", "asimddp"]


def test_a_row_built_for_another_cpu_is_flagged_with_what_would_be_chosen_there():
    onnx_for_x86 = isa.onnxruntime(NO_VNNI).recorded()
    assert isa.isa_mismatch(NO_VNNI.record(), ARM.record(), onnx_for_x86) == (
        "built for x86_64 avx2, measured on aarch64 asimd asimddp; chosen for that CPU, reduce_range=False "
        "(built with reduce_range=True)")
    qnnpack = isa.torch_ao("qnnpack", NO_VNNI).recorded()
    assert isa.isa_mismatch(NO_VNNI.record(), ARM.record(), qnnpack) == (
        "built for x86_64 avx2, measured on aarch64 asimd asimddp; the same ISA-dependent settings hold there")
    arm_device = isa.from_cpuinfo("aarch64", emulated_host_cpuinfo())
    assert isa.isa_mismatch(ARM.record(), arm_device.record(), isa.onnxruntime(ARM).recorded()) is None
    assert isa.isa_mismatch(None, ARM.record()) is None, "FP32 makes no ISA-dependent choice: nothing to flag"
    assert isa.isa_mismatch(NO_VNNI.record(), VNNI.record()).startswith("built for x86_64 avx2, measured on "
                                                                        "x86_64 avx2 avx512f")


def _row_on(machine: str, built: isa.Target, measured: isa.Target, variant: str = "onnx-int8"):
    row = _int8_row(machine, built) if variant == "onnx-int8" else make_result(variant, 6.0, machine=machine,
                                                                               eager_p50=20.0)
    row.built_for = built.record() if variant == "onnx-int8" else None
    row.measured_on = measured.record()
    return row


def test_the_report_flags_a_row_measured_on_another_cpu_and_never_one_built_for_it():
    arm = isa.from_cpuinfo("aarch64", emulated_host_cpuinfo())
    rows = [make_result(REFERENCE_ID, 20.0, machine="pi (Cortex-A76)"),
            _row_on("pi (Cortex-A76)", NO_VNNI, arm), _row_on("pi (Cortex-A76)", NO_VNNI, arm, "litert-int8")]
    text = report.render(rows)
    line = next(line for line in text.splitlines() if line.startswith("| `onnx-int8`"))
    assert line.rstrip(" |").endswith("ok; built for x86\\_64 avx2, measured on aarch64 asimd asimddp")
    assert not next(line for line in text.splitlines() if line.startswith("| `litert-int8`")).count("built for")
    assert ("  - `onnx-int8`: built for x86\\_64 avx2, measured on aarch64 asimd asimddp; chosen for that CPU, "
            "reduce\\_range=False (built with reduce\\_range=True).") in text.splitlines()
    built_for_it = report.render([make_result(REFERENCE_ID, 20.0, machine="pi (Cortex-A76)"),
                                  _row_on("pi (Cortex-A76)", ARM, arm)])
    assert "built for" not in built_for_it.replace("built for another CPU", "")
    note = next(line for line in built_for_it.splitlines() if line.startswith("  - `onnx-int8`:"))
    assert ("chosen for aarch64 with asimd, asimddp: reduce\\_range=False — ARM's int8 kernels (NEON widening "
            "multiplies, udot/sdot with asimddp) sum products in 32 bits") in note
    assert "saturate" not in built_for_it.replace("nothing saturates", ""), "no saturation claim about an ARM device"
