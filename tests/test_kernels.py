"""Verdicts that name the kernels that ran, from recorded profiles.

The OpenVINO profiles below are explain JSON records in the form the explain step writes them.
The first holds the exec_type names OpenVINO's profiling_info printed on an Intel Xeon with AMX
for the 1x1 convolutions, the stem and FP32's 1x1 convolutions (brgconv_avx512_amx_1x1_I8,
brgconv_avx512_amx_I8, brgconv_avx512_1x1_f32); its other names follow the same pattern. The
second has the names of a CPU with AVX2 and no AVX-512. The oneDNN lines are written in the
formats oneDNN 2.x and 3.x print. Fast: nothing is converted or run, except reading torch's own
library where a test checks QNNPACK's table against it.
"""
from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest

from mobilenet.explain import kernels, kinds, records, verdict
from mobilenet.registry import by_id

_OV_COMMON = {"runtime": "openvino", "status": "ok", "reason": "", "threads": 1, "profiled_calls": 20,
              "profiler": "OpenVINO enable_profiling / profiling_info (openvino 2026.4.1)",
              "visibility": "every node of the CPU plugin's execution graph", "ops": [], "schema": records.SCHEMA,
              "kernels_source": "OpenVINO profiling_info exec_type (the CPU plugin's implementation of each node)"}

# openvino-int8 and openvino-fp32 on a Xeon with AVX-512 VNNI and AMX-INT8.
OV_AMX = {
    "openvino-int8": {**_OV_COMMON, "variant": "openvino-int8", "precision": "int8", "unprofiled_p50_ms": 1.9,
                      "profiled_p50_ms": 2.0,
                      "kind_ms": {kinds.CONV_1X1: 1.10, kinds.CONV_DW: 0.40, kinds.CONV_FULL: 0.05, kinds.ADD: 0.04,
                                  kinds.POOL: 0.01, kinds.LINEAR: 0.03, kinds.LAYOUT: 0.02},
                      "kernels": {kinds.CONV_1X1: {"brgconv_avx512_amx_1x1_I8": 34},
                                  kinds.CONV_DW: {"jit_avx512_dw_I8": 17},
                                  kinds.CONV_FULL: {"brgconv_avx512_amx_I8": 1},
                                  kinds.LINEAR: {"brgemm_avx512_amx_I8": 1}}},
    "openvino-fp32": {**_OV_COMMON, "variant": "openvino-fp32", "precision": "fp32", "unprofiled_p50_ms": 1.2,
                      "profiled_p50_ms": 1.3,
                      "kind_ms": {kinds.CONV_1X1: 0.42, kinds.CONV_DW: 0.50, kinds.CONV_FULL: 0.06, kinds.ADD: 0.03,
                                  kinds.POOL: 0.01, kinds.LINEAR: 0.05, kinds.LAYOUT: 0.01},
                      "kernels": {kinds.CONV_1X1: {"brgconv_avx512_1x1_f32": 34},
                                  kinds.CONV_DW: {"jit_avx512_dw_f32": 17},
                                  kinds.CONV_FULL: {"brgconv_avx512_f32": 1}}},
}


def _avx2_profiles() -> dict:
    """The same records with the names a CPU with AVX2 and no AVX-512 gets."""
    profiles = copy.deepcopy(OV_AMX)
    for record in profiles.values():
        record["kernels"] = {kind: {name.replace("avx512_amx", "avx2").replace("avx512", "avx2"): count
                                    for name, count in names.items()} for kind, names in record["kernels"].items()}
    return profiles


# Every INT8-relevant flag a Xeon has, to show that none reaches a sentence unless a kernel shows it.
XEON_FLAGS = ["AVX2", "AVX-512", "AVX-512 VNNI", "AVX-VNNI", "AMX-INT8"]

