"""RoboVLM: a RoboVLMs-style vision-language-action policy over a Hugging Face VLM.

Per frame the language model reads::

    [BOS][prompt + instruction] | [head N][hand N][state][LRN]

and the hidden state at the learnable action token ``[LRN]`` is that frame's feature. Optional per-frame fusion
(claw matrix, cross-modal attention) refines it; the last ``window_size`` features go through optional window
fusion (hierarchical planning, temporal attention) and the policy head, which predicts a chunk of
``fwd_pred_next_n`` normalized actions.

``forward(batch)`` trains over whole windows. ``step(...)`` streams: it encodes only the new frame, keeps the
per-frame features in a ring buffer, and reuses the instruction's keys and values while the instruction does not
change. Because the instruction comes first and every frame sees only the instruction and itself, both paths
compute the same numbers.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import torch
from torch import nn

from ..configs.model import BackboneConfig, ConfigError, RoboVLMConfig
from ..data.stats import NormStats
from .backbone import BackboneAdapter, build_backbone
from .checkpoint import CLIP_ENCODER_PREFIX, CheckpointError, load_checkpoint, save_checkpoint
from .clip_norm import ClipNorm
from .fusion import ClawMatrixFusion, CrossModalAttention, HierarchicalPlanner, InstructionFiLM, TemporalAttention
from .heads import build_head
from .resampler import PerceiverResampler
from .state import StateEmbedding
from .tokenizer import ByteTokenizer, Tokenizer, count_instruction_tokens, load_tokenizer

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "MissingInputError", "RoboVLM", "prompt_ids"]


class MissingInputError(ValueError):
    """A required input (hand image with ``missing_hand: error``, state, instruction) was not given."""


def prompt_ids(tokenizer: Tokenizer, backbone: BackboneConfig, instruction: str) -> list[int]:
    """The language model's prompt for ``instruction`` as token ids; refuses an empty instruction and one longer than
    ``backbone.max_instruction_tokens`` (every engine builds its prompt here)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise MissingInputError(f"instruction must be a non-empty string, got {instruction!r}")
    text = instruction.strip()
    count_instruction_tokens(tokenizer, text, backbone.max_instruction_tokens)
    return tokenizer.encode_text(backbone.prompt.format(instruction=text))


