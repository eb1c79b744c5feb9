"""The grid `invoke tune` builds for each INT8 variant: a few settings of its toolkit's main knobs.

Keyed by variant id, not runtime: the two torch.ao static variants share a runtime (TorchScript)
but are two engines with two defaults. Every key is an INT8 variant of the registry, and every
override is one its builder accepts (tests/test_tune.py checks both): the registry stays the one
place a variant exists, this table only says what to try on it.

A grid lists overrides with explicit values ("reduce_range": False, not "the other one"), so the
same grid means the same settings on every CPU. expand() resolves each through the builder
against the target's ISA-derived defaults: the one that changes nothing is the shipped setting,
always first, and a setting that resolves to one already listed is dropped (on a VNNI CPU,
"reduce_range=False" is the shipped setting itself). Every grid keeps at least four distinct
settings on x86 with or without VNNI and on ARM.

Why these knobs: the accuracy of post-training INT8 comes from how activation ranges are
calibrated (the observer or calibration method), how finely weights are scaled (per channel or
per tensor), how many bits survive (reduce_range, the overflow fix), and the activation type the
kernels take (u8 or s8, symmetric or not); a toolkit's bias correction repairs the mean shift
quantization leaves. Each grid takes the ones its toolkit exposes, and the cheap ones: NNCF's
full bias correction, ONNX Runtime's Entropy calibration and histograms for LiteRT cost minutes
per setting (docs/tuning.md).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass

from mobilenet.registry import Variant, by_id

SHIPPED = "shipped"


@dataclass(frozen=True)
class Setting:
    name: str  # a file-name-safe label, unique in its grid
    override: dict  # what the builder changes from its ISA-derived defaults ({}: the shipped setting)
    why: str

    def describe(self) -> str:
        """'reduce_range=False, activation_observer=minmax', or the shipped setting's name."""
        if not self.override:
            return "ISA-derived defaults (what the ordinary build ships)"
        return ", ".join(f"{key}={_text(value)}" for key, value in self.override.items())