ONEDNN_V3 = "\n".join([
    'onednn_verbose,v1,info,oneDNN v3.7.1 (commit 8d263e693366ef8db40acc569cc7d8edf644556d)',
    'onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with float16,'
    ' Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit integer support',
    'onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,'
    'memory_descriptors,attributes,auxiliary,problem_desc,exec_time',
    'onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,brg_conv_fwd:avx512_core_amx,'
    'forward_inference,src:u8::blocked:acdb::f0,,alg:convolution_direct,'
    'mb1_ic32oc16_ih112oh112kh1sh1dh0ph0_iw112ow112kw1sw1dw0pw0,0.9',
    'onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_amx,forward_inference,'
    'src:u8::blocked:acdb::f0 wei:s8:a:blocked:AcdB16b64a4b::f0 bia:f32:a:blocked:a::f0 dst:u8::block'
    'ed:acdb::f0,attr-scales:src0:0:f32+dst:0:f32+wei:1:f32 attr-post-ops:eltwise_relu,'
    'alg:convolution_direct,mb1_ic32oc16_ih112oh112kh1sh1dh0ph0_iw112ow112kw1sw1dw0pw0,0.0161133',
    'onednn_verbose,v1,primitive,exec,cpu,convolution,jit_dw:avx512_core_vnni,forward_inference,'
    'src:u8::blocked:acdb::f0 wei:s8:a:blocked:Goihw16g::f0 bia:f32:a:blocked:a::f0 dst:u8::blocked:a'
    'cdb::f0,attr-scales:wei:1:f32,alg:convolution_direct,'
    'g32mb1_ic32oc32_ih112oh112kh3sh1dh0ph1_iw112ow112kw3sw1dw0pw1,0.021',
    'onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_amx,forward_inference,'
    'src:u8::blocked:acdb::f0 wei:s8:a:blocked:AcdB16b64a4b::f0 dst:u8::blocked:acdb::f0,,'
    'alg:convolution_direct,mb1_ic3oc32_ih224oh112kh3sh2dh0ph1_iw224ow112kw3sw2dw0pw1,0.05',
    'onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,'
    'src:f32::blocked:abcd::f0 dst:u8::blocked:acdb::f0,attr-scales:dst:0:f32,,1x3x224x224,0.01',
    'onednn_verbose,v1,primitive,exec,cpu,inner_product,brg:avx512_core_amx,forward_inference,'
    'src:u8::blocked:ab::f0 wei:s8::blocked:AB16b64a4b::f0 dst:f32::blocked:ab::f0,,,mb1ic1280oc1000,'
    '0.004',
]) + "\n"
# oneDNN 2.x and an AVX2 machine: no "v1", no "primitive" field.
ONEDNN_V2_AVX2 = "\n".join([
    'dnnl_verbose,info,cpu,runtime:OpenMP,nthr:1',
    'dnnl_verbose,exec,cpu,convolution,jit_1x1:avx2,forward_inference,'
    'src_f32::blocked:aBcd8b:f0 dst_f32::blocked:aBcd8b:f0,,alg:convolution_direct,'
    'mb1_ic32oc16_ih112oh112kh1sh1dh0ph0_iw112ow112kw1sw1dw0pw0,0.13',
    'dnnl_verbose,exec,cpu,convolution,jit_dw:avx2,forward_inference,src_f32::blocked:aBcd8b:f0,,'
    'alg:convolution_direct,g32mb1_ic32oc32_ih112oh112kh3sh1dh0ph1_iw112ow112kw3sw1dw0pw1,0.08',
]) + "\n"


def _profiles(records_by_variant: dict, tmp_path: Path) -> dict:
    """The records written as the explain step writes them, and read back the way it reads them."""
    out = {}
    for variant_id, data in records_by_variant.items():
        path = tmp_path / f"{variant_id}.json"
        path.write_text(json.dumps(data))
        out[variant_id] = records.load(path, records.OperatorProfile)
    return out


def _verdict(variant_id: str, profiles: dict, tmp_path: Path, cpu_flags=XEON_FLAGS):
    from mobilenet.registry import VARIANTS
    return verdict.build(by_id(variant_id), profiles, {}, tmp_path / "no-results", cpu_flags, VARIANTS)


def test_a_verdict_names_the_kernel_and_the_isa_read_from_a_recorded_profile(tmp_path):
    found = _verdict("openvino-int8", _profiles(OV_AMX, tmp_path), tmp_path)
    assert "1x1 convs run 2.6× slower in INT8 than FP32" in found.text
    assert "INT8 on brgconv_avx512_amx_1x1_I8 ×34 (AMX)" in found.text
    assert "FP32 on brgconv_avx512_1x1_f32 ×34 (AVX-512)" in found.text
    assert found.isa_named == ["AMX", "AVX-512"]
    # The Xeon's other flags are in the record, never in the sentence: no kernel showed them.
    assert found.cpu_flags == XEON_FLAGS
    for flag in ("VNNI", "AVX2", "AMX-INT8"):
        assert flag not in found.text
    assert found.kernels[kinds.CONV_1X1] == {"brgconv_avx512_amx_1x1_I8": 34}


