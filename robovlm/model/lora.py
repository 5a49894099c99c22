"""LoRA adapters in a checkpoint: a model trained with adapters (``training.finetune``) is saved merged, so a
checkpoint never needs peft to load (``checkpoint.save_checkpoint`` calls ``merged_state_dict``)."""

from __future__ import annotations

import torch
from torch import nn

ADAPTER = "default"
"""peft's adapter name for the adapters the trainer adds."""


def has_lora(model: nn.Module) -> bool:
    return any(".lora_A." in name for name, _ in model.named_parameters())


def merged_state_dict(model: nn.Module, weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's weights (``weights``, default its state dict) with every LoRA layer merged into its base layer,
    ``W + alpha/r * B @ A``, under the names of a model without adapters (what ``RoboVLM.from_pretrained``
    expects)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    weights = model.state_dict() if weights is None else weights
    merged: dict[str, torch.Tensor] = {}
    lora_prefixes = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            lora_prefixes.append(name + ".")
            a = weights[f"{name}.lora_A.{ADAPTER}.weight"].float()
            b = weights[f"{name}.lora_B.{ADAPTER}.weight"].float()
            base = weights[f"{name}.base_layer.weight"]
            # in the wider of the base's and the adapters' dtypes: a bf16 base (train_setup.frozen_dtype) would
            # round away most of a small update
            dtype = torch.promote_types(base.dtype, weights[f"{name}.lora_A.{ADAPTER}.weight"].dtype)
            merged[f"{name}.weight"] = (base.float() + module.scaling[ADAPTER] * (b @ a)).to(dtype)
            if f"{name}.base_layer.bias" in weights:
                merged[f"{name}.bias"] = weights[f"{name}.base_layer.bias"]
    for key, value in weights.items():
        if any(key.startswith(p) for p in lora_prefixes):
            continue  # base_layer.* and lora_* of a merged layer
        merged[key] = value
    return merged
