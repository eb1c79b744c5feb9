"""Where the FP32 weights come from, and loading MobileNet-V2 with them."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from mobilenet.files import sha256_file

WEIGHTS_HELP = (
    "Use a local state_dict with --weights PATH (or MOBILENET_WEIGHTS=PATH), "
    "or --random-weights (MOBILENET_RANDOM_WEIGHTS=1) for a latency-only run "
    "whose accuracy is meaningless."
)


class WeightsError(RuntimeError):
    pass


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # "torchvision:IMAGENET1K_V1", a file path, or "random"
    sha256: str
    random: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _state_dict_sha256(state_dict) -> str:
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_fp32(weights: str | None = None, random_weights: bool = False):
    """Return (eval-mode MobileNet-V2, WeightsInfo).

    Default is torchvision's own IMAGENET1K_V1 download; a local state_dict is loaded with
    weights_only=True; random weights only when asked for. A failed download stops with a
    message naming the alternatives: never a silent fallback.
    """
    import torch
    import torchvision
    from torchvision.models import MobileNet_V2_Weights

    if weights and random_weights:
        raise WeightsError("choose either a weights file or random weights, not both")
    if random_weights:
        torch.manual_seed(0)
        model = torchvision.models.mobilenet_v2(weights=None).eval()
        return model, WeightsInfo("random (seed 0)", _state_dict_sha256(model.state_dict()), True)
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist. {WEIGHTS_HELP}")
        model = torchvision.models.mobilenet_v2(weights=None)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise WeightsError(f"{path} is not a MobileNet-V2 state_dict ({exc}). {WEIGHTS_HELP}") from exc
        return model.eval(), WeightsInfo(str(path.resolve()), sha256_file(path))
    try:
        model = torchvision.models.mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
    except Exception as exc:
        url = MobileNet_V2_Weights.IMAGENET1K_V1.url
        raise WeightsError(f"could not download torchvision's weights from {url} ({exc}). "
                           f"{WEIGHTS_HELP}") from exc
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(MobileNet_V2_Weights.IMAGENET1K_V1.url).name
    sha = sha256_file(cached) if cached.exists() else _state_dict_sha256(model.state_dict())
    return model.eval(), WeightsInfo("torchvision:MobileNet_V2_Weights.IMAGENET1K_V1", sha)


def weights_input_files(weights: str | None) -> list[Path]:
    """Files whose change must rebuild the models (for freshness checks)."""
    return [Path(weights).expanduser()] if weights else []
