"""One explain job in its own process: `python -m mobilenet.explain.worker '<job json>'`.

A job names one or more variants of one runtime family and an `out` path for each. They are
handled one after another; a runner is made (setting its threads and torch quantized engine),
profiled or compared, and dropped before the next. Each variant's record (records.py) is
written to its own path as soon as it is done; whatever fails inside becomes a "not
available" record that says why, never a missing row.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

# Every runtime in one thread, the same as the bench's 1-thread table.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "TF_CPP_MIN_LOG_LEVEL": "2"}


def profile_job(variant, build_dir: Path, job: dict):
    from mobilenet.explain.profilers import profile_variant
    from mobilenet.measure.npyimages import NpyImages
    image = NpyImages(build_dir / "data" / "eval.npy")[0]
    with tempfile.TemporaryDirectory(prefix=f"explain-{variant.id}.") as work_dir:
        return profile_variant(variant, variant.artifact_path(build_dir / "models"), image, job["calls"],
                               Path(work_dir))


def sqnr_job(variant, build_dir: Path, job: dict):
    import importlib

    from mobilenet.explain.numerics import Inputs
    from mobilenet.measure.npyimages import NpyImages
    from mobilenet.registry import runtime_of
    numerics = runtime_of(variant).numerics
    if numerics is None:
        raise LookupError(f"no per-layer comparison is wired up for the {variant.runtime} runtime")
    evaluation = NpyImages(build_dir / "data" / "eval.npy")
    inputs = Inputs(models_dir=build_dir / "models",
                    photos=[evaluation[i] for i in range(min(job["photos"], len(evaluation)))],
                    calibration_npy=build_dir / "data" / "calib.npy")
    module = importlib.import_module(f"mobilenet.explain.numerics.{numerics}")
    return module.measure(variant, variant.artifact_path(build_dir / "models"), inputs)


def failed_record(task: str, variant, reason: str):
    from mobilenet.explain.profilers import not_available
    from mobilenet.explain.records import NOT_AVAILABLE, QuantizationError
    if task == "profile":
        return not_available(variant, reason)
    return QuantizationError(variant=variant.id, runtime=variant.runtime, status=NOT_AVAILABLE, reason=reason,
                             tool="", reference="")


def main(job: dict) -> None:
    import gc
    import logging
    import traceback

    from mobilenet.explain import records
    from mobilenet.logs import quiet_deprecations
    from mobilenet.registry import by_id
    quiet_deprecations()
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    build_dir = Path(job["build_dir"])
    for variant_id, out in zip(job["variants"], job["outs"]):
        variant = by_id(variant_id)
        try:
            record = (profile_job if job["task"] == "profile" else sqnr_job)(variant, build_dir, job)
        except Exception as exc:  # a runtime that cannot do this becomes an honest row
            traceback.print_exc()
            record = failed_record(job["task"], variant, f"{exc.__class__.__name__}: {exc}".splitlines()[0][:400])
        records.save(Path(out), record)
        gc.collect()  # the variant's runner and model go before the next one loads


if __name__ == "__main__":
    os.environ.update(THREAD_ENV)
    main(json.loads(sys.argv[1]))
