"""OpenVINO's own per-node profiler (ov::enable_profiling, the infer request's profiling_info).

The profiled model is compiled with the bench runner's own properties (read back from its
compiled model: latency hint, one stream, threads, FP32 precision, no pinning) plus
profiling, so it runs the same execution graph. profiling_info describes the last inference,
one entry per node of the CPU plugin's execution graph; nodes fused away report NOT_RUN.
"""
from __future__ import annotations

import time

import numpy as np
import openvino
import openvino.properties as props

PROFILER_NAME = f"OpenVINO enable_profiling / profiling_info (openvino {openvino.get_version().split('-')[0]})"
_MIRRORED = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT",
             "ENABLE_CPU_PINNING")


KERNELS_SOURCE = "OpenVINO profiling_info exec_type (the CPU plugin's implementation of each node)"


def executed(profiling_info) -> list:
    """[(node type, ms)] of the nodes that ran, in the execution graph's order."""
    return [(p.node_type, p.real_time.total_seconds() * 1000) for p in profiling_info
            if p.status == openvino.ProfilingInfo.Status.EXECUTED]


def exec_types(profiling_info) -> list[str]:
    """The implementation of each node that ran (brgconv_avx2_1x1_I8, jit_avx2_dw_I8, ...),
    aligned with `executed`; "undef" is OpenVINO's word for none."""
    return [("" if p.exec_type in ("", "undef") else p.exec_type) for p in profiling_info
            if p.status == openvino.ProfilingInfo.Status.EXECUTED]


def profile(runner, variant, artifact, image, calls: int, work_dir):
    from mobilenet.explain.profilers import Capture
    compiled = runner.request.get_compiled_model()
    config = {key: compiled.get_property(key) for key in _MIRRORED}
    config[props.enable_profiling] = True
    request = openvino.Core().compile_model(str(artifact), "CPU", config).create_infer_request()
    x = np.ascontiguousarray(image, dtype=np.float32)
    request.infer([x])  # the first inference of a new request allocates; not kept
    wall, ops = [], []
    for _ in range(calls):
        start = time.perf_counter()
        request.infer([x])
        wall.append((time.perf_counter() - start) * 1000)
        ops.append(executed(request.profiling_info))
    return Capture(profiler=PROFILER_NAME,
                   visibility="every node of the CPU plugin's execution graph (fused nodes report NOT_RUN)",
                   calls=ops, profiled_ms=wall, kernel_names=exec_types(request.profiling_info),
                   kernels_source=KERNELS_SOURCE)
