"""The explain step: operator kinds from real profiles, SQNR with its cap, honest "not
available" rows, and the report section rendered from a small real explain run.

Fast: no conversion chain. The torch profile is taken live; ONNX Runtime's and XNNPACK's
operator sequences were captured from real profiles of the tiny test chain
(MobileNet-V2 at 1 thread, onnxruntime 1.32, executorch 1.5.1) and are kept here as run-length
lists, so the mapping is checked on what those profilers really print.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mobilenet.explain import kinds, records, sqnr

MOBILENET_V2_KINDS = {kinds.CONV_1X1: 34, kinds.CONV_DW: 17, kinds.CONV_FULL: 1}

# Captured with mobilenet.explain.profilers.onnxruntime on onnx-int8 / onnx-fp32.
ORT_INT8 = [["QuantizeLinear", 1], ["Transpose", 1], ["QLinearConv", 9], ["QLinearAdd", 1], ["QLinearConv", 6],
            ["QLinearAdd", 1], ["QLinearConv", 3], ["QLinearAdd", 1], ["QLinearConv", 6], ["QLinearAdd", 1],
            ["QLinearConv", 3], ["QLinearAdd", 1], ["QLinearConv", 3], ["QLinearAdd", 1], ["QLinearConv", 6],
            ["QLinearAdd", 1], ["QLinearConv", 3], ["QLinearAdd", 1], ["QLinearConv", 6], ["QLinearAdd", 1],
            ["QLinearConv", 3], ["QLinearAdd", 1], ["QLinearConv", 4], ["Transpose", 1], ["DequantizeLinear", 1],
            ["ReduceMean", 1], ["QuantizeLinear", 1], ["Reshape", 1], ["QGemm", 1], ["DequantizeLinear", 1]]
ORT_FP32 = [["Conv", 52], ["ReorderOutput", 1], ["ReduceMean", 1], ["Reshape", 1], ["Gemm", 1]]


def _xnnpack_blocks(dw: str, fc: str, add: str) -> list:
    """The body of XNNPACK's MobileNet-V2 trace: stage by stage, inverted residual blocks as
    [DWConv, FC (project)] or [FC (expand), DWConv, FC (project)], plus an Add where residual."""
    runs = []
    for expansion, _, repeats, _stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for index in range(repeats):
            runs += ([[fc, 1]] if expansion != 1 else []) + [[dw, 1], [fc, 1]]
            if index > 0:
                runs.append([add, 1])
    return runs


# Captured with mobilenet.explain.profilers.executorch (ETDump) on executorch-int8 / -fp32:
# the same sequences as these, written out compactly.
XNNPACK_INT8 = ([["Convert (NC)", 1], ["Transpose (ND, X8)", 1], ["Convolution (NHWC, QC8) IGEMM", 1]]
                + _xnnpack_blocks("Convolution (NHWC, QC8) DWConv", "Fully Connected (NC, QS8, QC8W) GEMM",
                                  "Add (ND)")
                + [["Fully Connected (NC, QS8, QC8W) GEMM", 1], ["Mean (ND)", 1], ["Transpose (ND, X8)", 1],
                   ["Static Reshape (NC)", 1], ["Fully Connected (NC, QS8, QC8W) GEMM", 1], ["Convert (NC)", 1]])
XNNPACK_FP32 = ([["Transpose (ND, X32)", 1], ["Convolution (NHWC, F32) IGEMM", 1]]
                + _xnnpack_blocks("Convolution (NHWC, F32) DWConv", "Fully Connected (NC, F32) GEMM", "Add (ND)")
                + [["Fully Connected (NC, F32) GEMM", 1], ["Mean (ND) Reduce2", 1], ["Transpose (ND, X32)", 1],
                   ["Static Reshape (NC)", 1], ["Fully Connected (NC, F32) GEMM", 1]])


def _expand(run_lengths) -> list[str]:
    return [name for name, count in run_lengths for _ in range(count)]


def _counts(names) -> Counter:
    return Counter(kinds.classify_call(names))


def test_mobilenet_v2_conv_list_matches_torchvision():
    import torch
    import torchvision
    model = torchvision.models.mobilenet_v2(weights=None)
    expected = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            expected.append(kinds.CONV_DW if m.groups > 1 else
                            kinds.CONV_1X1 if m.kernel_size == (1, 1) else kinds.CONV_FULL)
    assert list(kinds.MOBILENET_V2_CONVS) == expected


def test_kinds_on_a_real_torch_profile():
    import torch
    import torchvision

    from mobilenet.explain.profilers import torch as torch_profiler

    class EagerRunner:  # the bench runner's run(): numpy in, numpy out, inference mode
        def __init__(self):
            self.module = torchvision.models.mobilenet_v2(weights=None).eval()

        def run(self, image):
            with torch.inference_mode():
                return self.module(torch.from_numpy(image)).numpy()

    class Variant:
        runtime = "torch_eager"

    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    capture = torch_profiler.profile(EagerRunner(), Variant(), None, image, calls=2, work_dir=None)
    assert len(capture.calls) == 2 and len(capture.profiled_ms) == 2
    names = [name for name, _ in capture.calls[0]]
    counts = _counts(names)
    for kind, expected in MOBILENET_V2_KINDS.items():
        assert counts[kind] == expected, (kind, counts)
    assert counts[kinds.ADD] == 10 and counts[kinds.POOL] == 1 and counts[kinds.LINEAR] == 1
    # only top-level operators count: the convolution's own callees are not counted again
    assert "aten::mkldnn_convolution" not in names and names.count("aten::conv2d") == 52


def test_kinds_on_real_onnxruntime_profiles():
    int8 = _counts(_expand(ORT_INT8))
    for kind, expected in MOBILENET_V2_KINDS.items():
        assert int8[kind] == expected
    assert int8[kinds.ADD] == 10 and int8[kinds.LINEAR] == 1 and int8[kinds.POOL] == 1
    assert int8[kinds.QDQ] == 4 and int8[kinds.LAYOUT] == 2
    fp32 = _counts(_expand(ORT_FP32))  # ONNX Runtime fuses the residual adds into the convolutions
    assert fp32[kinds.CONV_1X1] == 34 and fp32[kinds.LAYOUT] == 1 and fp32[kinds.ADD] == 0


@pytest.mark.parametrize("trace", [XNNPACK_INT8, XNNPACK_FP32], ids=["int8", "fp32"])
def test_kinds_on_real_executorch_xnnpack_profiles(trace):
    """XNNPACK runs 1x1 convolutions as Fully Connected: only the one after the pool is the
    classifier. Its own DWConv / IGEMM names must agree with the architecture's order."""
    names = _expand(trace)
    found = kinds.classify_call(names)
    counts = Counter(found)
    for kind, expected in MOBILENET_V2_KINDS.items():
        assert counts[kind] == expected
    assert counts[kinds.LINEAR] == 1 and counts[kinds.ADD] == 10 and counts[kinds.POOL] == 1
    assert counts[kinds.LAYOUT] == 2 and counts[kinds.QDQ] == (2 if trace is XNNPACK_INT8 else 0)
    for name, kind in zip(names, found):
        if "DWConv" in name:
            assert kind == kinds.CONV_DW
        if "IGEMM" in name:
            assert kind == kinds.CONV_FULL