def test_a_different_recorded_profile_gives_a_different_sentence(tmp_path):
    (tmp_path / "amx").mkdir()
    amx = _verdict("openvino-int8", _profiles(OV_AMX, tmp_path / "amx"), tmp_path)
    avx2 = _verdict("openvino-int8", _profiles(_avx2_profiles(), tmp_path), tmp_path)
    assert avx2.text != amx.text
    assert "INT8 on brgconv_avx2_1x1_I8 ×34 (AVX2)" in avx2.text
    assert "AMX" not in avx2.text and "AVX-512" not in avx2.text
    assert avx2.isa_named == ["AVX2"]


def test_onednn_verbose_lines_name_implementation_and_kind():
    executions = kernels.parse_onednn_verbose(ONEDNN_V3)
    assert [e.primitive for e in executions] == ["convolution", "convolution", "convolution", "reorder",
                                                 "inner_product"]  # info and create lines are not executions
    assert [e.kind for e in executions] == [kinds.CONV_1X1, kinds.CONV_DW, kinds.CONV_FULL, kinds.LAYOUT,
                                            kinds.LINEAR]
    assert executions[0].ms == pytest.approx(0.0161133)
    counted = kernels.onednn_by_kind(executions)
    assert counted[kinds.CONV_1X1] == {"brg_conv_fwd:avx512_core_amx": 1}
    assert [kernels.isa_of(e.implementation) for e in executions] == ["AMX", "AVX-512 VNNI", "AMX", None, "AMX"]
    assert kernels.onednn_isa_line(ONEDNN_V3).startswith("Intel AVX-512 with float16")
    old = kernels.onednn_by_kind(kernels.parse_onednn_verbose(ONEDNN_V2_AVX2))
    assert old == {kinds.CONV_1X1: {"jit_1x1:avx2": 1}, kinds.CONV_DW: {"jit_dw:avx2": 1}}
    assert kernels.parse_onednn_verbose("some other program's output\nexec,cpu,convolution\n") == []


def test_a_verdict_from_onednn_verbose_names_the_kernels_torch_ran(tmp_path):
    """Two torch profiles whose kernels come from verbose lines, through record_kernels as the
    profiler hands them over: the sentence names oneDNN's implementation and its ISA."""
    from mobilenet.explain.profilers import Capture, record_kernels
    from mobilenet.explain.profilers.torch import ONEDNN_SOURCE
    made = {}
    for variant_id, text in (("aoti-int8", ONEDNN_V3), ("aoti-fp32", ONEDNN_V2_AVX2)):
        profile = records.OperatorProfile(variant=variant_id, runtime="aoti", precision=variant_id[-4:],
                                          status=records.OK, reason="", profiler="torch.profiler",
                                          visibility="", threads=1,
                                          kind_ms={kinds.CONV_1X1: 1.0, kinds.CONV_DW: 0.5, kinds.CONV_FULL: 0.1})
        record_kernels(profile, Capture(profiler="", visibility="", kernels_source=ONEDNN_SOURCE,
                                        kernels=kernels.onednn_by_kind(kernels.parse_onednn_verbose(text))))
        made[variant_id] = profile
    assert made["aoti-int8"].kernel_isa[kinds.CONV_DW] == ["AVX-512 VNNI"]
    found = _verdict("aoti-int8", made, tmp_path)
    assert "INT8 on brg_conv_fwd:avx512_core_amx ×1 (AMX); FP32 on jit_1x1:avx2 ×1 (AVX2)" in found.text


