"""Perceiver resampler (Flamingo): any number of patch tokens -> a fixed number of latent tokens.

RoboVLMs builds this from its ``vision_resampler`` config and then ignores the dict (depth is always 6 and
``vis_dim`` is unused). Here every argument shapes the module.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn


def feed_forward(*, dim: int, mult: int = 4) -> nn.Sequential:
    inner = dim * mult
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False)
    )


class PerceiverAttention(nn.Module):
    """Latents attend to [media; latents] (pre-norm on both)."""

    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8) -> None:
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        inner = dim_head * heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # x: (B, N, D) media tokens; latents: (B, L, D)
        x = self.norm_media(x)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        out = nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))  # (B, L, D)


class PerceiverResampler(nn.Module):
    """``(B, N, dim)`` or ``(B, T, N, dim)`` -> ``(B, num_latents, dim)`` or ``(B, T, num_latents, dim)``."""

    def __init__(
        self, *, dim: int, depth: int = 6, dim_head: int = 64, heads: int = 8, num_latents: int = 64, ff_mult: int = 4
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_latents = num_latents
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), feed_forward(dim=dim, mult=ff_mult)]
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"resampler expects tokens of width {self.dim} (vis_dim), got {x.shape[-1]}")
        has_time = x.ndim == 4
        if has_time:
            b = x.shape[0]
            x = rearrange(x, "b t n d -> (b t) n d")
        elif x.ndim != 3:
            raise ValueError(f"resampler input must be (B, N, D) or (B, T, N, D), got shape {tuple(x.shape)}")
        latents = repeat(self.latents, "n d -> b n d", b=x.shape[0])  # (B*T, L, D)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        latents = self.norm(latents)
        return rearrange(latents, "(b t) n d -> b t n d", b=b) if has_time else latents
