"""Where the FP32 weights come from: local file, random on request, torchvision's download."""
from __future__ import annotations

import pytest
from conftest import WEIGHTS, requires_shared

from mobilenet.build.model import WeightsError, load_fp32


@requires_shared
def test_local_state_dict_is_loaded_and_hashed():
    model, info = load_fp32(str(WEIGHTS))
    assert info.sha256 == "b25476ee0cc47985ada7a7e8aa5deb05e9a3b3751236837a6c6fb8536feae92c"
    assert not info.random and info.source.endswith(WEIGHTS.name)
    assert not model.training


def test_missing_file_names_the_options(tmp_path):
    with pytest.raises(WeightsError, match=r"does not exist.*--weights PATH.*--random-weights"):
        load_fp32(str(tmp_path / "nope.pth"))


def test_not_a_state_dict_is_refused(tmp_path):
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="is not a state_dict torch loads with weights_only=True"):
        load_fp32(str(bogus))


def test_random_weights_only_when_asked_and_not_with_a_file():
    _, info = load_fp32(random_weights=True)
    assert info.random and info.source.startswith("random")
    with pytest.raises(WeightsError, match="either"):
        load_fp32(str(WEIGHTS), random_weights=True)


def test_failed_download_never_falls_back(monkeypatch, tmp_path):
    """Offline, torchvision's own download fails: the error names the alternatives."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached copy
    try:
        load_fp32()
    except WeightsError as exc:
        assert "could not download" in str(exc) and "MOBILENET_WEIGHTS" in str(exc)
    else:
        pytest.skip("this machine can reach torchvision's download host")