def test_runtimes_that_do_not_tell_say_so(tmp_path):
    from mobilenet.explain.profilers import executorch as executorch_profiler
    from mobilenet.explain.profilers import litert as litert_profiler
    from mobilenet.explain.profilers import onnxruntime as ort_profiler
    common = {"status": "ok", "reason": "", "profiler": "ONNX Runtime enable_profiling", "visibility": "",
              "threads": 1, "schema": records.SCHEMA, "kernels_source": ort_profiler.KERNELS_SOURCE,
              "kernels_note": ort_profiler.KERNELS_NOTE, "runtime": "onnxruntime"}
    ort = {"onnx-int8": {**common, "variant": "onnx-int8", "precision": "int8", "unprofiled_p50_ms": 3.2,
                         "kind_ms": {kinds.CONV_1X1: 1.5, kinds.CONV_DW: 0.9},
                         "kernels": {kinds.CONV_1X1: {"QLinearConv (CPUExecutionProvider)": 34},
                                     kinds.CONV_DW: {"QLinearConv (CPUExecutionProvider)": 17}}},
           "onnx-fp32": {**common, "variant": "onnx-fp32", "precision": "fp32", "unprofiled_p50_ms": 3.0,
                         "kind_ms": {kinds.CONV_1X1: 1.2, kinds.CONV_DW: 1.1},
                         "kernels": {kinds.CONV_1X1: {"Conv (CPUExecutionProvider)": 34}}}}
    text = _verdict("onnx-int8", _profiles(ort, tmp_path), tmp_path).text
    assert "INT8 on QLinearConv (CPUExecutionProvider) ×34;" in text  # named, with no ISA: it shows none
    assert "not the MLAS routine it ran nor that routine's instruction set" in text
    assert not any(flag in text for flag in XEON_FLAGS)

    # LiteRT has no operator profile at all: the verdict says why, and that its kernels are untold.
    missing = records.OperatorProfile(variant="litert-int8", runtime="litert", precision="int8",
                                      status=records.NOT_AVAILABLE, reason="ai-edge-litert exposes no profiler",
                                      profiler="", visibility="", threads=1, unprofiled_p50_ms=20.0,
                                      kernels_note=litert_profiler.KERNELS_NOTE)
    fp32 = records.OperatorProfile(variant="litert-fp32", runtime="litert", precision="fp32",
                                   status=records.NOT_AVAILABLE, reason="ai-edge-litert exposes no profiler",
                                   profiler="", visibility="", threads=1, unprofiled_p50_ms=25.0)
    text = _verdict("litert-int8", {"litert-int8": missing, "litert-fp32": fp32}, tmp_path).text
    assert "LiteRT does not say which kernels ran: its XNNPACK delegate is one node" in text
    assert "XNNPACK chooses" in executorch_profiler.KERNELS_NOTE


def test_onnxruntime_kernel_names_come_from_op_name_and_provider():
    from mobilenet.explain.profilers import onnxruntime as ort_profiler

    def kernel(ts, op, provider="CPUExecutionProvider"):
        return {"cat": "Node", "name": f"n{ts}_kernel_time", "ts": ts, "dur": 5,
                "args": {"op_name": op, "provider": provider}}
    trace = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 100}, kernel(10, "QLinearConv"),
             {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100}, kernel(210, "QLinearConv"),
             kernel(220, "QLinearAdd"), kernel(230, "Transpose", provider="")]
    assert ort_profiler.split_calls(trace) == [[("QLinearConv", 0.005)],
                                               [("QLinearConv", 0.005), ("QLinearAdd", 0.005), ("Transpose", 0.005)]]
    assert ort_profiler.kernel_names(trace) == ["QLinearConv (CPUExecutionProvider)",
                                                "QLinearAdd (CPUExecutionProvider)", "Transpose"]


