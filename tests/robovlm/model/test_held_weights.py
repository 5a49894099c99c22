"""Frozen weights held in bf16 and computed in fp32: the same outputs and input gradients as an fp32 layer with the
bf16-rounded weight, no fp32 copy of a weight kept for the backward pass, and unchanged state-dict names."""

from __future__ import annotations

import torch
from torch import nn

from robovlm.model.held_weights import HeldConv2d, HeldLinear, hold_frozen_weights


def _frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False)


def test_a_held_linear_matches_fp32_on_the_rounded_weight_and_keeps_no_fp32_copy():
    torch.manual_seed(0)
    layer = _frozen(nn.Linear(64, 256))
    reference = _frozen(nn.Linear(64, 256))
    reference.weight.data = layer.weight.data.to(torch.bfloat16).float()
    reference.bias.data = layer.bias.data.clone()
    keys = set(layer.state_dict())
    assert hold_frozen_weights(nn.Sequential(layer), torch.bfloat16) == 64 * 256 * 2
    assert isinstance(layer, HeldLinear) and layer.weight.dtype == torch.bfloat16 and layer.bias.dtype == torch.float32
    assert set(layer.state_dict()) == keys
    saved: list[torch.Tensor] = []
    x = torch.randn(3, 64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    assert y.dtype == torch.float32
    assert not any(t.dtype == torch.float32 and t.shape == (256, 64) for t in saved), "an fp32 weight was kept"
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = reference(x_ref)
    (grad_ref,) = torch.autograd.grad(y_ref.square().sum(), x_ref)
    assert torch.allclose(y, y_ref, atol=1e-5) and torch.allclose(grad, grad_ref, atol=1e-4)


def test_trainable_layers_and_attention_internals_are_left_alone():
    torch.manual_seed(0)
    trainable = nn.Linear(8, 8)
    attention = _frozen(nn.MultiheadAttention(8, 2, batch_first=True))  # uses out_proj.weight outside forward
    root = nn.ModuleDict({"trainable": trainable, "attention": attention})
    hold_frozen_weights(root, torch.bfloat16)
    assert type(trainable) is nn.Linear and trainable.weight.dtype == torch.float32
    assert attention.out_proj.weight.dtype == torch.float32 and attention.in_proj_weight.dtype == torch.float32
    x = torch.randn(1, 4, 8)
    attention(x, x, x)  # still runs


def test_held_embeddings_and_convolutions_hand_out_fp32():
    torch.manual_seed(0)
    emb, conv = _frozen(nn.Embedding(10, 6)), _frozen(nn.Conv2d(3, 4, 2, stride=2))
    want_emb = emb.weight.data.to(torch.bfloat16).float()[torch.tensor([1, 7])]
    x = torch.randn(1, 3, 8, 8)
    want_conv = nn.functional.conv2d(x, conv.weight.data.to(torch.bfloat16).float(), conv.bias, stride=2)
    hold_frozen_weights(nn.ModuleList([emb, conv]), torch.bfloat16)
    assert emb.weight.dtype == torch.bfloat16 and isinstance(conv, HeldConv2d)
    out = emb(torch.tensor([1, 7]))
    assert out.dtype == torch.float32 and torch.equal(out, want_emb)
    assert torch.allclose(conv(x), want_conv, atol=1e-6)
