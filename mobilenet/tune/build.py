"""Building one variant's grid, in a process of its own: `python -m mobilenet.tune.build PLAN OUTCOME`.

The builder is the ordinary one (mobilenet/builders/), handed each setting's override; its FP32
starting point is what the build folder holds (the eager state_dict, the FP32 ONNX file, the FP32
OpenVINO IR), never rebuilt. A setting that fails is recorded with its reason and the others
still build. Artifacts land in build/tune/models/<variant>/<setting>/, and nothing under
build/models is touched: the builders' side files (ExecuTorch's PT2E program) go to a scratch
models folder of the tune's.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from mobilenet.files import read_json, write_json
from mobilenet.registry import REFERENCE_ID, by_id


def load_reference(settings):
    """The eager FP32 model and its weights' record, as the export step saved them."""
    import torch
    import torchvision

    from mobilenet.build.model import WeightsInfo
    reference = by_id(REFERENCE_ID)
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(torch.load(reference.artifact_path(settings.models_dir), weights_only=True))
    return model.eval(), WeightsInfo(**read_json(reference.meta_path(settings.models_dir))["weights"])


def _seeded(variant, settings) -> dict:
    """What a builder would otherwise convert from FP32 again, read from the build folder: the FP32
    ONNX file's bytes, the FP32 OpenVINO IR (BuildContext.shared keys of the builders)."""
    models = settings.models_dir
    if variant.runtime == "onnxruntime":
        fp32 = by_id("onnx-fp32")
        meta = read_json(fp32.meta_path(models))
        return {"onnx-fp32": (fp32.artifact_path(models).read_bytes(), meta.get("options", {}))}
    if variant.runtime == "openvino":
        import openvino as ov
        return {"openvino-fp32-model": ov.Core().read_model(str(by_id("openvino-fp32").artifact_path(models)))}
    return {}


def build_grid(plan: dict, settings) -> list[dict]:
    from mobilenet import logs
    from mobilenet.build.step import BuildContext
    from mobilenet.data.store import Prepared
    from mobilenet.measure.npyimages import NpyImages
    from mobilenet.measure.runners import RuntimeUnavailable

    variant = by_id(plan["variant"])
    log = logging.getLogger(f"mobilenet.tune.{variant.id}")
    module, function = variant.builder.split(":")
    builder = getattr(importlib.import_module(module), function)
    model, weights = load_reference(settings)
    data = Prepared(calib=NpyImages(Path(plan["calib_npy"])), eval=NpyImages(Path(plan["tune_npy"])), labels=None,
                    eval_names=[], image_set="tune", preprocess_ms=0.0, fingerprint="tune")
    work = Path(plan["work_dir"])
    work_settings = dataclasses.replace(settings, build_dir=work / "scratch")
    shared = _seeded(variant, settings)
    outcomes = []
    for setting in plan["settings"]:
        out = work / setting["name"] / variant.artifact
        out.parent.mkdir(parents=True, exist_ok=True)
        ctx = BuildContext(work_settings, variant, weights, data, model, log, shared)
        started, cpu_started = time.perf_counter(), _cpu_s()
        record = {"name": setting["name"], "artifact": str(out)}
        try:
            with logs.output_to_log(log, f"{variant.id} {setting['name']}"):
                options = builder(ctx, out, override=setting["override"]) or {}
            files = variant.artifact_files(out.parent)
            missing = [p.name for p in files if not p.exists()]
            if missing:
                raise RuntimeError(f"the builder did not write {', '.join(missing)}")
            record.update(status="ok", options=options, size_bytes=sum(p.stat().st_size for p in files))
        except (ImportError, RuntimeUnavailable) as exc:
            record.update(status="skipped", reason=_first_line(exc))
        except Exception as exc:  # a builder's bug or a setting its toolkit refuses: this setting only
            log.debug("%s", traceback.format_exc())
            record.update(status="FAILED", reason=f"build error: {_first_line(exc)}")
        # CPU seconds too (the compilers it ran included): on a shared machine wall time says how busy it was.
        record["build_s"], record["cpu_s"] = round(time.perf_counter() - started, 2), round(_cpu_s() - cpu_started, 1)
        log.info("tune: %s %s: %s in %.1f s%s", variant.id, setting["name"], record["status"], record["build_s"],
                 f" ({record['reason']})" if record.get("reason") else "")
        outcomes.append(record)
    return outcomes


def _cpu_s() -> float:
    """CPU seconds of this process and of the children it waited for (g++ for AOTInductor)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _first_line(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]


def main(argv: list[str]) -> int:
    from mobilenet import logs
    from mobilenet.settings import Settings
    plan_path, outcome = Path(argv[0]), Path(argv[1])
    plan = json.loads(plan_path.read_text())
    settings = Settings()
    logs.setup(settings.logs_dir, f"tune-{plan['variant']}", quiet=True)
    try:
        result = {"settings": build_grid(plan, settings)}
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # nothing of the grid could start (the FP32 model, an import): one line
        logging.getLogger("mobilenet.tune").debug("%s", traceback.format_exc())
        log_name = f"build/logs/tune-{plan['variant']}.log"
        result = {"error": f"{plan['variant']}: {_first_line(exc)} (traceback in {log_name})"}
    write_json(outcome, result)
    return 0 if "settings" in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
