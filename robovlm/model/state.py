"""State embedding: the robot's normalized joint state -> one token per frame.

RoboVLMs declares ``use_state`` but can never turn it on (the key is read as ``"use_state, False"``, the state is
not passed to the forward pass, and the gripper embedding would be indexed with floats). Here it is one MLP on the
normalized vector; the node builds that vector from ``state_joints`` in order.
"""

from __future__ import annotations

import torch
from torch import nn


class StateEmbedding(nn.Module):
    """``(B, state_dim)`` or ``(B, T, state_dim)`` -> ``(B, 1, dim)`` or ``(B, T, 1, dim)``."""

    def __init__(self, *, state_dim: int, dim: int) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.mlp = nn.Sequential(nn.Linear(state_dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        if state.shape[-1] != self.state_dim:
            raise ValueError(f"state must have {self.state_dim} values (state_dim), got {state.shape[-1]}")
        return self.mlp(state).unsqueeze(-2)