def test_a_call_that_is_not_mobilenet_v2_is_not_guessed():
    """With a different number of convolutions only the name decides: XNNPACK's DWConv is
    depthwise, torch's plain conv2d says nothing and stays 'other'."""
    names = ["Convolution (NHWC, QS8) DWConv", "Convolution (NHWC, F32) IGEMM", "aten::conv2d",
             "Fully Connected (NC, QS8) GEMM", "Global Average Pooling (NWC, F32)", "Fully Connected (NC, F32) GEMM",
             "aten::addmm", "Convert (NC, F32, QS8)"]
    assert kinds.classify_call(names) == [kinds.CONV_DW, kinds.CONV_FULL, kinds.OTHER, kinds.CONV_1X1,
                                          kinds.POOL, kinds.LINEAR, kinds.LINEAR, kinds.QDQ]


def test_sqnr_of_a_layer_against_itself_is_capped():
    rng = np.random.default_rng(1)
    layer = [rng.standard_normal((1, 8, 4, 4)).astype(np.float32) for _ in range(3)]
    assert sqnr.sqnr_db(layer, [x.copy() for x in layer]) == (sqnr.CAP_DB, True)
    (row,) = sqnr.layer_errors([("features.0", "conv", layer, layer)])
    assert row["sqnr_db"] == sqnr.CAP_DB and row["capped"] is True and row["depth"] == 1.0


