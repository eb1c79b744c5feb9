"""FP32 artifacts: the eager state_dict, traced TorchScript and PyTorch Mobile (.ptl)."""
from __future__ import annotations

from pathlib import Path

import torch


def save_state_dict(ctx, out: Path) -> dict:
    """The eager reference ships as its state_dict: what an app would bundle with the code. A
    model other than MobileNet-V2 saves it with the constructor its runner rebuilds it by."""
    from mobilenet.build.model import eager_checkpoint
    torch.save(eager_checkpoint(ctx.record, ctx.fp32_model().state_dict()), out)
    return {}


def torchscript(ctx, out: Path) -> dict:
    with torch.no_grad():
        traced = torch.jit.trace(ctx.fp32_model(), ctx.example())
    torch.jit.freeze(traced.eval()).save(str(out))
    return {"method": "torch.jit.trace + freeze"}


def try_optimize_for_mobile(module):
    """optimize_for_mobile needs XNNPACK in the torch build; PyPI's Linux x86 wheel has none
    and dies on an internal assert. Return (module, applied, why) so results say which."""
    from torch.utils.mobile_optimizer import optimize_for_mobile
    try:
        return optimize_for_mobile(module), True, "applied"
    except RuntimeError as exc:
        if "XNNPACK" in str(exc):
            return module, False, ("not applied: this torch build has no XNNPACK "
                                   "(optimize_for_mobile stops on an internal assert)")
        return module, False, f"not applied: {str(exc).strip()[:200]}"


def lite_interpreter(ctx, out: Path) -> dict:
    with torch.no_grad():
        traced = torch.jit.trace(ctx.fp32_model(), ctx.example())
    module, applied, why = try_optimize_for_mobile(traced)
    module._save_for_lite_interpreter(str(out))
    return {"method": "torch.jit.trace + _save_for_lite_interpreter",
            "optimize_for_mobile": applied, "optimize_for_mobile_note": why}
