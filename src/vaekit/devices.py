"""Devices and numeric precision: where a run computes, and in which float format.

``resolve_device("auto")`` is CUDA when available, then Apple's MPS, then the CPU. ``autocast``
runs a forward pass in bfloat16 or float16 (matrix products and convolutions) while the model
keeps float32 weights; vaekit's posteriors, log-probabilities, log-sum-exps and KL terms are
computed in float32 on the autocast outputs (the model casts encoder and decoder outputs back).
float16 needs a ``GradScaler`` (``grad_scaler``) and is offered on CUDA only.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["DEVICES", "PRECISIONS", "resolve_device", "autocast", "grad_scaler"]

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """The device called ``name`` (``DEVICES``, or e.g. ``cuda:1``); a clear error if absent."""
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA device")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps was asked for, but torch sees no MPS device")
    return torch.device(name)


def autocast(device: torch.device, precision: str = "fp32"):
    """A context that runs matmuls/convolutions in ``precision`` on ``device`` (fp32: nothing)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device (a GradScaler); use bf16 here")
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A loss scaler for float16 training on CUDA, else None."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