def test_sqnr_of_a_quantized_layer_is_finite_and_follows_the_definition():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(10_000)
    scale = (x.max() - x.min()) / 255
    q = np.round(x / scale) * scale
    value, capped = sqnr.sqnr_db(x, q)
    assert not capped
    assert value == pytest.approx(10 * np.log10(np.sum(x ** 2) / np.sum((x - q) ** 2)))
    assert 35 < value < 50  # 8-bit rounding of a Gaussian: about 6 dB per bit, minus the range lost
    with pytest.raises(ValueError, match="cannot compare"):
        sqnr.sqnr_db(x, q[:-1])


def test_litert_says_why_it_has_no_operator_profile():
    from importlib import metadata

    from mobilenet.explain.profilers import ProfilerUnavailable
    from mobilenet.explain.profilers import litert as litert_profiler
    with pytest.raises(ProfilerUnavailable, match=metadata.version("ai-edge-litert")) as raised:
        litert_profiler.profile(None, None, None, None, 1, None)
    assert "delegate" in str(raised.value)


# ---- a small real explain run: eager FP32 and int8-dynamic made here in seconds, the
# LiteRT variants selected but never built.

def _tiny_build(root: Path) -> Path:
    import torch
    import torchvision

    from mobilenet.files import write_json
    from mobilenet.logs import quiet_deprecations
    from mobilenet.registry import by_id
    quiet_deprecations()
    models, data = root / "models", root / "data"
    models.mkdir(parents=True)
    data.mkdir()
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    torch.save(model.state_dict(), by_id("fp32-eager").artifact_path(models))
    rng = np.random.default_rng(3)
    photos = rng.standard_normal((4, 3, 224, 224)).astype(np.float32)
    np.save(data / "eval.npy", photos)
    np.save(data / "calib.npy", photos[:2])
    dynamic = by_id("int8-dynamic")
    torch.backends.quantized.engine = dynamic.engine
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        traced = torch.jit.trace(quantized, torch.from_numpy(photos[:1]))
    torch.jit.freeze(traced.eval()).save(str(dynamic.artifact_path(models)))
    for variant in ("fp32-eager", "int8-dynamic"):
        write_json(by_id(variant).meta_path(models), {"variant": variant, "status": "ok", "options": {
            "layers": "nn.Linear", "dtype": "qint8", "engine": "x86"} if variant == "int8-dynamic" else {}})
    return root


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    from mobilenet import explain
    from mobilenet.settings import Settings
    build = _tiny_build(tmp_path_factory.mktemp("explain") / "build")
    settings = Settings().with_options(build_dir=build, only="int8-dynamic,litert-*", quiet=True)
    summary = explain.run(settings)
    return build, settings, summary


