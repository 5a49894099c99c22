"""The streaming step without state in the model: for a server that answers many robots' steps in one batch.

``RoboVLM.step`` keeps the window of features and the instruction's keys and values inside the model, for one
stream. A server cannot: any replica answers any step, and one batch holds the steps of robots with different
instructions and window lengths. Here the robot's window comes with the step, and the instruction's cache
(``Prefix``) is an input the caller keeps (``robovlm.serving.prefix_cache``). The arithmetic is ``RoboVLM.step``'s:
the same methods, the prompts left-padded as ``RoboVLM._prefix`` pads a batch of instructions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backbone import stack_cache, unstack_cache
from .policy import RoboVLM


@dataclass(frozen=True)
class Prefix:
    """One instruction's cache: hidden (1, L, D), past (layers, 2, 1, Hkv, L, hd) and mask (1, L) of ones."""

    hidden: torch.Tensor
    past: torch.Tensor
    mask: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.hidden, self.past, self.mask))


@torch.inference_mode()
def encode_prefix(model: RoboVLM, instruction: str) -> Prefix:
    """The instruction's hidden states and keys and values (what ``RoboVLM._encode_instruction`` keeps)."""
    ids, mask = model._prefix([instruction])
    bb = model.backbone
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    hidden, cache = bb.lm_forward(bb.embed_text(ids), attention_mask=mask, positions=positions, cache=bb.new_cache())
    assert cache is not None
    return Prefix(hidden, stack_cache(cache), mask)


def batch_prefixes(prefixes: list[Prefix]) -> Prefix:
    """Left-pad to the longest prompt and stack: hidden (B, L, D), past (layers, 2, B, Hkv, L, hd), mask (B, L)
    (0 on the padding), so each frame's tokens sit right after its own prompt."""
    if len(prefixes) == 1:
        return prefixes[0]
    width = max(p.mask.shape[1] for p in prefixes)

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - t.shape[dim]
        if not missing:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    return Prefix(
        torch.cat([pad(p.hidden, 1) for p in prefixes]),
        torch.cat([pad(p.past, 4) for p in prefixes], dim=2),
        torch.cat([pad(p.mask, 1) for p in prefixes]),
    )


@torch.inference_mode()
def frame_features(
    model: RoboVLM,
    head: torch.Tensor,
    hand: torch.Tensor | None,
    hand_valid: torch.Tensor | None,
    state: torch.Tensor | None,
    prefix: Prefix,
) -> torch.Tensor:
    """Each row's frame over its own instruction -> its action feature (B, D): ``RoboVLM.step`` before the window.

    head, hand (B, 3, H, W) pixels (a row whose ``hand_valid`` is False may hold anything); state (B, S) normalized;
    ``prefix`` from ``batch_prefixes`` (B rows)."""
    frames = model._frame_embeds(head, hand, hand_valid, state)  # (B, F, D)
    bsz, f = frames.shape[:2]
    mask = torch.cat([prefix.mask, torch.ones(bsz, f, dtype=prefix.mask.dtype, device=frames.device)], dim=1)
    positions = prefix.mask.sum(1, keepdim=True) + torch.arange(f, device=frames.device)  # (B, F)
    hidden, _ = model.backbone.lm_forward(
        frames, attention_mask=mask, positions=positions, cache=unstack_cache(prefix.past)
    )
    vision, action = model._split(hidden)
    return model._fuse_frame(vision, action, prefix.hidden, prefix.mask)  # (B, D)


@torch.inference_mode()
def window_chunks(model: RoboVLM, windows: list[torch.Tensor]) -> torch.Tensor:
    """Each row's window (t_i, D), oldest first with the newest feature last -> its newest chunk (B, n, A).

    Rows of different lengths share one call: each is zero-padded after its end, which changes nothing at its
    newest position because window fusion and the head are causal (the ONNX ``window`` graph relies on the same)."""
    length = max(w.shape[0] for w in windows)
    feats = windows[0].new_zeros(len(windows), length, windows[0].shape[-1])  # (B, T, D)
    for i, w in enumerate(windows):
        feats[i, : w.shape[0]] = w
    chunks = model._window_head(feats)  # (B, T, n, A)
    last = torch.tensor([w.shape[0] - 1 for w in windows], device=feats.device)
    return chunks[torch.arange(len(windows), device=feats.device), last]
