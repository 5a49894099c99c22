"""The streaming step as four graphs, split where ``RoboVLM.step`` splits (what ``robovlm export`` writes to ONNX).

- ``vision``: camera images -> vision tokens (encoder, resampler or native projector, vision projector, camera
  embedding), any number of images at once (head and hand in one batch).
- ``instruction``: the prompt's token ids -> its hidden states and every layer's keys and values, stacked into one
  tensor so an engine can keep the whole cache on the device as one buffer.
- ``frame``: one frame's vision tokens, the joint state and the cached instruction -> the frame's action feature
  (the language model on the frame's tokens, then per-frame fusion).
- ``window``: the features of the window so far -> the newest frame's action chunk (window fusion and the head).

Each wrapper calls the policy's own methods, so the graphs compute what ``RoboVLM.step`` computes; the parity check
in ``robovlm.export`` measures that they do.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..model.backbone import stack_cache, unstack_cache
from ..model.policy import RoboVLM


class _Graph(nn.Module):
    def __init__(self, model: RoboVLM) -> None:
        super().__init__()
        self.model = model
        # The exporter restores each module's own training flag after tracing; a wrapper left in training mode would
        # switch the policy's dropout on for good.
        self.eval()


class VisionGraph(_Graph):
    """pixels (N, 3, H, W), camera (N,) int64 (0 head, 1 hand) -> tokens (N, Nt, D)."""

    def forward(self, pixels: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        return self.model.encode_vision(pixels) + self.model.camera_embed[camera].unsqueeze(1)


class InstructionGraph(_Graph):
    """ids (B, L) int64, mask (B, L) int64 (left padding 0) -> hidden (B, L, D), past (layers, 2, B, Hkv, L, hd)."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bb = self.model.backbone
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        hidden, cache = bb.lm_forward(
            bb.embed_text(ids), attention_mask=mask, positions=positions, cache=bb.new_cache()
        )
        return hidden, stack_cache(cache)


class FrameGraph(_Graph):
    """One frame -> its action feature (B, D).

    vision_tokens (C*B, Nt, D) from ``vision``, camera-major (the B head rows, then the B hand rows when the model
    uses the hand camera); hand_valid (B,) bool (an invalid row's hand tokens are replaced by the learned
    missing-camera marker); state (B, S) normalized, when the model uses it; past, prefix_mask and (when per-frame
    fusion reads the language) prefix_hidden from ``instruction``.
    """

    def __init__(self, model: RoboVLM) -> None:
        super().__init__(model)
        self.input_names = frame_inputs(model)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` in the order of ``frame_inputs(model)``."""
        x = dict(zip(self.input_names, inputs))
        m, cfg = self.model, self.model.config
        prefix_mask = x["prefix_mask"]
        n = prefix_mask.shape[0]
        tokens = x["vision_tokens"]
        parts = [tokens[:n]]
        if cfg.use_hand_rgb:
            hand = tokens[n : 2 * n]
            missing = (m.hand_missing + m.camera_embed[1]).expand_as(hand)
            parts.append(torch.where(x["hand_valid"].view(n, 1, 1), hand, missing))
        if cfg.use_state:
            parts.append(m.state_embed(x["state"]))  # (B, 1, D)
        parts.append(m.action_token.expand(n, 1, -1))
        frames = torch.cat(parts, dim=1)  # (B, F, D)
        f = frames.shape[1]
        mask = torch.cat([prefix_mask, torch.ones(n, f, dtype=prefix_mask.dtype, device=frames.device)], dim=1)
        positions = prefix_mask.sum(1, keepdim=True) + torch.arange(f, device=frames.device)  # (B, F)
        hidden, _ = m.backbone.lm_forward(
            frames, attention_mask=mask, positions=positions, cache=unstack_cache(x["past"])
        )
        vision, action = m._split(hidden)
        return m._fuse_frame(vision, action, x.get("prefix_hidden"), prefix_mask)  # (B, D)


class WindowGraph(_Graph):
    """feats (B, W, D), the window's features with the newest at ``last`` (1,) int64 and anything after it (zeros
    while the window fills) -> the newest frame's chunk (B, n, A), normalized.

    Fixed length W = window_size: window fusion and the head are causal, so the rows after ``last`` do not change
    the chunk at ``last``; a fixed length keeps every shape in the graph static except the batch.
    """

    def forward(self, feats: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return self.model._window_head(feats).index_select(1, last)[:, 0]  # (B, n, A)


def frame_inputs(model: RoboVLM) -> list[str]:
    """The frame graph's inputs for this config (a camera or state the model does not use is not an input)."""
    cfg = model.config
    names = ["vision_tokens"]
    if cfg.use_hand_rgb:
        names.append("hand_valid")
    if cfg.use_state:
        names.append("state")
    names += ["past", "prefix_mask"]
    if cfg.use_claw_matrix or cfg.use_advanced_attention or cfg.use_instruction_film:  # these read the prompt's states
        names.append("prefix_hidden")
    return names


def fp32_leaks(path: Path) -> tuple[list[str], int, int]:
    """What of the graph at ``path`` is fp32 (for an fp16 export, where nothing large should be): its fp32 outputs,
    the bytes of its fp32 weights and the bytes of all its weights. A tracer that computes in fp32 where the model
    computes in fp16 shows up here: the weights after that point are folded into fp32 copies (PaliGemma's fp16
    graphs once held 9.3 GiB for 5.7 GiB of fp16 weights) and the graph hands the next one fp32."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # shapes and types only: weights stay on disk
    outputs = [o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    fp32 = total = 0
    for init in model.graph.initializer:
        numel = 1
        for d in init.dims:
            numel *= d
        size = numel * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        total += size
        fp32 += size if init.data_type == onnx.TensorProto.FLOAT else 0
    return outputs, fp32, total
