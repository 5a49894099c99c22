"""CLIP normalization: an auxiliary training loss that aligns the action token with the instruction's meaning.

The pooled (max over the window) action-token hidden state is projected to the CLIP text-embedding width and
pulled, with smooth-L1, towards the L2-normalized embedding of the instruction from a frozen CLIP text encoder.
RoboVLMs puts the whole CLIP model into the optimizer; here the encoder is frozen, kept in eval mode, never in
the optimizer, never saved in the policy checkpoint, and used in training only.
"""

from __future__ import annotations

import logging

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from ..configs.model import ClipTextConfig, ConfigError
from .backbone import check_pretrained_dir
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)


def build_clip_text_encoder(cfg: ClipTextConfig) -> CLIPTextModelWithProjection:
    if cfg.path is not None:
        path = check_pretrained_dir(cfg.path, what="clip_text")
        model = CLIPTextModelWithProjection.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    else:
        data = dict(cfg.config or {})
        data.pop("model_type", None)
        try:
            model = CLIPTextModelWithProjection(CLIPTextConfig(**data))
        except (TypeError, ValueError, StrictDataclassError) as exc:
            raise ConfigError(f"clip_text.config: not a valid CLIPTextConfig: {exc}") from exc
    model.requires_grad_(False)
    return model.eval()


class ClipNorm(nn.Module):
    """Trainable projection + frozen text encoder. ``loss(pooled, instructions)`` is the weighted-free loss."""

    def __init__(self, *, dim: int, cfg: ClipTextConfig) -> None:
        super().__init__()
        self.text_encoder = build_clip_text_encoder(cfg)
        self.tokenizer = load_tokenizer(cfg.tokenizer, cfg.path)
        text_dim = int(self.text_encoder.config.projection_dim)
        self.max_len = int(self.text_encoder.config.max_position_embeddings)
        self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, text_dim))
        self._cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> ClipNorm:
        super().train(mode)
        self.text_encoder.eval()  # frozen: no dropout, no statistics updates, ever
        return self

    def frozen_parameters(self) -> list[nn.Parameter]:
        return list(self.text_encoder.parameters())

    @torch.no_grad()
    def text_embedding(self, instructions: list[str]) -> torch.Tensor:
        """(B, text_dim) L2-normalized CLIP text embeddings, cached per instruction string."""
        missing = [s for s in dict.fromkeys(instructions) if s not in self._cache]
        if missing:
            tok = self.tokenizer
            rows = [tok.encode_text(s)[: self.max_len - 1] + [tok.eos_token_id] for s in missing]  # CLIP pools at EOS
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
            device = next(self.text_encoder.parameters()).device
            emb = self.text_encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).text_embeds
            for s, e in zip(missing, nn.functional.normalize(emb.float(), dim=-1)):
                self._cache[s] = e
        return torch.stack([self._cache[s] for s in instructions])

    def loss(self, pooled: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        # pooled (B, D) -> scalar
        target = self.text_embedding(instructions).to(pooled.device, pooled.dtype)
        return nn.functional.smooth_l1_loss(self.proj(pooled), target)

    def _apply(self, fn, recurse=True):  # moving the module moves its cached targets too
        self._cache.clear()
        return super()._apply(fn, recurse)
