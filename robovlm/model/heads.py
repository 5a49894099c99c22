"""Policy heads: the window of action-token features (B, T, D) -> an action chunk at every step (B, T, n, A).

All heads are causal over the window, so the chunk at step ``t`` depends only on frames ``<= t`` (streaming
inference equals the batched training pass). Outputs pass through ``tanh``: normalized actions in [-1, 1].
``last_only``: the streaming step needs the chunk of the newest frame only, so the output projection (and the
MLP head's body) runs on the last position alone; the recurrence or attention still sees the whole window.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..configs.model import ActHeadConfig
from .fusion import causal_mask


class _ChunkOut(nn.Module):
    def __init__(self, hidden: int, n: int, action_dim: int) -> None:
        super().__init__()
        self.n, self.action_dim = n, action_dim
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, n * action_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # (B, T, H) -> (B, T, n, A)
        return torch.tanh(rearrange(self.mlp(h), "b t (n a) -> b t n a", n=self.n))


class LSTMHead(nn.Module):
    """RoboVLMs' default decoder: a stacked LSTM over the window."""

    def __init__(self, *, dim: int, cfg: ActHeadConfig, n: int, action_dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.out = _ChunkOut(cfg.hidden_size, n, action_dim)

    def forward(self, x: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        h, _ = self.lstm(x)
        return self.out(h[:, -1:] if last_only else h)


class MLPHead(nn.Module):
    """Per-step MLP: the chunk at ``t`` from the feature at ``t`` alone."""

    def __init__(self, *, dim: int, cfg: ActHeadConfig, n: int, action_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, cfg.hidden_size), nn.GELU()]
        for _ in range(cfg.num_layers - 1):
            layers += [nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_size, cfg.hidden_size), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.out = _ChunkOut(cfg.hidden_size, n, action_dim)

    def forward(self, x: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        return self.out(self.body(x[:, -1:] if last_only else x))


class GPTHead(nn.Module):
    """Causal transformer decoder over the window with learned positions."""

    def __init__(self, *, dim: int, cfg: ActHeadConfig, n: int, action_dim: int, window_size: int) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, cfg.hidden_size)
        self.pos = nn.Parameter(torch.randn(window_size, cfg.hidden_size) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden_size,
            cfg.num_heads,
            4 * cfg.hidden_size,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.out = _ChunkOut(cfg.hidden_size, n, action_dim)

    def forward(self, x: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        t = x.shape[1]
        h = self.inp(x) + self.pos[:t]
        h = self.blocks(h, mask=causal_mask(t, x.device))
        return self.out(self.norm(h[:, -1:] if last_only else h))


def build_head(cfg: ActHeadConfig, *, dim: int, n: int, action_dim: int, window_size: int) -> nn.Module:
    if cfg.type == "lstm":
        return LSTMHead(dim=dim, cfg=cfg, n=n, action_dim=action_dim)
    if cfg.type == "mlp":
        return MLPHead(dim=dim, cfg=cfg, n=n, action_dim=action_dim)
    return GPTHead(dim=dim, cfg=cfg, n=n, action_dim=action_dim, window_size=window_size)