def test_every_selected_variant_gets_a_row_and_unbuilt_ones_say_why(explained):
    from mobilenet.explain import pipeline
    build, _, summary = explained
    profile_dir = pipeline.explain_dir(build) / "profile"
    profiles = {p.variant: p for p in records.load_all(profile_dir, records.OperatorProfile)}
    assert set(profiles) == {"fp32-eager", "int8-dynamic", "litert-fp32", "litert-int8"}
    for variant in ("fp32-eager", "int8-dynamic"):
        p = profiles[variant]
        assert p.status == records.OK and p.profiled_calls == pipeline.PROFILE_CALLS
        assert p.kind_ms[kinds.CONV_1X1] > 0 and p.unprofiled_p50_ms > 0 and p.profiled_p50_ms > 0
    for variant in ("litert-fp32", "litert-int8"):
        p = profiles[variant]
        assert p.status == records.NOT_AVAILABLE and "does not exist" in p.reason and not p.kind_ms
    # oneDNN's verbose lines, read in the profile process, name the convolutions it ran: eager torch 2.14
    # sends the depthwise ones and the stem to oneDNN (its 1x1 ones go to ATen's slow conv, which names none).
    eager = profiles["fp32-eager"]
    assert sum(eager.kernels[kinds.CONV_DW].values()) == 17 and sum(eager.kernels[kinds.CONV_FULL].values()) == 1
    assert all(":" in name for names in eager.kernels.values() for name in names)  # oneDNN's impl:isa spelling
    assert "oneDNN verbose" in eager.kernels_source and "ATen's own code" in eager.kernels_note
    # Whatever ISA the names show is one this CPU has (no name is echoed from a table).
    from mobilenet.explain import cpu, kernels
    flags = cpu.read_cpuinfo()[1]
    shown = {isa for isas in eager.kernel_isa.values() for isa in isas} - {kernels.REFERENCE}
    assert shown and all(kernels.ISA_FLAG[isa] in flags for isa in shown), (shown, sorted(flags))
    errors = {e.variant: e for e in records.load_all(pipeline.explain_dir(build) / "sqnr", records.QuantizationError)}
    assert errors["litert-int8"].status == records.NOT_AVAILABLE
    dynamic = errors["int8-dynamic"]
    assert dynamic.status == records.OK and [layer["kind"] for layer in dynamic.layers] == [kinds.LINEAR]
    assert "differ from the shipped artifact's by at most" in dynamic.fidelity
    assert summary.profile_calls == pipeline.PROFILE_CALLS and set(summary.stage_seconds) >= {"profile", "sqnr"}


def test_one_broken_variant_in_a_shared_profile_process_spares_the_others(explained, tmp_path):
    """The torch variants share one profile process: a variant that fails inside it gets its
    own "not available" row, and the variant after it is still profiled."""
    import shutil

    from mobilenet.explain import pipeline
    from mobilenet.registry import by_id
    build, settings, _ = explained
    copy = tmp_path / "build"
    shutil.copytree(build / "models", copy / "models")
    shutil.copytree(build / "data", copy / "data")
    by_id("int8-dynamic").artifact_path(copy / "models").write_bytes(b"not a TorchScript archive")
    settings = settings.with_options(build_dir=copy)
    group = [by_id("int8-dynamic"), by_id("fp32-eager")]
    assert pipeline._process_groups("profile", group) == {"torch": group}
    outs = [pipeline.profile_path(copy, v.id) for v in group]
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
    pipeline._run_job("profile", group, settings, outs, "torch")
    broken, fine = (records.load(out, records.OperatorProfile) for out in outs)
    assert broken.status == records.NOT_AVAILABLE and broken.reason and not broken.kind_ms
    assert fine.status == records.OK and fine.kind_ms[kinds.CONV_1X1] > 0


def test_a_rerun_with_nothing_changed_redoes_nothing(explained):
    from mobilenet import explain
    _, settings, _ = explained
    assert explain.run(settings).redone == []


def test_render_section_from_the_explain_files_alone(explained):
    from mobilenet import explain
    from mobilenet.explain import pipeline
    build, _, _ = explained
    text = "\n".join(explain.render_section(build))
    assert text.startswith("## Why these numbers")
    row = next(line for line in text.splitlines() if line.startswith("| `fp32-eager`"))
    assert "torch.profiler" in row and "not available" not in row
    assert "- `litert-int8`: not available: litert-int8.tflite does not exist" in text
    assert "classifier.1 (linear)" in text  # the one quantized layer of int8-dynamic, named
    assert "**`fp32-eager`**: fp32-eager: of " in text  # where eager's time goes, from its profile
    assert "### Which kernels ran" in text
    eager_kernels = next(line for line in text.splitlines() if line.startswith("- `fp32-eager` from oneDNN"))
    assert "depthwise 3x3 conv: `" in eager_kernels
    for chart in pipeline.chart_paths(build).values():
        assert chart.stat().st_size > 0 and f"]({chart.relative_to(build).as_posix()})" in text
    verdicts = json.loads(pipeline.verdicts_path(build).read_text())
    assert {v["variant"] for v in verdicts} >= {"fp32-eager"}


def test_render_section_is_empty_before_explain_ran(tmp_path):
    from mobilenet import explain
    assert explain.render_section(tmp_path) == []