class RoboVLM(nn.Module):
    def __init__(
        self,
        config: RoboVLMConfig,
        *,
        backbone: BackboneAdapter | None = None,
        tokenizer: Tokenizer | None = None,
        load_backbone_weights: bool = True,
        with_clip: bool | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = (
            backbone if backbone is not None else build_backbone(config.backbone, load_weights=load_backbone_weights)
        )
        if tokenizer is None:
            if config.backbone.tokenizer == "checkpoint":
                raise ConfigError("backbone.tokenizer 'checkpoint' is only valid when loading with from_pretrained")
            tokenizer = load_tokenizer(config.backbone.tokenizer, config.backbone.path)
        self.tokenizer = tokenizer
        d = self.backbone.lm_width
        self.dim = d
        self._check_backbone()

        rc = config.vision_resampler
        if config.use_vision_resampler:
            self.resampler = PerceiverResampler(
                dim=rc.vis_dim,
                depth=rc.depth,
                dim_head=rc.dim_head,
                heads=rc.heads,
                num_latents=rc.num_latents,
                ff_mult=rc.ff_mult,
            )
            self.vision_projector = nn.Sequential(nn.Linear(rc.vis_dim, d), nn.GELU(), nn.Linear(d, d))
        self.num_cameras = 2 if config.use_hand_rgb else 1
        self.camera_embed = nn.Parameter(torch.randn(self.num_cameras, d) * 0.02)  # head, hand
        if config.use_hand_rgb:
            self.hand_missing = nn.Parameter(torch.randn(d) * 0.02)
        if config.use_state:
            self.state_embed = StateEmbedding(state_dim=config.state_dim, dim=d)
        self.action_token = nn.Parameter(torch.randn(d) * 0.02)

        fc = config.fusion
        if d % fc.heads:
            raise ConfigError(f"fusion.heads ({fc.heads}) must divide the language model width ({d})")
        if config.use_claw_matrix:
            self.claw_matrix = ClawMatrixFusion(dim=d, heads=fc.heads, dropout=fc.dropout)
        if config.use_advanced_attention:
            self.cross_modal = CrossModalAttention(dim=d, heads=fc.heads, dropout=fc.dropout)
            self.temporal = TemporalAttention(dim=d, heads=fc.heads, window_size=config.window_size, dropout=fc.dropout)
        if config.use_instruction_film:
            self.instruction_film = InstructionFiLM(dim=d)
        if config.use_hierarchical:
            self.planner = HierarchicalPlanner(
                dim=d, heads=fc.heads, num_subgoals=fc.num_subgoals, window_size=config.window_size, dropout=fc.dropout
            )
        self.head = build_head(
            config.act_head,
            dim=d,
            n=config.fwd_pred_next_n,
            action_dim=config.action_dim,
            window_size=config.window_size,
        )
        if with_clip is not False:  # None: as the config says (add_clip_norm checks use_clip_norm)
            self.add_clip_norm()

        self.stats = NormStats.identity(state_dim=config.state_dim, action_dim=config.action_dim)
        self.reset()

    def add_clip_norm(self) -> None:
        """The CLIP-normalization head, training only (its frozen text encoder loads from ``config.clip_text``)."""
        if self.config.use_clip_norm:
            self.clip_norm = ClipNorm(dim=self.dim, cfg=self.config.clip_text)

    # ------------------------------------------------------------------------------------------------ checks
    def _check_backbone(self) -> None:
        cfg, bb = self.config, self.backbone
        if cfg.image_size != bb.image_size:
            raise ConfigError(
                f"image_size ({cfg.image_size}) must equal the {bb.type} vision encoder's image_size ({bb.image_size})"
            )
        if cfg.use_vision_resampler and cfg.vision_resampler.vis_dim != bb.vision_width:
            raise ConfigError(
                f"vision_resampler.vis_dim ({cfg.vision_resampler.vis_dim}) must equal the {bb.type} "
                f"vision encoder width ({bb.vision_width})"
            )
        vocab = bb.model.get_input_embeddings().num_embeddings
        if isinstance(self.tokenizer, ByteTokenizer) and vocab < ByteTokenizer.vocab_size:
            raise ConfigError(
                f"the byte tokenizer needs a vocabulary of {ByteTokenizer.vocab_size}; the {bb.type} "
                f"language model has {vocab}"
            )

    # ------------------------------------------------------------------------------------------------ sizes
    @property
    def tokens_per_camera(self) -> int:
        if self.config.use_vision_resampler:
            return self.config.vision_resampler.num_latents
        return self.backbone.num_native_tokens

    @property
    def tokens_per_frame(self) -> int:
        return self.num_cameras * self.tokens_per_camera + int(self.config.use_state) + 1

    def token_counts(self, instruction: str = "go around the box to the cup") -> dict[str, int]:
        """Tokens at each stage of one frame's sequence (for ``robovlm info`` and the demo)."""
        prompt = len(self._prompt_ids(instruction))
        return {
            "patch_tokens_per_camera": self.backbone.num_patch_tokens,
            "vision_tokens_per_camera": self.tokens_per_camera,
            "cameras": self.num_cameras,
            "state_tokens": int(self.config.use_state),
            "action_tokens": 1,
            "frame_tokens": self.tokens_per_frame,
            "instruction_tokens": prompt,
            "lm_sequence": prompt + self.tokens_per_frame,
        }

    # ------------------------------------------------------------------------------------------------ text
    def _prompt_ids(self, instruction: str) -> list[int]:
        return prompt_ids(self.tokenizer, self.config.backbone, instruction)

    def _prefix(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids (B, Lp) and mask (B, Lp), so every frame token sits right after its prompt."""
        rows = [self._prompt_ids(s) for s in instructions]
        width = max(len(r) for r in rows)
        device = self.action_token.device
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, device=device)
            mask[i, width - len(r) :] = 1
        return ids, mask

    # ------------------------------------------------------------------------------------------------ frames
    def encode_vision(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, tokens_per_camera, D): encoder, then resampler + projector or the native projector."""
        patches = self.backbone.encode_image(pixels)  # (N, P, vis_dim)
        if self.config.use_vision_resampler:
            return self.vision_projector(self.resampler(patches))  # (N, num_latents, D)
        return self.backbone.project_native(patches)

    def _frame_embeds(
        self, head: torch.Tensor, hand: torch.Tensor | None, hand_valid: torch.Tensor | None, state: torch.Tensor | None
    ) -> torch.Tensor:
        """One frame per row: head (N, 3, H, W), hand (N, 3, H, W), hand_valid (N,), state (N, S) -> (N, F, D)."""
        cfg = self.config
        n = head.shape[0]
        parts = []
        if cfg.use_hand_rgb:
            if hand_valid is None:
                hand_valid = torch.full((n,), hand is not None, dtype=torch.bool, device=head.device)
            if hand is None and bool(hand_valid.any()):
                raise MissingInputError("hand_valid marks frames as present but no hand images were given")
            if not bool(hand_valid.all()) and cfg.missing_hand == "error":
                raise MissingInputError("a frame has no hand-camera image and missing_hand is 'error'")
            if bool(hand_valid.any()):
                tokens = self.encode_vision(torch.cat([head, hand]))  # (2N, Nt, D)
                head_tok, hand_tok = tokens[:n], tokens[n:]
                flag = self.hand_missing.expand_as(hand_tok)
                hand_tok = torch.where(hand_valid.view(n, 1, 1), hand_tok, flag)
            else:
                head_tok = self.encode_vision(head)
                hand_tok = self.hand_missing.expand_as(head_tok)  # zero tokens + the learned 'missing' marker
            parts += [head_tok + self.camera_embed[0], hand_tok + self.camera_embed[1]]
        else:
            parts.append(self.encode_vision(head) + self.camera_embed[0])
        if cfg.use_state:
            if state is None:
                raise MissingInputError("use_state is on but no state was given")
            parts.append(self.state_embed(state.to(head.dtype)))  # (N, 1, D)
        parts.append(self.action_token.expand(n, 1, -1))
        return torch.cat(parts, dim=1)  # (N, F, D)

    def _split(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame hidden states (N, F, D) -> vision (N, Nv, D), state/action (N, Ns + 1, D)."""
        nv = self.num_cameras * self.tokens_per_camera
        return hidden[:, :nv], hidden[:, nv:]

    def _fuse_frame(
        self, vision: torch.Tensor, action: torch.Tensor, language: torch.Tensor, language_mask: torch.Tensor
    ) -> torch.Tensor:
        """Per-frame fusion -> (N, D). Raw LRN hidden state when no per-frame fusion is on."""
        feat = action[:, -1]
        lang_mask = language_mask.bool()
        if self.config.use_claw_matrix:
            feat = self.claw_matrix(
                vision=vision,
                language=language,
                language_mask=lang_mask,
                action=torch.cat([action[:, :-1], feat.unsqueeze(1)], dim=1),
            )
        if self.config.use_advanced_attention:
            ctx = torch.cat([vision, action[:, :-1], language], dim=1)
            ones = torch.ones(ctx.shape[0], vision.shape[1] + action.shape[1] - 1, dtype=torch.bool, device=ctx.device)
            feat = self.cross_modal(action=feat, context=ctx, context_mask=torch.cat([ones, lang_mask], dim=1))
        if self.config.use_instruction_film:
            feat = self.instruction_film(feat, language, lang_mask)
        return feat

    def _window_head(self, feats: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        """(B, T, D) -> (B, T, n, A) through window fusion and the policy head (all causal); ``last_only``:
        (B, 1, n, A), the newest frame's chunk (streaming)."""
        if self.config.use_hierarchical:
            feats = self.planner(feats)
        if self.config.use_advanced_attention:
            feats = self.temporal(feats)
        return self.head(feats, last_only=last_only)

    # ------------------------------------------------------------------------------------------------ training
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Training pass over windows.

        batch: ``head_images`` (B, T, 3, H, W) normalized pixels; ``hand_images`` (B, T, 3, H, W) and
        ``hand_valid`` (B, T) when ``use_hand_rgb``; ``states`` (B, T, S) normalized; ``instructions`` list of B
        strings; ``actions`` (B, T, n, A) normalized targets and ``action_mask`` (B, T, n) for the loss;
        ``loss_normalizer`` (optional) the count the masked action loss is divided by (default: this batch's).
        Returns ``loss``, ``action_loss``, ``clip_loss`` (when on) and ``actions`` (B, T, n, A).
        """
        head = batch["head_images"]
        bsz, t = head.shape[:2]
        if t > self.config.window_size:
            raise ValueError(f"window of {t} frames is longer than window_size {self.config.window_size}")
        flat = lambda x: None if x is None else x.reshape(bsz * t, *x.shape[2:])  # noqa: E731
        frames = self._frame_embeds(
            flat(head), flat(batch.get("hand_images")), flat(batch.get("hand_valid")), flat(batch.get("states"))
        )  # (B*T, F, D)
        ids, mask = self._prefix(list(batch["instructions"]))
        prefix = self.backbone.embed_text(ids)  # (B, Lp, D)
        lp = ids.shape[1]
        embeds = torch.cat([prefix.repeat_interleave(t, dim=0), frames], dim=1)  # (B*T, Lp+F, D)
        full_mask = torch.cat(
            [mask.repeat_interleave(t, dim=0), torch.ones_like(frames[..., 0], dtype=mask.dtype)], dim=1
        )
        positions = (full_mask.cumsum(1) - 1).clamp(min=0)
        hidden, _ = self.backbone.lm_forward(embeds, attention_mask=full_mask, positions=positions)
        vision, action = self._split(hidden[:, lp:])
        feats = self._fuse_frame(vision, action, hidden[:, :lp], full_mask[:, :lp]).view(bsz, t, -1)
        pred = self._window_head(feats)  # (B, T, n, A)

        out = {"actions": pred}
        if "actions" in batch:
            target = batch["actions"].to(pred.dtype)
            amask = batch.get("action_mask")
            amask = torch.ones(pred.shape[:3], device=pred.device) if amask is None else amask.to(pred.dtype)
            per = nn.functional.smooth_l1_loss(pred, target, reduction="none").mean(-1)  # (B, T, n)
            # loss_normalizer: the masked-action count to divide by when this batch is one process's share of a
            # global batch (global count / processes), so data-parallel gradients equal the one-process ones
            denom = batch.get("loss_normalizer")
            out["action_loss"] = (per * amask).sum() / (amask.sum().clamp(min=1.0) if denom is None else denom)
            out["loss"] = out["action_loss"]
            if self.config.use_clip_norm and hasattr(self, "clip_norm"):
                pooled = action[:, -1].view(bsz, t, -1).amax(dim=1)  # (B, D) max over the window
                out["clip_loss"] = self.clip_norm.loss(pooled, list(batch["instructions"]))
                out["loss"] = out["loss"] + self.config.clip_norm_ratio * out["clip_loss"]
        return out

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything the optimizer may touch: never the frozen CLIP text encoder."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith(CLIP_ENCODER_PREFIX)]

    # ------------------------------------------------------------------------------------------------ streaming
    def reset(self) -> None:
        """Forget the window and the cached instruction (new episode)."""
        self._window: deque[torch.Tensor] = deque(maxlen=self.config.window_size)
        self._prefix_state: dict | None = None

    @torch.inference_mode()
    def step(
        self,
        head_image: torch.Tensor,
        hand_image: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        instruction: str | list[str] | None = None,
    ) -> torch.Tensor:
        """One control step: (B, 3, H, W) pixels, state (B, S) -> action chunk (B, n, A) for this frame.

        A new instruction recomputes its keys and values and clears the window (a new task); the same instruction
        reuses them.
        """
        if head_image.ndim == 3:
            head_image = head_image.unsqueeze(0)
            hand_image = None if hand_image is None else hand_image.unsqueeze(0)
            state = None if state is None else state.unsqueeze(0)
        bsz = head_image.shape[0]
        if instruction is None:
            if self._prefix_state is None:
                raise MissingInputError("the first step needs an instruction")
            instructions = self._prefix_state["instructions"]
        else:
            instructions = [instruction] * bsz if isinstance(instruction, str) else list(instruction)
        if len(instructions) != bsz:
            raise ValueError(f"{len(instructions)} instructions for a batch of {bsz} frames")
        if self._prefix_state is None or self._prefix_state["instructions"] != instructions:
            self._encode_instruction(instructions)
        ps = self._prefix_state

        frames = self._frame_embeds(head_image, hand_image, None, state)  # (B, F, D)
        f = frames.shape[1]
        mask = torch.cat([ps["mask"], torch.ones(bsz, f, dtype=ps["mask"].dtype, device=frames.device)], dim=1)
        positions = ps["mask"].sum(1, keepdim=True) + torch.arange(f, device=frames.device)  # (B, F)
        cache = ps["cache"]
        try:
            hidden, _ = self.backbone.lm_forward(frames, attention_mask=mask, positions=positions, cache=cache)
        except Exception:
            self._prefix_state = None  # the cache may be half-extended: recompute it on the next step
            raise
        cache.crop(-f)  # drop this frame's keys/values: the next frame sees only the instruction
        vision, action = self._split(hidden)
        self._window.append(self._fuse_frame(vision, action, ps["hidden"], ps["mask"]))  # (B, D)
        window = torch.stack(tuple(self._window), dim=1)  # (B, t, D)
        if window.shape[0] != bsz:
            raise ValueError("batch size changed within an episode; call reset() first")
        return self._window_head(window, last_only=True)[:, -1]  # (B, n, A)

    def _encode_instruction(self, instructions: list[str]) -> None:
        ids, mask = self._prefix(instructions)
        cache = self.backbone.new_cache()
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        hidden, cache = self.backbone.lm_forward(
            self.backbone.embed_text(ids), attention_mask=mask, positions=positions, cache=cache
        )
        self._window.clear()
        self._prefix_state = {
            "instructions": instructions,
            "cache": cache,
            "mask": mask,
            "hidden": hidden,
            "length": ids.shape[1],
        }

    # ------------------------------------------------------------------------------------------------ checkpoints
    def save_pretrained(
        self, path: str | Path, stats: NormStats | None = None, weights: dict[str, torch.Tensor] | None = None
    ) -> None:
        """Write the checkpoint directory (``checkpoint.save_checkpoint``)."""
        save_checkpoint(self, path, stats, weights)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        load_clip: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> RoboVLM:
        """Load a checkpoint directory or ``hf://owner/name`` from the local Hub cache, one copy of the weights, in
        ``dtype`` (default: the file's) (``checkpoint.load_checkpoint``)."""
        return load_checkpoint(cls, path, load_clip=load_clip, device=device, dtype=dtype)
