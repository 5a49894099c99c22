"""Optional fusion of the language model's per-frame outputs (the user's earlier features, as real modules).

Per frame (computed once per frame, so streaming stays cheap):
- ``ClawMatrixFusion`` (``use_claw_matrix``): cross-attention among the three streams of one frame, vision
  (hidden states at the image tokens), language (hidden states of the instruction) and state/action (hidden states
  at the state and action tokens). Vision and language first read each other and the action stream, then the action
  stream reads both updated streams: a claw of six cross-attentions closing on the action token.
- ``CrossModalAttention`` (first half of ``use_advanced_attention``): the action token reads the frame's vision,
  state and language hidden states.
- ``InstructionFiLM`` (``use_instruction_film``): the frame's action feature is scaled and shifted per channel by
  the pooled instruction, so a command that depends on the instruction and the image together (which side to pass,
  and how far along the detour the robot is) has a multiplicative path to the head.

Over the window (causal, so output ``t`` depends only on frames ``<= t`` and streaming equals batch):
- ``HierarchicalPlanner`` (``use_hierarchical``): learned subgoal queries summarize the window so far into subgoal
  tokens; every action feature then reads its subgoals.
- ``TemporalAttention`` (second half of ``use_advanced_attention``): causal self-attention over the window with
  learned positions.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import nn


class CrossAttention(nn.Module):
    """Pre-norm multi-head cross-attention: queries (B, Nq, D) read keys (B, Nk, D); returns the update only."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        kv_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # kv_mask: (B, Nk) True for real tokens
        pad = None if kv_mask is None else ~kv_mask
        out, _ = self.attn(
            self.norm_q(q),
            self.norm_kv(kv),
            self.norm_kv(kv),
            key_padding_mask=pad,
            attn_mask=attn_mask,
            need_weights=False,
        )
        return out


def _mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class ClawMatrixFusion(nn.Module):
    def __init__(self, *, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        names = ("v_from_l", "v_from_a", "l_from_v", "l_from_a", "a_from_v", "a_from_l")
        self.blocks = nn.ModuleDict({n: CrossAttention(dim, heads, dropout) for n in names})
        self.ff = _mlp(dim)

    def forward(
        self, *, vision: torch.Tensor, language: torch.Tensor, language_mask: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        # vision (B, Nv, D); language (B, L, D) with language_mask (B, L); action (B, Na, D), LRN last -> (B, D)
        b = self.blocks
        v = vision + b["v_from_l"](vision, language, language_mask) + b["v_from_a"](vision, action)
        lang = language + b["l_from_v"](language, vision) + b["l_from_a"](language, action)
        a = action + b["a_from_v"](action, v) + b["a_from_l"](action, lang, language_mask)
        a = a + self.ff(a)
        return a[:, -1]


class CrossModalAttention(nn.Module):
    def __init__(self, *, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, heads, dropout)
        self.ff = _mlp(dim)

    def forward(self, *, action: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        # action (B, D); context (B, N, D) with context_mask (B, N) -> (B, D)
        a = action.unsqueeze(1)
        a = a + self.attn(a, context, context_mask)
        a = a + self.ff(a)
        return a[:, 0]


def causal_mask(t: int, device: torch.device) -> torch.Tensor:
    """(T, T) bool, True where attention is NOT allowed (future positions)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).triu(1)


class TemporalAttention(nn.Module):
    def __init__(self, *, dim: int, heads: int, window_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(window_size, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = _mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, T, D), T <= window_size -> (B, T, D)
        t = x.shape[1]
        h = self.norm(x + self.pos[:t])
        out, _ = self.attn(h, h, h, attn_mask=causal_mask(t, x.device), need_weights=False)
        x = x + out
        return x + self.ff(x)


class HierarchicalPlanner(nn.Module):
    def __init__(self, *, dim: int, heads: int, num_subgoals: int, window_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_subgoals, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(window_size, dim) * 0.02)
        self.plan = CrossAttention(dim, heads, dropout)
        self.plan_ff = _mlp(dim)
        self.read = CrossAttention(dim, heads, dropout)
        self.ff = _mlp(dim)

    def subgoals(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, K, D): the subgoals planned at each step from the frames up to it.

        One attention over the window's T frames for all T*K queries, with a block-causal mask (the queries of step
        t see frames 0..t), so each frame's keys and values are projected once, not once per step."""
        bsz, t, _ = x.shape
        k = self.queries.shape[0]
        mem = x + self.pos[:t]  # (B, T, D)
        q = repeat(self.queries, "k d -> b (t k) d", b=bsz, t=t)
        mask = repeat(causal_mask(t, x.device), "t s -> (t k) s", k=k)  # (T*K, T), True = not allowed
        g = q + self.plan(q, mem, attn_mask=mask)
        g = g + self.plan_ff(g)
        return rearrange(g, "b (t k) d -> b t k d", k=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, T, D) -> (B, T, D)
        bsz = x.shape[0]
        goals = rearrange(self.subgoals(x), "b t k d -> (b t) k d")
        q = rearrange(x, "b t d -> (b t) 1 d")
        y = q + self.read(q, goals)
        y = y + self.ff(y)
        return rearrange(y, "(b t) 1 d -> b t d", b=bsz)


class InstructionFiLM(nn.Module):
    """Feature-wise linear modulation by the instruction (FiLM; RT-1 conditions its image tokens the same way).

    Why: when neither input alone predicts an action field (the lateral command of the demo data: R^2 0.03 from the
    side, 0.00 from the detour's progress, 0.87 from both), the product has to be formed somewhere; here it is built
    in. Zero-initialized, so a model starts exactly as without it. Measured so far (``bench/results/training.md``):
    on the single-camera recipe it did not shorten the lateral plateau within 600 steps.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, feat: torch.Tensor, language: torch.Tensor, language_mask: torch.Tensor) -> torch.Tensor:
        """feat (N, D), language (N, L, D) hidden states of the prompt, language_mask (N, L) bool -> (N, D)."""
        m = language_mask.to(language.dtype).unsqueeze(-1)  # (N, L, 1)
        pooled = (language * m).sum(1) / m.sum(1).clamp(min=1.0)  # (N, D) mean over the real prompt tokens
        gamma, beta = self.proj(self.norm(pooled)).chunk(2, dim=-1)
        return feat * (1.0 + gamma) + beta