def _text(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


@dataclass(frozen=True)
class Grid:
    variant: str  # an INT8 variant id of the registry
    settings: tuple[Setting, ...]
    knobs: str  # why these knobs, for the docs and the report
    # Deprecated paths are tuned only when MOBILENET_ONLY / --only names them: they cost build time
    # and their toolkit (torch.ao) is being replaced.
    by_default: bool = True

    @property
    def registry_variant(self) -> Variant:
        return by_id(self.variant)


def _factorial(first: tuple[str, tuple], second: tuple[str, tuple], why: dict) -> tuple[Setting, ...]:
    """Every pair of values of two knobs, e.g. per_channel x activation_observer."""
    (a, a_values), (b, b_values) = first, second
    return tuple(Setting(f"{a}-{_slug(x)}_{b}-{_slug(y)}", {a: x, b: y}, f"{why[a][x]}; {why[b][y]}")
                 for x in a_values for y in b_values)


def _slug(value) -> str:
    return str(value).lower()


OBSERVER_WHY = {"histogram": "activation ranges from a histogram, cutting rare outliers",
                "minmax": "activation ranges from the extremes seen in calibration"}
PER_CHANNEL_WHY = {True: "weights scaled per output channel", False: "one weight scale per tensor"}
REDUCE_RANGE_WHY = {True: "7-bit activations (no u8 x s8 pair-sum saturation without VNNI)",
                    False: "full 8-bit activations"}

GRIDS: tuple[Grid, ...] = (
    Grid("onnx-int8", (
        Setting("reduce_range", {"reduce_range": True},
                "7-bit weights: no u8 x s8 pair-sum saturation in vpmaddubsw without VNNI"),
        Setting("full_range", {"reduce_range": False}, "8-bit weights"),
        Setting("s8s8", {"activation_type": "QInt8", "reduce_range": False},
                "S8 activations with S8 weights: another MLAS kernel family, symmetric activations"),
        Setting("minmax", {"calibrate_method": "MinMax"}, "activation ranges from the extremes seen"),
        Setting("per_tensor", {"per_channel": False}, "one weight scale per tensor"),
    ), "ONNX Runtime's quantize_static knobs: reduce_range, activation/weight types, calibration method "
       "(Percentile 99.999 shipped, MinMax) and per-channel weights"),
    Grid("openvino-int8", (
        Setting("overflow_fix_all", {"overflow_fix": "ENABLE"},
                "half-range weights in every layer (no saturation without VNNI)"),
        Setting("overflow_fix_none", {"overflow_fix": "DISABLE"}, "full 8-bit weights everywhere"),
        Setting("overflow_fix_first", {"overflow_fix": "FIRST_LAYER"}, "half-range weights in the first layer only"),
        Setting("mixed_preset", {"preset": "MIXED"}, "asymmetric activations (NNCF's MIXED preset)"),
        Setting("no_bias_correction", {"bias_correction": False}, "without NNCF's fast bias correction"),
    ), "NNCF's overflow fix (all layers, first layer, none), its preset (PERFORMANCE: symmetric "
       "activations; MIXED: asymmetric) and bias correction"),
    Grid("aoti-int8", _factorial(("reduce_range", (True, False)), ("activation_observer", ("histogram", "minmax")),
                                 {"reduce_range": REDUCE_RANGE_WHY, "activation_observer": OBSERVER_WHY}),
         "X86InductorQuantizer's reduce_range and activation observer; its oneDNN fusions take per-channel "
         "symmetric weights and u8 activations only"),
    Grid("executorch-int8", _factorial(("per_channel", (True, False)), ("activation_observer", ("histogram", "minmax")),
                                       {"per_channel": PER_CHANNEL_WHY, "activation_observer": OBSERVER_WHY}),
         "XNNPACKQuantizer's per-channel weights and activation observer (s8 x s8 symmetric weights on every "
         "CPU: XNNPACK's kernels take nothing else)"),
    Grid("litert-int8", _factorial(("per_channel", (True, False)), ("activation_observer", ("minmax", "histogram")),
                                   {"per_channel": PER_CHANNEL_WHY, "activation_observer": OBSERVER_WHY}),
         "litert-torch's per-channel weights and activation observer (symmetric s8 as XNNPACK takes it)"),
    Grid("int8-static-fbgemm", _factorial(("reduce_range", (True, False)),
                                          ("activation_observer", ("histogram", "minmax")),
                                          {"reduce_range": REDUCE_RANGE_WHY, "activation_observer": OBSERVER_WHY}),
         "torch.ao fbgemm qconfig's reduce_range and activation observer", by_default=False),
    Grid("int8-static-qnnpack", _factorial(("reduce_range", (True, False)),
                                           ("activation_observer", ("histogram", "minmax")),
                                           {"reduce_range": REDUCE_RANGE_WHY, "activation_observer": OBSERVER_WHY}),
         "torch.ao qnnpack qconfig's reduce_range and activation observer", by_default=False),
)
GRID_BY_VARIANT = {grid.variant: grid for grid in GRIDS}


def resolver(variant: Variant):
    """The builder module's resolved_settings(target, override, variant): the full settings an
    override gives on a target, which is how two settings are told apart."""
    module = importlib.import_module(variant.builder.partition(":")[0])
    return module.resolved_settings


def expand(grid: Grid, target) -> tuple[list[Setting], list[tuple[Setting, str]]]:
    """(the distinct settings to build on this target, the shipped one first; the settings dropped,
    each with the one it duplicates). A builder that refuses an override raises ValueError."""
    variant = grid.registry_variant
    resolve = resolver(variant)
    kept: dict[str, Setting] = {}
    dropped = []
    for setting in (Setting(SHIPPED, {}, "the ISA-derived defaults the ordinary build ships"), *grid.settings):
        key = json.dumps(resolve(target, setting.override, variant), sort_keys=True, default=str)
        if key in kept:
            dropped.append((setting, kept[key].name))
        else:
            kept[key] = setting
    return list(kept.values()), dropped


def selected(only: str | None) -> list[Grid]:
    """The grids MOBILENET_ONLY selects: all that run by default without it; with it, every grid
    whose variant it names (the deprecated ones too)."""
    if not only:
        return [grid for grid in GRIDS if grid.by_default]
    from mobilenet.registry import select
    chosen = {v.id for v in select(only)}
    return [grid for grid in GRIDS if grid.variant in chosen]
