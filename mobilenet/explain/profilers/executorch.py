"""ExecuTorch's ETDump, read back with executorch.devtools.Inspector.

The shipped .pte needs no rebuilding: the pip runtime is built with the event tracer, and
the XNNPACK delegate reports one event per XNNPACK operator it runs (named by XNNPACK:
"Convolution (NHWC, QS8) DWConv #3"), so the program is loaded a second time with
ETDump on. Without an ETRecord the events are not linked back to graph nodes; they do not
need to be, since XNNPACK's names and order are enough for the kinds.
"""
from __future__ import annotations

import re
import time
from importlib import metadata
from pathlib import Path

from mobilenet.logs import output_to_log

PROFILER_NAME = f"ExecuTorch ETDump + devtools.Inspector (executorch {metadata.version('executorch')})"
# Events that frame the operators rather than being one.
_FRAMES = {"DELEGATE_CALL", "Method::execute", "Method::init", "Program::load_method", "OPERATOR_CALL"}
_INSTANCE = re.compile(r"\s+#\d+$")
KERNELS_SOURCE = "ExecuTorch ETDump event names (the XNNPACK operator, its layout and data types)"
KERNELS_NOTE = ("XNNPACK's ETDump events name the operator and its data types (Convolution (NHWC, QC8) IGEMM), "
                "not the micro-kernel it picked nor that micro-kernel's instruction set (XNNPACK chooses them "
                "from the CPU when it initialises and reports neither)")


def split_calls(event_blocks, calls: int) -> list[list]:
    """[(operator, ms)] of each of the last `calls` executions, in execution order."""
    out = [[] for _ in range(calls)]
    for block in event_blocks:
        for event in block.events:
            if event.name in _FRAMES or event.perf_data is None:
                continue
            raw = list(event.perf_data.raw)[-calls:]
            if len(raw) != calls:
                continue
            name = _INSTANCE.sub("", event.name)
            for index, ms in enumerate(raw):
                out[index].append((name, float(ms)))
    return out


def profile(runner, variant, artifact: Path, image, calls: int, work_dir: Path):
    import logging

    import numpy as np
    import torch
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    from mobilenet.explain.profilers import Capture
    log = logging.getLogger("mobilenet.explain")
    etdump, debug = Path(work_dir) / f"{variant.id}.etdp", Path(work_dir) / f"{variant.id}.debug.bin"
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    with output_to_log(log, f"executorch etdump load {variant.id}"):
        program = Runtime.get().load_program(Path(artifact), enable_etdump=True)
        method = program.load_method("forward")
    method.execute((tensor,))  # the first execution also sets up the delegate; not kept
    wall = []
    for _ in range(calls):
        start = time.perf_counter()
        method.execute((tensor,))
        wall.append((time.perf_counter() - start) * 1000)
    program.write_etdump_result_to_file(str(etdump), str(debug))
    with output_to_log(log, "executorch inspector"):
        inspector = Inspector(etdump_path=str(etdump))
    ops = split_calls(inspector.event_blocks, calls)
    for path in (etdump, debug):
        path.unlink(missing_ok=True)
    return Capture(profiler=PROFILER_NAME,
                   visibility="each XNNPACK operator inside the delegate (XNNPACK's own names), "
                              "plus any operator left outside it",
                   calls=ops, profiled_ms=wall, kernel_names=[name for name, _ in ops[-1]] if ops else [],
                   kernels_source=KERNELS_SOURCE, kernels_note=KERNELS_NOTE)
