"""Compression for CPU serving: dynamic int8 quantization of a loaded model's linear layers (`serve.quantize`).

Dynamic quantization stores each `nn.Linear`'s weights as int8 and quantizes the activations batch by batch
at run time: no calibration data, no retraining, and the bundle on disk stays float32 (the serving operator
chooses it at load time, for any bundle: MLP, CNN head, transformer encoder). On CPU the int8 matrix products
are what a transformer encoder spends its time on; the accuracy change is measured per bundle
(benchmarks/text_serving.py) rather than assumed.

PyTorch's own API is `torch.ao.quantization.quantize_dynamic`. torch 2.13 marks `torch.ao.quantization`
deprecated in favour of the separate torchao package, but still ships and runs it (fbgemm/x86 int8 kernels);
torchao is not a dependency of trainyard, and its CPU path for dynamic int8 is not what it is built for, so
this module uses the API torch ships and silences only its deprecation notices.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

MODES = ("int8",)


def quantize(model: torch.nn.Module, mode: Optional[str]) -> torch.nn.Module:
    """`model` with its linear layers quantized for `mode` ("int8"), in place; `model` itself for None.
    Inference only: the quantized layers have no gradients and run on CPU."""
    if mode is None:
        return model
    if mode not in MODES:
        raise ValueError(f"unknown quantization {mode!r}; supported: {', '.join(MODES)}")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # The notices of torch.ao's deprecation (and of its quantized tensor constructors), once per load.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
        return quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def quantized_layers(model: torch.nn.Module) -> int:
    """How many of `model`'s layers are dynamically quantized linear layers (0 for a float model)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    return sum(isinstance(m, DynamicLinear) for m in model.modules())
