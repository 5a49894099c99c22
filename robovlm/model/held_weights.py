"""Frozen weights held in a narrow dtype (bf16) and computed in the input's (fp32 on a CPU).

Fine-tuning the full-size backbone with LoRA leaves nearly all its weights frozen; holding them in bf16 halves their
memory (Kosmos-2: 6.7 -> 3.4 GB). Computing in bf16 is another matter: on a CPU without bf16 instructions (AVX2 only,
like this project's build machines) a bf16 matmul runs about 5x slower than fp32 (a 1080 x 2048 x 8192 linear: 6.9 s
against 1.5 s on one core), while casting a bf16 weight to fp32 at use costs nothing measurable. So the frozen
Linear, Embedding and Conv2d layers here keep their weights in bf16 and cast them to the input's dtype in forward.

The Linear layer's backward casts again instead of keeping the fp32 copy autograd would otherwise save for the
input's gradient (one fp32 copy of every layer until the backward pass: the memory the bf16 weights were to save).
Under CUDA autocast, ``F.linear`` inside computes in bf16 as autocast decides.

The layers are converted in place (the same objects, parameters and hooks), so state-dict names, LoRA wrappers
(``base_layer``) and checkpoints are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class _HeldLinearFn(torch.autograd.Function):
    """``y = x W^T + b`` with ``W`` frozen in a narrow dtype; saves ``W`` as held, not its cast."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (weight,) = ctx.saved_tensors
        return grad @ weight.to(grad.dtype), None, None  # (..., out) @ (out, in): the input's gradient only


class HeldLinear(nn.Linear):
    """A frozen ``nn.Linear`` whose weight is held in a narrow dtype (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _HeldLinearFn.apply(x, self.weight, self.bias)


class HeldConv2d(nn.Conv2d):
    """A frozen ``nn.Conv2d`` (a vision encoder's patch embedding) held in a narrow dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.weight.to(x.dtype), bias)


_HELD: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: HeldLinear, nn.Conv2d: HeldConv2d}
"""Exact types only: a subclass may use its weight outside ``forward`` (``nn.MultiheadAttention``'s out_proj)."""


def _rows_in_fp32(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
    return out.float()


def hold_frozen_weights(root: nn.Module, dtype: torch.dtype) -> int:
    """Hold every frozen Linear and Conv2d weight and every frozen embedding table under ``root`` in ``dtype``;
    norms, biases, other parameters and every trainable layer keep theirs. Returns the bytes the held weights take.

    A Linear or Conv2d layer becomes its held class in place (``__class__``: the same object, so its parameters,
    hooks and LoRA wrappers stay as they are); an embedding (any subclass: Gemma's scaled one too) keeps its class
    and hands its rows out in fp32 through a forward hook."""
    held_bytes = 0
    for module in root.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or weight.requires_grad or not weight.is_floating_point():
            continue
        if type(module) in _HELD:
            module.__class__ = _HELD[type(module)]
        elif isinstance(module, nn.Embedding):
            module.register_forward_hook(_rows_in_fp32)
        else:
            continue
        weight.data = weight.data.to(dtype)
        held_bytes += weight.numel() * weight.element_size()
    return held_bytes
