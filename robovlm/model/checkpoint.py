"""Checkpoint directories: what ``RoboVLM.save_pretrained`` writes and ``RoboVLM.from_pretrained`` checks and loads.

``config.json`` (the model config with the backbone's own config inline), ``model.safetensors`` (every weight but
the frozen CLIP text encoder; LoRA adapters merged), ``stats.json`` (normalization, action dt, joint names), a
model card, and the tokenizer when it is a Hugging Face one. Loading names the file and key of any problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file

from ..configs.model import ConfigError, RoboVLMConfig
from ..data.stats import NormStats, StatsError
from ..errors import UserError
from ..utils.hub import HubError, fix_permissions, resolve_checkpoint, write_model_card
from .tokenizer import HFTokenizer, checkpoint_tokenizer
from .weight_loading import WeightFileError, file_float_dtype, meta_tensors, read_tensors

CONFIG_VERSION = 1
CHECKPOINT_FILES = ("config.json", "model.safetensors", "stats.json")
CLIP_ENCODER_PREFIX = "clip_norm.text_encoder."


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, corrupt or does not match the model; the message names the file."""


def save_checkpoint(
    model, path: str | Path, stats: NormStats | None = None, weights: dict[str, torch.Tensor] | None = None
) -> None:
    """Write ``model``'s checkpoint directory. ``weights``: its full state dict when it lives elsewhere (gathered
    from FSDP/DeepSpeed shards)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model_cfg = model.config.to_dict()
    tokenizer = "bytes"
    if isinstance(model.tokenizer, HFTokenizer):
        model.tokenizer.save(path / "tokenizer")
        tokenizer = "checkpoint"
    model_cfg["backbone"] = {
        "type": model.backbone.type,
        "path": None,
        "config": model.backbone.hf_config_dict(),
        "tokenizer": tokenizer,
        "prompt": model.config.backbone.prompt,
        "max_instruction_tokens": model.config.backbone.max_instruction_tokens,
    }
    doc = {"robovlm_config_version": CONFIG_VERSION, "model": model_cfg}
    (path / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
    if weights is None:
        weights = model.state_dict()
    if any(".lora_A." in k for k in weights):  # LoRA fine-tuning: adapters merged into their base layers
        from .lora import merged_state_dict

        weights = merged_state_dict(model, weights)
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items() if not k.startswith(CLIP_ENCODER_PREFIX)}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    fix_permissions(path / "model.safetensors")
    (stats or model.stats).save(path / "stats.json")
    write_model_card(path, model.config)


def load_checkpoint(
    cls,
    path: str | Path,
    *,
    load_clip: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
):
    """Load a checkpoint directory; every file and key is checked and the problem is named.

    The model is built on the meta device and each weight read once, cast to ``dtype`` (default: the file's; the
    widest of them when it holds several),
    and assigned (``weight_loading``): peak memory is one copy of the weights at that dtype.

    ``path``: a directory, or a Hugging Face Hub reference (``hf://owner/name``) in the local Hub cache.
    ``load_clip`` also builds the frozen CLIP text encoder (training); inference never needs it.
    """
    try:
        path = resolve_checkpoint(path)
    except HubError as exc:
        raise CheckpointError(str(exc)) from exc
    for name in CHECKPOINT_FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is missing {name}")
    try:
        doc = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / 'config.json'} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("robovlm_config_version") != CONFIG_VERSION or "model" not in doc:
        raise CheckpointError(
            f"{path / 'config.json'} is not a RoboVLM checkpoint config "
            f"(expected robovlm_config_version {CONFIG_VERSION} and a 'model' key)"
        )
    try:
        config = RoboVLMConfig.from_dict(doc["model"])
    except ConfigError as exc:
        raise CheckpointError(f"{path / 'config.json'}: {exc}") from exc
    tokenizer = checkpoint_tokenizer(config.backbone.tokenizer, config.backbone.path, path)
    with init_empty_weights(include_buffers=False):  # parameters on the meta device: never allocated, never random
        model = cls(config, tokenizer=tokenizer, load_backbone_weights=False, with_clip=False)
    if load_clip:
        model.add_clip_norm()
    expected = {k for k in model.state_dict() if not k.startswith(CLIP_ENCODER_PREFIX)}
    weights_path = path / "model.safetensors"
    try:
        dtype = dtype or file_float_dtype(weights_path)  # one dtype for the whole model
        weights = dict(  # the CLIP-norm head is training-only
            read_tensors(weights_path, dtype=dtype, keep=lambda k: load_clip or not k.startswith("clip_norm."))
        )
    except (WeightFileError, OSError) as exc:
        raise CheckpointError(f"{weights_path} is corrupt or unreadable: {exc}") from exc
    missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path} does not match config.json: "
            f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    try:
        model.load_state_dict(weights, strict=False, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights_path}: tensor shapes do not match config.json: {exc}") from exc
    del weights
    if unloaded := meta_tensors(model):
        raise CheckpointError(f"{weights_path}: no weights for {unloaded[:10]}")
    try:
        stats = NormStats.load(path / "stats.json")
    except StatsError as exc:
        raise CheckpointError(str(exc)) from exc
    if len(stats.state_mean) != config.state_dim or len(stats.action_low) != config.action_dim:
        raise CheckpointError(
            f"{path / 'stats.json'}: state has {len(stats.state_mean)} values and actions "
            f"{len(stats.action_low)}, but config.json says state_dim {config.state_dim}, "
            f"action_dim {config.action_dim}"
        )
    model.stats = stats
    return model.to(device=device, dtype=dtype).eval()