@pytest.mark.parametrize("flags, expected", [
    ({"sse2", "avx", "avx2", "fma"}, "avx2"),  # an AVX2-only EPYC
    ({"avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl"}, "avx512"),
    ({"avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "amx_int8"}, "avx512_vnni"),
    ({"avx2", "avx512f"}, "avx2"),  # fbgemm's AVX-512 needs BW, DQ and VL too
    ({"asimd", "asimddp"}, None),
], ids=["avx2", "avx512", "vnni", "avx512f-only", "arm"])
def test_fbgemm_isa_follows_its_dispatch_rule(flags, expected):
    assert kernels.fbgemm_isa(flags, environ={}) == expected
    table = kernels.fbgemm_kernels(flags, environ={})
    if expected is None:
        assert table == {}
    else:
        assert expected in table[kinds.CONV_1X1]
        assert table[kinds.CONV_DW].endswith("avx2")  # its depthwise kernels are AVX2 code whatever the CPU


def test_fbgemm_isa_honours_its_environment_variable_downwards_only():
    vnni = {"avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"}
    assert kernels.fbgemm_isa(vnni, environ={"FBGEMM_ENABLE_INSTRUCTIONS": "avx2"}) == "avx2"
    assert kernels.fbgemm_isa({"avx2"}, environ={"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512"}) == "avx2"


def _fake_library(path: Path, suffixes: list[str]) -> Path:
    body = b"\0".join(f"pytorch_q8gemm_ukernel_4x4c2__{suffix}".encode() for suffix in suffixes)
    path.write_bytes(b"\x7fELF" + b"\0" * 64 + body + b"\0pytorch_q8vadd_ukernel__sse2\0")
    return path


def _qnnpack_profile(library: Path, tmp_path: Path) -> dict:
    from mobilenet.explain.profilers import Capture, record_kernels
    from mobilenet.explain.profilers.torch import engine_kernels
    quantized = Counter({kinds.CONV_1X1: 34, kinds.CONV_DW: 17, kinds.CONV_FULL: 1})
    profiles = {}
    for variant_id, precision in (("int8-static-qnnpack", "int8"), ("fp32-torchscript", "fp32")):
        profile = records.OperatorProfile(variant=variant_id, runtime="torchscript", precision=precision,
                                          status=records.OK, reason="", profiler="torch.profiler", visibility="",
                                          threads=1, kind_ms={kinds.CONV_1X1: 3.0 if precision == "int8" else 1.0,
                                                              kinds.CONV_DW: 1.0, kinds.CONV_FULL: 0.2})
        if precision == "int8":
            import mobilenet.explain.profilers.torch as torch_profiler
            original = torch_profiler._torch_cpu_library
            torch_profiler._torch_cpu_library = lambda: library
            try:
                found = engine_kernels("qnnpack", quantized, {"sse2", "avx2"}, "x86_64")
            finally:
                torch_profiler._torch_cpu_library = original
            record_kernels(profile, Capture(profiler="", visibility="", kernels=found["kernels"],
                                            kernels_inferred=list(found["kernels"]), kernels_note=found["note"],
                                            library_kernel_isas=found["library_isas"], library=found["library"]))
        else:
            record_kernels(profile, Capture(profiler="", visibility="", kernels=kernels.onednn_by_kind(
                kernels.parse_onednn_verbose(ONEDNN_V2_AVX2))))
        profiles[variant_id] = profile
    return profiles


def test_the_qnnpack_verdict_states_sse2_only_when_its_library_holds_only_sse2(tmp_path):
    only_sse2 = _qnnpack_profile(_fake_library(tmp_path / "libtorch_cpu.so", ["sse2"]), tmp_path)
    text = _verdict("int8-static-qnnpack", only_sse2, tmp_path).text
    assert "INT8 on pytorch_q8gemm_ukernel_4x4c2__sse2 ×34 (SSE2; inferred from the engine's source" in text
    assert "FP32 on jit_1x1:avx2 ×1 (AVX2)" in text
    assert "QNNPACK has only SSE2 micro-kernels on x86: init.c sets no other there" in text
    # A build that also held AVX2 micro-kernels would make that sentence false: it is not written.
    mixed = _qnnpack_profile(_fake_library(tmp_path / "mixed.so", ["sse2", "avx2"]), tmp_path)
    assert mixed["int8-static-qnnpack"].library_kernel_isas == ["avx2", "sse2"]
    assert "has only" not in _verdict("int8-static-qnnpack", mixed, tmp_path).text


def test_qnnpack_table_matches_the_installed_torch_library():
    """Every x86 micro-kernel the table names is a symbol in this torch's libtorch_cpu.so, and the
    library's q8 conv/gemm/dwconv micro-kernels are built for the ISA the table says."""
    import platform
    torch = pytest.importorskip("torch")
    if kernels.architecture(platform.machine()) != "x86":
        pytest.skip("the x86 table is checked against an x86 torch build")
    import mmap
    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    rule = kernels.qnnpack_rule("x86")
    with open(library, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for name in rule.kernels.values():
            assert data.find(name.encode() + b"\0") != -1, name
    assert kernels.isa_shown(f"__{s}" for s in kernels.qnnpack_kernel_isas(library)) == \
        kernels.isa_shown(rule.kernels.values())


def test_isa_of_reads_only_what_the_name_says():
    assert kernels.isa_of("brgconv_avx512_amx_1x1_I8") == "AMX"
    assert kernels.isa_of("jit_avx512_core_vnni_dw:avx512_core_vnni") == "AVX-512 VNNI"
    assert kernels.isa_of("brg_conv_fwd:avx2_vnni") == "AVX-VNNI"
    assert kernels.isa_of("jit_uni_pooling_I8") is None
    assert kernels.isa_of("ref:any") == kernels.REFERENCE
    assert kernels.isa_of("Fully Connected (NC, QS8, QC8W) GEMM") is None
    assert kernels.isa_shown(["jit_avx2_1x1_FP32", "brgconv_avx512_amx_I8", "QLinearConv"]) == ["AMX", "AVX2"]
