"""What the PT2E builders (AOTInductor, ExecuTorch, LiteRT) share: choosing the activation observer
of a quantizer's config, the one calibration knob all three quantizers leave to their caller.

torchao is imported inside the function: importing this module needs nothing.
"""
from __future__ import annotations

import dataclasses

# Calibration observers by the name settings use, and the torchao class each means.
OBSERVERS = {"histogram": "HistogramObserver", "minmax": "MinMaxObserver"}


def observer_name(spec) -> str:
    """The observer class of a QuantizationSpec ('HistogramObserver'), through with_args' partials."""
    ctr = spec.observer_or_fake_quant_ctr
    return getattr(getattr(ctr, "p", None), "func", ctr).__name__


def with_activation_observer(config, observer: str):
    """The quantization config with its activations calibrated by `observer` ("histogram" keeps the
    whole distribution and picks the range that minimises the quantization error; "minmax" takes
    the extremes seen). The config comes back unchanged when it already uses that observer, so a
    default build is the quantizer's own default config."""
    if observer not in OBSERVERS:
        raise ValueError(f"unknown activation observer {observer!r}; known: {', '.join(OBSERVERS)}")
    spec = config.input_activation
    if spec is None or observer_name(spec) == OBSERVERS[observer]:
        return config
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver
    ctr = {"histogram": HistogramObserver, "minmax": MinMaxObserver}[observer].with_args(eps=2**-12)
    act = dataclasses.replace(spec, observer_or_fake_quant_ctr=ctr)
    output = config.output_activation
    return dataclasses.replace(config, input_activation=act,
                               output_activation=None if output is None else
                               dataclasses.replace(output, observer_or_fake_quant_ctr=ctr))
